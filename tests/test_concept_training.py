"""ConceptLossCallback and ConceptTrainer in short real Trainer runs on a tiny MLM model."""

import json
import os
from pathlib import Path

import pytest
import torch
import transformers.trainer
from conftest import tiny_config
from transformers import TrainerCallback, TrainingArguments

from collators import DataCollatorForConceptMLM
from concept_encoder_training.trainer import ConceptLossCallback, ConceptTrainer, add_callback_first
from modeling_concept_encoder import ConceptEncoderForMaskedLM

LOSSES = ["orthogonality", "vicreg"]
COMPONENTS = [
    "task_loss",
    "concept_loss/orthogonality",
    "concept_loss/vicreg",
    "loss_weight/task",
    "loss_weight/orthogonality",
    "loss_weight/vicreg",
]
EVAL_METRICS = ["eval_concept_effective_rank", "eval_concept_entropy_effective_rank", "eval_concept_mean_cosine"]


class LogRecorder(TrainerCallback):
    """Stands in for a reporting integration (wandb): records every log it is shown."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def tiny_mlm(tokenizer, **overrides) -> ConceptEncoderForMaskedLM:
    torch.manual_seed(0)
    return ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer), concept_losses=LOSSES, **overrides))


def arguments(output_dir, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir),
        max_steps=5,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        weight_decay=0.01,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=5,
        save_strategy="steps",
        save_steps=5,
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


@pytest.fixture(scope="module")
def mlm_features(tokenizer, wikitext_lines):
    return [dict(tokenizer(line, truncation=True, max_length=32)) for line in wikitext_lines[:96]]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_callback_logs_every_component_and_the_effective_rank(tokenizer, mlm_features, tmp_path, accumulation):
    model = tiny_mlm(tokenizer, concept_loss_weighting="fixed", concept_loss_weight=0.1)
    trainer = ConceptTrainer(
        model=model,
        args=arguments(tmp_path, gradient_accumulation_steps=accumulation),
        train_dataset=mlm_features[:80],
        eval_dataset=mlm_features[80:],
        data_collator=DataCollatorForConceptMLM(tokenizer),
        callbacks=[recorder := LogRecorder()],
    )
    add_callback_first(trainer, ConceptLossCallback(warmup_steps=10))
    trainer.train()

    history = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())["log_history"]
    train_logs = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in train_logs] == [1, 2, 3, 4, 5]
    for entry in train_logs:
        assert all(name in entry for name in COMPONENTS), sorted(entry)
        # the warm-up: weight 0.1 * step / 10 during step `step`
        assert entry["loss_weight/orthogonality"] == pytest.approx(0.01 * entry["step"], rel=1e-5)
        concept_part = entry["concept_loss/orthogonality"] + entry["concept_loss/vicreg"]
        expected = entry["task_loss"] + entry["loss_weight/vicreg"] * concept_part
        assert entry["loss"] == pytest.approx(expected, rel=1e-4)  # the Trainer's own loss, rebuilt from the parts
    eval_log = next(entry for entry in history if "eval_loss" in entry)
    assert all(name in eval_log for name in EVAL_METRICS)
    assert 1.0 <= eval_log["eval_concept_effective_rank"] <= model.config.concept_num
    assert 0.0 <= eval_log["eval_concept_mean_cosine"] <= 1.0

    shown = [entry for entry in recorder.logs if "loss" in entry or "eval_loss" in entry]
    assert all(name in shown[0] for name in COMPONENTS) and all(name in shown[-1] for name in EVAL_METRICS)
    saved = json.loads((tmp_path / "checkpoint-5" / "config.json").read_text())
    assert saved["concept_loss_weight"] == 0.1 and model.config.concept_loss_weight == 0.1  # warm-up left no trace

    metrics = trainer.evaluate()
    assert all(name in metrics for name in EVAL_METRICS)


def test_fixed_eval_batch_gives_the_same_diagnostics(tokenizer, mlm_features):
    model = tiny_mlm(tokenizer).train()
    batch = tokenizer.pad(mlm_features[:8], return_tensors="pt")
    callback = ConceptLossCallback(eval_batch=dict(batch))
    first, second = callback.concept_metrics(model), callback.concept_metrics(model)
    assert first == second and model.training
    assert set(first) == set(EVAL_METRICS)


def test_warmup_needs_fixed_weighting(tokenizer, mlm_features, tmp_path):
    trainer = ConceptTrainer(
        model=tiny_mlm(tokenizer, concept_loss_weighting="kendall_gal"),
        args=arguments(tmp_path, max_steps=1, eval_strategy="no", save_strategy="no"),
        train_dataset=mlm_features,
        data_collator=DataCollatorForConceptMLM(tokenizer),
        callbacks=[ConceptLossCallback(warmup_steps=3)],
    )
    with pytest.raises(ValueError, match="concept_loss_weighting='kendall_gal'"):
        trainer.train()


def test_concept_trainer_keeps_log_variances_out_of_weight_decay(tokenizer, mlm_features, tmp_path):
    model = tiny_mlm(tokenizer, concept_loss_weighting="kendall_gal")
    trainer = ConceptTrainer(model=model, args=arguments(tmp_path, eval_strategy="no"), train_dataset=mlm_features)
    decayed = trainer.get_decay_parameter_names(model)
    assert "concept_loss_log_vars" not in decayed and "encoder.concepts" in decayed
    trainer.create_optimizer()
    group = next(
        g for g in trainer.optimizer.param_groups if any(p is model.concept_loss_log_vars for p in g["params"])
    )
    assert group["weight_decay"] == 0.0


def test_push_to_hub_uploads_our_model_card_with_the_weights_in_one_commit(tokenizer, tmp_path, monkeypatch):
    """`push_to_hub` calls `create_model_card` before its one `upload_folder`: the folder it uploads must already
    hold our card (not the Trainer's draft). The Hub is replaced by a recorder of upload_folder calls."""
    commits = []

    class RecordingApi:
        def upload_folder(self, folder_path, **kwargs):
            files = sorted(os.listdir(folder_path))
            commits.append({"files": files, "card": Path(folder_path, "README.md").read_text(), **kwargs})

    monkeypatch.setattr(transformers.trainer, "hf_api", RecordingApi)
    args = arguments(tmp_path, eval_strategy="no")
    trainer = ConceptTrainer(model=tiny_mlm(tokenizer), args=args, processing_class=tokenizer)
    trainer.hub_model_id = "me/tiny-concept-encoder"  # what init_hf_repo sets when push_to_hub=True
    trainer.card_summary = {
        "run_id": "perceiver_mlm_H32L2C8_20260101_000000",
        "objective": "mlm",
        "effective_rank": 3.25,
    }
    trainer.push_to_hub(commit_message="End of training")

    (commit,) = commits
    assert commit["repo_id"] == "me/tiny-concept-encoder" and commit["commit_message"] == "End of training"
    assert {"README.md", "config.json", "model.safetensors", "modeling_concept_encoder.py"} <= set(commit["files"])
    card = commit["card"]
    assert 'from_pretrained("me/tiny-concept-encoder", trust_remote_code=True)' in card
    assert "perceiver_mlm_H32L2C8_20260101_000000" in card and "3.2 / 8 (41%)" in card
    assert "generated automatically" not in card  # the Trainer's draft card did not replace ours
