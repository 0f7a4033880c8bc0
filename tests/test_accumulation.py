"""transformers' loss convention (`num_items_in_batch`): gradient accumulation and multi-process training average
over the labelled items of the whole optimizer step, as one big batch does, not over per-micro-batch means."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT, tiny_config
from transformers import Trainer, TrainingArguments

from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderForSequenceClassification
from concept_encoder.training.trainer import ConceptTrainer

STEPS, GLOBAL_BATCH = 3, 16
TOLERANCE = dict(atol=1e-5, rtol=1e-4)  # float32 sums in another order


def mlm_rows(count: int = STEPS * GLOBAL_BATCH, seed: int = 0) -> list[dict]:
    """Rows of 4-20 tokens with 1 to length-1 labelled positions: micro-batches of one step hold different numbers
    of labelled tokens, the case where the mean of per-micro-batch means is wrong."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        length = int(torch.randint(4, 21, (1,), generator=generator))
        ids = torch.randint(5, 200, (length,), generator=generator)
        labelled = torch.rand(length, generator=generator) < float(torch.rand(1, generator=generator))
        labelled[int(torch.randint(length, (1,), generator=generator))] = True
        labels = torch.where(labelled, ids, torch.full_like(ids, -100))
        rows.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return rows


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Right padding: input_ids with 0, labels with -100."""
    length = max(len(row["input_ids"]) for row in rows)
    batch = {"input_ids": torch.zeros(len(rows), length, dtype=torch.long)}
    batch["attention_mask"] = torch.zeros_like(batch["input_ids"])
    batch["labels"] = torch.full_like(batch["input_ids"], -100)
    for index, row in enumerate(rows):
        size = len(row["input_ids"])
        batch["input_ids"][index, :size] = torch.tensor(row["input_ids"])
        batch["attention_mask"][index, :size] = 1
        batch["labels"][index, :size] = torch.tensor(row["labels"])
    return batch


def training_args(output_dir, batch: int, accumulation: int) -> TrainingArguments:
    """Plain SGD at a constant rate (Adam's first steps would magnify float noise into sign flips), rows in order."""
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=STEPS,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_pin_memory=False,
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        seed=0,
    )


def train(trainer_class, model, output_dir, batch: int, accumulation: int, rows) -> tuple[list[float], dict]:
    trainer = trainer_class(
        model=model, args=training_args(output_dir, batch, accumulation), train_dataset=rows, data_collator=collate
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def fresh_mlm() -> ConceptEncoderForMaskedLM:
    torch.manual_seed(0)
    return ConceptEncoderForMaskedLM(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


@pytest.mark.parametrize("trainer_class", [Trainer, ConceptTrainer])
def test_mlm_gradient_accumulation_equals_the_big_batch(tmp_path, trainer_class):
    rows = mlm_rows()
    big_losses, big_weights = train(trainer_class, fresh_mlm(), tmp_path / "big", GLOBAL_BATCH, 1, rows)
    losses, weights = train(trainer_class, fresh_mlm(), tmp_path / "accumulated", GLOBAL_BATCH // 2, 2, rows)
    assert len(losses) == len(big_losses) == STEPS
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(big_losses), **TOLERANCE)
    for name, tensor in big_weights.items():
        torch.testing.assert_close(weights[name], tensor, **TOLERANCE, msg=f"{name} differs after training")


def test_num_items_in_batch_gives_the_micro_batch_share_of_the_step_mean():
    """loss = Σ cross-entropy of the micro-batch / num_items_in_batch; a step with no labelled item gives 0, not
    NaN."""
    model = fresh_mlm().eval()
    batch = collate(mlm_rows(count=4))
    with torch.no_grad():
        output = model(**batch, num_items_in_batch=torch.tensor(50))
        labelled = batch["labels"] != -100
        summed = torch.nn.functional.cross_entropy(output.logits, batch["labels"][labelled], reduction="sum")
        torch.testing.assert_close(output.loss, summed / 50, **TOLERANCE)
        unlabelled = model(**{**batch, "labels": torch.full_like(batch["labels"], -100)}, num_items_in_batch=0)
    assert unlabelled.loss.item() == 0.0


def test_classifier_takes_num_items_in_batch():
    """Per-example losses follow the same convention: ignored labels (-100) count for nothing."""
    torch.manual_seed(0)
    model = ConceptEncoderForSequenceClassification(tiny_config(num_labels=3)).eval()
    batch = collate(mlm_rows(count=4))
    labels = torch.tensor([0, 2, -100, 1])
    with torch.no_grad():
        output = model(batch["input_ids"], batch["attention_mask"], labels=labels, num_items_in_batch=6)
        summed = torch.nn.functional.cross_entropy(output.logits, labels, reduction="sum")
    torch.testing.assert_close(output.loss, summed / 6, **TOLERANCE)
    assert ConceptEncoderForSequenceClassification.accepts_loss_kwargs and ConceptEncoderForMaskedLM.accepts_loss_kwargs


# Runs under torchrun (2 processes of 8) and alone (1 process of 16): argv = output folder, per-device batch.
DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    import torch

    sys.path[:0] = [os.environ["REPO_ROOT"], os.path.join(os.environ["REPO_ROOT"], "tests")]
    from test_accumulation import fresh_mlm, mlm_rows, train
    from transformers import Trainer

    torch.set_num_threads(1)
    output_dir, batch = sys.argv[1], int(sys.argv[2])
    losses, weights = train(Trainer, fresh_mlm(), output_dir, batch, 1, mlm_rows())
    if int(os.environ.get("RANK", 0)) == 0:
        torch.save(weights, os.path.join(output_dir, "weights.pt"))
        with open(os.path.join(output_dir, "losses.json"), "w") as f:
            json.dump(losses, f)
    """
)


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_equals_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    environment = {**os.environ, "REPO_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    runs = {
        "one": [sys.executable, str(script), str(tmp_path / "one"), str(GLOBAL_BATCH)],
        "two": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            str(script),
            str(tmp_path / "two"),
            str(GLOBAL_BATCH // 2),
        ],  # fmt: skip
    }
    for name, command in runs.items():
        (tmp_path / name).mkdir()
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    losses = {name: json.loads((tmp_path / name / "losses.json").read_text()) for name in runs}
    torch.testing.assert_close(torch.tensor(losses["two"]), torch.tensor(losses["one"]), **TOLERANCE)
    one, two = (torch.load(tmp_path / name / "weights.pt") for name in runs)
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, **TOLERANCE, msg=f"{name} differs between 1 and 2 processes")


# Runs under torchrun (2 processes): every rank saves the Kendall-Gal log-variances it trained.
DDP_KENDALL_GAL_SCRIPT = textwrap.dedent(
    """
    import os, sys

    import torch

    sys.path[:0] = [os.environ["REPO_ROOT"], os.path.join(os.environ["REPO_ROOT"], "tests")]
    from test_accumulation import collate, fresh_mlm, mlm_rows, training_args
    from concept_encoder.training.losses import ConceptLoss, ConceptLossArguments
    from concept_encoder.training.trainer import ConceptTrainer

    torch.set_num_threads(1)
    output_dir = sys.argv[1]
    arguments = ConceptLossArguments(concept_losses=["orthogonality"], concept_loss_weighting="kendall_gal")
    trainer = ConceptTrainer(
        model=fresh_mlm(), args=training_args(output_dir, 8, 1), train_dataset=mlm_rows(), data_collator=collate,
        concept_loss=ConceptLoss(arguments),
    )
    trainer.train()
    torch.save(trainer.concept_loss.log_vars.detach(), os.path.join(output_dir, f"log_vars_{os.environ['RANK']}.pt"))
    """
)


@pytest.mark.slow
def test_kendall_gal_log_variances_stay_equal_across_processes(tmp_path):
    """They live outside the DDP-wrapped model, so the trainer averages their gradient as DDP averages the model's:
    each process sees other batches, and without it each would learn its own weights."""
    script = tmp_path / "train.py"
    script.write_text(DDP_KENDALL_GAL_SCRIPT)
    environment = {**os.environ, "REPO_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518"]
    result = subprocess.run(
        [*command, str(script), str(tmp_path)], env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"log_vars_{rank}.pt") for rank in (0, 1))
    assert first.abs().min() > 0  # trained
    torch.testing.assert_close(first, second, **TOLERANCE)
