"""The speed benchmark runs end to end at tiny sizes and prints its table; its FLOP counter matches a hand count."""

import pytest
import torch
from conftest import TINY_SIZES

from benchmarks.bench_encoder import (
    MODELS,
    BenchmarkArguments,
    hf_perceiver_flops,
    layer_flops,
    main,
    parse_concepts_per_tokens,
    step_flops,
)

SIZES = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, concept_num=8,
             vocab_size=200)  # fmt: skip
TINY = [
    "--lengths", "64", "128", "--repeats", "1", "--hidden_size", "32", "--num_hidden_layers", "1",
    "--num_attention_heads", "4", "--intermediate_size", "64", "--concept_num", "8", "--vocab_size", "200",
    "--long_length", "256", "--mlm_length", "64", "--mlm_batch_size", "2", "--peak_matmul_size", "256", "--threads", "1",
]  # fmt: skip


@pytest.fixture(autouse=True)
def keep_thread_count():
    """TINY runs on one thread (tiny steps on a loaded machine spend their time in thread hand-offs); the rest of
    the test session keeps its own setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_flop_counter_matches_hand_count():
    """H=4, I=8, C=2, N=3, one layer, one sequence; every matmul [m, k] @ [k, n] costs 2·m·k·n.

    perceiver: cross q 2·2·4·4 = 64, k/v 2·3·4·8 = 192, logits + values 2·(2·2·4·3) = 96, out 64 → 416;
      self q/k/v 2·2·4·12 = 192, logits + values 2·(2·2·4·2) = 64, out 64 → 320;
      gated FFN 2·2·4·16 + 2·2·8·4 = 384 → 1120.
    bixt: + token q 2·3·4·4 = 96, concept k/v 2·2·4·8 = 128, logits + values 2·(2·3·4·2) = 96, out 96 → 1536.
    bert: q/k/v 2·3·4·12 = 288, logits + values 2·(2·3·4·3) = 144, out 96,
      FFN 2·3·4·8 + 2·3·8·4 = 384 → 912.
    """
    assert layer_flops("perceiver", length=3, hidden=4, intermediate=8, concepts=2) == 1120
    assert layer_flops("bixt", length=3, hidden=4, intermediate=8, concepts=2) == 1536
    assert layer_flops("bert", length=3, hidden=4, intermediate=8, concepts=2) == 912
    # modernbert: as bert with the gated FFN 2·3·4·16 + 2·3·8·4 = 576 → 1104
    assert layer_flops("modernbert", length=3, hidden=4, intermediate=8, concepts=2) == 1104
    args = BenchmarkArguments(hidden_size=4, num_hidden_layers=2, intermediate_size=8, concept_num=2, models=["bixt"])
    assert step_flops("bixt", args, length=3, batch=5, mode="forward") == 5 * 2 * 1536
    assert step_flops("bixt", args, length=3, batch=5, mode="train") == 3 * 5 * 2 * 1536
    # read once: layer 0 as perceiver (1120), layer 1 without the cross-attention: 1120 − 416 = 704
    args.models = ["perceiver_read_once"]
    assert step_flops("perceiver_read_once", args, length=3, batch=1, mode="forward") == 1120 + 704
    args.gradient_checkpointing = True  # the layers' forward runs twice
    assert step_flops("bixt", args, length=3, batch=5, mode="train") == 4 * 5 * 2 * 1536


def test_hf_perceiver_flop_count_matches_hand_count():
    """H=4, N=3, 2 latents, MLP width 8, 2 self-attention blocks.

    cross: q 64, k/v 192, logits + values 96, out 64, MLP of widening 1: 2·2·4·4 + 2·2·4·4 = 128 → 544;
    block: q/k/v 192, logits + values 64, out 64, plain MLP 2·2·4·8 + 2·2·8·4 = 256 → 576; total 544 + 2·576 = 1696.
    """
    assert hf_perceiver_flops(length=3, hidden=4, intermediate=8, latents=2, self_attends=2) == 1696
    args = BenchmarkArguments(hidden_size=4, num_hidden_layers=2, bert_intermediate_size=8, concept_num=2)
    assert step_flops("hf_perceiver", args, length=3, batch=1, mode="forward") == 1696
    assert step_flops("hf_perceiver", args, length=3, batch=1, mode="forward", concepts=4) > 1696


def test_concepts_per_tokens_parser():
    assert parse_concepts_per_tokens("32768:2048, 4096:512,262144:4096") == [(4096, 512), (32768, 2048), (262144, 4096)]
    assert parse_concepts_per_tokens(None) == [] and parse_concepts_per_tokens("") == []
    for bad in ("4096", "4096:x", "4096:0", "-1:5", "4096:512:3"):
        with pytest.raises(ValueError, match="is not N:C with positive integers"):
            parse_concepts_per_tokens(bad)
    with pytest.raises(ValueError, match="names a length twice"):
        parse_concepts_per_tokens("4096:512,4096:1024")
    assert BenchmarkArguments(concepts_per_tokens="512:16").sweep == [(512, 16)]


def test_benchmark_runs_and_prints_the_table(capsys):
    results = main(TINY)
    table = capsys.readouterr().out
    assert "matmul peak" in table and "torch.get_num_threads() = " in table
    assert "| vs BERT | vs ModernBERT | vs HF Perceiver |" in table
    for model in MODELS:
        for length in (64, 128):
            for mode in ("train", "forward"):
                result = results[model, length, mode]
                assert result.skipped is None and result.seconds > 0
                assert f"| {model} | {length} | 1 | {mode} |" in table
        assert results[model, 256, "long"].seconds > 0
    assert results["mlm-sparse", 64, "train"].seconds > 0 and results["mlm-dense", 64, "train"].seconds > 0
    assert "sparse (15% labelled)" in table and "dense (every position)" in table


def test_benchmark_sweeps_concepts_with_length(capsys):
    """Each (N, C) pair runs one training step with C concepts (latents); BERT-like rows have no C."""
    results = main([*TINY, "--lengths", "64", "--long_length", "0", "--mlm_length", "0", "--concepts_per_tokens",
                    "96:4,128:16", "--gradient_checkpointing"])  # fmt: skip
    table = capsys.readouterr().out
    assert "| model | N | C | batch |" in table and "gradient checkpointing" in table
    for model in MODELS:
        for length, concepts in ((96, 4), (128, 16)):
            result = results[model, length, "sweep"]
            assert result.seconds > 0 and result.skipped is None
            assert result.concepts == (None if model in ("bert", "modernbert") else concepts)
    assert "| perceiver | 128 | 16 | 1 | train |" in table and "| bert | 128 | — | 1 | train |" in table
    assert results["perceiver", 128, "sweep"].flops > step_flops(
        "perceiver", BenchmarkArguments(**SIZES, gradient_checkpointing=True), 128, 1, "train"
    )


def test_benchmark_skips_what_exceeds_the_budget(capsys):
    """A time budget of 1 µs lets the first length run (nothing to extrapolate from) and skips the next one."""
    results = main(
        [*TINY, "--models", "bert", "--time_budget_s", "0.000001", "--long_length", "0", "--mlm_length", "0"]
    )
    assert results["bert", 64, "train"].seconds > 0
    assert results["bert", 128, "train"].skipped.startswith("est. ")
    assert "| bert | 128 | 1 | train | skipped (est. " in capsys.readouterr().out


def test_benchmark_skips_hf_perceiver_by_its_attention_weights(capsys):
    """HF Perceiver's eager attention keeps [heads, C, N] weights: the estimate counts them even when the measured
    peak of a shorter length is small."""
    results = main([*TINY, "--models", "hf_perceiver", "--lengths", "64", "--long_length", "0", "--mlm_length", "0",
                    "--concepts_per_tokens", "262144:4096"])  # fmt: skip
    assert "GiB > --memory_budget_gib 8" in results["hf_perceiver", 262144, "sweep"].skipped


def test_benchmark_rejects_unknown_models():
    with pytest.raises(ValueError, match="--models has unknown names"):
        BenchmarkArguments(models=["gpt"])


def test_recipe_cost_benchmark_builds_each_preset_as_run_pretraining_does(tmp_path, tokenizer, data_dir, capsys):
    from benchmarks import bench_recipe_cost

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    sizes = ",".join(f"{key}={value}" for key, value in TINY_SIZES.items())
    argv = ["--tokenizer_name", str(tmp_path / "tokenizer"), "--config_overrides", sizes, "--batch_size", "4",
            "--max_seq_length", "32", "--rounds", "2", "--threads", "1",
            "--train_file", str(data_dir / "corpus" / "wikitext-2" / "train.txt")]  # fmt: skip
    args = bench_recipe_cost.parse_args(argv)
    model, collator, concept_loss = bench_recipe_cost.build_recipe(
        bench_recipe_cost.recipe_flags("tsdae_posonly_tregs")[1], args, tokenizer
    )
    assert concept_loss.arguments.concept_losses == ["t_regs"] and model.config.decoder_query == "position"
    assert type(collator).__name__ == "DataCollatorForTSDAE"
    own = ["--model_type", "perceiver_mlm", "--config_overrides", "concept_num=3"]  # a recipe's own field wins
    model, _, concept_loss = bench_recipe_cost.build_recipe(own, args, tokenizer)
    assert concept_loss is None
    assert model.config.concept_num == 3 and model.config.hidden_size == TINY_SIZES["hidden_size"]
    medians = bench_recipe_cost.main([*argv, "--recipes", "tsdae_posonly", "mlm=--model_type perceiver_mlm"])
    assert list(medians) == ["tsdae_posonly", "mlm"] and all(value > 0 for value in medians.values())
    assert "| mlm |" in capsys.readouterr().out
