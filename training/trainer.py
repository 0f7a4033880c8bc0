"""Training helpers for concept encoders under the stock `Trainer`: the training losses outside the model (concept
regularisers, their weighting and warm-up, distillation) with each part logged, concept diagnostics at evaluation, our
model card in `push_to_hub`'s one commit, and a stop at the first non-finite loss or gradient."""

import os
import random
import tempfile
import time

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import IterableDataset
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils.logging import tqdm

from concept_encoder.collators.distill import CLEAN_PREFIX, TEACHER_EMBEDDING
from concept_encoder.model_cards import write_model_card
from concept_encoder.modeling_concept_encoder import IGNORE_INDEX
from concept_encoder.training.diagnostics import ConceptStatistics
from concept_encoder.training.distill import DistillationLoss
from concept_encoder.training.ecosystem import complete_checkpoint
from concept_encoder.training.losses import ConceptLoss
from concept_encoder.training.run_folder import checkpoint_bytes, model_bytes, write_failure_cause

CONCEPT_LOSS_FILE = "concept_loss.safetensors"  # a checkpoint's Kendall-Gal log-variances, for resuming
ENCODER_SIDES = (("input_ids", "attention_mask"), ("input_ids_b", "attention_mask_b"))  # sentence pairs: both sides


class ConceptTrainer(Trainer):
    """The stock `Trainer`, except for these things.

    - Training losses outside the model (`compute_loss`): a `ConceptLoss` (concept regularisers on the head's
      `concept_states`, fixed or Kendall-Gal weighting, warm-up) and a `DistillationLoss`. Each part is logged at every
      logging step as the mean over the training forwards since the last log: `task_loss`, `concept_loss/<name>`,
      `loss_weight/<name>` (`loss_weight/task` too) and `distill/<name>`. The Kendall-Gal log-variances join the
      optimizer without weight decay and are saved in each checkpoint (`concept_loss.safetensors`) for resuming; with
      several processes their gradient is averaged as DDP averages the model's.
    - `create_model_card` writes our card (`model_cards`, from `card_summary`, the run's `run_summary.json`, and the
      optional `card_glue_results`) instead of the Trainer's draft. `push_to_hub` calls it before it uploads the
      output folder, so the card goes up with the weights in one commit (as TRL's trainers do).
    - Training stops at the first non-finite loss or gradient norm (`NonFiniteStopCallback`).
    - Resuming inside an epoch is exact (`CollateRandomness`), and a resumed finished run trains no further step.
    - A save that fails (read-only or full disk) keeps the model: it is saved to a temporary folder, named in the
      error (`save_model`).
    - Dataloaders pin memory only when the model trains on an accelerator (`dataloader_pin_memory` follows the
      device), so a CPU run is not warned at every step that pinning does nothing.
    - Every saved folder (`checkpoint-N` and the final one) of a concept encoder is also a sentence-transformers
      folder and carries every code file its config names (`_save`).
    """

    card_summary: dict | None = None
    card_glue_results: dict | None = None
    card_options: dict | None = None  # further `write_model_card` arguments: eval_results, base_model, hyperparameters

    def __init__(
        self,
        *args,
        distillation: DistillationLoss | None = None,
        concept_loss: ConceptLoss | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.distillation = distillation
        self.concept_loss = concept_loss.to(self.args.device) if concept_loss is not None else None
        self._part_sums: dict[str, torch.Tensor] = {}
        self._part_weight = 0.0  # Σ of the recorded forwards' shares (`_record_parts`)
        if distillation is not None:
            self.loss_is_scaled_for_ga = False  # every term is a mean over its micro-batch
        self.add_callback(NonFiniteStopCallback())
        if self.args.device.type == "cpu":  # pinned memory only speeds up copies to an accelerator
            self.args.dataloader_pin_memory = False  # (and torch warns at every dataloader on a CPU-only machine)
        self.collate_randomness = None  # the training collator's wrapper
        self._replay_from, self._skip_rng_restore = None, False  # a mid-epoch resume (CollateRandomness)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:  # the Trainer's "the latest checkpoint of output_dir", resolved here
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"resume_from_checkpoint=True: no checkpoint in {self.args.output_dir}.")
        self._replay_from, self._skip_rng_restore = resume_from_checkpoint, False
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def get_train_dataloader(self):
        """The stock training dataloader, its collator wrapped in a `CollateRandomness` (see `_save_rng_state`)."""
        collator = self.data_collator
        self.collate_randomness = self.data_collator = CollateRandomness(collator, self)
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = collator

    def _save_rng_state(self, output_dir: str) -> None:
        """The Trainer's `rng_state.pth`, and `collate_rng_state.pth`: the random state before the training
        collator's latest call, i.e. before the batch that accelerate's dataloader has already collated ahead of the
        next step (it reads one batch ahead). Resuming inside an epoch collates that batch from this state again."""
        super()._save_rng_state(output_dir)
        if self.collate_randomness is not None and self.collate_randomness.before_last_call is not None:
            torch.save(self.collate_randomness.before_last_call, os.path.join(output_dir, collate_rng_file(self.args)))

    def restore_rng_after_replay(self, checkpoint: str) -> None:
        """The checkpoint's state after its step (`rng_state.pth`), set once the batch collated ahead is collated
        again; the Trainer's own restore after the first resumed batches is then skipped."""
        super()._load_rng_state(checkpoint)
        self._skip_rng_restore = True

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if self._skip_rng_restore:  # already restored by CollateRandomness, before the first resumed batch
            self._skip_rng_restore = False
            return
        self._replay_from = None  # at an epoch boundary the Trainer restores before the first batch is drawn
        super()._load_rng_state(checkpoint)

    def replay_checkpoint(self) -> str | None:
        """The checkpoint whose first batch the collator must collate again (a resume inside an epoch), once."""
        checkpoint, self._replay_from = self._replay_from, None
        if checkpoint is None or self.args.ignore_data_skip or isinstance(self.train_dataset, IterableDataset):
            return None  # a streamed dataset's skipped batches are collated again on resume: the stock behaviour
        return checkpoint if os.path.isfile(os.path.join(checkpoint, collate_rng_file(self.args))) else None

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """No batch is drawn once `max_steps` is reached: the stock Trainer resumed a finished run inside its epoch
        and trained one step beyond `max_steps`."""
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return [], None
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """As `Trainer._save` (the final save and every `checkpoint-N`), then what a checkpoint folder carries beyond
        `save_pretrained`: the sentence-transformers files and the code files its config names
        (`ecosystem.complete_checkpoint`)."""
        super()._save(output_dir, state_dict)
        folder = output_dir or self.args.output_dir
        if self.args.should_save and os.path.isfile(os.path.join(folder, "config.json")):
            complete_checkpoint(folder)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """As `Trainer.save_model`; when writing fails (a read-only or full disk, found after training: an `OSError`,
        safetensors' error, or `torch.save`'s `RuntimeError` "unexpected pos"), the model and tokenizer still in
        memory are saved to a new temporary folder and the error names both folders, so the trained model is not lost
        with the process."""
        try:
            super().save_model(output_dir, _internal_call)
        except (OSError, RuntimeError, SafetensorError) as error:
            if not self.args.should_save:
                raise
            target = output_dir or self.args.output_dir
            needed = sum(model_bytes(self.model, self.processing_class).values())
            self._rescue_model(f"the model to {target}", write_failure_cause(target, error, needed), error)

    def _save_checkpoint(self, model, trial) -> None:
        """As the Trainer's; when writing fails (on a full disk torch says only `basic_ios::clear: iostream error`),
        the error names the checkpoint folder and the cause, and the model is rescued (`_rescue_model`). The
        half-written checkpoint has no completion marker (`run_identity.json`), so no resume picks it."""
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError, SafetensorError) as error:
            if not self.args.should_save:
                raise
            folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            needed = sum(checkpoint_bytes(self.model, self.processing_class).values())
            self._rescue_model(f"checkpoint {folder}", write_failure_cause(folder, error, needed), error)

    def _rescue_model(self, what: str, cause: str, error: BaseException) -> None:
        """After saving `what` failed: save the model and tokenizer still in memory to a new temporary folder, then
        raise an `OSError` naming what failed, its cause and the folder that holds the model now."""
        try:
            rescue = tempfile.mkdtemp(prefix="concept-encoder-rescued-")
            self.model.save_pretrained(rescue)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(rescue)
        except (OSError, RuntimeError, SafetensorError) as second:
            raise OSError(
                f"Could not save {what} ({error}): {cause}. Nor could the model be saved to a temporary folder "
                f"({second}): free some space or make the folder writable."
            ) from error
        raise OSError(
            f"Could not save {what} ({error}): {cause}. The model was saved to {rescue} instead: move it where it "
            "belongs (it loads with from_pretrained), then free space or make the folder writable."
        ) from error

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The stock loss, or with training losses (class docstring) the model's task loss for this micro-batch (the
        mean over its labelled items), the distillation terms, then the concept loss combining them with the
        regularisers of the concept states the model read, and that total given the micro-batch's share of the
        optimizer step as the model gives its own (`share_of_step`). The student's sentence vector is
        `last_hidden_state.mean(dim=1)` of its encoder, the vector every consumer of the checkpoint reads; a joint
        objective takes it from the clean input (`CLEAN_PREFIX`) and the head's loss from the noised one."""
        if self.distillation is None and self.concept_loss is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        teacher = inputs.pop(TEACHER_EMBEDDING, None)
        clean = {key[len(CLEAN_PREFIX) :]: inputs.pop(key) for key in list(inputs) if key.startswith(CLEAN_PREFIX)}
        unwrapped = self.accelerator.unwrap_model(model)
        outputs = model(**inputs)
        loss, labels = outputs.get("loss"), inputs.get("labels")  # loss: None for the encoder alone (distillation)
        parts = {} if loss is None else {"task_loss": loss.detach()}
        concepts = outputs.get("concept_states", outputs.get("last_hidden_state"))  # [batch, concepts, D]
        if self.distillation is not None:
            student = unwrapped.base_model(**clean).last_hidden_state if clean else concepts
            terms = self.distillation.terms(student.mean(dim=1), teacher)
            loss = self.distillation.total(terms) if loss is None else loss + self.distillation.total(terms)
            parts.update({f"distill/{name}": term.detach() for name, term in terms.items()})
        if self.concept_loss is not None and concepts is not None:  # concept states: training mode only
            present = labels is None or bool(labels.ne(IGNORE_INDEX).any())
            loss, concept_parts = self.concept_loss(loss, concepts, self.state.global_step, present)
            parts.update(concept_parts)
        share = 1.0
        if self.distillation is None and labels is not None and num_items_in_batch is not None:
            share = unwrapped.share_of_step(torch.ones((), device=loss.device), labels, num_items_in_batch)
            processes = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            loss = loss * share * processes  # as the stock compute_loss scales a model's own shared loss
        if model.training:
            self._record_parts(parts, share)
        return (loss, outputs) if return_outputs else loss

    def _record_parts(self, parts: dict[str, torch.Tensor], share) -> None:
        """Add a training forward's loss parts to the running sums, weighted by its share of the step's labelled
        items (1 without `num_items_in_batch`), so the logged parts rebuild the logged loss."""
        share = torch.as_tensor(share, dtype=torch.float32)
        for name, value in parts.items():
            self._part_sums[name] = self._part_sums.get(name, 0) + share.to(value.device) * value.float()
        self._part_weight += float(share)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Adds the weighted means of the loss parts since the last training log (class docstring)."""
        if "loss" in logs and self._part_weight:
            logs.update({name: (total / self._part_weight).item() for name, total in self._part_sums.items()})
            self._part_sums, self._part_weight = {}, 0.0
        super().log(logs, *args, **kwargs)

    @property
    def log_vars(self) -> torch.nn.Parameter | None:
        """The concept loss's Kendall-Gal log-variances, or None (no concept loss, or another weighting)."""
        return self.concept_loss.log_vars if self.concept_loss is not None else None

    def create_optimizer(self, model=None):
        """The stock optimizer, with the Kendall-Gal log-variances as one more parameter group without weight decay
        (class docstring)."""
        optimizer = super().create_optimizer(model)
        log_vars = self.log_vars
        if log_vars is not None and not any(p is log_vars for group in optimizer.param_groups for p in group["params"]):
            optimizer.add_param_group({"params": [log_vars], "weight_decay": 0.0})
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The stock step; with several processes, the log-variances' gradient (outside the DDP-wrapped model) is
        averaged over them at the step's last micro-batch, as DDP averages the model's."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        log_vars = self.log_vars
        if log_vars is not None and log_vars.grad is not None and self.accelerator.num_processes > 1:
            if self.accelerator.sync_gradients:
                log_vars.grad = self.accelerator.reduce(log_vars.grad, reduction="mean")
        return loss

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """As the Trainer's, and the Kendall-Gal log-variances (`concept_loss.safetensors`)."""
        super()._save_optimizer_and_scheduler(output_dir)
        log_vars = self.log_vars
        if log_vars is not None and self.args.should_save:
            save_file({"log_vars": log_vars.detach().cpu().contiguous()}, os.path.join(output_dir, CONCEPT_LOSS_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """As the Trainer's, after setting the log-variances from the checkpoint's `concept_loss.safetensors`."""
        log_vars = self.log_vars
        if checkpoint is not None and log_vars is not None:
            path = os.path.join(checkpoint, CONCEPT_LOSS_FILE)
            if not os.path.isfile(path):
                raise ValueError(
                    f"Resuming a Kendall-Gal run from {checkpoint}, which has no {CONCEPT_LOSS_FILE} (its log-variances): "
                    "it was saved by a run with other concept-loss flags; resume with that run's flags, or start over "
                    "with --overwrite_output_dir."
                )
            saved = load_file(path)["log_vars"]
            if saved.shape != log_vars.shape:
                raise ValueError(
                    f"{path} holds {saved.numel()} log-variances, this run's --concept_losses need {log_vars.numel()}: "
                    "resume with the checkpoint's concept-loss flags, or start over with --overwrite_output_dir."
                )
            with torch.no_grad():
                log_vars.copy_(saved)
        super()._load_optimizer_and_scheduler(checkpoint)

    def create_model_card(self, **kwargs) -> None:
        """`output_dir/README.md` from `card_summary`, with the Hub id in its loading snippet; the Trainer's draft
        (taking `kwargs`: language, tags, ...) when no summary was set, e.g. a push without training."""
        if self.card_summary is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            repo_id = self.hub_model_id or self.args.hub_model_id
            write_model_card(
                self.args.output_dir,
                self.card_summary,
                self.card_glue_results,
                repo_id=repo_id,
                **(self.card_options or {}),
            )


def collate_rng_file(args) -> str:
    """`collate_rng_state.pth`, or `collate_rng_state_<rank>.pth` per process (as the Trainer's `rng_state`)."""
    return "collate_rng_state.pth" if args.world_size <= 1 else f"collate_rng_state_{args.process_index}.pth"


def rng_states() -> dict:
    """The CPU random states a collator can draw from: Python's, NumPy's and torch's."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])


class CollateRandomness:
    """The training collator, made resumable inside an epoch.

    Random collators (MLM masking, TSDAE deletion) draw from the global random state, as dropout does, and
    accelerate's dataloader collates one batch ahead: when step k is saved, the batch of step k+1 was collated
    before step k's dropout, from a state the checkpoint's `rng_state.pth` (saved after step k) no longer holds. The
    stock Trainer restores that state only after it has drawn the first resumed batch (transformers issue #39215), so
    every mask and dropout after a resume came from another random stream than the uninterrupted run's.

    This wrapper remembers the state before each call (`before_last_call`, saved as `collate_rng_state.pth`); on the
    first call after a resume inside an epoch it collates from that state, then sets the checkpoint's `rng_state.pth`
    state, so the batch collated ahead and everything after it draw exactly what the uninterrupted run drew (the
    Trainer's own, later restore is skipped). Collation must happen in the main process (`dataloader_num_workers=0`,
    the default); with workers no state is recorded and resuming is as the stock Trainer's.
    """

    def __init__(self, collator, trainer: "ConceptTrainer"):
        self.collator = collator
        self.trainer = trainer
        self.before_last_call = None

    def __getstate__(self):  # dataloader workers get the collator alone (they neither record nor replay)
        return {**self.__dict__, "trainer": None}

    def __call__(self, features):
        if self.trainer is None or torch.utils.data.get_worker_info() is not None:
            return self.collator(features)
        checkpoint = self.trainer.replay_checkpoint()
        if checkpoint is not None:
            with safe_globals():
                states = torch.load(os.path.join(checkpoint, collate_rng_file(self.trainer.args)), weights_only=True)
            set_rng_states(states)
        self.before_last_call = rng_states()
        batch = self.collator(features)
        if checkpoint is not None:
            self.trainer.restore_rng_after_replay(checkpoint)
        return batch


class NonFiniteStopCallback(TrainerCallback):
    """Stops a run at the first optimizer step whose loss or gradient norm is NaN or infinite, before the optimizer
    applies it and before any checkpoint is written, by raising `FloatingPointError` with the step and the reason.

    The stock Trainer would carry on: its log replaces a NaN loss by the running mean (`logging_nan_inf_filter`),
    gradient clipping spreads one NaN over every weight, and every later checkpoint holds NaN. The loss of each
    training forward is read by a forward hook; the gradient norm is computed before each optimizer step (not under
    fp16, whose loss scaler skips steps with infinite gradients by design).
    """

    def __init__(self):
        self._hook = None
        self._reason = None

    def _capture(self, module, inputs, output) -> None:
        loss = getattr(output, "loss", None)
        if module.training and self._reason is None and loss is not None and not torch.isfinite(loss.detach()).all():
            self._reason = f"the loss is {loss.detach().float().sum().item()}"

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._reason = None
        if self._hook is None:
            self._hook = model.register_forward_hook(self._capture)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        reason = self._reason
        if reason is None and not args.fp16:
            gradients = [p.grad for p in model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(gradients) if gradients else None
            if norm is not None and not torch.isfinite(norm):
                reason = f"the gradient norm is {norm.item()}"
        if reason is not None:
            self.on_train_end(args, state, control)
            raise FloatingPointError(
                f"Training stopped at step {state.global_step + 1} of {state.max_steps}: {reason}. Nothing of this "
                f"step was applied or saved; the last checkpoint in {args.output_dir} (if any) is intact. Lower "
                "--learning_rate, check the data of this step, or use --max_grad_norm."
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


class TimeBudgetCallback(TrainerCallback):
    """Stops training after the first optimizer step that ends `minutes` after training began (a wall-time budget, so
    that recipes of different cost per step can be compared at equal time); the run then saves and reports as at
    `max_steps`. The budget counts this process's training only, not data preparation or evaluation."""

    def __init__(self, minutes: float):
        if minutes <= 0:
            raise ValueError(f"--max_train_minutes {minutes}: must be a positive number of minutes.")
        self.seconds = 60 * minutes
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.started >= self.seconds:
            control.should_training_stop = True


def add_callback_first(trainer: Trainer, callback: TrainerCallback) -> None:
    """Insert `callback` before every other callback of `trainer`.

    `Trainer(callbacks=...)` and `trainer.add_callback` append after the reporting integrations (wandb,
    tensorboard), whose `on_log` would then run before `ConceptDiagnosticsCallback` has added its values to the log.
    """
    trainer.callback_handler.callbacks.insert(0, callback)


class ConceptDiagnosticsCallback(TrainerCallback):
    """Logs what the Trainer cannot see at evaluation: the health of the concepts. Their effective rank in the research
    log's form (`eval_concept_effective_rank`), in the entropy form (`eval_concept_entropy_effective_rank`) and their
    mean absolute cosine (`eval_concept_mean_cosine`), measured on `eval_batch` (a dict with `input_ids` and
    `attention_mask`; pretraining's fixed 320 documents) or, without one, on the whole evaluation dataloader (GLUE's
    dev set, both sides of separately encoded pairs). The parts of the training loss are logged by `ConceptTrainer`.

    The Trainer writes a log entry before callbacks see it (and evaluation metrics before `on_evaluate`), so the values
    are added in `on_log`, to the log and to the entry already in `state.log_history` (so `trainer_state.json` has
    them), and also to the metrics `evaluate()` returns. For wandb and other integrations to get them, register with
    `add_callback_first(trainer, callback)`.
    """

    def __init__(self, eval_batch: dict[str, torch.Tensor] | None = None):
        if eval_batch is not None and "input_ids" not in eval_batch:
            raise ValueError("ConceptDiagnosticsCallback: eval_batch needs 'input_ids' (and 'attention_mask').")
        self.eval_batch = eval_batch
        self._eval_metrics: dict[str, float] = {}

    @torch.no_grad()
    def concept_metrics(
        self, model: torch.nn.Module, prefix: str = "eval", batches=None, progress: bool = False
    ) -> dict[str, float]:
        """Effective rank (the research log's and the entropy form) and mean cosine of the concepts of `batches` (an
        iterable of batches, e.g. a dataloader; default: the fixed `eval_batch`), both sides of sentence-pair batches
        included; with `progress`, a progress bar over the batches (a whole dev set takes as long as its evaluation)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        statistics = ConceptStatistics()
        batches = [self.eval_batch] if batches is None else batches
        if progress:
            batches = tqdm(batches, desc="Concept diagnostics", leave=False)
        for batch in batches:
            for ids, mask in ENCODER_SIDES:
                if ids in batch:
                    inputs = {"input_ids": batch[ids].to(device)}
                    if mask in batch:
                        inputs["attention_mask"] = batch[mask].to(device)
                    statistics.add(model.base_model(**inputs).last_hidden_state)  # [batch, concepts, hidden]
        model.train(was_training)
        return statistics.metrics(prefix)

    def on_log(self, args, state, control, logs=None, model=None, eval_dataloader=None, **kwargs):
        """Evaluation logs (`<prefix>_runtime`) get the concept diagnostics, kept for `on_evaluate`."""
        prefixes = [key[: -len("_runtime")] for key in logs if key.endswith("_runtime") and key != "train_runtime"]
        if prefixes:
            if self.eval_batch is None and eval_dataloader is None:
                raise ValueError(
                    "ConceptDiagnosticsCallback: no eval_batch given and the Trainer has no eval dataloader."
                )
            batches = None if self.eval_batch is not None else eval_dataloader
            progress = batches is not None and not args.disable_tqdm and state.is_local_process_zero
            self._eval_metrics = self.concept_metrics(model, prefixes[0], batches, progress)
            logs.update(self._eval_metrics)
            if state.log_history:
                state.log_history[-1].update(self._eval_metrics)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics.update(self._eval_metrics)
        self._eval_metrics = {}
