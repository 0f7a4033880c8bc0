"""The experiment registry: rows from run summaries, GLUE cells, reruns, rebuilds, hand-written conclusions, and a
table that survives concurrent writers, interrupted writes and hostile text."""

import json
import multiprocessing
import re
import time
from pathlib import Path

import pytest
from conftest import Killed

from concept_encoder.training import registry as experiment_registry
from concept_encoder.training.registry import (
    COLUMNS,
    Registry,
    parse_glue_cell,
    rebuild_registry,
    record_run,
)


def pretraining_summary(run_id, date, task_loss=2.537, rank=5.07):
    return {
        "kind": "pretraining",
        "run_id": run_id,
        "date": date,
        "model_type": "perceiver_mlm",
        "architecture": "H512 L6 C128",
        "encoder_layer_type": "perceiver",
        "objective": "mlm",
        "pretraining_data": "Minipile (1x)",
        "machine": "Polonez",
        "epochs": 40.0,
        "concept_losses": "none",
        "task_loss": task_loss,
        "effective_rank": rank,
        "concept_num": 128,
        "steps_per_second": 2.14,
        "tokens_per_second": 1000.0,
        "wandb": "https://wandb.ai/x/y/runs/" + run_id,
        "git_commit": "54ee870",
        "output_dir": "outputs/" + run_id,
    }


def glue_summary(checkpoint_run_id, task, display, metric, score, timestamp, from_scratch=False):
    return {
        "kind": "glue",
        "run_id": f"glue_{task}_{checkpoint_run_id}_{timestamp}",
        "date": "2026-02-09",
        "timestamp": timestamp,
        "task": task,
        "task_display_name": display,
        "checkpoint_run_id": checkpoint_run_id,
        "from_scratch": from_scratch,
        "architecture": "H512 L6 C128",
        "registry_metric": metric,
        "registry_score": score,
        "machine": "Polonez",
        "git_commit": "abc1234",
    }


def save_run(folder, summary):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_summary.json").write_text(json.dumps(summary))
    return folder


def table_rows(path):
    return Registry(path).rows


A, B = "perceiver_mlm_H512L6C128_20260208_211633", "perceiver_posonly_mlm_H512L6C128_20260209_102656"


def test_two_runs_give_two_rows_in_the_research_log_format(tmp_path):
    registry = tmp_path / "registry.md"
    record_run(save_run(tmp_path / "runs" / A, pretraining_summary(A, "2026-02-08")), registry)
    record_run(save_run(tmp_path / "runs" / B, pretraining_summary(B, "2026-02-09", 2.64, 122.3)), registry)
    text = registry.read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in text
    rows = table_rows(registry)
    assert [row["Run ID / Model Type"] for row in rows] == [f"`{A}`", f"`{B}`"]
    assert rows[0]["Eff. Rank"] == "5.1 / 128 (4%)" and rows[1]["Eff. Rank"] == "122.3 / 128 (96%)"
    assert rows[0]["Task Loss"] == "MLM 2.537" and rows[0]["Speed (Steps/s)"] == "2.14"
    assert rows[0]["Git Tag"] == "`54ee870`" and rows[0]["WandB Link"].startswith("[Link](https://wandb.ai/")
    assert rows[0]["Key GLUE Scores"] == "--" and rows[0]["Conclusion / Takeaway"] == ""


def test_objective_settings_tell_a_mask_run_from_a_delete_run(tmp_path):
    registry = tmp_path / "registry.md"
    for mode in ("mask", "delete"):
        summary = {**pretraining_summary(f"{B}_{mode}", "2026-02-09"), "objective": "tsdae", "tsdae_mode": mode}
        summary.update(deletion_prob=0.6, mlm_probability=None)
        record_run(save_run(tmp_path / "runs" / mode, summary), registry)
    cells = [row["Task Loss"] for row in table_rows(registry)]
    assert cells == ["TSDAE (mask, deletion 0.6) 2.537", "TSDAE (delete, deletion 0.6) 2.537"]


def test_glue_runs_fill_their_checkpoint_row_and_scratch_gets_its_own(tmp_path):
    registry = tmp_path / "registry.md"
    record_run(save_run(tmp_path / "runs" / A, pretraining_summary(A, "2026-02-08")), registry)
    record_run(
        save_run(tmp_path / "runs" / "g1", glue_summary(A, "mrpc", "MRPC", "f1", 0.8134, "20260209_1")), registry
    )
    record_run(
        save_run(tmp_path / "runs" / "g2", glue_summary(A, "stsb", "STS-B", "pearson", 0.6271, "20260209_2")), registry
    )
    record_run(save_run(tmp_path / "runs" / "g3", glue_summary(A, "mrpc", "MRPC", "f1", 0.82, "20260209_3")), registry)
    record_run(
        save_run(
            tmp_path / "runs" / "g4",
            glue_summary("scratch_H512L6C128", "mrpc", "MRPC", "f1", 0.7, "20260209_4", from_scratch=True),
        ),
        registry,
    )
    rows = table_rows(registry)
    assert len(rows) == 2
    assert rows[0]["Key GLUE Scores"] == "**MRPC:** 82.0% <br> **STS-B:** 0.627"  # the rerun replaced 81.3%
    assert parse_glue_cell(rows[1]["Key GLUE Scores"]) == {"MRPC": "70.0%"}
    assert rows[1]["Pretraining Data"] == "none (random init)"


def test_rebuild_gives_the_same_table_and_reruns_update_their_row(tmp_path):
    runs, registry = tmp_path / "runs", tmp_path / "registry.md"
    for folder, summary in [
        (runs / A, pretraining_summary(A, "2026-02-08")),
        (runs / B, pretraining_summary(B, "2026-02-09")),
        (runs / "glue_a", glue_summary(A, "mrpc", "MRPC", "f1", 0.8134, "20260209_120000")),
        (runs / "glue_s", glue_summary("scratch_H512L6C128", "rte", "RTE", "accuracy", 0.5, "20260209_130000", True)),
    ]:
        record_run(save_run(folder, summary), registry)
    incremental = registry.read_text()
    rebuild_registry(runs, tmp_path / "fresh.md")
    assert (tmp_path / "fresh.md").read_text() == incremental
    rebuild_registry(runs, registry)
    assert registry.read_text() == incremental

    save_run(runs / A, pretraining_summary(A, "2026-02-08", task_loss=2.4))  # the same run id, run again
    record_run(runs / A, registry)
    rows = table_rows(registry)
    assert len(rows) == 3 and rows[0]["Task Loss"] == "MLM 2.400" and "**MRPC:** 81.3%" in rows[0]["Key GLUE Scores"]
    rebuild_registry(runs, registry)
    assert len(table_rows(registry)) == 3


def test_conclusions_and_hand_written_rows_survive(tmp_path):
    runs, registry = tmp_path / "runs", tmp_path / "registry.md"
    record_run(save_run(runs / A, pretraining_summary(A, "2026-02-08")), registry)
    log_row = (
        "| 2026-01-17 | `weighted_mlm_H512L2C128_20260117_153544` | H512 L2 C128 | Minipile (1x) | Odra | 20 | "
        "None | MLM 4.089 | -- | **MRPC:** 82.2% <br> **QQP:** 61.5% | -- | -- | — | Best F1 on MRPC at L2. |"
    )
    text = registry.read_text()
    text = text.replace("| `54ee870` |  |", "| `54ee870` | Best L6 model \\| severe collapse. |")
    text = text.replace("|---|\n", "|---|\n" + log_row + "\n", 1)
    registry.write_text("Notes above the table stay.\n\n" + text + "\nNotes below stay too.\n")
    record_run(save_run(runs / A, pretraining_summary(A, "2026-02-08", task_loss=2.5)), registry)
    rebuild_registry(runs, registry)
    text = registry.read_text()
    rows = table_rows(registry)
    assert [r["Run ID / Model Type"].strip("`") for r in rows] == ["weighted_mlm_H512L2C128_20260117_153544", A]
    assert rows[0]["Conclusion / Takeaway"] == "Best F1 on MRPC at L2."
    assert (
        rows[1]["Conclusion / Takeaway"] == "Best L6 model | severe collapse." and rows[1]["Task Loss"] == "MLM 2.500"
    )
    assert "| Best L6 model \\| severe collapse. |" in text  # read as its text, written escaped again
    assert text.startswith("Notes above the table stay.") and text.endswith("Notes below stay too.\n")


def test_cli_rebuild_and_bad_input(tmp_path, capsys):
    runs = tmp_path / "runs"
    save_run(runs / A, pretraining_summary(A, "2026-02-08"))
    experiment_registry.main(["rebuild", "--runs_dir", str(runs), "--registry", str(tmp_path / "r.md")])
    assert f"`{A}`" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        record_run(tmp_path, tmp_path / "r.md")
    not_a_registry = tmp_path / "notes.md"
    not_a_registry.write_text("# my notes\n")
    with pytest.raises(ValueError, match="has no registry table"):
        record_run(runs / A, not_a_registry)


def test_seed_spread_zero_shot_column_and_tables_written_before_it(tmp_path):
    registry_path = tmp_path / "registry.md"
    save_run(tmp_path / "pre", pretraining_summary("perceiver_mlm_H512L6C128_20260208_211633", "2026-02-08"))
    record_run(tmp_path / "pre", registry_path)
    seeds = glue_summary("perceiver_mlm_H512L6C128_20260208_211633", "mrpc", "MRPC", "f1", 0.8125, "20260209_1")
    save_run(tmp_path / "glue", {**seeds, "registry_score_std": 0.0042})
    record_run(tmp_path / "glue", registry_path)
    zero = {"kind": "zero_shot", "run_id": "zero_shot_x", "date": "2026-02-09", "timestamp": "20260209_2",
            "checkpoint_run_id": "perceiver_mlm_H512L6C128_20260208_211633", "scores": {"stsb": 61.25, "sickr": 55.0}}  # fmt: skip
    save_run(tmp_path / "zero", zero)
    record_run(tmp_path / "zero", registry_path)
    (row,) = table_rows(registry_path)
    assert row["Key GLUE Scores"] == "**MRPC:** 81.2 ± 0.4%"
    assert row["Zero-shot STS"] == "**STS-B:** 61.2 <br> **SICK-R:** 55.0"
    legacy = (
        registry_path.read_text()
        .replace(" Zero-shot STS |", "")
        .replace(" **STS-B:** 61.2 <br> **SICK-R:** 55.0 |", "")
    )
    legacy = legacy.replace("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", "|" + "---|" * 14)
    registry_path.write_text(legacy)
    (row,) = table_rows(registry_path)  # a table from before the zero-shot column still reads
    assert row["Zero-shot STS"] == "--" and row["Key GLUE Scores"] == "**MRPC:** 81.2 ± 0.4%"


def test_plot_command_draws_both_pictures(tmp_path):
    from PIL import Image

    run = save_run(
        tmp_path / "runs" / "pre", pretraining_summary("perceiver_mlm_H512L6C128_20260208_211633", "2026-02-08")
    )
    history = [{"step": 10, "loss": 5.0, "task_loss": 4.5}, {"step": 20, "eval_concept_effective_rank": 3.5},
               {"step": 20, "loss": 4.0, "task_loss": 3.9}]  # fmt: skip
    (run / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    glue = glue_summary("perceiver_mlm_H512L6C128_20260208_211633", "stsb", "STS-B", "pearson", 0.31, "20260209_1")
    save_run(tmp_path / "runs" / "glue", {**glue, "registry_score_std": 0.02})
    scratch = glue_summary("scratch_H512L6C128", "stsb", "STS-B", "pearson", 0.2, "20260209_2", from_scratch=True)
    save_run(tmp_path / "runs" / "scratch", scratch)
    experiment_registry.main(["plot", "--runs_dir", str(tmp_path / "runs"), "--output_dir", str(tmp_path / "plots")])
    for name in ("training_curves.png", "scores.png"):
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.format == "PNG" and image.size[0] >= 600
    scores, levels = experiment_registry.collect_scores(tmp_path / "runs")
    assert scores["perceiver_mlm_H512L6C128_20260208_211633"] == {"STS-B pearson": (0.31, 0.02)}
    assert levels == {"scratch_H512L6C128": {"STS-B pearson": 0.2}}
    with pytest.raises(FileNotFoundError, match="nothing to plot"):
        experiment_registry.plot_runs(tmp_path / "empty", tmp_path / "plots")


def test_user_text_is_shown_as_written_never_rendered_as_html(tmp_path):
    """Issue 23.6: run names, file names and dataset names reached registry.md as raw HTML (`<script>`, `<img
    onerror>`); a backtick in a run name ended its code span."""
    evil_data = "data/<img src=x onerror=alert(1)>.txt"
    evil_run = "run`<script>alert(1)</script>"
    summary = {**pretraining_summary(evil_run, "2026-02-10"), "pretraining_data": evil_data, "wandb": "<b>x</b>"}
    registry_path = tmp_path / "registry.md"
    record_run(save_run(tmp_path / "run", summary), registry_path)
    glue = glue_summary("<img src=y onerror=alert(2)>", "mrpc", "MRPC<i>", "f1", 0.8, "20260210_000000")
    record_run(save_run(tmp_path / "glue", glue), registry_path)
    text = registry_path.read_text()
    rendered = re.sub(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", "CODE", text)  # a code span shows its text as written
    assert not re.findall(r"<\w+", rendered)  # no tag outside a code span
    assert "data/&lt;img src=x onerror=alert(1)&gt;.txt" in text and "`` run`<script>alert(1)</script> ``" in text
    rows = table_rows(registry_path)  # read back: one row per run, found by its run id, updated in place
    assert {experiment_registry.run_id_of(row) for row in rows} == {evil_run, "<img src=y onerror=alert(2)>"}
    record_run(tmp_path / "run", registry_path)
    record_run(tmp_path / "glue", registry_path)
    assert registry_path.read_text() == text


def _record(run_dir, registry_path, start):
    while time.time() < start:  # every writer starts at the same moment
        pass
    record_run(run_dir, registry_path)


def test_concurrent_registry_writers_keep_every_row(tmp_path):
    """0.1.0: 8 simultaneous writers kept 2-4 of 9 rows (read-modify-write without a lock, no atomic rename)."""
    registry = tmp_path / "registry.md"
    record_run(
        save_run(tmp_path / "runs" / "first", pretraining_summary("first_20260101_000000", "2026-01-01")), registry
    )
    folders = [
        save_run(tmp_path / "runs" / f"r{i}", pretraining_summary(f"run{i}_20260102_00000{i}", "2026-01-02"))
        for i in range(8)
    ]
    start = time.time() + 1.0
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_record, args=(folder, registry, start)) for folder in folders]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [writer.exitcode for writer in writers] == [0] * 8
    ids = sorted(row["Run ID / Model Type"].strip("`") for row in Registry(registry).rows)
    assert ids == sorted(["first_20260101_000000", *(f"run{i}_20260102_00000{i}" for i in range(8))])


def test_an_interrupted_registry_write_leaves_the_old_registry_whole(monkeypatch, tmp_path):
    """0.1.0 rewrote the registry in place: a run killed while writing it (and any reader at that moment) saw half a
    file. Now the new text goes to a temporary file that is renamed over the registry."""
    registry = tmp_path / "registry.md"
    record_run(save_run(tmp_path / "runs" / "a", pretraining_summary("a_20260101_000000", "2026-01-01")), registry)
    before = registry.read_text()
    second = save_run(tmp_path / "runs" / "b", pretraining_summary("b_20260102_000000", "2026-01-02"))
    write_text = Path.write_text

    def killed_half_way(self, data, *args, **kwargs):
        write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise Killed("killed while writing")

    monkeypatch.setattr(Path, "write_text", killed_half_way)
    with pytest.raises(Killed):
        record_run(second, registry)
    monkeypatch.undo()
    assert registry.read_text() == before


def test_registry_cells_with_pipes_and_newlines_keep_the_table(tmp_path):
    """0.1.0: a `|` or a newline in any recorded text broke the table for every later run."""
    registry = tmp_path / "registry.md"
    hostile = pretraining_summary("a|b_20260101_000000", "2026-01-01")
    hostile.update(concept_losses="combined\nsecond line", pretraining_data="x | y")
    record_run(save_run(tmp_path / "runs" / "hostile", hostile), registry)
    record_run(
        save_run(tmp_path / "runs" / "next", pretraining_summary("next_20260102_000000", "2026-01-02")), registry
    )
    (first, second) = Registry(registry).rows
    assert first["Run ID / Model Type"] == "`a|b_20260101_000000`" and first["Pretraining Data"] == "x | y"
    assert first["Concept Losses"] == "combined <br> second line"
    assert second["Run ID / Model Type"] == "`next_20260102_000000`"


def test_rebuild_recovers_a_truncated_registry_and_keeps_its_readable_conclusions(tmp_path):
    """0.1.0 could not rebuild a truncated registry, so its hand-written conclusions were lost."""
    runs, registry = tmp_path / "runs", tmp_path / "registry.md"
    for name, date in (("a_20260101_000000", "2026-01-01"), ("b_20260102_000000", "2026-01-02")):
        record_run(save_run(runs / name, pretraining_summary(name, date)), registry)
    text = registry.read_text().replace("| `54ee870` |  |", "| `54ee870` | my conclusion |", 1)
    registry.write_text(text[: text.rindex("| 2026-01-02") + 30])  # the last row cut in the middle
    (runs / "broken").mkdir()
    (runs / "broken" / "run_summary.json").write_text('{"kind": "pretr')  # a summary cut by a kill
    rebuild_registry(runs, registry)
    rows = {row["Run ID / Model Type"].strip("`"): row for row in Registry(registry).rows}
    assert sorted(rows) == ["a_20260101_000000", "b_20260102_000000"]
    assert rows["a_20260101_000000"]["Conclusion / Takeaway"] == "my conclusion"
    assert (tmp_path / "registry.md.bak").read_text() == text[: text.rindex("| 2026-01-02") + 30]


def test_finish_run_records_summary_card_and_row_on_the_main_process_then_pushes_and_ends_wandb(tmp_path, monkeypatch):
    """`finish_run`, the one end of every run: summary, card (on the trainer, so a push carries it), registry row on
    the main process; push and wandb's end on every process; nothing but those without a summary or a trainer."""
    import sys
    import types

    from concept_encoder.training.finish import finish_run

    calls = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(finish=lambda: calls.append("wandb.finish")))

    class Trainer:  # what finish_run uses of a ConceptTrainer
        def __init__(self, main, push_to_hub):
            self.main, self.args = main, types.SimpleNamespace(push_to_hub=push_to_hub, report_to=["wandb"])
            self.card_summary = self.card_glue_results = self.card_options = None

        def is_world_process_zero(self):
            return self.main

        def create_model_card(self):
            calls.append(("card", self.card_summary["run_id"], self.card_glue_results, self.card_options))

        def push_to_hub(self, commit_message):
            calls.append(("push", commit_message))

    registry = tmp_path / "registry.md"
    summary = pretraining_summary(A, "2026-02-08")
    card = {"summary": summary, "glue_results": {"MRPC": 0.8}, "hyperparameters": {"Seed": 1}}
    finish_run(summary, tmp_path / "main", registry, Trainer(main=True, push_to_hub=True), card)
    assert json.loads((tmp_path / "main" / "run_summary.json").read_text()) == summary
    assert [experiment_registry.run_id_of(row) for row in table_rows(registry)] == [A]
    assert calls == [("card", A, {"MRPC": 0.8}, {"hyperparameters": {"Seed": 1}}), ("push", "End of training"),
                     "wandb.finish"]  # fmt: skip

    calls.clear()
    finish_run(pretraining_summary(B, "2026-02-09"), tmp_path / "replica", registry, Trainer(False, False), card)
    assert not (tmp_path / "replica").exists() and calls == ["wandb.finish"]
    finish_run(None, tmp_path / "untrained", registry, Trainer(True, False))
    assert not (tmp_path / "untrained").exists() and [
        experiment_registry.run_id_of(row) for row in table_rows(registry)
    ] == [A]

    calls.clear()
    finish_run(summary, tmp_path / "no_trainer", "")  # zero-shot scoring or a mean over seeds, no registry asked
    assert (tmp_path / "no_trainer" / "run_summary.json").is_file() and calls == []
