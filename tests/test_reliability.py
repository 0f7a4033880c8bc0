"""Reliability (issue 13): each test is one failure class of 0.1.0 that must not come back: a resumed run that is
another run, NaN training, labels decided from one file, configs that cannot work, lost registry rows, replaced user
files, incomplete checkpoints, non-deterministic tokenizers."""

import codecs
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import test_pretraining
import torch
from conftest import REPO_ROOT, run_isolated, tiny_config
from test_pretraining import run_main, tiny_args
from test_registry import pretraining_summary, save_run
from transformers import TrainerCallback, TrainingArguments

import run_glue
import run_pretraining
from collators import DataCollatorForConceptMLM, DataCollatorForTSDAE
from concept_encoder_training.config_flags import apply_config_overrides
from concept_encoder_training.glue import TASKS, load_files
from concept_encoder_training.registry import Registry, rebuild_registry, record_run
from concept_encoder_training.run_folder import (
    IDENTITY_FILE,
    check_room,
    hold_run_lock,
    incomplete_reason,
    last_complete_checkpoint,
    releases_run_locks,
)
from concept_encoder_training.tokenizer import train_tokenizer
from concept_encoder_training.trainer import ConceptTrainer
from configuration_concept_encoder import ConceptEncoderConfig
from modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel

corpus = test_pretraining.corpus  # WikiText-2 lines as local files (a fixture)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny PosOnly MLM checkpoint with its tokenizer."""
    folder = tmp_path_factory.mktemp("checkpoint") / "tiny_posonly"
    ConceptEncoderForMaskedLM(tiny_config(decoder_query="position", vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def glue(checkpoint, output_dir, data_dir, task, *extra):
    """Two optimiser steps of run_glue.py (32 examples, batch 16) with a checkpoint after each."""
    return run_glue.main(
        [
            *("--model_name_or_path", str(checkpoint), "--task_name", task, "--data_dir", str(data_dir / "glue")),
            *("--output_dir", str(output_dir), "--max_train_samples", "32", "--max_eval_samples", "16"),
            *("--per_device_train_batch_size", "16", "--max_seq_length", "32", "--num_train_epochs", "1"),
            *("--save_strategy", "steps", "--save_steps", "1", "--registry_file", "", "--disable_tqdm", "true"),
            *("--report_to", "none", *extra),
        ]
    )


# ---- 1. a resumed run is the same run, or refused ---------------------------------------------------------------


def test_glue_refuses_to_resume_another_runs_folder(checkpoint, data_dir, tmp_path):
    """0.1.0 resumed any checkpoint-* in --output_dir: an RTE run scored the MRPC model, a --from_scratch run the
    pretrained one. Now the folder's recorded run must match, and the same command resumes its own run."""
    (first,) = glue(checkpoint, tmp_path, data_dir, "mrpc")
    assert (tmp_path / "checkpoint-2" / IDENTITY_FILE).is_file() and incomplete_reason(
        tmp_path / "checkpoint-2"
    ) is None
    with pytest.raises(ValueError, match=r"holds another run .*task_name: 'mrpc' recorded, 'rte' now"):
        glue(checkpoint, tmp_path, data_dir, "rte")
    with pytest.raises(ValueError, match=r"from_scratch: False recorded, True now"):
        glue(checkpoint, tmp_path, data_dir, "mrpc", "--from_scratch")
    with pytest.raises(ValueError, match=r"seed: 42 recorded, 7 now"):
        glue(checkpoint, tmp_path, data_dir, "mrpc", "--seed", "7")
    (again,) = glue(checkpoint, tmp_path, data_dir, "mrpc")  # resumes checkpoint-2: the same run, the same id
    assert again["run_id"] == first["run_id"]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_glue_refuses_a_folder_without_run_identity(checkpoint, data_dir, tmp_path):
    """A 0.1.0 run folder (checkpoint-N without run_identity.json) or a user's folder is never trained into (or
    resumed) silently: its files would be replaced."""
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "README.md").write_text("my notes\n")
    with pytest.raises(ValueError, match=r"not empty and was not written by a run of this package.*README.md"):
        glue(checkpoint, tmp_path, data_dir, "mrpc")
    assert (tmp_path / "README.md").read_text() == "my notes\n"


def test_incomplete_checkpoints_are_skipped_and_kept(tmp_path):
    """A save interrupted after config.json (0.1.0 resumed it and crashed) is not complete: skipped with a warning,
    kept under another name; a marker whose files changed size is not complete either."""
    folder = tmp_path / "run"
    (folder / "checkpoint-20").mkdir(parents=True)
    (folder / "checkpoint-20" / "config.json").write_text("{}")
    complete = folder / "checkpoint-10"
    complete.mkdir()
    (complete / "model.safetensors").write_bytes(b"12345")
    (complete / IDENTITY_FILE).write_text(json.dumps({"run_id": "r", "files": {"model.safetensors": 5}}))
    assert last_complete_checkpoint(folder) == complete
    assert (folder / "incomplete-checkpoint-20" / "config.json").is_file()
    (complete / "model.safetensors").write_bytes(b"123")
    assert "model.safetensors" in incomplete_reason(complete)


class Killed(Exception):
    pass


def test_pretraining_default_folder_is_resumable_and_a_run_killed_before_its_first_checkpoint_reruns(
    monkeypatch, tmp_path, corpus
):
    """The README's command has no --output_dir: 0.1.0 named the folder with a timestamp (a rerun started over) and
    refused to rerun a run killed before its first checkpoint (its own tokenizer files were in the folder)."""
    monkeypatch.chdir(tmp_path)
    args = tiny_args(corpus, None, max_steps=2, save_steps=2, do_eval=False)
    del args["output_dir"]

    class KilledAtFirstStep(run_pretraining.ConceptLossCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            raise Killed("killed before the first checkpoint")

    monkeypatch.setattr(run_pretraining, "ConceptLossCallback", KilledAtFirstStep)
    with pytest.raises(Killed):
        run_main(monkeypatch, args)
    (folder,) = (tmp_path / "outputs").iterdir()
    assert (folder / "tokenizer.json").is_file() and not list(folder.glob("checkpoint-*"))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    run_main(monkeypatch, args)  # the same command: the same folder, trained to the end
    first = json.loads((folder / "run_summary.json").read_text())
    results = (folder / "train_results.json").read_text()
    run_main(monkeypatch, args)  # and again: resumes the finished run from its checkpoint, keeping its id
    assert (folder / "train_results.json").read_text() == results  # not the no-op rerun's zeros
    assert [path.name for path in (tmp_path / "outputs").iterdir()] == [folder.name]
    again = json.loads((folder / "run_summary.json").read_text())
    assert again["run_id"] == first["run_id"] and again["steps_per_second"] == first["steps_per_second"] > 0
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 2  # 0.1.0 trained a step 3


def test_pretraining_never_writes_into_a_users_folder_without_the_flag(monkeypatch, tmp_path, corpus):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"mine": true}')
    with pytest.raises(ValueError, match=r"not empty and was not written by a run of this package.*config.json"):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run"))
    assert (tmp_path / "run" / "config.json").read_text() == '{"mine": true}'


@pytest.mark.parametrize(
    "error, message",
    [
        (OSError(28, "No space left on device"), r"\[Errno 28\] No space left"),
        # what torch.save (training_args.bin, optimizer) raises on a full disk
        (
            RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 331648 vs 331536"),
            r"\[enforce fail.*unexpected pos",
        ),
    ],
)
def test_a_failed_save_after_training_keeps_the_model_in_a_named_folder(
    monkeypatch, tmp_path, tokenizer, wikitext_lines, error, message
):
    """0.1.0 lost the trained model when the output folder could not be written after training (full disk:
    `unexpected pos 331648 vs 331536`); now it is saved to a temporary folder that the error names."""
    output = tmp_path / "run"
    model = ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer)))
    args = TrainingArguments(
        output_dir=str(output), max_steps=1, per_device_train_batch_size=4, save_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    data = [tokenizer(line, truncation=True, max_length=32) for line in wikitext_lines[:8]]
    trainer = ConceptTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer,
        data_collator=DataCollatorForConceptMLM(tokenizer),
    )  # fmt: skip
    trainer.train()
    save = type(model).save_pretrained

    def disk_full_in_output(self, save_directory, *args, **kwargs):
        if Path(save_directory) == output:
            raise error
        return save(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(type(model), "save_pretrained", disk_full_in_output)
    with pytest.raises(OSError, match=rf"Could not save the model to .*run \({message}") as failure:
        trainer.save_model()
    rescue = Path(re.search(r"saved to (\S+) instead", str(failure.value)).group(1))
    monkeypatch.undo()
    try:
        again = ConceptEncoderForMaskedLM.from_pretrained(rescue)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
        assert (rescue / "tokenizer.json").is_file()
    finally:
        shutil.rmtree(rescue)


# ---- 2. no NaN from an empty labelled set; a non-finite loss stops the run ------------------------------------


@pytest.mark.parametrize("weighting", ["none", "fixed", "kendall_gal"])
def test_a_batch_without_labelled_positions_gives_zero_task_loss_and_zero_task_gradient(weighting):
    """0.1.0: cross-entropy over no masked token is NaN, which Kendall-Gal weighting spread into every weight."""
    losses = ["variance"] if weighting != "none" else []
    torch.manual_seed(0)
    model = ConceptEncoderForMaskedLM(tiny_config(concept_losses=losses, concept_loss_weighting=weighting))
    model.train()
    input_ids = torch.randint(5, 200, (1, 6))
    output = model(input_ids, labels=torch.full_like(input_ids, -100))
    assert output.task_loss.item() == 0.0 and torch.isfinite(output.loss)
    output.loss.backward()
    gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in gradients.values())
    head = [model.lm_head.dense.weight.grad, model.lm_head.decoder.bias.grad]  # used by the task loss alone
    assert all(grad is None or not grad.any() for grad in head)
    if weighting == "kendall_gal":
        assert model.concept_loss_log_vars.grad[0] == 0  # the task's log-variance: no loss measured, no update


def test_training_stops_at_the_first_non_finite_loss_without_saving_it(tmp_path, tokenizer, wikitext_lines):
    """0.1.0 logged a NaN loss as 0, trained on and saved NaN checkpoints; now the run stops at that step."""

    class PoisonAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    model.encoder.embeddings.token_embeddings.weight.fill_(float("nan"))

    model = ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer)))
    data = [tokenizer(line, truncation=True, max_length=32) for line in wikitext_lines[:40]]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=4, save_strategy="steps", save_steps=1,
        report_to="none", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = ConceptTrainer(
        model=model, args=args, train_dataset=data, data_collator=DataCollatorForConceptMLM(tokenizer),
        callbacks=[PoisonAtStep2()],
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"stopped at step 3 of 5: the (loss|gradient norm) is nan"):
        trainer.train()
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


# ---- 3. each file by its own format; labels from every split ---------------------------------------------------


def test_file_labels_come_from_every_split_and_never_collide(tmp_path):
    """0.1.0 inferred the labels from the training file and also read labels as class ids: with training labels
    "1" and "2", a validation "0" became class 0, the class of "1"."""
    (tmp_path / "train.csv").write_text("sentence,label\na,1\nb,2\nc,1\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nd,0\ne,1\nf,2\n")
    data, task = load_files(None, str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"))
    assert task.label_names == ("0", "1", "2")
    assert data["validation"]["label"] == [0, 1, 2] and data["train"]["label"] == [1, 2, 1]
    (tmp_path / "train.csv").write_text("sentence,label\na,1\nb,0\n")
    with pytest.raises(ValueError, match=r"dev.csv, row 3: label '2' is not a sst2 label"):
        load_files(TASKS["sst2"], *(str(tmp_path / name) for name in ("train.csv", "dev.csv")))


def test_custom_regression_scores_are_not_limited_to_stsb_range(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\na,12.5\nb,87.25\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nc,99.5\n")
    data, task = load_files(None, str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"))
    assert task.is_regression and data["validation"]["label"] == [99.5]


def test_pretraining_reads_each_data_file_by_its_own_format(tmp_path):
    """0.1.0 read a .jsonl validation file beside a .txt training file as plain text (eval_loss on JSON syntax)."""
    (tmp_path / "train.txt").write_text("first line of text\nsecond line\n")
    (tmp_path / "valid.jsonl").write_text('{"text": "held out line", "id": 1}\n')
    data_args = run_pretraining.DataTrainingArguments(
        train_file=str(tmp_path / "train.txt"), validation_file=str(tmp_path / "valid.jsonl")
    )
    raw = run_pretraining.load_raw_datasets(data_args, str(tmp_path / "cache"))
    assert raw["validation"]["text"] == ["held out line"] and raw["train"]["text"][0] == "first line of text"
    assert run_pretraining.text_column_of(raw, data_args) == "text"


# ---- 4. config values that cannot work are refused, whatever path set them -------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("layer_norm_eps", -1.0, "layer_norm_eps=-1.0: must be positive"),
        ("bixt_token_ffn", "no", "bixt_token_ffn='no': must be a boolean"),
        ("hidden_act", "gelux", "hidden_act='gelux': must be one of \\['gelu'"),
        ("concept_losses", "combined", "concept_losses='combined': must be a list of strings"),
        ("mask_token_id", 4.0, "mask_token_id=4.0: must be an integer or None"),
        ("initializer_range", float("nan"), "initializer_range=nan: must be a finite number"),
    ],
)
def test_config_fields_are_type_and_range_checked(tmp_path, field, value, message):
    """0.1.0 accepted these: NaN logits, the string "no" read as true, a late bare KeyError, a list of characters."""
    with pytest.raises(ValueError, match=message):
        tiny_config(**{field: value})
    config = tiny_config()
    setattr(config, field, value)  # as an edited config.json or a caller would
    with pytest.raises(ValueError, match=message):
        config.validate_concept_encoder()
    config_dict = tiny_config().to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config_dict, field: value}))
    with pytest.raises(ValueError, match=message):
        ConceptEncoderConfig.from_pretrained(tmp_path)


def test_config_overrides_booleans_parse_as_booleans():
    """0.1.0 stored `bixt_token_ffn=no` as the string "no", which is true."""
    assert apply_config_overrides(tiny_config(), "bixt_token_ffn=true").bixt_token_ffn is True
    assert apply_config_overrides(tiny_config(bixt_token_ffn=True), "bixt_token_ffn=no").bixt_token_ffn is False
    with pytest.raises(ValueError, match="bixt_token_ffn"):
        apply_config_overrides(tiny_config(), "bixt_token_ffn=maybe")


# ---- 5. script arguments that cannot work ------------------------------------------------------------------------


def test_glue_refuses_another_tokenizer_and_non_positive_lengths(checkpoint, data_dir, tmp_path, wikitext_lines):
    """0.1.0 fine-tuned with a smaller tokenizer than the model's (other ids, other embeddings) and read
    --max_seq_length 0 as the default."""
    small = tmp_path / "small_tokenizer"
    train_tokenizer(wikitext_lines[:50], vocab_size=80).save_pretrained(small)  # fewer characters, fewer tokens
    with pytest.raises(ValueError, match="is not the vocabulary of .*tiny_posonly's own tokenizer"):
        glue(checkpoint, tmp_path / "run", data_dir, "mrpc", "--tokenizer_name", str(small))
    with pytest.raises(ValueError, match="--max_seq_length 0: must be a positive number"):
        glue(checkpoint, tmp_path / "run", data_dir, "mrpc", "--max_seq_length", "0")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mlm_probability": 0.0}, "--mlm_probability 0.0: must be in \\(0, 1\\]"),
        ({"max_seq_length": 0}, "--max_seq_length 0: must be a positive number"),
        ({"max_train_samples": 0}, "--max_train_samples 0: must be a positive number"),
        ({"train_file": "FOLDER"}, "--train_file .* is a folder"),
        ({"train_file": "LATIN1"}, "--train_file .* is not UTF-8 text"),
    ],
)
def test_pretraining_refuses_arguments_that_cannot_work(monkeypatch, tmp_path, corpus, overrides, message):
    """0.1.0 finished --mlm_probability 0 with eval_loss NaN and exit 0, read --max_seq_length 0 as the default, and
    failed on a folder or a Latin-1 file without naming it."""
    if overrides.get("train_file") == "FOLDER":
        overrides["train_file"] = str(corpus)
    if overrides.get("train_file") == "LATIN1":
        overrides["train_file"] = str(tmp_path / "latin1.txt")
        (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    with pytest.raises((ValueError, OSError), match=message):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


def test_pretraining_corpus_shorter_than_one_chunk_is_refused_by_name(monkeypatch, tmp_path, corpus):
    (tmp_path / "short.txt").write_text("a few words only\n")
    args = tiny_args(corpus, tmp_path / "run", train_file=str(tmp_path / "short.txt"), validation_file=None)
    args.update(do_eval=False, validation_split_percentage=0)
    with pytest.raises(ValueError, match="short.txt\\) gives no example of 64 tokens"):
        run_main(monkeypatch, args)


def test_glue_data_files_that_cannot_be_read_are_named(tmp_path):
    (tmp_path / "train.tsv").write_bytes("sentence\tlabel\ncafé\t1\n".encode("latin-1"))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nb\t0\n")
    with pytest.raises(ValueError, match="train.tsv is not UTF-8 text"):
        load_files(TASKS["sst2"], str(tmp_path / "train.tsv"), str(tmp_path / "dev.tsv"))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_files(TASKS["sst2"], str(tmp_path), str(tmp_path / "dev.tsv"))


# ---- 6. the registry: no lost row, no broken table ---------------------------------------------------------------


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


def test_glue_scores_of_intermediate_checkpoints_go_to_their_runs_row(tmp_path):
    """0.1.0 keyed a checkpoint without run_summary.json by its folder name: two runs' checkpoint-10 shared a row."""
    config = tiny_config()
    ids = []
    for run in ("run_a", "run_b"):
        folder = tmp_path / run / "checkpoint-10"
        folder.mkdir(parents=True)
        (folder / IDENTITY_FILE).write_text(json.dumps({"run_id": f"{run}_20260101_000000", "files": {}}))
        model_args = run_glue.ModelArguments(model_name_or_path=str(folder))
        ids.append(run_glue.checkpoint_summary(model_args, config)["run_id"])
    assert ids == ["run_a_20260101_000000/checkpoint-10", "run_b_20260101_000000/checkpoint-10"]


# ---- crashes with unclear messages: each names the file, field or value and the fix --------------------------


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_file_whose_detected_text_column_holds_numbers_is_refused(tmp_path, suffix):
    """0.1.0 crashed on a numeric first column and no text column (`'int' object has no attribute 'strip'`); read
    as strings it would silently train on the ids."""
    rows = [(1, 0), (2, 1), (3, 0)]
    for name in ("train", "dev"):
        if suffix == "csv":
            text = "id,label\n" + "".join(f"{i},{label}\n" for i, label in rows)
        else:
            text = "".join(json.dumps({"id": i, "label": label}) + "\n" for i, label in rows)
        (tmp_path / f"{name}.{suffix}").write_text(text)
    files = [str(tmp_path / f"{name}.{suffix}") for name in ("train", "dev")]
    with pytest.raises(ValueError, match=rf"train.{suffix}: column 'id' was auto-detected as text .* --sentence1_key"):
        load_files(None, *files)


@pytest.mark.parametrize("shape", [(0, 5), (2, 0)], ids=["empty-batch", "zero-length"])
def test_the_model_names_an_empty_input(shape):
    """0.1.0: `cannot reshape tensor of 0 elements into shape [0, 8, -1]`."""
    for model in (ConceptEncoderModel(tiny_config()), ConceptEncoderForMaskedLM(tiny_config())):
        with pytest.raises(ValueError, match=rf"Empty input \(batch {shape[0]}, length {shape[1]}\)"):
            model.eval()(torch.zeros(shape, dtype=torch.long))


def test_a_damaged_weights_file_is_named(tmp_path):
    """0.1.0: `Error while deserializing header: incomplete metadata` without the path."""
    folder = tmp_path / "damaged"
    ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(folder)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(OSError, match=r"The weights of .*damaged cannot be read .*save or download it again"):
        ConceptEncoderForMaskedLM.from_pretrained(folder)


def test_the_output_folder_is_checked_before_training(monkeypatch, tmp_path, corpus):
    """0.1.0 found a full or unwritable output folder only when saving, after training (the model was lost)."""
    disk_usage = shutil.disk_usage

    def nearly_full(path):
        usage = disk_usage(path)
        return usage._replace(free=1024) if Path(path) == tmp_path / "run" else usage

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)

    class TrainingStarted(run_pretraining.ConceptLossCallback):
        def on_train_begin(self, *args, **kwargs):
            raise AssertionError("training started")

    monkeypatch.setattr(run_pretraining, "ConceptLossCallback", TrainingStarted)
    with pytest.raises(OSError, match=r"run has 0.0 MiB free, but this run writes about"):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run"))
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OSError, match=r"a_file/run cannot be written .*give a writable --output_dir"):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "a_file" / "run"))


# ---- 10. reproducibility: the same text gives the same tokenizer in every process ------------------------------


def test_trained_tokenizer_is_the_same_in_every_process(tmp_path, wikitext_lines):
    """0.1.0's WordPiece gave the `##` tokens ids in the order of a Rust hash map seeded per process, and ties between
    equally frequent pairs went by those ids: two processes trained different vocabularies from the same text."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(wikitext_lines[:300]) + "\n", encoding="utf-8")
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from concept_encoder_training.tokenizer import train_tokenizer

        texts = Path(sys.argv[1]).read_text(encoding="utf-8").splitlines()
        for algorithm in ("wordpiece", "bpe"):
            train_tokenizer(iter(texts), vocab_size=300, algorithm=algorithm).save_pretrained(f"{sys.argv[2]}/{algorithm}")
    """)
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)}
        command = [sys.executable, "-c", script, str(corpus), str(tmp_path / seed)]
        subprocess.run(command, env=environment, check=True, capture_output=True, timeout=300)
    for algorithm in ("wordpiece", "bpe"):
        first, second = tmp_path / "1" / algorithm, tmp_path / "2" / algorithm
        assert sorted(path.name for path in first.iterdir()) == sorted(path.name for path in second.iterdir())
        for path in first.iterdir():
            assert path.read_bytes() == (second / path.name).read_bytes(), f"{algorithm}: {path.name} differs"


class KilledAfterSave(Exception):
    pass


def train_losses(output_dir, tokenizer, data, collator, resume=None, kill_at=None, **options):
    """Per-step training losses (the log history, a resumed checkpoint's included) and final weights of a tiny ConceptTrainer run (dropout on, random collator), killed
    right after the checkpoint of step `kill_at`, or resumed from checkpoint `resume`."""

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                raise KilledAfterSave(f"killed after the checkpoint of step {kill_at}")

    torch.manual_seed(0)
    model = ConceptEncoderForMaskedLM(
        tiny_config(vocab_size=len(tokenizer), decoder_query="position", hidden_dropout_prob=0.2)
    )
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, save_strategy="steps", save_steps=3,
        logging_steps=1, report_to="none", use_cpu=True, disable_tqdm=True, seed=5, **options,
    )  # fmt: skip
    trainer = ConceptTrainer(
        model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[KillAfterSave()]
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    losses = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    return losses, {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    "objective, accumulation, examples, latest",
    [("mlm", 1, 96, False), ("tsdae", 1, 96, True), ("mlm", 2, 96, False), ("mlm", 1, 12, False)],
    ids=["mlm", "tsdae-resume-latest", "mlm-accumulation", "mlm-epoch-boundary"],
)
def test_resume_is_exact(tmp_path, tokenizer, wikitext_lines, objective, accumulation, examples, latest):
    """0.1.0 (with the stock Trainer) resumed inside an epoch from another random stream (accelerate collates one
    batch ahead, the Trainer restored the RNG state after the first resumed batch), so every mask and dropout after
    the resume differed from the uninterrupted run's (losses up to 0.16 apart). 96 examples: the step-3 checkpoint is
    inside the epoch; 12 (3 batches): on its boundary. `latest`: `resume_from_checkpoint=True` (the Trainer's "the
    latest checkpoint of output_dir") instead of its path."""
    data = [tokenizer(line, truncation=True, max_length=32) for line in wikitext_lines[:examples]]
    collator = (
        DataCollatorForConceptMLM(tokenizer)
        if objective == "mlm"
        else DataCollatorForTSDAE(tokenizer, deletion_prob=0.6, max_length=32)
    )
    options = dict(max_steps=6, gradient_accumulation_steps=accumulation)
    whole, whole_weights = train_losses(tmp_path / "whole", tokenizer, data, collator, **options)
    with pytest.raises(KilledAfterSave):
        train_losses(tmp_path / "resumed", tokenizer, data, collator, kill_at=3, **options)
    resume = True if latest else str(tmp_path / "resumed" / "checkpoint-3")
    resumed, resumed_weights = train_losses(tmp_path / "resumed", tokenizer, data, collator, resume=resume, **options)
    assert [step for step, _ in resumed] == [1, 2, 3, 4, 5, 6]  # steps 1-3: the checkpoint's log
    # float32 tolerance: a batch replayed wrongly moves the losses and weights far more
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in whole], rel=1e-4, abs=1e-5)
    for name in whole_weights:
        torch.testing.assert_close(resumed_weights[name], whole_weights[name], atol=1e-5, rtol=1e-4)


def test_resuming_a_finished_run_trains_no_further_step(tmp_path, tokenizer, wikitext_lines):
    """The stock Trainer resumed a finished max_steps run inside its epoch and trained one step beyond max_steps."""
    data = [tokenizer(line, truncation=True, max_length=32) for line in wikitext_lines[:96]]
    collator = DataCollatorForConceptMLM(tokenizer)
    losses, finished = train_losses(tmp_path, tokenizer, data, collator, max_steps=3)
    again_losses, again = train_losses(
        tmp_path, tokenizer, data, collator, max_steps=3, resume=str(tmp_path / "checkpoint-3")
    )
    assert again_losses == losses  # read back from the finished run's log: no step was trained again
    assert all(torch.equal(finished[name], again[name]) for name in finished)  # the checkpoint's weights: exact
    assert json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    assert not (tmp_path / "checkpoint-4").exists()


# ---- Hub code: same-named checkpoint folders in one process ----------------------------------------------------


def test_same_named_checkpoint_folders_each_run_their_own_code(tmp_path):
    """Two `pretrained` folders whose model code differs, loaded with trust_remote_code in one process: 0.1.0's second
    load ran the first folder's model. transformers names a local folder's modules after the folder and a hash of
    the file, so both folders share one config class (equal configuration files), and the Auto class reused the
    model class registered under it without importing the second folder's modeling file."""
    for run, marker in (("run_a", "a"), ("run_b", "b")):
        folder = tmp_path / run / "pretrained"
        ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(folder)
        with open(folder / "modeling_concept_encoder.py", "a", encoding="utf-8") as f:
            f.write(f'\nRUN_MARKER = "{marker}"\n')
    script = """
        import pickle, sys
        from transformers import AutoModel, AutoModelForMaskedLM

        for auto_class, folder in zip([AutoModelForMaskedLM] * 3 + [AutoModel] * 2, sys.argv[1:]):
            model = auto_class.from_pretrained(folder, trust_remote_code=True)
            assert pickle.loads(pickle.dumps(model.config)).to_dict() == model.config.to_dict()
            print(sys.modules[type(model).__module__].RUN_MARKER)
    """
    a, b = tmp_path / "run_a" / "pretrained", tmp_path / "run_b" / "pretrained"
    output = run_isolated(script, a, b, a, b, a, cwd=tmp_path)
    assert output.split() == ["a", "b", "a", "b", "a"]


def test_a_utf16_file_gets_the_utf16_conversion_command(monkeypatch, tmp_path, corpus):
    """Issue 23.8: a UTF-16 file (with its byte-order mark) was told to convert from latin1."""
    text = "sentence\tlabel\ncafé\t1\n"
    (tmp_path / "train.tsv").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    (tmp_path / "dev.json").write_bytes(codecs.BOM_UTF16_BE + '{"sentence": "b", "label": 0}\n'.encode("utf-16-be"))
    with pytest.raises(
        ValueError, match=r"train.tsv is not UTF-8 text.*UTF-16 byte-order mark.*`iconv -f UTF-16 -t UTF-8 "
    ):
        load_files(TASKS["sst2"], str(tmp_path / "train.tsv"), str(tmp_path / "train.tsv"))
    with pytest.raises(ValueError, match=r"dev.json is not UTF-8 text.*`iconv -f UTF-16 -t UTF-8 "):
        load_files(TASKS["sst2"], str(tmp_path / "dev.json"), str(tmp_path / "dev.json"))
    (tmp_path / "corpus.txt").write_bytes(codecs.BOM_UTF16_LE + "some words\n".encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"--train_file .*corpus.txt is not UTF-8 text.*`iconv -f UTF-16 -t UTF-8 "):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run", train_file=str(tmp_path / "corpus.txt")))
    (tmp_path / "latin1.tsv").write_bytes(text.encode("latin-1"))  # no mark: Latin-1 is the guess
    with pytest.raises(ValueError, match=r"latin1.tsv is not UTF-8 text.*`iconv -f latin1 -t UTF-8 "):
        load_files(TASKS["sst2"], str(tmp_path / "latin1.tsv"), str(tmp_path / "latin1.tsv"))


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"concept_num": 16}, r"config.json does not fit the weights of .*: concept_num=16, but the weights have 8"),
        ({"hidden_size": 64}, r"config.json does not fit the weights of .*: hidden_size=64, but the weights have 32"),
    ],
)
def test_a_config_that_disagrees_with_the_weights_names_the_field_and_both_sizes(tmp_path, edit, message):
    """Issue 23.9: an edited `hidden_size` or `concept_num` ended in transformers' "look at the above report"."""
    ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ValueError, match=message + r".*set \w+=\d+ again"):
        ConceptEncoderForMaskedLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"the config passed to from_pretrained does not fit"):
        ConceptEncoderModel.from_pretrained(tmp_path, config=ConceptEncoderConfig.from_pretrained(tmp_path))


def test_the_room_check_counts_tokenizer_code_files_and_rng_state(monkeypatch, tmp_path, tokenizer):
    """Issue 23.7: the room check counted weights and Adam's moments only (12 bytes per parameter), leaving out the
    tokenizer, the code files and the random states that every checkpoint holds, and the final model."""
    model = ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer)))
    disk_usage = shutil.disk_usage
    old_estimate = 12 * model.num_parameters()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=old_estimate))
    with pytest.raises(OSError, match=r"but this run writes about .*checkpoint tokenizer .*checkpoint code files .*"
                       r"checkpoint RNG state .*free some space or give another --output_dir"):  # fmt: skip
        check_room(tmp_path, model, tokenizer)


def test_a_checkpoint_save_on_a_full_disk_names_the_folder_and_the_cause(
    monkeypatch, tmp_path, tokenizer, wikitext_lines
):
    """Issue 23.7: a disk that filled during a checkpoint save gave torch's `basic_ios::clear: iostream error`, with
    neither the folder nor the cause named and nothing rescued."""
    output = tmp_path / "run"
    model = ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer)))
    args = TrainingArguments(
        output_dir=str(output), max_steps=1, per_device_train_batch_size=4, save_strategy="steps", save_steps=1,
        report_to="none", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    data = [tokenizer(line, truncation=True, max_length=32) for line in wikitext_lines[:8]]
    trainer = ConceptTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer,
        data_collator=DataCollatorForConceptMLM(tokenizer),
    )  # fmt: skip
    save, disk_usage = torch.save, shutil.disk_usage

    def full_disk_save(obj, target, *rest, **kwargs):
        if isinstance(target, (str, Path)) and str(output) in str(target):
            raise RuntimeError("basic_ios::clear: iostream error")
        return save(obj, target, *rest, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(
        shutil,
        "disk_usage",
        lambda path: disk_usage(path)._replace(free=0) if str(output) in str(path) else disk_usage(path),
    )
    with pytest.raises(
        OSError,
        match=r"Could not save checkpoint .*run/checkpoint-1 \(basic_ios::clear: iostream error\): the disk of "
        r".*checkpoint-1 is full \(0.0 MiB free there, about .* MiB needed\)\. The model was saved to \S+ instead",
    ) as failure:
        trainer.train()
    rescue = Path(re.search(r"saved to (\S+) instead", str(failure.value)).group(1))
    monkeypatch.undo()
    try:
        again = ConceptEncoderForMaskedLM.from_pretrained(rescue)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    finally:
        shutil.rmtree(rescue)
    assert incomplete_reason(output / "checkpoint-1") is not None  # a resume skips the half-written checkpoint


def test_a_second_live_run_into_one_folder_is_refused_naming_the_first(monkeypatch, tmp_path, corpus):
    """Issue 23.14: two runs started at once into one --output_dir both trained into it. A live run holds the
    folder's lock; the OS frees it when the run dies (even by SIGKILL), and the dead run's process id is replaced."""
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from concept_encoder_training.run_folder import hold_run_lock; "
         "hold_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(600)", str(folder)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"Output folder .*run is in use by another run \(process {holder.pid}"):
            run_main(monkeypatch, tiny_args(corpus, folder))
        assert sorted(path.name for path in folder.iterdir()) == ["_run.lock", "_run.pid"]  # nothing else written
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
    assert (folder / "_run.pid").read_text().strip() == str(holder.pid)  # a stale record, and a lock the OS freed
    locked = []
    with_lock = releases_run_locks(lambda: (hold_run_lock(folder), locked.append(True)))
    with_lock()
    assert locked and not (folder / "_run.pid").exists()  # taken despite the stale record, released on return


def test_a_run_refused_for_its_tokenizer_leaves_the_folder_free_for_the_corrected_rerun(
    monkeypatch, tmp_path, corpus, wikitext_lines
):
    """Issue 23.11: run_pretraining.py wrote run_identity.json before it checked the tokenizer, so a run refused for
    a bad tokenizer claimed the folder and the corrected rerun was refused as "another run"."""
    no_mask = tmp_path / "no_mask"
    tokenizer = train_tokenizer(wikitext_lines[:200], vocab_size=200)
    tokenizer.mask_token = None
    tokenizer.save_pretrained(no_mask)
    args = tiny_args(corpus, tmp_path / "run", tokenizer_name=str(no_mask), train_tokenizer_vocab_size=None)
    with pytest.raises(ValueError, match=r"no_mask lacks a pad or mask token"):
        run_main(monkeypatch, args)
    assert not (tmp_path / "run").exists()
    run_main(monkeypatch, {**args, "tokenizer_name": None, "train_tokenizer_vocab_size": 200, "max_steps": 1})
    assert (tmp_path / "run" / "model.safetensors").is_file()
