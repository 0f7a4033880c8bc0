"""Run folders, shared by both scripts: which run a folder holds, which checkpoints are complete, whose files are in it.

- `run_identity.json` records a run's id and what makes it that run (model, tokenizer, data, objective or task, seed
  settings). It is written into the output folder before training and into every checkpoint once the checkpoint is
  complete (with the size of each of its files), so it is also the checkpoint's completion marker: a save that was
  interrupted has no marker, or a marker whose files do not match, and is never resumed.
- A folder that holds the identity file is a run folder of this package; any other non-empty folder is the user's,
  and nothing in it is replaced without `--overwrite_output_dir`.
- A rerun into a run folder resumes only when it is the same run; otherwise it is refused, naming what differs.
- While a run is alive it holds the folder's lock (`_run.lock`, an OS file lock through `filelock`, with the
  holder's process id in `_run.pid`): a second run into the same folder is refused naming that process. The OS
  releases the lock when the process ends in any way (SIGKILL included), so a dead run's lock never blocks; a
  `_run.pid` it left behind is replaced by the next run. Hub uploads skip both files (`_*`).
"""

import errno
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from transformers import TrainerCallback

from concept_encoder.training.run_info import current_field_names

logger = logging.getLogger(__name__)

IDENTITY_FILE = "run_identity.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
INCOMPLETE_PREFIX = "incomplete-"
LOCK_FILE, PID_FILE = "_run.lock", "_run.pid"  # the live run's lock and its process id (`hold_run_lock`)
# A checkpoint written before run_identity.json existed (0.1.0) is complete when it holds all of these.
LEGACY_CHECKPOINT_FILES = ("config.json", "model.safetensors", "trainer_state.json", "optimizer.pt", "scheduler.pt")
OPTIMIZER_STATES = 2  # AdamW keeps two moments per trainable parameter, each of the parameter's size
RNG_STATE_FILES = 2  # the Trainer's rng_state.pth and ConceptTrainer's collate_rng_state.pth
SMALL_FILES_BYTES = 2**20  # config.json, trainer_state.json, scheduler.pt, training_args.bin: a few KB each


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`: readers see the old or the new file,
    never half of one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_identity(folder: str | Path) -> dict | None:
    """The run identity recorded in `folder` (under the current field names), or None when it has none (or an
    unreadable one)."""
    path = Path(folder) / IDENTITY_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if "identity" in record:
        record["identity"] = current_field_names(record["identity"])
    return record


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
    lock_files = (LOCK_FILE, PID_FILE)  # this run's own lock (`hold_run_lock`)
    entries = sorted(path.name for path in folder.iterdir() if path.name not in lock_files) if folder.is_dir() else []
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


class RunFolderInUseError(RuntimeError):
    """Another live run holds the output folder's lock."""


_lock_scopes: list[list[tuple[FileLock, Path]]] = []  # the locks taken in each `releases_run_locks` call
_unscoped_locks: list[FileLock] = []  # held until the process ends (a FileLock is released when collected)


def releases_run_locks(function):
    """Decorate a script's entry point: every lock `hold_run_lock` takes during the call is released when it returns
    or raises (so a run called again in the same process, as tests and the study do, can take its folder again)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        held = []
        _lock_scopes.append(held)
        try:
            return function(*args, **kwargs)
        finally:
            _lock_scopes.remove(held)
            for lock, pid_file in reversed(held):
                if read_pid(pid_file) == os.getpid():
                    pid_file.unlink(missing_ok=True)
                lock.release()

    return wrapper


def read_pid(pid_file: Path) -> int | None:
    """The process id recorded in `pid_file`, or None."""
    try:
        return int(pid_file.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def hold_run_lock(folder: str | Path) -> None:
    """Take `folder`'s lock for the rest of the enclosing `releases_run_locks` call (creating the folder), and record
    this process's id beside it; raise `RunFolderInUseError` naming the process that holds it. Without an enclosing
    call the lock lasts until the process ends."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"Output folder {folder} cannot be written ({error}): give a writable --output_dir.") from error
    lock, pid_file = FileLock(str(folder / LOCK_FILE), timeout=0), folder / PID_FILE
    try:
        lock.acquire()
    except Timeout:
        pid = read_pid(pid_file)
        raise RunFolderInUseError(
            f"Output folder {folder} is in use by another run ({f'process {pid}' if pid else 'another process'}, "
            f"holding {LOCK_FILE}): wait until it ends, or give another --output_dir. Two runs in one folder would "
            "overwrite each other's checkpoints; a run that was killed frees the folder by itself."
        ) from None
    pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
    if _lock_scopes:
        _lock_scopes[-1].append((lock, pid_file))
    else:
        _unscoped_locks.append(lock)


def folder_bytes(folder: str | Path) -> int:
    """The size of every file under `folder`."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def model_bytes(model: torch.nn.Module, tokenizer=None) -> dict[str, int]:
    """What `save_pretrained` writes for `model`, in bytes: its weights (tied tensors once, as safetensors stores
    them), the tokenizer's files (saved to a temporary folder and measured) and, for a model served with its own code
    (registered for an Auto class, or with `config.auto_map`), the code files of its class and config and those its
    `custom_pipelines` name (beside its class's file)."""
    tensors = {tensor.data_ptr(): tensor for tensor in model.state_dict().values()}
    parts = {"weights": sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())}
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as folder:
            tokenizer.save_pretrained(folder)
            parts["tokenizer"] = folder_bytes(folder)
    if getattr(model, "_auto_class", None) is not None or getattr(model.config, "auto_map", None):
        files = {inspect.getfile(type(model)), inspect.getfile(type(model.config))}
        pipelines = getattr(model.config, "custom_pipelines", None) or {}
        modules = {entry["impl"].rsplit(".", 1)[0] for entry in pipelines.values() if "--" not in entry["impl"]}
        files |= {os.path.join(os.path.dirname(inspect.getfile(type(model))), f"{name}.py") for name in modules}
        parts["code files"] = sum(os.path.getsize(path) for path in files if os.path.isfile(path))
    return parts


def checkpoint_bytes(model: torch.nn.Module, tokenizer=None) -> dict[str, int]:
    """One checkpoint as the Trainer writes it, in bytes per part: the saved model (`model_bytes`), AdamW's moments,
    the random states (measured as `torch.save` writes them) and the small files."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    buffer = io.BytesIO()
    torch.save(states, buffer)
    return {
        **model_bytes(model, tokenizer),
        "optimizer state": OPTIMIZER_STATES * trainable,
        "RNG state": RNG_STATE_FILES * buffer.getbuffer().nbytes,
        "other files": SMALL_FILES_BYTES,
    }


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def check_room(folder: str | Path, model: torch.nn.Module, tokenizer=None, checkpoints: bool = True) -> None:
    """Fail before training when `folder` has no room for what the run writes: one checkpoint (when `checkpoints`;
    `checkpoint_bytes`) and the final model (`model_bytes`), rather than after training, when the model would be
    lost."""
    parts = {f"final model {name}": size for name, size in model_bytes(model, tokenizer).items()}
    if checkpoints:
        parts.update({f"checkpoint {name}": size for name, size in checkpoint_bytes(model, tokenizer).items()})
    needed, free = sum(parts.values()), shutil.disk_usage(folder).free
    if free < needed:
        listed = ", ".join(f"{name} {_mib(size)}" for name, size in parts.items())
        raise OSError(
            f"Output folder {folder} has {_mib(free)} free, but this run writes about {_mib(needed)} into it "
            f"({listed}): free some space or give another --output_dir."
        )


def write_failure_cause(folder: str | Path, error: BaseException, needed: int) -> str:
    """Why writing `needed` bytes into `folder` failed, in words: a full disk (the error says so, or less than
    `needed` is free: torch reports a full disk only as `basic_ios::clear: iostream error` or `unexpected pos`), a
    folder that cannot be written, or the error itself."""
    try:
        free = shutil.disk_usage(Path(folder) if Path(folder).exists() else Path(folder).parent).free
    except OSError:
        free = None
    where = "" if free is None else f" ({_mib(free)} free there, about {_mib(needed)} needed)"
    if getattr(error, "errno", None) == errno.ENOSPC or (free is not None and free < needed):
        return f"the disk of {folder} is full{where}"
    if getattr(error, "errno", None) in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"{folder} cannot be written (permissions or a read-only disk){where}"
    return f"writing into {folder} failed{where}"
