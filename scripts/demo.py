"""The README's main command (`make demo`): pretrain a small concept encoder, score it on GLUE against a random-init
baseline, print the experiment registry and the difference. Offline; about 7 minutes on 2 quiet CPU cores (measured).

1. `run_pretraining.py`: TSDAE with the PosOnly decoder on WikiText-2, with a WordPiece tokenizer trained on it;
2. `run_glue.py`: MRPC, STS-B and RTE from the classic GLUE files, separate pair encoding;
3. `run_glue.py --from_scratch`: the same tasks, the same size and tokenizer, random initialisation;
4. the registry table (one row per model, GLUE cells filled) and pretrained − scratch per task.

Every step is an ordinary command line, printed before it runs, so each can be rerun or scaled up by hand.
Data: `--data_dir`, else `$CONCEPT_ENCODER_DATA`, else `../shared/data` beside the repository.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = "mrpc,stsb,rte"
RUN_FLAGS = ["--save_strategy", "no", "--logging_steps", "50", "--disable_tqdm", "true", "--seed", "42"]  # every run
MODEL_SIZE = [
    "--hidden_size",
    "128",
    "--num_hidden_layers",
    "2",
    "--num_attention_heads",
    "4",
    "--intermediate_size",
    "256",
    "--concept_num",
    "32",
    "--max_position_embeddings",
    "128",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data_dir", default=os.environ.get("CONCEPT_ENCODER_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--output_dir", default="outputs/demo", help="each demo run gets a timestamped folder here")
    parser.add_argument("--pretrain_steps", type=int, default=800)
    parser.add_argument("--glue_epochs", type=float, default=2.0)
    parser.add_argument("--max_train_samples", type=int, default=None, help="per GLUE task (default: all)")
    return parser.parse_args()


def run(command: list[str]):
    """Run one step, echoing it; a failing step stops the demo with its exit status."""
    print("\n$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def glue_command(checkpoint: Path, output_dir: Path, data_dir: Path, registry: Path, args, *extra: str) -> list[str]:
    command = [
        sys.executable,
        "run_glue.py",
        "--model_name_or_path",
        str(checkpoint),
        "--task_name",
        TASKS,
        "--data_dir",
        str(data_dir / "glue"),
        "--pair_encoding",
        "separate",
        "--output_dir",
        str(output_dir),
        "--max_seq_length",
        "64",
        "--per_device_train_batch_size",
        "32",
        "--per_device_eval_batch_size",
        "128",
        "--learning_rate",
        "5e-4",
        "--warmup_steps",
        "20",
        "--num_train_epochs",
        str(args.glue_epochs),
        *RUN_FLAGS,
        "--registry_file",
        str(registry),
        *extra,
    ]
    if args.max_train_samples:
        command += ["--max_train_samples", str(args.max_train_samples)]
    return command


def difference_table(pretrained_dir: Path, scratch_dir: Path) -> str:
    """Pretrained minus scratch on each task's registry metric (MRPC F1, STS-B Pearson, RTE accuracy)."""
    lines = ["| Task | Metric | Pretrained | Scratch | Pretrained − scratch |", "|---|---|---|---|---|"]
    for task in TASKS.split(","):
        pretrained = json.loads((pretrained_dir / task / "run_summary.json").read_text())
        scratch = json.loads((scratch_dir / task / "run_summary.json").read_text())
        metric = pretrained["registry_metric"]
        a, b = pretrained["registry_score"], scratch["registry_score"]
        lines.append(f"| {pretrained['task_display_name']} | {metric} | {a:.4f} | {b:.4f} | {a - b:+.4f} |")
    return "\n".join(lines)


def main():
    args = parse_args()
    start = time.perf_counter()
    data_dir = Path(args.data_dir).resolve()
    for needed in ("corpus/wikitext-2/train.txt", "corpus/wikitext-2/valid.txt", "glue/MRPC", "glue/STS-B", "glue/RTE"):
        if not (data_dir / needed).exists():
            sys.exit(f"{data_dir / needed} not found: pass --data_dir or set CONCEPT_ENCODER_DATA to the shared data.")
    root = (REPO / args.output_dir).resolve()
    run_dir = root / datetime.now().strftime("%Y%m%d_%H%M%S")
    registry = root / "registry.md"
    checkpoint = run_dir / "pretrained"

    run(
        [
            sys.executable,
            "run_pretraining.py",
            "--model_type",
            "perceiver_posonly_mlm",
            "--objective",
            "tsdae",
            "--line_by_line",
            "--train_file",
            str(data_dir / "corpus/wikitext-2/train.txt"),
            "--validation_file",
            str(data_dir / "corpus/wikitext-2/valid.txt"),
            "--train_tokenizer_vocab_size",
            "8000",
            *MODEL_SIZE,
            "--max_seq_length",
            "64",
            "--per_device_train_batch_size",
            "32",
            "--max_steps",
            str(args.pretrain_steps),
            "--learning_rate",
            "1e-3",
            "--warmup_steps",
            "50",
            "--max_eval_samples",
            "256",
            "--do_train",
            "--do_eval",
            *RUN_FLAGS,
            "--output_dir",
            str(checkpoint),
            "--registry_file",
            str(registry),
        ]
    )
    run(glue_command(checkpoint, run_dir / "glue_pretrained", data_dir, registry, args))
    run(glue_command(checkpoint, run_dir / "glue_scratch", data_dir, registry, args, "--from_scratch"))

    print("\n" + "=" * 100 + f"\nExperiment registry ({registry}):\n")
    print(registry.read_text(encoding="utf-8"))
    print("Pretrained (TSDAE on WikiText-2) vs random init, same size and tokenizer, GLUE dev sets:\n")
    print(difference_table(run_dir / "glue_pretrained", run_dir / "glue_scratch"))
    print(f"\nDemo wall time: {time.perf_counter() - start:.0f} s; runs in {run_dir}")


if __name__ == "__main__":
    main()
