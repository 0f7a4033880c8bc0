"""Reliability (issue 13): each test is one failure class of 0.1.0 that must not come back: a resumed run that is
another run, NaN training, labels decided from one file, configs that cannot work, lost registry rows, replaced user
files, incomplete checkpoints, non-deterministic tokenizers."""

import json

import pytest
import test_pretraining
from conftest import tiny_config
from test_pretraining import run_main, tiny_args

import run_glue
import run_pretraining
from concept_encoder_training.run_folder import IDENTITY_FILE, incomplete_reason, last_complete_checkpoint
from modeling_concept_encoder import ConceptEncoderForMaskedLMPerceiverPosOnly

corpus = test_pretraining.corpus  # WikiText-2 lines as local files (a fixture)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny PosOnly MLM checkpoint with its tokenizer."""
    folder = tmp_path_factory.mktemp("checkpoint") / "tiny_posonly"
    ConceptEncoderForMaskedLMPerceiverPosOnly(tiny_config(vocab_size=len(tokenizer))).save_pretrained(folder)
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
    run_main(monkeypatch, args)  # and again: resumes the finished run from its checkpoint, keeping its id
    assert [path.name for path in (tmp_path / "outputs").iterdir()] == [folder.name]
    assert json.loads((folder / "run_summary.json").read_text())["run_id"] == first["run_id"]


def test_pretraining_never_writes_into_a_users_folder_without_the_flag(monkeypatch, tmp_path, corpus):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"mine": true}')
    with pytest.raises(ValueError, match=r"not empty and was not written by a run of this package.*config.json"):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run"))
    assert (tmp_path / "run" / "config.json").read_text() == '{"mine": true}'
