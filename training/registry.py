r"""The experiment registry: one Markdown table, in the research log's columns, with a row per pretraining run.

Every run folder holds a `run_summary.json`. A pretraining run (`"kind": "pretraining"`) owns a row; a GLUE run
(`"kind": "glue"`) fills the "Key GLUE Scores" cell of its checkpoint's row (and creates that row when the checkpoint
has none, e.g. a random-init `scratch_...` baseline). The table can always be rebuilt from the run folders, so rows
are never lost or duplicated; a rerun of the same run id updates its row; hand-written "Conclusion / Takeaway" cells
and rows without a run folder (e.g. the research log's) survive every update and rebuild.

Guarantees: every update is a read-modify-write under an exclusive file lock (`registry.md.lock`), written to a
temporary file and renamed over the registry, so concurrent runs never lose each other's rows and a reader never
sees half a file; every cell is escaped (`|` as `\|`, a newline as `<br>`), so no text a run records can break the
table; rows are keyed by unique run ids (an intermediate checkpoint's GLUE scores go to `<run id>/checkpoint-N`).
`rebuild` reads what it can of a damaged registry (unreadable rows are skipped with a warning and the old file kept
as `registry.md.bak`), so the conclusions it can still read survive.

CLI: `python -m concept_encoder.training.registry rebuild --runs_dir outputs --registry experiments/registry.md`;
`... registry plot --runs_dir outputs --output_dir plots` draws the runs' training curves and scores (plots.py).
"""

import argparse
import html
import json
import logging
import os
import re
import shutil
from pathlib import Path

from filelock import FileLock

from concept_encoder.training.diagnostics import format_effective_rank
from concept_encoder.training.run_info import SUMMARY_FILE, current_field_names

COLUMNS = [
    "Date",
    "Run ID / Model Type",
    "Architecture",
    "Pretraining Data",
    "Machine",
    "Epochs",
    "Concept Losses",
    "Task Loss",
    "Eff. Rank",
    "Key GLUE Scores",
    "Zero-shot STS",
    "Speed (Steps/s)",
    "WandB Link",
    "Git Tag",
    "Conclusion / Takeaway",
]
RUN_ID, GLUE, ZERO_SHOT, CONCLUSION = "Run ID / Model Type", "Key GLUE Scores", "Zero-shot STS", "Conclusion / Takeaway"
LEGACY_COLUMNS = [column for column in COLUMNS if column != ZERO_SHOT]  # the research log's, ours before zero-shot
MISSING = "--"
KINDS = ("pretraining", "glue", "zero_shot")
ZERO_SHOT_NAMES = {"stsb": "STS-B", "sickr": "SICK-R"}  # zero_shot.py's benchmark keys as the tables show them
GLUE_ORDER = [
    "MRPC",
    "QQP",
    "MNLI-m",
    "STS-B",
    "PAWS",
    "CoLA",
    "SST-2",
    "QNLI",
    "RTE",
    "WNLI",
]  # the research log's order first
PERCENT_METRICS = {"accuracy", "f1"}
logger = logging.getLogger(__name__)
HEADER_TEXT = (
    "# Experiment registry\n\n"
    "One row per pretraining run (or random-init baseline); GLUE runs fill their checkpoint's row. Rebuilt from the "
    "run folders with `python -m concept_encoder.training.registry rebuild --runs_dir outputs --registry experiments/registry.md`; "
    "the Conclusion column is yours and survives rebuilds.\n\n"
)


# ----------------------------------------------------------------------------------------------------------------------
# The Markdown table
# ----------------------------------------------------------------------------------------------------------------------


def escape_cell(text: str) -> str:
    """A cell's text as it is written in the table: `|` escaped, line breaks as `<br>` (one row per line)."""
    return " <br> ".join(str(text).replace("|", "\\|").splitlines()) if text else ""


def _split_cells(line: str) -> list[str]:
    """`| a | b \\| c |` → `["a", "b | c"]`: the cells' own text (escaped pipes stay inside their cell)."""
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def _row_line(row: dict) -> str:
    return "| " + " | ".join(escape_cell(row.get(column, "")) for column in COLUMNS) + " |"


def run_id_of(row: dict) -> str:
    return row[RUN_ID].strip("`* ")


class Registry:
    """A registry file: the text around the table, and the table's rows as `{column: cell text}` dicts.

    `lenient` (for `rebuild`) skips what cannot be read (a missing header, rows of the wrong width, e.g. a truncated
    file) with a warning, recording it in `skipped`, instead of raising."""

    def __init__(self, path: str | Path, lenient: bool = False):
        self.path = Path(path)
        self.before, self.rows, self.after = HEADER_TEXT, [], ""
        self.lenient, self.skipped = lenient, []
        if self.path.is_file():
            self._read()

    def _problem(self, message: str):
        if not self.lenient:
            raise ValueError(message)
        logger.warning(f"{message} Skipped.")
        self.skipped.append(message)

    def _read(self):
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        header = _row_line({column: column for column in COLUMNS})
        starts = [i for i, line in enumerate(lines) if _split_cells(line) in (COLUMNS, LEGACY_COLUMNS)]
        if not starts:
            self._problem(
                f"{self.path} has no registry table (expected the header line `{header}`): pass another --registry "
                "path, or add that header."
            )
            return
        start = starts[0]
        columns = _split_cells(lines[start])
        end = start + 2  # header and separator
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            cells = _split_cells(lines[end])
            # a row pasted from the research log has its columns
            names = LEGACY_COLUMNS if len(cells) == len(LEGACY_COLUMNS) else columns
            if len(cells) == len(names):
                self.rows.append({ZERO_SHOT: MISSING, **dict(zip(names, cells))})
            else:
                self._problem(
                    f"{self.path}, line {end + 1}: {len(cells)} cells where the registry has {len(columns)}; fix the "
                    "row (a `|` inside a cell must be written `\\|`)."
                )
            end += 1
        self.before, self.after = "".join(lines[:start]), "".join(lines[end:])

    def find(self, run_id: str) -> dict | None:
        return next((row for row in self.rows if run_id_of(row) == run_id), None)

    def upsert(self, row: dict):
        """Replace the row with the same run id (keeping its GLUE cell when `row` has none, and its conclusion), or
        append it; rows stay in date order (stable, so rows of one date keep their order)."""
        existing = self.find(run_id_of(row))
        if existing is None:
            self.rows.append(row)
        else:
            for column in (GLUE, ZERO_SHOT):
                if row.get(column, MISSING) == MISSING:
                    row[column] = existing[column]
            row[CONCLUSION] = existing[CONCLUSION] or row.get(CONCLUSION, "")
            self.rows[self.rows.index(existing)] = row
        self.rows.sort(key=lambda r: r["Date"])

    def render(self) -> str:
        table = [_row_line({column: column for column in COLUMNS}), "|" + "---|" * len(COLUMNS)]
        table += [_row_line(row) for row in self.rows]
        return self.before + "\n".join(table) + "\n" + self.after

    def save(self):
        """Write to a temporary file beside the registry, then rename it over the registry (atomic)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(self.render(), encoding="utf-8")
        os.replace(temporary, self.path)


def registry_lock(path: str | Path) -> FileLock:
    """The exclusive lock every read-modify-write of the registry at `path` holds (`<registry>.lock`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(path.name + ".lock")))


# ----------------------------------------------------------------------------------------------------------------------
# Rows from run summaries
# ----------------------------------------------------------------------------------------------------------------------


def _cell(value, digits: int | None = None) -> str:
    """A value as a table cell: `--` when missing, numbers rounded, text with HTML's `<`, `>` and `&` as entities (a
    run or file name is shown as written, never rendered as a tag or script); `|` and line breaks are escaped when
    the table is written."""
    if value is None or value == "":
        return MISSING
    if digits is not None and isinstance(value, (int, float)):
        text = f"{value:.{digits}f}"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = html.escape(str(value), quote=False)
    return text


def code_span(text: str) -> str:
    """`text` as a Markdown code span, shown literally (HTML included): delimited by one backtick more than the
    longest run of backticks inside it, so that no backtick in `text` can end the span early."""
    text = str(text)
    fence = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"{fence}{text}{fence}"


def _link(target: str | None) -> str:
    if not target:
        return MISSING
    if re.fullmatch(r"https?://[^\s()<>`]+", target):
        return f"[Link]({target})"
    return code_span(target)


def objective_text(summary: dict) -> str:
    """The objective with its settings, e.g. `TSDAE (delete, deletion 0.6)` or `MLM (masking 0.15)`; summaries
    written before the settings were recorded give the objective alone."""
    objective = (summary.get("objective") or "").upper()
    settings = [summary["tsdae_mode"]] if summary.get("tsdae_mode") else []
    if summary.get("deletion_prob") is not None:
        settings.append(f"deletion {summary['deletion_prob']:g}")
    if summary.get("mlm_probability") is not None:
        settings.append(f"masking {summary['mlm_probability']:g}")
    return f"{objective} ({', '.join(settings)})" if settings else objective


def pretraining_row(summary: dict) -> dict:
    """The registry row of a pretraining run summary."""
    rank, concept_num = summary.get("effective_rank"), summary.get("concept_num")
    loss = summary.get("task_loss")
    objective = objective_text(summary)
    return {
        "Date": _cell(summary.get("date")),
        RUN_ID: code_span(summary["run_id"]),
        "Architecture": _cell(summary.get("architecture")),
        "Pretraining Data": _cell(summary.get("pretraining_data")),
        "Machine": _cell(summary.get("machine")),
        "Epochs": _cell(summary.get("epochs"), 2 if isinstance(summary.get("epochs"), float) else None),
        "Concept Losses": _cell(summary.get("concept_losses")),
        "Task Loss": _cell(f"{objective} {loss:.3f}".strip()) if loss is not None else MISSING,
        "Eff. Rank": format_effective_rank(rank, concept_num) if rank is not None and concept_num else MISSING,
        GLUE: MISSING,
        ZERO_SHOT: MISSING,
        "Speed (Steps/s)": _cell(summary.get("steps_per_second"), 2),
        "WandB Link": _link(summary.get("wandb")),
        "Git Tag": code_span(summary["git_commit"]) if summary.get("git_commit") else MISSING,
        CONCLUSION: "",
    }


def checkpoint_row(glue_summary: dict) -> dict:
    """A row for a checkpoint that has no pretraining summary (a random-init baseline, a foreign checkpoint),
    made from what its GLUE run knows."""
    return {
        **{column: MISSING for column in COLUMNS},
        "Date": _cell(glue_summary.get("date")),
        RUN_ID: code_span(glue_summary["checkpoint_run_id"]),
        "Architecture": _cell(glue_summary.get("architecture")),
        "Pretraining Data": "none (random init)" if glue_summary.get("from_scratch") else MISSING,
        "Machine": _cell(glue_summary.get("machine")),
        "Epochs": "0" if glue_summary.get("from_scratch") else MISSING,
        "Git Tag": code_span(glue_summary["git_commit"]) if glue_summary.get("git_commit") else MISSING,
        CONCLUSION: "",
    }


def format_glue_score(metric: str, score: float, std: float | None = None) -> str:
    """`f1 0.813` → `81.3%`; correlations (Pearson, Matthews) as `0.627`, as in the research log; with the standard
    deviation over seeds `81.3 ± 0.4%`, `0.627 ± 0.012`."""
    if metric in PERCENT_METRICS:
        return f"{100 * score:.1f}%" if std is None else f"{100 * score:.1f} ± {100 * std:.1f}%"
    return f"{score:.3f}" if std is None else f"{score:.3f} ± {std:.3f}"


def parse_glue_cell(cell: str) -> dict[str, str]:
    """`**MRPC:** 81.3% <br> **QQP:** 72.5%` → `{"MRPC": "81.3%", "QQP": "72.5%"}`."""
    return dict(re.findall(r"\*\*(.+?):\*\*\s*([^<]+?)\s*(?:<br>|$)", cell))


def render_glue_cell(scores: dict[str, str]) -> str:
    order = sorted(scores, key=lambda task: (GLUE_ORDER.index(task) if task in GLUE_ORDER else len(GLUE_ORDER), task))
    return " <br> ".join(f"**{task}:** {scores[task]}" for task in order) or MISSING


def add_glue_result(registry: Registry, summary: dict):
    """Fill the checkpoint's GLUE cell with this run's score (creating the checkpoint's row if needed)."""
    row = registry.find(summary["checkpoint_run_id"])
    if row is None:
        row = checkpoint_row(summary)
        registry.upsert(row)
    scores = parse_glue_cell(row[GLUE])
    scores[html.escape(summary["task_display_name"], quote=False)] = format_glue_score(
        summary["registry_metric"], summary["registry_score"], summary.get("registry_score_std")
    )
    row[GLUE] = render_glue_cell(scores)


def format_zero_shot_cell(scores: dict[str, float]) -> str:
    """`{"stsb": 60.6, "sickr": 55.1}` → `**STS-B:** 60.6 <br> **SICK-R:** 55.1`."""
    return " <br> ".join(f"**{ZERO_SHOT_NAMES.get(name, name)}:** {score:.1f}" for name, score in scores.items())


def add_zero_shot_result(registry: Registry, summary: dict):
    """Fill the checkpoint's zero-shot cell (Spearman ×100 per benchmark), creating the row if needed."""
    row = registry.find(summary["checkpoint_run_id"])
    if row is None:
        row = checkpoint_row(summary)
        registry.upsert(row)
    row[ZERO_SHOT] = format_zero_shot_cell(summary["scores"])


def read_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a run folder (run_pretraining.py/run_glue.py "
            "write it at the end of a run)."
        )
    summary = current_field_names(json.loads(path.read_text(encoding="utf-8")))
    if summary.get("kind") not in KINDS:
        raise ValueError(f"{path}: 'kind' must be one of {list(KINDS)}, found {summary.get('kind')!r}.")
    return summary


def _apply(registry: Registry, summary: dict):
    if summary["kind"] == "pretraining":
        registry.upsert(pretraining_row(summary))
    elif summary["kind"] == "zero_shot":
        add_zero_shot_result(registry, summary)
    else:
        add_glue_result(registry, summary)


def record_run(run_dir: str | Path, registry_path: str | Path = "experiments/registry.md") -> Path:
    """Add or update the registry row(s) for the run saved in `run_dir` (under the registry's lock); returns the
    registry path."""
    summary = read_summary(run_dir)
    with registry_lock(registry_path):
        registry = Registry(registry_path)
        _apply(registry, summary)
        registry.save()
    return registry.path


def _creation_key(summary: dict) -> str:
    """When a run's row came to exist: GLUE runs carry `timestamp`; pretraining run ids end in `YYYYMMDD_HHMMSS`."""
    stamp = summary.get("timestamp") or next(iter(re.findall(r"\d{8}_\d{6}$", summary.get("run_id", ""))), "")
    return f"{summary.get('date', '')}|{stamp}"


def rebuild_registry(runs_root: str | Path, registry_path: str | Path = "experiments/registry.md") -> Path:
    """Rebuild the table from every `run_summary.json` under `runs_root`: rows in the order the runs happened,
    pretraining rows before the GLUE results that fill them. Rows of the existing registry that no run folder
    describes are kept as they are, and existing conclusions carry over. Unreadable run summaries and registry rows
    are skipped with a warning (the old registry is then kept as `<registry>.bak`)."""
    with registry_lock(registry_path):
        return _rebuild(runs_root, Path(registry_path))


def _rebuild(runs_root: str | Path, registry_path: Path) -> Path:
    summaries = []
    for path in sorted(Path(runs_root).rglob(SUMMARY_FILE)):
        try:
            summaries.append(read_summary(path.parent))
        except (ValueError, KeyError) as error:  # a truncated or foreign run_summary.json
            logger.warning(f"Skipping {path}: {error}")
    summaries.sort(key=lambda s: (s["kind"] != "pretraining", _creation_key(s)))
    old = Registry(registry_path, lenient=True)
    if old.skipped and registry_path.is_file():
        shutil.copyfile(registry_path, registry_path.with_name(registry_path.name + ".bak"))
    fresh = Registry(registry_path, lenient=True)
    rebuilt_ids = set()
    fresh.rows = []
    for summary in summaries:
        _apply(fresh, summary)
    for row in fresh.rows:
        rebuilt_ids.add(run_id_of(row))
        previous = old.find(run_id_of(row))
        if previous is not None:
            row[CONCLUSION] = previous[CONCLUSION]
    kept = [row for row in old.rows if run_id_of(row) not in rebuilt_ids]
    fresh.rows = kept + fresh.rows
    fresh.rows.sort(key=lambda r: r["Date"])
    fresh.save()
    return fresh.path


# What tells runs apart in the plots' labels (plots.distinguishing_labels): a pretraining run's recipe, and a
# fine-tune's settings when one checkpoint was scored more than once on a task.
PRETRAINING_FIELDS = (
    "model_type", "objective", "recipe", "tsdae_mode", "deletion_prob", "mlm_probability", "concept_losses",
    "architecture", "encoder_layer_type", "pretraining_data", "epochs",
)  # fmt: skip
SCORING_FIELDS = ("kind", "pair_encoding", "mrcogito_protocol", "seed", "epochs", "train_samples", "selection")


def collect_scores(runs_root: str | Path) -> tuple[dict, dict]:
    """From every run folder under `runs_root`: `(scores, random_levels)` for `plots.plot_scores`, keyed by the
    checkpoint's run id. GLUE runs give their registry metric (the mean ± std over seeds where run with `--seeds`;
    the single-seed runs inside such a run are left out), zero-shot runs their Spearman ×100; random-init
    checkpoints (`from_scratch`) become the dashed levels. No score replaces another: a checkpoint scored more than
    once on one task (two fine-tunes) gets one entry per run, `<checkpoint> [<what differs>]`."""
    from concept_encoder.training.plots import distinguishing_labels

    runs = []  # (checkpoint run id, {task: (mean, std)}, summary)
    for path in sorted(Path(runs_root).rglob(SUMMARY_FILE)):
        summary = read_summary(path.parent)
        if summary["kind"] == "pretraining" or (path.parent.name.startswith("seed_") and summary.get("seed")):
            continue
        if summary["kind"] == "glue":
            name = f"{summary['task_display_name']} {summary['registry_metric']}"
            values = {name: (summary["registry_score"], summary.get("registry_score_std") or 0.0)}
        else:
            values = {f"zero-shot {name} (Spearman×100)": (score, 0.0) for name, score in summary["scores"].items()}
        runs.append((summary["checkpoint_run_id"], values, summary))
    scored = [(model, task) for model, values, _ in runs for task in values]
    repeated = {model for model, task in scored if scored.count((model, task)) > 1}
    labels = {}
    for model in repeated:  # every run of such a checkpoint, labelled by the settings that differ
        own = {summary["run_id"]: {f: summary.get(f) for f in SCORING_FIELDS} for m, _, summary in runs if m == model}
        labels.update({run: f"{model} [{label}]" for run, label in distinguishing_labels(own).items()})
    scores, random_levels = {}, {}
    for model, values, summary in runs:
        key = labels.get(summary["run_id"], model)
        scores.setdefault(key, {}).update(values)
        if summary.get("from_scratch"):
            random_levels.setdefault(key, {}).update({task: mean for task, (mean, _) in values.items()})
    return scores, random_levels


def collect_majority_levels(runs_root: str | Path) -> dict[str, float]:
    """`{task metric: score}` of always predicting the training set's most frequent label, from the GLUE runs under
    `runs_root` that recorded it (`majority_scores`; classification tasks only), keyed as `collect_scores` keys
    tasks (`MRPC f1`)."""
    levels = {}
    for path in sorted(Path(runs_root).rglob(SUMMARY_FILE)):
        summary = read_summary(path.parent)
        if summary["kind"] == "glue":
            for metric, score in (summary.get("majority_scores") or {}).items():
                levels[f"{summary['task_display_name']} {metric}"] = score
    return levels


def plot_runs(runs_root: str | Path, output_dir: str | Path) -> list[Path]:
    """`training_curves.png` (every pretraining run under `runs_root`, labelled by what differs between the runs)
    and `scores.png` (every scored model, with the random-init and majority-class levels)."""
    from concept_encoder.training.plots import (
        distinguishing_labels,
        plot_scores,
        plot_training_curves,
        training_curves,
    )

    pretraining = {}
    for path in sorted(Path(runs_root).rglob(SUMMARY_FILE)):
        summary = read_summary(path.parent)
        if summary["kind"] == "pretraining" and (path.parent / "trainer_state.json").is_file():
            pretraining[summary["run_id"]] = (path.parent, summary)
    labels = distinguishing_labels(
        {run: {field: summary.get(field) for field in PRETRAINING_FIELDS} for run, (_, summary) in pretraining.items()}
    )
    curves = {
        labels[run]: training_curves(folder / "trainer_state.json", summary.get("concept_num"))
        for run, (folder, summary) in pretraining.items()
    }
    scores, random_levels = collect_scores(runs_root)
    if not curves and not scores:
        raise FileNotFoundError(f"{runs_root} holds no run folders with a {SUMMARY_FILE}: nothing to plot.")
    output_dir = Path(output_dir)
    written = []
    if curves:
        written.append(plot_training_curves(curves, output_dir / "training_curves.png"))
    if scores:
        majority = collect_majority_levels(runs_root)
        written.append(plot_scores(scores, random_levels, output_dir / "scores.png", majority_levels=majority))
    return written


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description="Experiment registry (Markdown table in the research log's columns).")
    commands = parser.add_subparsers(dest="command", required=True)
    rebuild = commands.add_parser("rebuild", help="rebuild the table from the run folders' run_summary.json files")
    rebuild.add_argument("--runs_dir", default="outputs", help="folder searched recursively for run_summary.json")
    rebuild.add_argument("--registry", default="experiments/registry.md")
    record = commands.add_parser("record", help="add or update the row(s) of one run folder")
    record.add_argument("run_dir")
    record.add_argument("--registry", default="experiments/registry.md")
    plot = commands.add_parser("plot", help="training curves and task scores of the run folders, as PNG files")
    plot.add_argument("--runs_dir", default="outputs", help="folder searched recursively for run_summary.json")
    plot.add_argument("--output_dir", default="experiments/plots")
    args = parser.parse_args(argv)
    if args.command == "plot":
        for path in plot_runs(args.runs_dir, args.output_dir):
            print(path)
        return
    if args.command == "rebuild":
        path = rebuild_registry(args.runs_dir, args.registry)
    else:
        path = record_run(args.run_dir, args.registry)
    print(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
