"""Where the training pipeline's time goes: `run_pretraining.py`'s tokens/s against the benchmark's step for the
same model and batch.

1. **Pipeline**: `run_pretraining.py` runs as a user runs it (a subprocess, `--max_steps`, no evaluation, no saving
   of checkpoints); its `train_tokens_per_second` counts every position of every batch, padding included.
2. **Benchmark step**: the same model (the run's config, fresh weights) on full batches of the same shape
   (`[batch, max_seq_length]`, every position a real token), forward + backward of the head's own loss, as
   `bench_encoder.py` times it; tokens/s = `batch × max_seq_length` / median seconds.
   The pipeline's real tokens/s = its positions/s (`train_tokens_per_second`, padding included: the Trainer's
   `non_padding` count would miss TSDAE's deleted tokens, which are hidden through `attention_mask`) × (1 − the
   padding share of one epoch of the run's sampler).
3. **Where the rest goes**, per optimizer step, from the same data through the run's own collator: the collator,
   the model's forward + backward on the pipeline's (padded) batches (the encoder alone and the decoder + LM head +
   loss), gradient clipping, the optimizer step, and the rest of the Trainer loop (dataloader, callbacks, logging,
   token counting, scheduler) as the remainder. The padding share is the fraction of positions in those batches
   that are padding: compute spent on them is lost to the real-token rate. Tokenisation (`datasets.map`, once per
   dataset, cached) is reported on its own, amortised over one epoch.

    python benchmarks/bench_pipeline.py --preset demo                      # the demo's TSDAE run
    python benchmarks/bench_pipeline.py --preset mrcogito --steps 8        # H512 L6 C128 MLM, N = 512
    python benchmarks/bench_pipeline.py --preset demo -- --train_sampling_strategy group_by_length

Everything after `--` is passed on to `run_pretraining.py` (and the matching sampler / workers are used for the
in-process breakdown).
"""

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import RandomSampler
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_encoder import load_average  # noqa: E402
from concept_encoder import run_pretraining  # noqa: E402
from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig  # noqa: E402
from concept_encoder.training.trainer import ConceptTrainer  # noqa: E402

logger = logging.getLogger(__name__)
DATA = REPO.parent / "shared" / "data" / "corpus" / "wikitext-2" / "train.txt"
PRESETS = {  # a recipe of training/recipes.py at the benchmark's sizes
    # the TSDAE run of scripts/demo.py
    "demo": [
        "--recipe", "tsdae_posonly", "--train_tokenizer_vocab_size", "8000", "--hidden_size", "128", "--num_hidden_layers", "2",
        "--num_attention_heads", "4", "--intermediate_size", "256", "--concept_num", "32",
        "--max_position_embeddings", "128", "--max_seq_length", "64", "--per_device_train_batch_size", "32",
        "--learning_rate", "1e-3",
    ],
    # the research log's size (H512 L6 C128, N = 512) with MLM on packed chunks; batch 16 as the benchmark's short table
    "mrcogito": [
        "--recipe", "perceiver_mlm", "--train_tokenizer_vocab_size", "32000",
        "--hidden_size", "512", "--num_hidden_layers", "6", "--num_attention_heads", "8",
        "--intermediate_size", "2048", "--concept_num", "128", "--max_position_embeddings", "512",
        "--max_seq_length", "512", "--per_device_train_batch_size", "16", "--learning_rate", "5e-4",
    ],
}  # fmt: skip
RENAMED_PRESETS = {"seed": "mrcogito"}  # old name → new (0.2): the old one works, with a warning, until 0.3


@dataclass
class PipelineArguments:
    preset: str = field(default="demo", metadata={"help": f"Run settings, one of {list(PRESETS)}."})
    train_file: str = field(default=str(DATA), metadata={"help": "Training text (.txt, one example per line)."})
    steps: int = field(default=30, metadata={"help": "Optimizer steps of the pipeline run."})
    breakdown_batches: int = field(default=8, metadata={"help": "Batches timed for the breakdown."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Passed on to run_pretraining.py."})
    threads: int | None = field(
        default=None, metadata={"help": "Threads of the run (OMP_NUM_THREADS) and of the breakdown (torch)."}
    )

    def __post_init__(self):
        if self.preset in RENAMED_PRESETS:
            new = RENAMED_PRESETS[self.preset]
            logger.warning(f"--preset {self.preset} is deprecated (removed in 0.3): use --preset {new}, the same.")
            self.preset = new
        if self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown: choose one of {list(PRESETS)}.")
        if self.steps < 2 or self.breakdown_batches < 2:
            raise ValueError("--steps and --breakdown_batches must be at least 2 (the first of each is warm-up).")


# ----------------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------------


def overhead_rows(pipeline_seconds: float, parts: dict[str, float]) -> list[tuple[str, float, float]]:
    """`(part, seconds per step, share of the pipeline step)` for each measured part and the remainder.

    `parts` are disjoint seconds per optimizer step (nested parts such as "of which ..." are not passed here); the
    remainder, `pipeline_seconds` − Σ parts, is what the Trainer loop spends outside them. It is negative when the
    parts took longer in isolation than in the run (noise on a loaded machine) and is reported as measured.
    """
    if pipeline_seconds <= 0:
        raise ValueError(f"pipeline_seconds={pipeline_seconds!r}: must be positive.")
    rest = pipeline_seconds - sum(parts.values())
    rows = [(name, seconds, seconds / pipeline_seconds) for name, seconds in parts.items()]
    return rows + [
        ("rest of the Trainer loop (dataloader, callbacks, logging, scheduler)", rest, rest / pipeline_seconds)
    ]


def overhead_report(measured: dict) -> str:
    """Markdown: the headline (pipeline vs benchmark tokens/s) and the per-step table, from `measure_pipeline`."""
    pipeline, benchmark = measured["pipeline_tokens_per_second"], measured["benchmark_tokens_per_second"]
    step = measured["pipeline_step_seconds"]
    lines = [
        f"- pipeline (`run_pretraining.py`, {measured['steps']} steps): {pipeline:,.0f} real tokens/s, "
        f"{1000 * step:,.1f} ms/step, {measured['tokens_per_step']:,.0f} real tokens per step",
        f"- benchmark step (same model, full `[{measured['batch']}, {measured['length']}]` batches, fwd + bwd): "
        f"{benchmark:,.0f} tokens/s",
        f"- pipeline / benchmark: **{100 * pipeline / benchmark:.0f}%**",
        f"- padding: {100 * measured['padding_share']:.0f}% of the positions in one epoch of the run's sampler",
        f"- tokenisation (once, cached): {measured['tokenisation_seconds']:.1f} s for {measured['dataset_tokens']:,} "
        f"tokens; amortised over one epoch {100 * measured['tokenisation_epoch_share']:.1f}% of the training time",
        "",
        "| part (per optimizer step) | ms/step | share of the pipeline step |",
        "|---|---|---|",
    ]
    for name, seconds, share in overhead_rows(step, measured["parts"]):
        lines.append(f"| {name} | {1000 * seconds:,.1f} | {100 * share:.0f}% |")
        if name == "model forward + backward (pipeline's batches)":
            for inner, inner_seconds in measured["model_parts"].items():
                lines.append(
                    f"| &nbsp;&nbsp;of which {inner} | {1000 * inner_seconds:,.1f} | {100 * inner_seconds / step:.0f}% |"
                )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------------------


def run_pipeline(args: PipelineArguments, flags: list[str], output_dir: Path) -> dict:
    """`run_pretraining.py` with `flags` as a user runs it; its `all_results.json`."""
    command = [
        sys.executable, str(REPO / "run_pretraining.py"), *flags, "--train_file", args.train_file,
        "--max_steps", str(args.steps), "--logging_steps", str(args.steps), "--save_strategy", "no",
        "--report_to", "none", "--registry_file", "", "--disable_tqdm", "true", "--do_train",
        "--output_dir", str(output_dir), "--overwrite_output_dir",
    ]  # fmt: skip
    if args.max_train_samples:
        command += ["--max_train_samples", str(args.max_train_samples)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads((output_dir / "all_results.json").read_text())


def median_seconds(step, calls: int) -> float:
    """Median wall time of `calls` calls of `step` after one untimed call."""
    step()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure_pipeline(args: PipelineArguments, flags: list[str]) -> dict:
    """Run the pipeline, then time the benchmark step and the breakdown in this process (see the module docstring)."""
    with tempfile.TemporaryDirectory() as folder:
        output_dir = Path(folder) / "run"
        results = run_pipeline(args, flags, output_dir)
        tokenizer = AutoTokenizer.from_pretrained(output_dir)
        config = ConceptEncoderConfig.from_pretrained(output_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as run_pretraining.py does

    # The run's data path: the same parsing, tokenisation and collator as run_pretraining.py.
    model_args, data_args, *_, training_args = run_pretraining.parse_arguments(
        [*flags, "--train_file", args.train_file, "--output_dir", "unused", "--report_to", "none"]
    )
    raw = run_pretraining.load_raw_datasets(data_args, None)
    column = run_pretraining.text_column_of(raw, data_args)
    length = data_args.max_seq_length
    start = time.perf_counter()
    data_args.overwrite_cache = True  # time the tokenisation itself, not a cache hit
    tokenized = run_pretraining.tokenize_datasets(raw, tokenizer, column, length, data_args, training_args)["train"]
    tokenisation_seconds = time.perf_counter() - start
    tokenized = run_pretraining.select(tokenized, args.max_train_samples, streaming=False)
    collator = run_pretraining.build_collator(data_args, tokenizer, length)
    batch = training_args.per_device_train_batch_size
    features = tokenized.remove_columns([c for c in tokenized.column_names if c not in ("input_ids", "attention_mask")])
    lengths = [len(ids) for ids in features["input_ids"]]
    if training_args.train_sampling_strategy == "group_by_length":
        sampler = LengthGroupedSampler(batch, lengths=lengths, generator=torch.Generator().manual_seed(0))
    else:
        sampler = RandomSampler(features, generator=torch.Generator().manual_seed(0))
    order = list(sampler)
    epoch = [order[i : i + batch] for i in range(0, len(order), batch)]
    positions = sum(len(rows) * max(lengths[i] for i in rows) for rows in epoch)  # each batch pads to its longest
    padding_share = 1 - sum(lengths) / positions

    collated, collator_seconds = [], []
    for rows in epoch[: args.breakdown_batches]:
        rows = [features[i] for i in rows]
        start = time.perf_counter()
        collated.append(collator(rows))
        collator_seconds.append(time.perf_counter() - start)

    torch.manual_seed(0)
    model = run_pretraining.build_model(model_args, config)  # fresh weights of the run's config
    model.train()
    trainer = ConceptTrainer(model=model, args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True))
    optimizer = trainer.create_optimizer()

    def model_step(inputs):
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    def encoder_step(inputs):
        model.zero_grad(set_to_none=True)
        encoded = model.encoder(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
        encoded.square().mean().backward()

    cycle = iter(range(10**9))
    model_seconds = median_seconds(lambda: model_step(collated[next(cycle) % len(collated)]), len(collated) - 1)
    encoder_seconds = median_seconds(lambda: encoder_step(collated[next(cycle) % len(collated)]), len(collated) - 1)
    model_step(collated[0])  # gradients in place for the optimizer and clipping
    clip_seconds = median_seconds(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), 5)
    optimizer_seconds = median_seconds(optimizer.step, 5)

    full = {
        "input_ids": torch.randint(5, config.vocab_size, (batch, length)),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }
    full = collator([{"input_ids": row} for row in full["input_ids"].tolist()])  # the objective's labels and noise
    full["attention_mask"] = (
        torch.ones_like(full["input_ids"]) if data_args.objective == "mlm" else full["attention_mask"]
    )
    benchmark_seconds = median_seconds(lambda: model_step(full), 3)

    step = results["train_runtime"] / args.steps
    epoch_steps = len(tokenized) / batch
    return {
        "steps": args.steps,
        "batch": batch,
        "length": length,
        "pipeline_step_seconds": step,
        "pipeline_tokens_per_second": results["train_tokens_per_second"] * (1 - padding_share),
        "tokens_per_step": results["train_tokens_per_second"] * (1 - padding_share) * step,
        "benchmark_tokens_per_second": batch * length / benchmark_seconds,
        "padding_share": padding_share,
        "tokenisation_seconds": tokenisation_seconds,
        "dataset_tokens": sum(lengths),
        "tokenisation_epoch_share": tokenisation_seconds / (tokenisation_seconds + epoch_steps * step),
        "parts": {
            "collator": statistics.median(collator_seconds),
            "model forward + backward (pipeline's batches)": model_seconds,
            "gradient clipping (max_grad_norm)": clip_seconds,
            "optimizer step": optimizer_seconds,
        },
        "model_parts": {
            "encoder": encoder_seconds,
            "decoder + LM head + loss": model_seconds - encoder_seconds,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    ours, passed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    (args,) = HfArgumentParser(PipelineArguments).parse_args_into_dataclasses(args=ours)
    flags = [*PRESETS[args.preset], *passed]
    load_at_start = load_average()
    measured = measure_pipeline(args, flags)
    print(f"## Training pipeline vs benchmark step: preset {args.preset} {' '.join(passed)}\n")
    print(f"- torch.get_num_threads() = {torch.get_num_threads()}; load average (1, 5, 15 min; {os.cpu_count()} CPUs)")
    print(f"  at start {load_at_start}, at the end {load_average()}")
    print(overhead_report(measured), flush=True)
    return measured


if __name__ == "__main__":
    main()
