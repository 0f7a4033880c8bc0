"""A run's log reads like transformers' own examples: no warning repeated at every step, each library line once, a
progress bar on every long step, no blank lines."""

import subprocess
import sys
import warnings

import torch
from conftest import REPO_ROOT, tiny_config
from transformers import TrainerState, TrainingArguments

from concept_encoder.collators import DataCollatorForConceptMLM
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel
from concept_encoder.training.tokenizer import train_tokenizer
from concept_encoder.training.trainer import ConceptDiagnosticsCallback, ConceptTrainer
from concept_encoder.training.zero_shot import sentence_vectors


def tiny_mlm(tokenizer):
    torch.manual_seed(0)
    return ConceptEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer)))


def test_training_and_evaluation_on_cpu_do_not_warn_about_pin_memory(tokenizer, wikitext_lines, tmp_path):
    features = [dict(tokenizer(line, truncation=True, max_length=32)) for line in wikitext_lines[:16]]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, save_strategy="no", report_to="none",
        disable_tqdm=True,
    )  # fmt: skip
    trainer = ConceptTrainer(
        model=tiny_mlm(tokenizer), args=args, train_dataset=features, eval_dataset=features,
        data_collator=DataCollatorForConceptMLM(tokenizer),
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
        trainer.evaluate()
    assert not [w for w in caught if "pin_memory" in str(w.message)]
    assert trainer.args.dataloader_pin_memory is False


# Sets up the scripts' logging at INFO in a fresh process, then logs one line through datasets' logger.
LOG_ONCE = """
import logging, sys
from transformers import TrainingArguments
sys.path.insert(0, sys.argv[1])
from concept_encoder.training.run_info import setup_logging
setup_logging(TrainingArguments(output_dir=sys.argv[2], log_level="info"), logging.getLogger("script"))
import datasets
datasets.utils.logging.get_logger("datasets.probe").info("probe line")
"""


def test_each_datasets_line_is_printed_once(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", LOG_ONCE, str(REPO_ROOT), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout + result.stderr).count("probe line") == 1


def test_tokenizer_training_prints_no_blank_lines(capfd, wikitext_lines):
    capfd.readouterr()
    train_tokenizer(wikitext_lines[:200], vocab_size=120)
    train_tokenizer(wikitext_lines[:200], vocab_size=300, algorithm="bpe")
    out, err = capfd.readouterr()
    assert [line for line in (out + err).splitlines() if not line.strip()] == []


def test_concept_diagnostics_over_a_dev_set_show_a_progress_bar(capfd, tokenizer, wikitext_lines, tmp_path):
    """At a GLUE evaluation the diagnostics run over the whole dev set, as long as the evaluation itself."""
    features = [dict(tokenizer(line, truncation=True, max_length=32)) for line in wikitext_lines[:24]]
    loader = torch.utils.data.DataLoader(features, batch_size=8, collate_fn=DataCollatorForConceptMLM(tokenizer))
    args = TrainingArguments(output_dir=str(tmp_path), disable_tqdm=False, report_to="none")
    logs = {"eval_runtime": 1.0}
    capfd.readouterr()
    ConceptDiagnosticsCallback().on_log(
        args, TrainerState(), None, logs=logs, model=tiny_mlm(tokenizer), eval_dataloader=loader
    )
    assert "eval_concept_effective_rank" in logs
    assert "Concept diagnostics" in capfd.readouterr().err


def test_zero_shot_encoding_shows_a_progress_bar(capfd, tokenizer, wikitext_lines):
    model = ConceptEncoderModel(tiny_config(vocab_size=len(tokenizer)))
    capfd.readouterr()
    vectors = sentence_vectors(model, tokenizer, wikitext_lines[:40], max_length=32, batch_size=16)
    assert vectors.shape == (40, model.config.hidden_size)
    assert "Encoding" in capfd.readouterr().err
