"""Training helpers for concept encoders under the stock `Trainer`: loss-component logging, concept diagnostics at
evaluation, a warm-up of the fixed concept-loss weight, weight-decay groups that spare the Kendall-Gal
log-variances, our model card in `push_to_hub`'s one commit, and a stop at the first non-finite loss or gradient."""

import os
import random
import tempfile
import time

import numpy as np
import torch
from safetensors import SafetensorError
from torch.utils.data import IterableDataset
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils.logging import tqdm

from collators.distill import CLEAN_PREFIX, TEACHER_EMBEDDING
from concept_encoder_training.diagnostics import ConceptStatistics
from concept_encoder_training.distill import DistillationLoss
from concept_encoder_training.ecosystem import complete_checkpoint
from concept_encoder_training.run_folder import checkpoint_bytes, model_bytes, write_failure_cause
from model_cards import write_model_card
from modeling_concept_encoder import IGNORE_INDEX

LOG_VARS_NAME = "concept_loss_log_vars"
ENCODER_SIDES = (("input_ids", "attention_mask"), ("input_ids_b", "attention_mask_b"))  # sentence pairs: both sides


class ConceptTrainer(Trainer):
    """The stock `Trainer`, except for these things.

    - The Kendall-Gal log-variances (`concept_loss_log_vars`) get no weight decay. Weight decay pulls parameters
      towards 0; for a log-variance sᵢ that means pulling every weight ½·exp(−sᵢ) back to ½ regardless of the data, a
      bias the uncertainty weighting is meant to learn away (Kendall & Gal treat sᵢ as free parameters), so they join
      biases and norms in the no-decay group.
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

    def __init__(self, *args, distillation: DistillationLoss | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.distillation = distillation
        self._distill_sums: dict[str, torch.Tensor] = {}
        self._distill_forwards = 0
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
        """The stock loss, or with `distillation` the distillation terms (class docstring). The student's sentence
        vector is `last_hidden_state.mean(dim=1)` of its encoder, the vector every consumer of the checkpoint reads."""
        if self.distillation is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        teacher = inputs.pop(TEACHER_EMBEDDING)
        clean = {key[len(CLEAN_PREFIX) :]: inputs.pop(key) for key in list(inputs) if key.startswith(CLEAN_PREFIX)}
        unwrapped = self.accelerator.unwrap_model(model)
        if clean:  # a joint objective: the head's loss on the noised input, the sentence vector from the clean one
            outputs = model(**inputs)
            concepts = unwrapped.base_model(**clean).last_hidden_state
            loss, parts = outputs.loss, {"task_loss": outputs.loss}
        else:
            outputs = model(**inputs)
            concepts = outputs.last_hidden_state  # [batch, concepts, D]
            loss, parts = 0, {}
        terms = self.distillation.terms(concepts.mean(dim=1), teacher)
        loss = loss + self.distillation.total(terms)
        parts.update(terms)
        config = unwrapped.config
        if not clean and config.concept_losses and config.concept_loss_weighting == "fixed":
            from modeling_concept_encoder import concept_loss_terms

            regularisers = concept_loss_terms(concepts, config)
            loss = loss + config.concept_loss_weight * sum(regularisers.values())
            parts.update(regularisers)
        if model.training:
            for name, value in parts.items():
                self._distill_sums[name] = self._distill_sums.get(name, 0) + value.detach().float()
            self._distill_forwards += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Adds the means of the distillation terms since the last training log as `distill/<name>`."""
        if "loss" in logs and self._distill_forwards:
            for name, total in self._distill_sums.items():
                logs[f"distill/{name}"] = round((total / self._distill_forwards).item(), 6)
            self._distill_sums, self._distill_forwards = {}, 0
        super().log(logs, *args, **kwargs)

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        return [name for name in super().get_decay_parameter_names(model) if name.split(".")[-1] != LOG_VARS_NAME]

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
    tensorboard), whose `on_log` would then run before `ConceptLossCallback` has added its values to the log.
    """
    trainer.callback_handler.callbacks.insert(0, callback)


class ConceptLossCallback(TrainerCallback):
    """Logs what the Trainer cannot see: the parts of a concept encoder's loss and the health of its concepts.

    - Every logging step: the mean, over the training forwards since the last log (gradient-accumulation micro-batches
      included), of `task_loss`, each concept term as `concept_loss/<name>` and each weight as `loss_weight/<name>`
      (`loss_weight/task` too). They are read from the model outputs by a forward hook registered in
      `on_train_begin`, since the Trainer only keeps `loss`.
    - Every evaluation: the concepts' effective rank in the research log's form (`eval_concept_effective_rank`), in the
      entropy form (`eval_concept_entropy_effective_rank`) and their mean absolute cosine (`eval_concept_mean_cosine`),
      measured on `eval_batch` (a dict with `input_ids` and `attention_mask`; pretraining's fixed 320 documents) or,
      without one, on the whole evaluation dataloader (GLUE's dev set, both sides of separately encoded pairs).
    - Optionally (`warmup_steps > 0`, `fixed` weighting only) the fixed concept-loss weight rises linearly from
      w/warmup_steps to w = `config.concept_loss_weight` over the first `warmup_steps` optimizer steps. The scaled
      value is set in the config at `on_step_begin` and the target restored at `on_step_end`, before the Trainer
      logs, evaluates or saves, so a saved config always holds the configured weight.

    The Trainer writes a log entry before callbacks see it (and evaluation metrics before `on_evaluate`), so the values
    are added in `on_log`, to the log and to the entry already in `state.log_history` (so `trainer_state.json` has
    them), and evaluation values also to the metrics `evaluate()` returns. For wandb and other integrations to get
    them, register with `add_callback_first(trainer, callback)`.
    """

    def __init__(self, eval_batch: dict[str, torch.Tensor] | None = None, warmup_steps: int = 0):
        if warmup_steps < 0:
            raise ValueError(f"ConceptLossCallback: warmup_steps={warmup_steps} must be >= 0.")
        if eval_batch is not None and "input_ids" not in eval_batch:
            raise ValueError("ConceptLossCallback: eval_batch needs 'input_ids' (and 'attention_mask').")
        self.eval_batch = eval_batch
        self.warmup_steps = warmup_steps
        self._hook = None
        self._sums: dict[str, torch.Tensor] = {}
        self._shares = 0  # Σ of the captured forwards' weights (`_capture`)
        self._target_weight = None
        self._eval_metrics: dict[str, float] = {}

    # ---- training: loss components -----------------------------------------------------------------------------

    def _capture(self, module, args, kwargs, output) -> None:
        """Forward hook: add the detached loss parts of a training forward to the running sums, each forward weighted
        as the model weights its loss: by its share of the step's labelled items when the Trainer passes
        `num_items_in_batch` (gradient accumulation, several processes), else 1; so the logged parts rebuild the
        logged loss."""
        if not module.training or getattr(output, "task_loss", None) is None:
            return
        labels, items = kwargs.get("labels"), kwargs.get("num_items_in_batch")
        share = 1.0
        if labels is not None and items is not None:
            share = (labels.ne(IGNORE_INDEX).sum() / torch.as_tensor(items, device=labels.device).clamp(min=1)).float()
        values = {"task_loss": output.task_loss}
        values.update({f"concept_loss/{name}": term for name, term in (output.concept_loss_terms or {}).items()})
        values.update({f"loss_weight/{name}": weight for name, weight in (output.loss_weights or {}).items()})
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0) + share * value.detach().float()
        self._shares += share

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._sums, self._shares = {}, 0
        if self._hook is None:
            self._hook = model.register_forward_hook(self._capture, with_kwargs=True)
        if self.warmup_steps:
            if model.config.concept_loss_weighting != "fixed":
                raise ValueError(
                    f"ConceptLossCallback(warmup_steps={self.warmup_steps}) warms up the fixed concept-loss weight, "
                    f"but config.concept_loss_weighting={model.config.concept_loss_weighting!r}: use 'fixed' or "
                    "warmup_steps=0."
                )
            self._target_weight = model.config.concept_loss_weight

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.warmup_steps and state.global_step < self.warmup_steps:
            model.config.concept_loss_weight = self._target_weight * (state.global_step + 1) / self.warmup_steps

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.warmup_steps:
            model.config.concept_loss_weight = self._target_weight

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.on_step_end(args, state, control, model=model)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _training_means(self) -> dict[str, float]:
        """Weighted means of the captured parts since the last call; empty when no training forward (or only
        forwards without a labelled item) ran."""
        if not float(self._shares):
            return {}
        means = {name: (total / self._shares).item() for name, total in self._sums.items()}
        self._sums, self._shares = {}, 0
        return means

    # ---- evaluation: concept diagnostics ------------------------------------------------------------------------

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
        """Training logs (they carry `loss`) get the loss parts; evaluation logs (`<prefix>_runtime`) the concept
        diagnostics, kept for `on_evaluate`."""
        added = {}
        if "loss" in logs:
            added = self._training_means()
        prefixes = [key[: -len("_runtime")] for key in logs if key.endswith("_runtime") and key != "train_runtime"]
        if prefixes:
            if self.eval_batch is None and eval_dataloader is None:
                raise ValueError("ConceptLossCallback: no eval_batch given and the Trainer has no eval dataloader.")
            batches = None if self.eval_batch is not None else eval_dataloader
            progress = batches is not None and not args.disable_tqdm and state.is_local_process_zero
            self._eval_metrics = self.concept_metrics(model, prefixes[0], batches, progress)
            added = self._eval_metrics
        logs.update(added)
        if state.log_history:
            state.log_history[-1].update(added)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics.update(self._eval_metrics)
        self._eval_metrics = {}
