"""ConceptTrainer and ConceptDiagnosticsCallback in short real Trainer runs on a tiny MLM model: training losses
outside the model and their logged parts, Kendall-Gal state resumed, exact resume, a run stopped at its first
non-finite loss, and a model kept when a save fails."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers.trainer
from conftest import tiny_config
from transformers import TrainerCallback, TrainingArguments

from concept_encoder.collators import DataCollatorForConceptMLM, DataCollatorForTSDAE
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.training.losses import ConceptLoss, ConceptLossArguments
from concept_encoder.training.run_folder import incomplete_reason
from concept_encoder.training.trainer import (
    CONCEPT_LOSS_FILE,
    ConceptDiagnosticsCallback,
    ConceptTrainer,
    add_callback_first,
)

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
    return ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer), **overrides))


def concept_loss(**arguments) -> ConceptLoss:
    return ConceptLoss(ConceptLossArguments(concept_losses=LOSSES, **arguments))


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
def test_trainer_logs_every_loss_part_and_the_callback_the_effective_rank(
    tokenizer, mlm_features, tmp_path, accumulation
):
    model = tiny_mlm(tokenizer)
    trainer = ConceptTrainer(
        model=model,
        args=arguments(tmp_path, gradient_accumulation_steps=accumulation),
        train_dataset=mlm_features[:80],
        eval_dataset=mlm_features[80:],
        data_collator=DataCollatorForConceptMLM(tokenizer),
        callbacks=[recorder := LogRecorder()],
        concept_loss=concept_loss(
            concept_loss_weighting="fixed", concept_loss_weight=0.1, concept_loss_warmup_steps=10
        ),
    )
    add_callback_first(trainer, ConceptDiagnosticsCallback())
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
    assert not any(key.startswith("concept_loss") for key in saved)  # the config holds no training state

    metrics = trainer.evaluate()
    assert all(name in metrics for name in EVAL_METRICS)


def test_fixed_eval_batch_gives_the_same_diagnostics(tokenizer, mlm_features):
    model = tiny_mlm(tokenizer).train()
    batch = tokenizer.pad(mlm_features[:8], return_tensors="pt")
    callback = ConceptDiagnosticsCallback(eval_batch=dict(batch))
    first, second = callback.concept_metrics(model), callback.concept_metrics(model)
    assert first == second and model.training
    assert set(first) == set(EVAL_METRICS)


def test_kendall_gal_log_variances_train_without_weight_decay_and_resume_from_the_checkpoint(
    tokenizer, mlm_features, tmp_path
):
    def trainer_for(max_steps: int) -> ConceptTrainer:
        return ConceptTrainer(
            model=tiny_mlm(tokenizer),
            args=arguments(tmp_path, max_steps=max_steps, eval_strategy="no", save_steps=3),
            train_dataset=mlm_features,
            data_collator=DataCollatorForConceptMLM(tokenizer),
            concept_loss=concept_loss(concept_loss_weighting="kendall_gal"),
        )

    trainer = trainer_for(3)
    trainer.train()
    log_vars = trainer.concept_loss.log_vars
    assert log_vars.detach().abs().min() > 0  # learned
    group = next(g for g in trainer.optimizer.param_groups if any(p is log_vars for p in g["params"]))
    assert group["weight_decay"] == 0.0 and len(group["params"]) == 1
    assert (tmp_path / "checkpoint-3" / CONCEPT_LOSS_FILE).is_file()
    assert not any("concept_loss" in key for key in json.loads((tmp_path / "checkpoint-3" / "config.json").read_text()))

    resumed = trainer_for(3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))  # a finished run: no further step
    assert torch.equal(resumed.concept_loss.log_vars, log_vars)  # restored as saved
    (tmp_path / "checkpoint-3" / CONCEPT_LOSS_FILE).unlink()
    with pytest.raises(ValueError, match=f"no {CONCEPT_LOSS_FILE}"):
        trainer_for(3).train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))


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


def assert_rescued(error: OSError, model, with_tokenizer: bool = False) -> None:
    """The folder a failed save names (`... saved to FOLDER instead`) holds `model` exactly (and its tokenizer); it is
    removed afterwards."""
    rescue = Path(re.search(r"saved to (\S+) instead", str(error)).group(1))
    try:
        again = ConceptEncoderForMaskedLM.from_pretrained(rescue)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
        assert not with_tokenizer or (rescue / "tokenizer.json").is_file()
    finally:
        shutil.rmtree(rescue)


def one_step_mlm_trainer(output, tokenizer, wikitext_lines, **saving) -> ConceptTrainer:
    """A ConceptTrainer of one step of a tiny MLM on 8 WikiText lines into `output`, with `saving` (the
    TrainingArguments of its checkpoints): the full-disk tests' run."""
    args = TrainingArguments(
        output_dir=str(output), max_steps=1, per_device_train_batch_size=4, report_to="none", use_cpu=True,
        disable_tqdm=True, **saving,
    )  # fmt: skip
    data = [tokenizer(line, truncation=True, max_length=32) for line in wikitext_lines[:8]]
    return ConceptTrainer(
        model=ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer))), args=args, train_dataset=data,
        processing_class=tokenizer, data_collator=DataCollatorForConceptMLM(tokenizer),
    )  # fmt: skip


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
    trainer = one_step_mlm_trainer(output, tokenizer, wikitext_lines, save_strategy="no")
    model = trainer.model
    trainer.train()
    save = type(model).save_pretrained

    def disk_full_in_output(self, save_directory, *args, **kwargs):
        if Path(save_directory) == output:
            raise error
        return save(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(type(model), "save_pretrained", disk_full_in_output)
    with pytest.raises(OSError, match=rf"Could not save the model to .*run \({message}") as failure:
        trainer.save_model()
    monkeypatch.undo()
    assert_rescued(failure.value, model, with_tokenizer=True)


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


def test_a_checkpoint_save_on_a_full_disk_names_the_folder_and_the_cause(
    monkeypatch, tmp_path, tokenizer, wikitext_lines
):
    """Issue 23.7: a disk that filled during a checkpoint save gave torch's `basic_ios::clear: iostream error`, with
    neither the folder nor the cause named and nothing rescued."""
    output = tmp_path / "run"
    trainer = one_step_mlm_trainer(output, tokenizer, wikitext_lines, save_strategy="steps", save_steps=1)
    model = trainer.model
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
    monkeypatch.undo()
    assert_rescued(failure.value, model)
    assert incomplete_reason(output / "checkpoint-1") is not None  # a resume skips the half-written checkpoint
