"""scripts/study.py (`make study`) end to end at smoke size, and its row options."""

import json
import logging
import sys

import pytest
from conftest import REPO_ROOT
from PIL import Image

from concept_encoder.training import recipes
from concept_encoder.training.registry import Registry, run_id_of

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import study  # noqa: E402


def run_smoke(tmp_path, data_dir, *extra):
    argv = ["--budget", "smoke", "--data_dir", str(data_dir), "--output_dir", str(tmp_path / "study"), *extra]
    return study.main(argv)


def check_images(folder):
    for name in ("training_curves.png", "scores.png"):
        with Image.open(folder / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 300


def test_smoke_study_writes_the_report_registry_rows_and_both_plots(tmp_path, data_dir):
    """Two rows at once (`--jobs 2`, one process each): the report keeps the rows' order and each row has its log."""
    report = run_smoke(tmp_path, data_dir, "--rows", "tsdae_posonly,bert_mlm", "--tasks", "stsb", "--jobs", "2")
    folder = report.parent
    text = report.read_text()
    positions = [text.index(f"| {row} |") for row in ("tsdae_posonly", "random_init", "bert_mlm", "random_bert")]
    assert positions == sorted(positions)
    assert "$ python run_pretraining.py" in (folder / "logs" / "bert_mlm.log").read_text()
    assert "## Pretrained − its random init" in text and "## Row − bert_mlm (same budget)" in text
    assert "spread" in text and "Wall time:" in text
    rows = {run_id_of(row): row for row in Registry(folder / "registry.md").rows}
    pretrained = [run_id for run_id in rows if run_id.startswith(("tsdae_posonly_", "bert_mlm_"))]
    assert len(pretrained) == 2 and {"scratch_H32L1C8", "scratch_bert_H32L1"} <= set(rows)
    for row in rows.values():
        assert "**STS-B:** " in row["Key GLUE Scores"] and " ± " in row["Key GLUE Scores"]
        assert "**SICK-R:** " in row["Zero-shot STS"]
    check_images(folder)

    def timings(report_text):
        return report_text[report_text.index("## Timings") : report_text.index("![training curves]")]

    rerun = run_smoke(tmp_path, data_dir, "--rows", "tsdae_posonly,bert_mlm", "--tasks", "stsb", "--jobs", "2")
    assert timings(rerun.read_text()) == timings(text)  # nothing redone; the first invocation's times are kept


def test_budget_seed_is_a_deprecated_alias_of_mrcogito(caplog):
    with caplog.at_level(logging.WARNING):
        assert study.parse_args(["--budget", "seed"]).budget == "mrcogito"
    assert "--budget seed is deprecated (removed in 0.3): use --budget mrcogito" in caplog.text
    caplog.clear()
    assert study.parse_args(["--budget", "mrcogito"]).budget == "mrcogito" and not caplog.text
    assert recipes.BUDGETS["mrcogito"].sizes["concept_num"] == 128  # the research log's H512 L6 C128


def test_extra_rows_parse_their_flags_and_overrides(tmp_path):
    name, row = study.parse_extra_row(
        "slots=--model_type perceiver_posonly_mlm --objective tsdae --config_overrides concept_num=16,a=1 "
        "--deletion_prob 0.9 --glue_flags '--pair_encoding concat'"
    )
    assert name == "slots" and row.model_type == "perceiver_posonly_mlm" and row.objective == "tsdae"
    assert row.pretrain_flags == ["--deletion_prob", "0.9"] and row.glue_flags == ["--pair_encoding", "concat"]
    assert study.merge_overrides("hidden_size=32,concept_num=8", row.config_overrides) == (
        "hidden_size=32,concept_num=16,a=1"
    )
    assert row.encoder_key != study.STUDY_ROWS["tsdae_posonly"].encoder_key  # its own random init
    _, read_once = study.parse_extra_row(
        "once=--model_type perceiver_posonly_mlm --token_read_layers 0 2 --max_steps 9"
    )
    assert read_once.encoder_key[1:3] == ("perceiver", (0, 2))  # read as run_pretraining.py reads its flags
    bixt = study.STUDY_ROWS["tsdae_posonly_bixt"]
    assert bixt.pretrain_flags == ["--recipe", "tsdae_posonly_bixt"] and bixt.encoder_key[1] == "bixt"
    assert read_once.encoder_key != study.STUDY_ROWS["perceiver_posonly_mlm"].encoder_key  # another encoder
    tregs = study.STUDY_ROWS["tsdae_posonly_tregs"]
    assert tregs.encoder_key == study.STUDY_ROWS["tsdae_posonly"].encoder_key  # a loss, not another encoder
    with pytest.raises(ValueError, match="give --model_type"):
        study.parse_extra_row("mine=--objective tsdae")
    with pytest.raises(ValueError, match="--rows \\['nope'\\] unknown"):
        study.select_rows(study.parse_args(["--rows", "nope"]))
    rows_file = tmp_path / "rows.json"
    rows_file.write_text('{"mine": {"model_type": "perceiver_mlm", "config_overrides": "concept_num=4"}}')
    rows = study.select_rows(study.parse_args(["--rows", "bert_mlm", "--rows_file", str(rows_file)]))
    assert list(rows) == ["bert_mlm", "mine"] and rows["mine"].config_overrides == "concept_num=4"


@pytest.mark.slow
def test_smoke_study_with_every_row_and_task(tmp_path, data_dir):
    report = run_smoke(tmp_path, data_dir)
    text = report.read_text()
    for row in (*study.STUDY_ROWS, "random_init", "random_init_bixt", "random_bert"):
        assert f"| {row} |" in text
    check_images(report.parent)


def test_a_rows_glue_flags_reach_run_glue_and_no_pretraining_regulariser_does(tmp_path):
    """Fine-tuning trains every row on the task loss alone: a pretraining regulariser (T-REGS, VICReg, Kendall-Gal) is
    a run_pretraining.py argument, never in the checkpoint, so nothing needs turning off; a row's own
    `--config_overrides` for run_glue.py go through as given."""
    runner = study.Study(study.parse_args(["--budget", "smoke", "--output_dir", str(tmp_path)]))
    runner.glue_dir = tmp_path / "glue"  # what prepare_data would set
    _, row = study.parse_extra_row(
        "mine=--model_type perceiver_mlm --glue_flags '--config_overrides classifier_dropout=0.2 --seeds 1'"
    )
    model = {"checkpoint": tmp_path, "from_scratch": False}
    flags = runner.glue_flags("mine", {**model, "row": row}, "stsb")
    assert flags.count("--config_overrides") == 1 and flags[-2:] == ["--seeds", "1"]
    assert flags[flags.index("--config_overrides") + 1] == "classifier_dropout=0.2"
    tregs = runner.glue_flags("tsdae_posonly_tregs", {**model, "row": study.STUDY_ROWS["tsdae_posonly_tregs"]}, "stsb")
    assert not any("concept_loss" in flag for flag in tregs)
    bert = runner.glue_flags("bert_mlm", {**model, "row": study.STUDY_ROWS["bert_mlm"]}, "stsb")
    assert "--config_overrides" not in bert  # not a field of BERT's config


@pytest.mark.parametrize("name", ["../../victim", "a/b", "..", ".", "x..y", "run name", ""])
def test_row_names_that_would_leave_the_output_folder_are_refused(tmp_path, name):
    """Issue 23.5: a row name became `<output_dir>/models/<name>/`, so `../../victim` wrote (and, with
    --overwrite_output_dir, replaced) a folder outside --output_dir."""
    if name:
        with pytest.raises(ValueError, match=r"--extra_row: row name .* is not allowed.*no '/', no '\.\.'"):
            study.parse_extra_row(f"{name}=--model_type perceiver_mlm")
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps({name: {"model_type": "perceiver_mlm"}}))
    with pytest.raises(ValueError, match=r"--rows_file .*rows.json: row name .* is not allowed"):
        study.select_rows(study.parse_args(["--rows", "", "--rows_file", str(rows_file)]))
    assert list(tmp_path.iterdir()) == [rows_file]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"mine": {"model_typ": "perceiver_mlm"}}', r"row 'mine': unknown key\(s\) \['model_typ'\]; the allowed keys"),
        ('{"mine": ["perceiver_mlm"]}', r"row 'mine' is a list, not a mapping of the keys \['model_type', "),
        ('[{"model_type": "perceiver_mlm"}]', r"holds a JSON list: it must be one object"),
        ('{"mine": {"objective": "tsdae"}}', r"row 'mine': give model_type"),
        ('{"mine": {"model_type": "perceiver_mlm", "pretrain_flags": "--x 1"}}', r"pretrain_flags must be a list of"),
        ('{"mine": {', r"cannot be read as JSON"),
    ],
)
def test_a_bad_rows_file_names_the_file_the_row_and_the_allowed_keys(tmp_path, content, message):
    """Issue 23.10: a misspelt key or a row that is not a mapping ended in a raw TypeError."""
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(content)
    with pytest.raises(ValueError, match=r"--rows_file .*rows.json.*" + message):
        study.select_rows(study.parse_args(["--rows", "", "--rows_file", str(rows_file)]))
