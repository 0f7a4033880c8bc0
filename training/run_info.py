"""Run metadata every run records: the `H.. L.. C..` architecture string, run ids, the fields every
`run_summary.json` shares (date, machine, git commit, wandb location, output folder) and the file itself; and the
scripts' logging (`setup_logging`). A finished run is recorded by `finish.finish_run`."""

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import datasets
import transformers
from transformers import PretrainedConfig, TrainingArguments

SUMMARY_FILE = "run_summary.json"
TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
# Script arguments renamed in 0.2, old name → new, and so the run_summary.json and run_identity.json fields that
# record them: the old flag works with a warning until 0.3; a run folder that recorded the old field reads as new.
RENAMED_FIELDS = {"seed_protocol": "mrcogito_protocol"}


def architecture_of(config: PretrainedConfig) -> str:
    """The research log's "Architecture" cell, e.g. `H512 L6 C128` (width, layers, concepts); another transformers
    model (a baseline) as `H128 L2 (bert)`."""
    if getattr(config, "concept_num", None) is None:
        return f"H{config.hidden_size} L{config.num_hidden_layers} ({config.model_type})"
    return f"H{config.hidden_size} L{config.num_hidden_layers} C{config.concept_num}"


def timestamp(moment: datetime | None = None) -> str:
    """`20260208_211633`: the time part of run ids."""
    return (moment or datetime.now()).strftime(TIMESTAMP_FORMAT)


def run_id(*parts: str) -> str:
    """The research log's run-id form: parts joined by `_`, architecture strings without spaces, e.g.
    `run_id("perceiver_mlm", "H512 L6 C128", "20260208_211633")` → `perceiver_mlm_H512L6C128_20260208_211633`."""
    return "_".join(part.replace(" ", "") for part in parts)


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


def run_summary(
    kind: str, run_id: str, config: PretrainedConfig, output_dir: str | Path | None, wandb: str = "", **fields
) -> dict:
    """A `run_summary.json` (the experiment registry's schema): the fields every run records, then the kind's own
    `fields`. `date` is today's; `architecture` and `concept_num` come from `config`; `wandb` is the run's wandb
    location (`wandb_location`), '' without one; `output_dir` None for a run that writes no folder."""
    return {
        "kind": kind,
        "run_id": run_id,
        "date": datetime.now().strftime("%Y-%m-%d"),
        "architecture": architecture_of(config),
        "concept_num": getattr(config, "concept_num", None),
        **fields,
        "machine": socket.gethostname(),
        "wandb": wandb,
        "git_commit": git_commit(),
        "output_dir": None if output_dir is None else os.path.abspath(output_dir),
    }


def write_run_summary(output_dir: str | Path, summary: dict) -> Path:
    """Write `output_dir/run_summary.json` and return its path."""
    path = Path(output_dir, SUMMARY_FILE)
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return path


def current_field_names(record: dict) -> dict:
    """A run record written before a field was renamed (`RENAMED_FIELDS`), under the current names: an older run
    folder then resumes, and its scores compare, as the same run."""
    return {RENAMED_FIELDS.get(name, name): value for name, value in record.items()}


def read_run_summary(output_dir: str | Path) -> dict | None:
    """`output_dir/run_summary.json`, or None when there is none (or an unreadable one)."""
    try:
        return json.loads(Path(output_dir, SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def scratch_run_id(config) -> str:
    """The registry row id of a random-init baseline of `config`: `scratch_H128L2C32` for a concept encoder,
    `scratch_bert_H128L2` for another transformers model (run_glue.py and the zero-shot command share it)."""
    if getattr(config, "concept_num", None) is not None:
        return run_id("scratch", architecture_of(config))
    return run_id("scratch", config.model_type, f"H{config.hidden_size}L{config.num_hidden_layers}")


def setup_logging(training_args: TrainingArguments, logger: logging.Logger) -> None:
    """The logging of transformers' example scripts: the script's `logger` through one stdout handler on the root
    logger, at the process's level (`--log_level`, `--log_level_replica`), as are transformers and datasets. Both
    libraries print through their own handler; datasets' also propagated to the root handler, so each of its lines
    was printed twice: its propagation is stopped."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.disable_propagation()
    transformers.utils.logging.set_verbosity(log_level)
