"""Run folders (`training/run_folder.py`): which checkpoints are complete, and the room check made
before training."""

import json
import shutil

import pytest
from conftest import tiny_config

from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.training.run_folder import (
    IDENTITY_FILE,
    check_room,
    incomplete_reason,
    last_complete_checkpoint,
)


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
