"""The speed benchmark runs end to end at tiny sizes and prints its table; its FLOP counter matches a hand count."""

import pytest

from benchmarks.bench_encoder import BenchmarkArguments, layer_flops, main, step_flops

TINY = [
    "--lengths", "64", "256", "--repeats", "1", "--hidden_size", "32", "--num_hidden_layers", "1",
    "--num_attention_heads", "4", "--intermediate_size", "64", "--concept_num", "8", "--vocab_size", "200",
    "--long_length", "512", "--mlm_length", "64", "--mlm_batch_size", "2",
]  # fmt: skip


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
    args = BenchmarkArguments(hidden_size=4, num_hidden_layers=2, intermediate_size=8, concept_num=2, models=["bixt"])
    assert step_flops("bixt", args, length=3, batch=5, mode="forward") == 5 * 2 * 1536
    assert step_flops("bixt", args, length=3, batch=5, mode="train") == 3 * 5 * 2 * 1536


def test_benchmark_runs_and_prints_the_table(capsys):
    results = main(TINY)
    table = capsys.readouterr().out
    assert "matmul peak" in table and "torch.get_num_threads() = " in table
    for model in ("perceiver", "bixt", "bert"):
        for length in (64, 256):
            for mode in ("train", "forward"):
                result = results[model, length, mode]
                assert result.skipped is None and result.seconds > 0
                assert f"| {model} | {length} | 1 | {mode} |" in table
        assert results[model, 512, "long"].seconds > 0
    assert results["mlm-sparse", 64, "train"].seconds > 0 and results["mlm-dense", 64, "train"].seconds > 0
    assert "sparse (15% labelled)" in table and "dense (every position)" in table


def test_benchmark_skips_what_exceeds_the_budget(capsys):
    """A time budget of 1 µs lets the first length run (nothing to extrapolate from) and skips the next one."""
    results = main(
        [*TINY, "--models", "bert", "--time_budget_s", "0.000001", "--long_length", "0", "--mlm_length", "0"]
    )
    assert results["bert", 64, "train"].seconds > 0
    assert results["bert", 256, "train"].skipped.startswith("est. ")
    assert "| bert | 256 | 1 | train | skipped (est. " in capsys.readouterr().out


def test_benchmark_rejects_unknown_models():
    with pytest.raises(ValueError, match="--models has unknown names"):
        BenchmarkArguments(models=["gpt"])
