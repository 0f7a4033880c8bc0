"""Run metadata both scripts record: the code's git commit and the wandb run's location."""

import subprocess
from pathlib import Path

from transformers import TrainingArguments


def git_commit() -> str:
    """Short sha of the code that ran, or '' outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def wandb_location(training_args: TrainingArguments) -> str:
    """The wandb run's URL, or its local folder for an offline run (sync it later with `wandb sync FOLDER`)."""
    if "wandb" not in training_args.report_to:
        return ""
    import wandb

    if wandb.run is None:
        return ""
    return wandb.run.url or str(Path(wandb.run.dir).parent)
