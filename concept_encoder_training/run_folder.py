"""Run folders, shared by both scripts: which run a folder holds, which checkpoints are complete, whose files are in it.

- `run_identity.json` records a run's id and what makes it that run (model, tokenizer, data, objective or task, seed
  settings). It is written into the output folder before training and into every checkpoint once the checkpoint is
  complete (with the size of each of its files), so it is also the checkpoint's completion marker: a save that was
  interrupted has no marker, or a marker whose files do not match, and is never resumed.
- A folder that holds the identity file is a run folder of this package; any other non-empty folder is the user's,
  and nothing in it is replaced without `--overwrite_output_dir`.
- A rerun into a run folder resumes only when it is the same run; otherwise it is refused, naming what differs.
"""

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

IDENTITY_FILE = "run_identity.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
INCOMPLETE_PREFIX = "incomplete-"
# A checkpoint written before run_identity.json existed (0.1.0) is complete when it holds all of these.
LEGACY_CHECKPOINT_FILES = ("config.json", "model.safetensors", "trainer_state.json", "optimizer.pt", "scheduler.pt")
BYTES_PER_PARAMETER = 12  # a checkpoint: fp32 weights (4 bytes) and Adam's two moments (8 bytes)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`: readers see the old or the new file,
    never half of one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_identity(folder: str | Path) -> dict | None:
    """The run identity recorded in `folder`, or None when it has none (or an unreadable one)."""
    path = Path(folder) / IDENTITY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def identity_hash(identity: dict) -> str:
    """Eight hex digits that change with any field of `identity` (names default output folders)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def differences(recorded: dict, identity: dict) -> list[str]:
    """`["task_name: 'mrpc' recorded, 'rte' now", ...]` for every field that differs."""
    return [
        f"{name}: {recorded.get(name)!r} recorded, {identity.get(name)!r} now"
        for name in sorted(recorded.keys() | identity.keys())
        if recorded.get(name) != identity.get(name)
    ]


def check_same_run(recorded: dict, identity: dict, where: str, fix: str) -> None:
    """Raise `ValueError` naming every field in which this run differs from the one recorded in `where`."""
    changed = differences(recorded.get("identity", {}), identity)
    if changed:
        raise ValueError(
            f"{where} holds another run ({recorded.get('run_id')}), so it cannot be resumed by this one: "
            f"{'; '.join(changed)}. {fix}"
        )


def checkpoint_files(folder: Path) -> dict[str, int]:
    """Every file in a checkpoint (relative path → size), the identity file excepted."""
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != IDENTITY_FILE and not path.name.endswith(".tmp")
    }


def incomplete_reason(checkpoint: str | Path) -> str | None:
    """Why `checkpoint` is not a complete checkpoint, or None when it is."""
    checkpoint = Path(checkpoint)
    marker = read_identity(checkpoint)
    if marker is None:
        if (checkpoint / IDENTITY_FILE).exists():
            return f"its {IDENTITY_FILE} is unreadable"
        missing = [name for name in LEGACY_CHECKPOINT_FILES if not (checkpoint / name).is_file()]
        if (checkpoint / "config.json").is_file() and not missing:
            return None  # written before completion markers existed, with every file a resume needs
        return f"it has no {IDENTITY_FILE} (the save did not finish)" + (f" and lacks {missing}" if missing else "")
    expected, found = marker.get("files", {}), checkpoint_files(checkpoint)
    wrong = sorted(name for name, size in expected.items() if found.get(name) != size)
    if wrong:
        return f"files {wrong} are missing or of another size than when it was saved"
    return None


def checkpoints_of(folder: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `folder`, newest (highest N) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and CHECKPOINT_PATTERN.match(path.name)]
    return sorted(found, key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)), reverse=True)


def last_complete_checkpoint(folder: str | Path, quarantine: bool = True) -> Path | None:
    """The newest complete checkpoint of `folder`. Incomplete ones are skipped with a warning and, with `quarantine`
    (the main process), renamed `incomplete-checkpoint-N` so that neither the Trainer nor a later run picks them."""
    for checkpoint in checkpoints_of(folder):
        reason = incomplete_reason(checkpoint)
        if reason is None:
            return checkpoint
        message = f"Skipping {checkpoint}: it is incomplete ({reason})."
        if quarantine:
            target = checkpoint.with_name(INCOMPLETE_PREFIX + checkpoint.name)
            suffix = 1
            while target.exists():
                target, suffix = checkpoint.with_name(f"{INCOMPLETE_PREFIX}{checkpoint.name}.{suffix}"), suffix + 1
            checkpoint.rename(target)
            message += f" Kept as {target.name}; delete it when it is not needed."
        logger.warning(message)
    return None


class RunIdentityCallback(TrainerCallback):
    """Marks every checkpoint complete once the Trainer has written all of it: `run_identity.json` with the run's
    id, identity and the size of every file, written last and atomically."""

    def __init__(self, record: dict):
        self.record = record

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            write_json_atomic(checkpoint / IDENTITY_FILE, {**self.record, "files": checkpoint_files(checkpoint)})


def prepare_output_dir(
    folder: str | Path,
    record: dict,
    overwrite: bool,
    do_train: bool,
    resume_from_checkpoint: str | None = None,
    main_process: bool = True,
) -> tuple[dict, str | None]:
    """Decide what a run does with its output folder; returns `(record, checkpoint to resume or None)`.

    `record` is `{"run_id": ..., "script": ..., "identity": {...}}` for a new run; when the folder already holds the
    same run it resumes from the last complete checkpoint and keeps the recorded run id (a resumed run stays one
    run). Refused with a message:
    - a run folder of another run, unless `overwrite` (its checkpoints are removed and the run starts over);
    - a non-empty folder that is not a run folder (a user's, or a 0.1.0 run that did not record its identity), unless
      `overwrite`, which names the files it holds;
    - `resume_from_checkpoint` of another run, or an incomplete one.
    Only the main process writes (the identity file, quarantined checkpoints)."""
    folder = Path(folder)
    record = {**record, "identity": json.loads(json.dumps(record["identity"]))}  # compared as it is stored
    fix = f"Give another --output_dir, or --overwrite_output_dir to start over in {folder}."
    recorded = read_identity(folder)
    entries = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    same = recorded is not None and not differences(recorded.get("identity", {}), record["identity"])
    if recorded is not None and not same and not overwrite:
        check_same_run(recorded, record["identity"], str(folder), fix)
    if recorded is None and entries and not overwrite:
        raise ValueError(
            f"Output folder {folder} is not empty and was not written by a run of this package (no {IDENTITY_FILE}; "
            f"it holds {entries[:10]}{' ...' if len(entries) > 10 else ''}), so its files could be replaced: give "
            "another --output_dir, or --overwrite_output_dir to write into it anyway (a 0.1.0 run folder: "
            "--overwrite_output_dir --resume_from_checkpoint PATH resumes one of its checkpoints)."
        )
    if same and not overwrite:
        record = {**record, "run_id": recorded.get("run_id", record["run_id"])}
    elif entries:
        logger.warning(
            f"--overwrite_output_dir: starting over in {folder}; files it holds that this run writes are replaced "
            f"(it holds {entries})."
        )
        if recorded is not None and main_process and not resume_from_checkpoint:
            for checkpoint in checkpoints_of(folder):  # the previous run's: this run numbers its own from 0
                shutil.rmtree(checkpoint)
    checkpoint = None
    if resume_from_checkpoint:
        checkpoint = Path(resume_from_checkpoint)
        reason = incomplete_reason(checkpoint) if checkpoint.is_dir() else "it does not exist"
        if reason is not None:
            raise ValueError(f"--resume_from_checkpoint {checkpoint} cannot be resumed: {reason}.")
        marker = read_identity(checkpoint)
        if marker is None:
            logger.warning(f"{checkpoint} records no run identity (0.1.0): resuming it without checking it.")
        else:
            check_same_run(marker, record["identity"], str(checkpoint), "Resume a checkpoint of this run.")
            record = {**record, "run_id": marker.get("run_id", record["run_id"])}
    elif do_train and same and not overwrite:
        checkpoint = last_complete_checkpoint(folder, quarantine=main_process)
    if main_process:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / IDENTITY_FILE, record)
        except OSError as error:
            raise OSError(
                f"Output folder {folder} cannot be written ({error}): give a writable --output_dir."
            ) from error
    return record, None if checkpoint is None else str(checkpoint)


def check_room(folder: str | Path, num_parameters: int) -> None:
    """Fail before training when `folder` has no room for one checkpoint (weights and Adam's moments), rather than
    after training, when the model would be lost."""
    needed, free = num_parameters * BYTES_PER_PARAMETER, shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            f"Output folder {folder} has {free / 2**20:.1f} MiB free, a checkpoint of this model needs about "
            f"{needed / 2**20:.1f} MiB: free some space or give another --output_dir."
        )
