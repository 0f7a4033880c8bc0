"""The training-pipeline overhead report: its arithmetic on known numbers, its arguments, its flag reading."""

import logging

import pytest

from benchmarks.bench_pipeline import PipelineArguments, overhead_report, overhead_rows

MEASURED = {
    "steps": 30,
    "batch": 32,
    "length": 64,
    "pipeline_step_seconds": 0.200,
    "pipeline_tokens_per_second": 7_000.0,
    "tokens_per_step": 1_400.0,
    "benchmark_tokens_per_second": 14_000.0,
    "padding_share": 0.3,
    "tokenisation_seconds": 20.0,
    "dataset_tokens": 1_000_000,
    "tokenisation_epoch_share": 0.01,
    "parts": {
        "collator": 0.002,
        "model forward + backward (pipeline's batches)": 0.150,
        "gradient clipping (max_grad_norm)": 0.004,
        "optimizer step": 0.010,
    },
    "model_parts": {"encoder": 0.090, "decoder + LM head + loss": 0.060},
}


def test_overhead_rows_add_the_remainder():
    rows = overhead_rows(0.200, MEASURED["parts"])
    assert [name for name, _, _ in rows[:-1]] == list(MEASURED["parts"])
    name, rest, share = rows[-1]
    assert name.startswith("rest of the Trainer loop")
    assert rest == pytest.approx(0.200 - 0.166) and share == pytest.approx(0.034 / 0.200)
    assert sum(seconds for _, seconds, _ in rows) == pytest.approx(0.200)
    assert sum(share for _, _, share in rows) == pytest.approx(1.0)


def test_overhead_rows_report_a_negative_remainder_as_measured():
    """Parts timed alone may add up to more than the run's step (noise): the remainder is not clipped to 0."""
    (*_, (_, rest, share)) = overhead_rows(0.1, {"model": 0.12})
    assert rest == pytest.approx(-0.02) and share == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="pipeline_seconds"):
        overhead_rows(0.0, {})


def test_overhead_report_shows_the_ratio_and_every_part():
    report = overhead_report(MEASURED)
    assert "pipeline / benchmark: **50%**" in report
    assert "7,000 real tokens/s" in report and "14,000 tokens/s" in report
    assert "padding: 30% of the positions" in report
    assert "| model forward + backward (pipeline's batches) | 150.0 | 75% |" in report
    assert "| &nbsp;&nbsp;of which encoder | 90.0 | 45% |" in report
    assert "| collator | 2.0 | 1% |" in report
    assert "| rest of the Trainer loop (dataloader, callbacks, logging, scheduler) | 34.0 | 17% |" in report


def test_pipeline_arguments(caplog):
    with caplog.at_level(logging.WARNING):
        assert PipelineArguments(preset="seed").preset == "mrcogito"  # the old name, until 0.3
    assert "--preset seed is deprecated (removed in 0.3): use --preset mrcogito" in caplog.text
    with pytest.raises(ValueError, match="--preset 'gpt' is unknown"):
        PipelineArguments(preset="gpt")
    with pytest.raises(ValueError, match="at least 2"):
        PipelineArguments(steps=1)


def test_pipeline_benchmark_runs_end_to_end(tmp_path, capsys):
    """A tiny TSDAE run through run_pretraining.py and the breakdown; flags after `--` override the preset's."""
    from benchmarks.bench_pipeline import main

    text = tmp_path / "train.txt"
    words = "the cat sat on a mat while dogs ran far away from home".split()
    text.write_text("\n".join(" ".join(words[: 3 + i % 10]) for i in range(200)) + "\n", encoding="utf-8")
    tiny = ["--hidden_size", "16", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size",
            "32", "--concept_num", "4", "--train_tokenizer_vocab_size", "120", "--max_seq_length", "16",
            "--per_device_train_batch_size", "4", "--use_cpu"]  # fmt: skip
    measured = main(["--preset", "demo", "--train_file", str(text), "--steps", "2", "--breakdown_batches", "2",
                     "--", *tiny])  # fmt: skip
    assert measured["batch"] == 4 and measured["length"] == 16
    assert measured["pipeline_tokens_per_second"] > 0 and measured["benchmark_tokens_per_second"] > 0
    assert 0 < measured["padding_share"] < 1  # lines of 3 to 12 words in batches of 4
    assert all(seconds > 0 for seconds in measured["parts"].values()) and measured["model_parts"]["encoder"] > 0
    # decoder + LM head + loss is the model step minus the encoder step: a difference of two timings, so on a
    # loaded machine it may come out below zero for a model this small; it must still add up.
    model_step = measured["parts"]["model forward + backward (pipeline's batches)"]
    assert sum(measured["model_parts"].values()) == pytest.approx(model_step)
    assert "pipeline / benchmark:" in capsys.readouterr().out
