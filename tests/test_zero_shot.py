"""Zero-shot similarity: Spearman of cosines against scipy, identical sentences, SICK loading, the command."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from scipy.stats import spearmanr
from transformers import BertConfig, BertModel

from concept_encoder.modeling_concept_encoder import ConceptEncoderModel
from concept_encoder.training import zero_shot
from concept_encoder.training.glue import TASKS, load_glue_dir, load_sick, write_sick_folder


def test_spearman_of_cosines_matches_scipy_on_a_handmade_case():
    first = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    second = torch.tensor([[1.0, 0.1], [1.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    gold = [4.0, 2.5, 0.5, 3.0]
    cosines = [1 / np.sqrt(1.01), 1 / np.sqrt(2), 0.0, 1.0]
    expected = 100 * spearmanr(cosines, gold)[0]
    assert zero_shot.spearman_of_cosines(first, second, gold) == pytest.approx(expected)
    assert zero_shot.spearman_of_cosines(first, second, [3, 2, 1, 4]) == pytest.approx(100.0)


@pytest.mark.parametrize("family", ["concept", "bert"])
def test_identical_sentences_have_cosine_one_and_pooling_follows_the_model(family, tokenizer):
    torch.manual_seed(0)
    if family == "concept":
        model = ConceptEncoderModel(tiny_config(vocab_size=len(tokenizer)))
    else:
        model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=48, max_position_embeddings=64))  # fmt: skip
    sentences = ["The cat sat on the mat.", "A completely different and much longer sentence about rivers.",
                 "The cat sat on the mat."]  # fmt: skip
    vectors = zero_shot.sentence_vectors(model, tokenizer, sentences, max_length=32, batch_size=2)
    assert vectors.shape == (3, 32)
    cosine = torch.nn.functional.cosine_similarity(vectors[0], vectors[2], dim=0)
    assert cosine.item() == pytest.approx(1.0, abs=1e-5)
    inputs = tokenizer(sentences[:1], return_tensors="pt", return_token_type_ids=False)
    states = model(**inputs).last_hidden_state
    torch.testing.assert_close(vectors[0], states[0].mean(dim=0), atol=1e-5, rtol=1e-5)  # one sentence: no padding


def test_sick_splits_and_the_glue_layout_folder(data_dir, tmp_path):
    first, second, scores = load_sick(data_dir / "sick" / "SICK.txt", "TEST")
    assert len(first) == len(second) == len(scores) == 4906 and min(scores) >= 1.0 and max(scores) <= 5.0
    assert len(load_sick(data_dir / "sick" / "SICK.txt", "TRAIN")[0]) == 4439
    with pytest.raises(ValueError, match="SICK split 'DEV' is unknown"):
        load_sick(data_dir / "sick" / "SICK.txt", "DEV")
    write_sick_folder(data_dir / "sick" / "SICK.txt", tmp_path)
    sick = load_glue_dir(str(tmp_path), TASKS["sickr"])
    assert sick.num_rows == {"train": 4439, "validation": 4906}
    assert sick["validation"][0]["sentence1"] == first[0] and sick["validation"][0]["label"] == pytest.approx(scores[0])


def test_command_writes_results_summary_and_the_registry_cell(tokenizer, data_dir, tmp_path):
    checkpoint = tmp_path / "tiny_bert"
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    registry = tmp_path / "registry.md"
    argv = ["--model_name_or_path", str(checkpoint), "--data_dir", str(data_dir), "--max_pairs", "64",
            "--max_seq_length", "64", "--registry_file", str(registry)]  # fmt: skip
    summary = zero_shot.main([*argv, "--output_dir", str(tmp_path / "zs")])
    scores = json.loads((tmp_path / "zs" / "zero_shot_results.json").read_text())
    assert set(scores) == {"stsb", "sickr"} and all(-100 <= value <= 100 for value in scores.values())
    assert summary["checkpoint_run_id"] == "tiny_bert" and summary["pooling"] == "masked token mean"
    # the fields every run_summary.json shares (run_info.run_summary), written by the one finish_run
    assert json.loads((tmp_path / "zs" / "run_summary.json").read_text()) == summary
    assert summary["architecture"] == "H32 L1 (bert)" and summary["output_dir"] == str((tmp_path / "zs").resolve())
    assert {"date", "timestamp", "machine", "git_commit", "wandb", "concept_num"} <= set(summary)
    scratch = zero_shot.main([*argv, "--output_dir", str(tmp_path / "zs_scratch"), "--from_scratch"])
    assert scratch["checkpoint_run_id"] == "scratch_bert_H32L1"
    text = registry.read_text()
    assert f"**STS-B:** {scores['stsb']:.1f} <br> **SICK-R:** {scores['sickr']:.1f}" in text
    assert "| `scratch_bert_H32L1` | H32 L1 (bert) |" in text  # the random-init row names its architecture
