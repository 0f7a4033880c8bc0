"""The one way a run is recorded when it ends, for `run_pretraining.py`, `run_glue.py` (each task, each seed's task,
and the seeds' mean) and the zero-shot command: `finish_run`."""

from pathlib import Path

from transformers import Trainer

from concept_encoder.training.registry import record_run
from concept_encoder.training.run_info import write_run_summary


def finish_run(
    summary: dict | None,
    output_dir: str | Path,
    registry_file: str | Path | None = None,
    trainer: Trainer | None = None,
    card: dict | None = None,
) -> None:
    """Record a finished run, in this order:
    1. `output_dir/run_summary.json` from `summary` (`run_info.run_summary`: the registry's source);
    2. our model card `output_dir/README.md` when `card` is given: `write_model_card`'s arguments (`summary`, and
       optionally `glue_results`, `eval_results`, `base_model`, `hyperparameters`), kept on the trainer (a
       `ConceptTrainer`) so that a push uploads the card with the weights; only a trained concept encoder gets one;
    3. the run's row in the experiment registry when `registry_file` is given (`registry.record_run`);
    4. with a `trainer`: the push to the Hub when its arguments ask for it (`--push_to_hub`: weights and card in one
       commit) and the end of its wandb run (one wandb run per run).
    Steps 1-3 are the main process's; a `summary` of None (nothing trained to record) skips them. A run without a
    trainer (zero-shot scoring, the mean over seeds) has no card, push or wandb run of its own."""
    main_process = trainer is None or trainer.is_world_process_zero()
    if summary is not None and main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        write_run_summary(output_dir, summary)
        if card is not None:
            options = dict(card)
            trainer.card_summary = options.pop("summary")
            trainer.card_glue_results = options.pop("glue_results", None)
            trainer.card_options = options
            trainer.create_model_card()
        if registry_file:
            record_run(output_dir, registry_file)
    if trainer is None:
        return
    if trainer.args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    if "wandb" in trainer.args.report_to:
        import wandb

        wandb.finish()
