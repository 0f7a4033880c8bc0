"""GLUE and PAWS for `run_glue.py`: the task table, the three data sources and the metrics.

Every source ends in the same `DatasetDict`: columns `sentence1`, `sentence2` (pair tasks only) and `label` (class id,
or a float for regression), splits `train` and `validation` (MNLI: `validation_matched` and
`validation_mismatched`). Sources:
- the Hub (`nyu-mll/glue`, PAWS `google-research-datasets/paws` `labeled_final`), after a reachability check that
  fails within seconds offline;
- `--data_dir` in the classic GLUE layout (`CoLA/train.tsv`, `CoLA/dev.tsv`, ...; PAWS as `paws/`), read with quoting
  off as GLUE itself does;
- `--train_file/--validation_file` (csv, tsv, json) with run_glue's column auto-detection.
SICK relatedness (`sickr`, regression 1-5, not on the Hub here) reads `SICK-R/train.tsv` and `SICK-R/dev.tsv` of a
`--data_dir`, written from the SICK file by `write_sick_folder` (SICK's TRAIN and TEST splits: "dev" holds TEST).
Metrics are GLUE's, computed with scikit-learn and scipy (`evaluate.load` needs the Hub).
"""

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

from concept_encoder.training.hub import require_hub
from concept_encoder.training.text_files import not_utf8_error

STSB_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class GlueTask:
    """One GLUE-style task: where its data lives, how its files are laid out, its labels and its metrics.

    `tsv_columns` are the header names (or, for a file without header, the column indices) of sentence 1,
    sentence 2 and the label in the classic GLUE files; `tsv_labels` are the label strings of those files in class-id
    order (None for regression). `registry_metric` is the score quoted in the experiment registry.
    """

    name: str
    display_name: str
    folder: str
    hub_columns: tuple[str, str | None]
    tsv_columns: tuple
    label_names: tuple[str, ...] | None
    tsv_labels: tuple[str, ...] | None = ("0", "1")
    metrics: tuple[str, ...] = ("accuracy",)
    registry_metric: str = "accuracy"
    hub_path: str = "nyu-mll/glue"
    hub_name: str | None = None  # the task's name when None
    validation_files: tuple[tuple[str, str], ...] = (("validation", "dev.tsv"),)
    tsv_header: bool = True
    score_range: tuple[float, float] | None = None  # regression: the scores the task defines (None: any number)

    @property
    def is_pair(self) -> bool:
        return self.hub_columns[1] is not None

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def validation_splits(self) -> list[str]:
        return [split for split, _ in self.validation_files]

    @property
    def best_metric(self) -> str:
        """The metric that picks the best epoch: `combined_score` where GLUE reports several."""
        return "combined_score" if len(self.metrics) > 1 else self.metrics[0]

    @property
    def main_metric(self) -> str:
        """The one score that stands for the task: for a task with a mismatched dev split (MNLI) `combined_score`,
        the mean of its matched and mismatched accuracy (`dev_metrics`); else `best_metric`."""
        return "combined_score" if len(self.validation_files) > 1 else self.best_metric

    @property
    def reported_metrics(self) -> tuple[str, ...]:
        """The metrics a comparison table quotes: the task's own, a regression's `registry_metric` (Pearson) alone
        (its Spearman correlation follows it)."""
        return (self.registry_metric,) if self.is_regression else self.metrics

    def label_fields(self) -> dict:
        """The config fields of the task's labels: one regression output, or the class names."""
        if self.is_regression:
            return dict(num_labels=1, problem_type="regression", id2label={0: "score"}, label2id={"score": 0})
        return dict(
            num_labels=self.num_labels,
            problem_type="single_label_classification",
            id2label=dict(enumerate(self.label_names)),
            label2id={label: i for i, label in enumerate(self.label_names)},
        )


PAIR = ("sentence1", "sentence2")
ENTAILMENT = ("entailment", "not_entailment")
NLI = ("entailment", "neutral", "contradiction")
# fmt: off
TASKS: dict[str, GlueTask] = {task.name: task for task in (
    GlueTask("cola", "CoLA", "CoLA", ("sentence", None), tsv_columns=(3, None, 1), tsv_header=False,
             label_names=("unacceptable", "acceptable"), metrics=("matthews_correlation",),
             registry_metric="matthews_correlation"),
    GlueTask("sst2", "SST-2", "SST-2", ("sentence", None), tsv_columns=("sentence", None, "label"),
             label_names=("negative", "positive")),
    GlueTask("mrpc", "MRPC", "MRPC", PAIR, tsv_columns=("#1 String", "#2 String", "Quality"),
             label_names=("not_equivalent", "equivalent"), metrics=("accuracy", "f1"), registry_metric="f1"),
    GlueTask("qqp", "QQP", "QQP", ("question1", "question2"), tsv_columns=("question1", "question2", "is_duplicate"),
             label_names=("not_duplicate", "duplicate"), metrics=("accuracy", "f1"), registry_metric="f1"),
    GlueTask("stsb", "STS-B", "STS-B", PAIR, tsv_columns=(*PAIR, -1), label_names=None, tsv_labels=None,
             metrics=("pearson", "spearmanr"), registry_metric="pearson", score_range=STSB_RANGE),
    GlueTask("mnli", "MNLI-m", "MNLI", ("premise", "hypothesis"), tsv_columns=(*PAIR, "gold_label"),
             label_names=NLI, tsv_labels=NLI,
             validation_files=(("validation_matched", "dev_matched.tsv"),
                               ("validation_mismatched", "dev_mismatched.tsv"))),
    GlueTask("qnli", "QNLI", "QNLI", ("question", "sentence"), tsv_columns=("question", "sentence", "label"),
             label_names=ENTAILMENT, tsv_labels=ENTAILMENT),
    GlueTask("rte", "RTE", "RTE", PAIR, tsv_columns=(*PAIR, "label"), label_names=ENTAILMENT, tsv_labels=ENTAILMENT),
    GlueTask("wnli", "WNLI", "WNLI", PAIR, tsv_columns=(*PAIR, "label"), label_names=("not_entailment", "entailment")),
    GlueTask("paws", "PAWS", "paws", PAIR, tsv_columns=(*PAIR, "label"), label_names=("not_paraphrase", "paraphrase"),
             hub_path="google-research-datasets/paws", hub_name="labeled_final"),
    GlueTask("sickr", "SICK-R", "SICK-R", PAIR, tsv_columns=(*PAIR, "label"), label_names=None, tsv_labels=None,
             metrics=("pearson", "spearmanr"), registry_metric="pearson", hub_path=""),
)}
SICK_FILE = "sick/SICK.txt"
SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score", "SemEval_set")
SICK_SPLITS = ("TRAIN", "TRIAL", "TEST")
# fmt: on
MISMATCHED_SPLIT, MISMATCHED_SUFFIX = "validation_mismatched", "_mm"  # MNLI's mismatched dev: `eval_accuracy_mm`


def get_task(name: str) -> GlueTask:
    """The task called `name` (case-insensitive), or a `ValueError` listing the valid names."""
    task = TASKS.get(name.strip().lower())
    if task is None:
        raise ValueError(f"Unknown task_name {name!r}: choose one of {', '.join(TASKS)}, or 'all', or a comma list.")
    return task


def parse_task_names(task_name: str) -> list[GlueTask]:
    """`"all"` → every GLUE task and PAWS; `"mrpc,stsb"` → those tasks in that order."""
    if task_name.strip().lower() == "all":
        return [task for task in TASKS.values() if task.hub_path]
    tasks = [get_task(name) for name in task_name.split(",") if name.strip()]
    repeated = sorted({task.name for task in tasks if tasks.count(task) > 1})
    if repeated:  # both runs would write one folder, the second overwriting the first's results
        raise ValueError(f"--task_name {task_name!r} repeats {repeated}: give each task once.")
    return tasks


# ----------------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------------


def label_converter(task: GlueTask, source: str):
    """A function mapping a raw label (tsv string, label name, class id, or score) to the task's class id or float,
    raising `ValueError` naming `source` and the allowed values for anything outside the task's label set."""
    if task.is_regression:
        low, high = task.score_range or (-math.inf, math.inf)

        def to_score(value, where):
            try:
                score = float(value)
            except (TypeError, ValueError):
                score = math.nan
            if not low <= score <= high or not math.isfinite(score):
                allowed = f"in [{low}, {high}]" if task.score_range else "(a finite number)"
                raise ValueError(f"{where}: label {value!r} is not a {task.name} score {allowed}.")
            return score

        return lambda value, where=source: to_score(value, where)
    ids = {label: i for i, label in enumerate(task.tsv_labels)}
    ids.update({label: i for i, label in enumerate(task.label_names)})
    class_ids = {str(i): i for i in range(task.num_labels)}
    if not class_ids.keys() & ids.keys():  # class ids (Hub datasets) only where no label is written like one
        ids.update(class_ids)

    def to_id(value, where=source):
        key = label_text(value)
        if key not in ids:
            raise ValueError(
                f"{where}: label {value!r} is not a {task.name} label; allowed: {list(task.tsv_labels)} "
                f"(or {list(task.label_names)})."
            )
        return ids[key]

    return to_id


def label_text(value) -> str:
    """A raw label as the text a class is named by: an integral number written any way (`1`, `1.0`, `1.00`) is
    `"1"`, so it is one class; any other label is its stripped text."""
    text = str(value).strip()
    if is_number(text) and math.isfinite(float(text)) and float(text).is_integer():
        return str(int(float(text)))
    return text


def check_filled(values: list, column: str, source: str, blank_is_missing: bool = False) -> None:
    """Refuse a missing value (JSON `null` or a missing key, a float NaN; with `blank_is_missing` also an empty
    field, as a CSV writes a missing label), which would otherwise become the text `"None"`: a class, or a
    sentence."""
    for row, value in enumerate(values, start=1):
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if missing or (blank_is_missing and not str(value).strip()):
            raise ValueError(
                f"{source}, row {row}: column {column!r} has no value ({value!r}); every row needs it: fill it in "
                "or remove the row."
            )


def task_features(task: GlueTask) -> Features:
    """The `datasets` features of a loaded task: ClassLabel for classification, float32 for regression."""
    columns = {"sentence1": Value("string")}
    if task.is_pair:
        columns["sentence2"] = Value("string")
    columns["label"] = Value("float32") if task.is_regression else ClassLabel(names=list(task.label_names))
    return Features(columns)


# ----------------------------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------------------------


def read_delimited(path: Path, header: bool = True) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """`(header, [(line number, fields), ...])` of a csv or tsv file.

    TSV is read with quoting off (GLUE's fields may start with `"`), CSV with standard quoting; `utf-8-sig` drops
    MRPC's BOM and `newline=""` handles CRLF files (PAWS, SICK). A row whose field count differs from the first row's,
    and a file without rows, raise `ValueError` naming the file (and line).
    """
    tsv = path.suffix.lower() == ".tsv"
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        try:
            rows = [(reader.line_num, fields) for fields in reader if fields]
        except UnicodeDecodeError as error:
            raise not_utf8_error(path, error) from error
    if header:
        if not rows:
            raise ValueError(f"{path} is empty: expected a header row and at least one data row.")
        (_, names), rows = rows[0], rows[1:]
    else:
        names = None
    if not rows:
        raise ValueError(f"{path} has no data rows.")
    width = len(names) if names is not None else len(rows[0][1])
    for line, fields in rows:
        if len(fields) != width:
            raise ValueError(
                f"{path}, line {line}: {len(fields)} fields where {width} were expected; the file is malformed "
                "(a TSV must be tab-separated with one row per line, read with quoting off)."
            )
    return names, rows


def read_glue_tsv(path: Path, task: GlueTask) -> Dataset:
    """One classic GLUE/PAWS TSV file of `task` → Dataset(sentence1, [sentence2], label)."""
    names, rows = read_delimited(path, header=task.tsv_header)
    if names is None:
        indices = task.tsv_columns
    else:
        missing = [c for c in task.tsv_columns if isinstance(c, str) and c not in names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} for task {task.name}; the header has {names}.")
        indices = tuple(names.index(c) if isinstance(c, str) else c for c in task.tsv_columns)
    first, second, label = indices
    to_label = label_converter(task, str(path))
    columns = {"sentence1": [fields[first] for _, fields in rows]}
    if task.is_pair:
        columns["sentence2"] = [fields[second] for _, fields in rows]
    columns["label"] = [to_label(fields[label], f"{path}, line {line}") for line, fields in rows]
    return Dataset.from_dict(columns, features=task_features(task))


def load_glue_dir(data_dir: str, task: GlueTask) -> DatasetDict:
    """`data_dir/<Folder>/train.tsv` and the dev file(s) of `task` (classic GLUE layout)."""
    folder = Path(data_dir) / task.folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--data_dir {data_dir} has no folder {task.folder}/ for task {task.name}: expected the classic GLUE "
            f"layout {task.folder}/train.tsv and {task.folder}/dev.tsv (PAWS: paws/), or use "
            "--train_file/--validation_file."
        )
    files = {"train": "train.tsv", **dict(task.validation_files)}
    missing = [name for name in files.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing} for task {task.name}; give the split files with --train_file/--validation_file "
            "(e.g. PAWS in the shared data has dev.tsv and test.tsv only: --train_file paws/dev.tsv "
            "--validation_file paws/test.tsv)."
        )
    return DatasetDict({split: read_glue_tsv(folder / name, task) for split, name in files.items()})


def load_glue_hub(task: GlueTask, cache_dir: str | None = None, token: str | None = None) -> DatasetDict:
    """`task` from the Hub, after a reachability check that fails within seconds when offline."""
    if not task.hub_path:
        raise ValueError(
            f"Task {task.name} has no Hub source here: give --data_dir with {task.folder}/train.tsv and dev.tsv "
            "(for SICK-R: concept_encoder.training.glue.write_sick_folder)."
        )
    hub_name = task.hub_name or task.name
    require_hub(
        f"Loading {task.name} from the Hub ({task.hub_path}, {hub_name})",
        "Use the local files instead: --data_dir DIR with the classic GLUE layout (e.g. ../shared/data/glue) or "
        "--train_file/--validation_file.",
    )
    raw = load_dataset(task.hub_path, hub_name, cache_dir=cache_dir, token=token)
    first, second = task.hub_columns
    splits = {}
    for split in ["train", *task.validation_splits]:
        data = raw[split].rename_column(first, "sentence1")
        if second is not None:
            data = data.rename_column(second, "sentence2")
        keep = set(task_features(task))
        splits[split] = data.remove_columns([c for c in data.column_names if c not in keep]).cast(task_features(task))
    return DatasetDict(splits)


def load_sick(path: str | Path, split: str = "TEST") -> tuple[list[str], list[str], list[float]]:
    """`(sentences A, sentences B, relatedness scores 1-5)` of one SemEval split of the SICK file (tab-separated,
    header `pair_ID sentence_A sentence_B entailment_label relatedness_score ... SemEval_set`)."""
    if split not in SICK_SPLITS:
        raise ValueError(f"SICK split {split!r} is unknown: choose one of {list(SICK_SPLITS)}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give the data folder that holds {SICK_FILE}.")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [column for column in SICK_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header has {reader.fieldnames}.")
        rows = [row for row in reader if row["SemEval_set"].strip() == split]
    if not rows:
        raise ValueError(f"{path} has no rows of SemEval_set {split}.")
    return (
        [row["sentence_A"] for row in rows],
        [row["sentence_B"] for row in rows],
        [float(row["relatedness_score"]) for row in rows],
    )


def write_sick_folder(sick_file: str | Path, data_dir: str | Path) -> Path:
    """`data_dir/SICK-R/train.tsv` (SICK's TRAIN split) and `dev.tsv` (its TEST split) in the GLUE layout
    (`sentence1 sentence2 label`), so `--task_name sickr --data_dir data_dir` fine-tunes on SICK relatedness."""
    folder = Path(data_dir) / TASKS["sickr"].folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in (("train.tsv", "TRAIN"), ("dev.tsv", "TEST")):
        first, second, scores = load_sick(sick_file, split)
        lines = ["sentence1\tsentence2\tlabel"] + [f"{a}\t{b}\t{s:g}" for a, b, s in zip(first, second, scores)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def read_table_file(path: str) -> Dataset:
    """A csv, tsv, json/jsonl or parquet file → Dataset with the file's own columns (all strings for csv/tsv)."""
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(
            f"Data file {path} is a folder: give the path of one csv, tsv, json or parquet file in it."
        )
    if not file.is_file():
        raise FileNotFoundError(f"Data file {path} does not exist.")
    suffix = file.suffix.lower()
    if suffix in (".csv", ".tsv"):
        names, rows = read_delimited(file)
        return Dataset.from_dict({name: [fields[i] for _, fields in rows] for i, name in enumerate(names)})
    if suffix in (".json", ".jsonl"):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise not_utf8_error(path, error) from error
        if not text.strip():
            raise ValueError(f"{path} is empty: expected JSON records (one object per line, or a list).")
        return load_dataset("json", data_files=str(file), split="train")
    if suffix == ".parquet":
        return load_dataset("parquet", data_files=str(file), split="train")
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .json, .jsonl or .parquet.")


def read_test_file(path: str, task: GlueTask) -> Dataset:
    """A file to predict (GLUE's `test.tsv`, or any csv/tsv/json/parquet `--test_file`) → Dataset(index, sentence1,
    [sentence2]). `index` is the file's `index` or `id` column (GLUE's submission key), else the row number;
    labels are not needed and not read."""
    data = read_table_file(path)
    names = data.column_names
    columns = {}
    for position, column in enumerate(["sentence1", "sentence2"][: 2 if task.is_pair else 1]):
        candidates = [task.tsv_columns[position] if task.tsv_columns else None, task.hub_columns[position]]
        candidates += [PAIR[position], "sentence" if position == 0 else None]
        found = next((name for name in candidates if isinstance(name, str) and name in names), None)
        if found is None:
            raise ValueError(
                f"{path}: no column for {column} of task {task.name} (looked for "
                f"{[name for name in candidates if isinstance(name, str)]}); the file has {names}."
            )
        check_filled(data[found], found, path)
        columns[column] = [str(text) for text in data[found]]
    index = next((name for name in ("index", "id") if name in names), None)
    columns = {"index": [str(i) for i in (data[index] if index else range(len(data)))], **columns}
    return Dataset.from_dict(columns)


def prediction_lines(task: GlueTask, indices: list[str], predictions: np.ndarray) -> list[str]:
    """GLUE's submission format (`predict_results_<task>.txt`): a header `index<TAB>prediction`, then one line per
    example with the label as the task's TSV files write it (`0`/`1`, `entailment`, ...) or the score as `%.3f`."""
    if task.is_regression:
        values = [f"{float(score):.3f}" for score in np.asarray(predictions).reshape(-1)]
    else:
        values = [task.tsv_labels[int(label)] for label in np.argmax(predictions, axis=-1)]
    return ["index\tprediction", *(f"{index}\t{value}" for index, value in zip(indices, values, strict=True))]


def resolve_columns(
    column_names: list[str], sentence1_key: str | None, sentence2_key: str | None, label_key: str, source: str
) -> tuple[str, str | None]:
    """run_glue's auto-detection: `sentence1`/`sentence2` if present, else the first two non-label columns (one for
    a single-sentence file); explicit keys win. Missing columns raise `ValueError` naming them and the file's."""
    wanted = [key for key in (sentence1_key, sentence2_key, label_key) if key]
    missing = [key for key in wanted if key not in column_names]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; the file has {column_names}. Set --sentence1_key, "
            "--sentence2_key and --label_key to its column names."
        )
    if sentence1_key:
        return sentence1_key, sentence2_key
    non_label = [name for name in column_names if name != label_key]
    if "sentence1" in non_label and "sentence2" in non_label:
        return "sentence1", "sentence2"
    if not non_label:
        raise ValueError(f"{source}: no text column besides the label column {label_key!r} (columns {column_names}).")
    return non_label[0], non_label[1] if len(non_label) >= 2 else None


def check_text_column(values: list, column: str, source: str) -> None:
    """Refuse an auto-detected text column that holds only numbers (an id or score column taken as text because the
    file has no text column where run_glue looks: `sentence1`/`sentence2`, else the first non-label columns)."""
    filled = [value for value in values if str(value).strip()]
    if filled and all(is_number(value) for value in filled):
        raise ValueError(
            f"{source}: column {column!r} was auto-detected as text but holds only numbers "
            f"(e.g. {filled[0]!r}): set --sentence1_key (and --sentence2_key) to the file's text column(s)."
        )


def is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def infer_label_task(labels: list) -> GlueTask:
    """For files without `--task_name`: a float label that is not integral → regression (MSE), otherwise
    classification over the sorted distinct labels, as run_glue does. `labels` are those of every split, so that a
    validation label the training file lacks gets its own class (the metric then counts it as missed)."""
    values = [label_text(label) for label in labels]
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        numbers = None
    if numbers is not None and any(not n.is_integer() for n in numbers):
        return GlueTask(
            "custom", "Custom", "", PAIR, (), label_names=None, tsv_labels=None, metrics=("mse",), registry_metric="mse"
        )
    names = sorted(set(values), key=lambda v: (float(v), v) if numbers is not None else (0, v))
    return GlueTask("custom", "Custom", "", PAIR, (), label_names=tuple(names), tsv_labels=tuple(names))


def load_files(
    task: GlueTask | None,
    train_file: str | None,
    validation_file: str | None,
    sentence1_key: str | None = None,
    sentence2_key: str | None = None,
    label_key: str = "label",
) -> tuple[DatasetDict, GlueTask]:
    """`--train_file/--validation_file` → (DatasetDict with train and validation, the task). Without a task the
    label type and label set are inferred from both files (each read by its own format); with one, a label outside
    the task's set is an error naming the file, the label and the row; a single text column makes a
    single-sentence task."""
    if not train_file or not validation_file:
        raise ValueError("Give both --train_file and --validation_file (csv, tsv, json or parquet).")
    raw = {"train": read_table_file(train_file), "validation": read_table_file(validation_file)}
    first, second = None, None
    for split, path in (("train", train_file), ("validation", validation_file)):
        first, second = resolve_columns(raw[split].column_names, sentence1_key, sentence2_key, label_key, path)
        for column in filter(None, (first, second)):
            check_filled(raw[split][column], column, path)
        check_filled(raw[split][label_key], label_key, path, blank_is_missing=True)
    if task is None:
        task = infer_label_task([*raw["train"][label_key], *raw["validation"][label_key]])
    if second is None and task.is_pair:
        task = replace(task, hub_columns=(task.hub_columns[0], None))
    if second is not None and not task.is_pair:
        raise ValueError(
            f"Task {task.name} takes one sentence, but {train_file} has two text columns: set "
            f"--sentence1_key (found {first!r} and {second!r})."
        )
    splits = {}
    for split, path in (("train", train_file), ("validation", validation_file)):
        data = raw[split]
        if sentence1_key is None:  # auto-detected text columns must hold text
            for column in (first, second) if second is not None else (first,):
                check_text_column(data[column], column, path)
        to_label = label_converter(task, path)
        columns = {"sentence1": [str(text) for text in data[first]]}
        if second is not None:
            columns["sentence2"] = [str(text) for text in data[second]]
        columns["label"] = [to_label(value, f"{path}, row {i + 1}") for i, value in enumerate(data[label_key])]
        splits[split] = Dataset.from_dict(columns, features=task_features(task))
    return DatasetDict(splits), task


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------


def compute_glue_metrics(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE's metrics for `task` from predictions (class ids, or scores for regression) and gold labels, with
    scikit-learn and scipy; `combined_score` is their mean where a task has several."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    scorers = {
        "accuracy": lambda: accuracy_score(labels, predictions),
        "f1": lambda: f1_score(labels, predictions),
        "matthews_correlation": lambda: matthews_corrcoef(labels, predictions),
        "pearson": lambda: pearsonr(predictions, labels)[0],
        "spearmanr": lambda: spearmanr(predictions, labels)[0],
        "mse": lambda: mean_squared_error(labels, predictions),
    }
    result = {name: float(scorers[name]()) for name in task.metrics}
    if len(result) > 1:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result


def dev_metrics(task: GlueTask, split_metrics: dict[str, dict]) -> dict:
    """The dev splits' metrics (`{split: {"eval_accuracy": ...}}`) as one dict: the mismatched split's under `_mm`
    names (`eval_accuracy_mm`) and, where both MNLI splits were scored, `eval_combined_score`, the mean of matched and
    mismatched accuracy (the task's `main_metric`)."""
    metrics = {}
    for split, values in split_metrics.items():
        suffix = MISMATCHED_SUFFIX if split == MISMATCHED_SPLIT else ""
        metrics.update({f"{key}{suffix}": value for key, value in values.items()})
    if f"eval_accuracy{MISMATCHED_SUFFIX}" in metrics:
        metrics["eval_combined_score"] = (metrics["eval_accuracy"] + metrics[f"eval_accuracy{MISMATCHED_SUFFIX}"]) / 2
    return metrics


def glue_scores(task: GlueTask, metrics: dict) -> dict[str, float]:
    """The task's GLUE scores among a run's `eval_` metrics, named without the prefix: its metrics, the
    mismatched split's (`accuracy_mm`) and `combined_score`."""
    return {
        key.removeprefix("eval_"): value
        for key, value in metrics.items()
        if key.startswith("eval_")
        and key.removeprefix("eval_").removesuffix(MISMATCHED_SUFFIX) in (*task.metrics, "combined_score")
    }


def majority_scores(task: GlueTask, train_labels, eval_labels) -> dict[str, float] | None:
    """The task's metrics for always predicting the training set's most frequent label on `eval_labels`: the level
    of a classifier that learnt nothing from the text (MRPC: F1 0.81), drawn in the score plots. None for regression
    (a constant prediction has no correlation) or without training labels."""
    if task.is_regression or len(train_labels) == 0:
        return None
    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    return compute_glue_metrics(task, np.full(len(eval_labels), values[counts.argmax()]), eval_labels)
