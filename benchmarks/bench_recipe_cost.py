"""Cost per training token of pretraining recipes, measured in one process on the same batches (issue 12, goal 4).

Each recipe is a `run_pretraining.py` preset (or `NAME=flags`) turned into its model and collator by the script's own
functions (`parse_arguments`, `build_config`, `build_model`, `build_collator`); every recipe gets the same sizes, the
same tokenizer and the same documents. The timed step is the Trainer's unit of work on CPU: forward with the
recipe's loss (task loss + its concept losses), backward, gradient clipping and an AdamW step. Recipes are timed in
alternating rounds (A, B, A, B, ...) so load on a shared machine falls on all of them alike; the table gives the
median seconds per step, tokens/s (every position of the `[batch, max_seq_length]` batches) and each recipe's time
relative to the first.

    python benchmarks/bench_recipe_cost.py --tokenizer_name outputs/study_small_.../data/tokenizer \
        --train_file ../shared/data/corpus/wikitext-2/train.txt --recipes tsdae_posonly tsdae_posonly_tregs
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_encoder import load_average  # noqa: E402
from concept_encoder import run_pretraining  # noqa: E402
from concept_encoder.training.config_flags import with_merged_overrides  # noqa: E402
from concept_encoder.training.losses import ConceptLoss  # noqa: E402

SMALL_SIZES = "hidden_size=128,num_hidden_layers=2,num_attention_heads=4,intermediate_size=256,concept_num=32"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["tsdae_posonly", "tsdae_posonly_tregs"],
                        help="preset names of run_pretraining.py, or NAME='--flag value ...'")  # fmt: skip
    parser.add_argument("--tokenizer_name", required=True, help="a tokenizer folder (e.g. a study's data/tokenizer)")
    parser.add_argument("--train_file", required=True, help="plain text, one document per line")
    parser.add_argument("--config_overrides", default=SMALL_SIZES, help="sizes shared by every recipe")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15, help="timed steps per recipe (after one untimed step)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    return parser.parse_args(argv)


def recipe_flags(recipe: str) -> tuple[str, list[str]]:
    """`tsdae_posonly` → `--recipe tsdae_posonly` (training/recipes.py); `NAME=--flag value ...` →
    those flags."""
    name, separator, flags = recipe.partition("=")
    if separator:
        return name, flags.split()
    return recipe, ["--recipe", recipe]


def build_recipe(flags: list[str], args, tokenizer):
    """The model, collator and training loss (`ConceptLoss`, or None) `run_pretraining.py` would build for these flags
    at the shared sizes."""
    # a recipe's own fields win over the shared sizes
    parsed = run_pretraining.parse_arguments(with_merged_overrides(flags, args.config_overrides))
    model_args, data_args, loss_args = parsed[:3]
    config = run_pretraining.build_config(model_args)
    run_pretraining.check_model_and_objective(config, data_args.objective)
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    config.mask_token_id = tokenizer.mask_token_id
    config.max_position_embeddings = max(config.max_position_embeddings, args.max_seq_length)
    config.validate_concept_encoder()
    torch.manual_seed(0)
    model = run_pretraining.build_model(model_args, config).train()
    concept_loss = ConceptLoss(loss_args) if loss_args.concept_losses else None
    return model, run_pretraining.build_collator(data_args, tokenizer, args.max_seq_length), concept_loss


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name)
    lines = [line for line in Path(args.train_file).read_text(encoding="utf-8").splitlines() if len(line) > 200]
    if len(lines) < args.batch_size:
        raise ValueError(f"--train_file {args.train_file}: fewer than {args.batch_size} lines of 200+ characters.")
    encoded = tokenizer(lines[: args.batch_size], truncation=True, max_length=args.max_seq_length)
    examples = [{"input_ids": ids} for ids in encoded["input_ids"]]
    max_grad_norm = TrainingArguments(output_dir="unused").max_grad_norm  # the Trainer's default clipping

    steps = {}
    for recipe in args.recipes:
        name, flags = recipe_flags(recipe)
        model, collator, concept_loss = build_recipe(flags, args, tokenizer)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        torch.manual_seed(0)
        batch = collator(examples)  # one fixed noisy batch per recipe: the same documents for all

        def step(model=model, optimizer=optimizer, batch=batch, concept_loss=concept_loss):
            outputs = model(**batch)
            loss = outputs.loss if concept_loss is None else concept_loss(outputs.loss, outputs.concept_states)[0]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # untimed: first-call allocation
        steps[name] = step
    seconds = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(values) for name, values in seconds.items()}
    first = next(iter(medians.values()))
    tokens = args.batch_size * args.max_seq_length
    print(f"{args.rounds} alternating rounds, {args.threads} thread(s), batch {args.batch_size} × {args.max_seq_length}"
          f", sizes {args.config_overrides}; load average {load_average()}\n")  # fmt: skip
    print("| Recipe | ms / step (median) | tokens/s | vs first |\n|---|---|---|---|")
    for name, median in medians.items():
        print(f"| {name} | {1000 * median:.1f} | {tokens / median:,.0f} | {median / first:.3f}× |")
    return medians


if __name__ == "__main__":
    main()
