"""The ViaDecoder classifier (MrCogito's default head) and the training scripts on MrCogito's checkpoints: it loads
encoder and decoder from an MLM checkpoint (ours or MrCogito's), padding does not change its logits, and
run_glue.py (`--classifier via_decoder`) / run_pretraining.py (TSDAE) take a MrCogito checkpoint as
`--model_name_or_path`."""

import json
import sys

import pytest
import torch
from conftest import data_root, tiny_config
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, HfArgumentParser

from concept_encoder import run_glue, run_pretraining
from concept_encoder.modeling_concept_encoder import (
    ConceptEncoderForMaskedLM,
    ConceptEncoderForSequenceClassification,
    ConceptEncoderModel,
)
from concept_encoder.training.tokenizer import train_tokenizer

MRCOGITO_FIXTURES = data_root().parent / "fixtures" / "mrcogito"


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    """A tokenizer of the MrCogito fixtures' 100 tokens ([PAD] 0 ... [MASK] 4, as their configs)."""
    folder = tmp_path_factory.mktemp("small_tokenizer")
    text = ["the cat sat on the mat and the dog ran in the park", "a company said it will buy the shares"] * 20
    tokenizer = train_tokenizer(text, vocab_size=80)
    tokenizer.add_tokens([f"word{i}" for i in range(100 - len(tokenizer))])
    assert len(tokenizer) == 100
    tokenizer.save_pretrained(folder)
    return folder


def via_decoder(**overrides) -> ConceptEncoderForSequenceClassification:
    return ConceptEncoderForSequenceClassification(tiny_config(classifier_head="via_decoder", **overrides))


def decoder_and_encoder_weights(model) -> dict:
    return {key: value for key, value in model.state_dict().items() if key.startswith(("encoder.", "decoder."))}


@pytest.mark.parametrize("source", ["ours", "mrcogito"])
def test_via_decoder_loads_encoder_and_decoder_from_an_mlm_checkpoint(tmp_path, source):
    if source == "ours":
        folder = tmp_path / "mlm"
        ConceptEncoderForMaskedLM(tiny_config(decoder_query="position")).save_pretrained(folder)
    else:
        folder = MRCOGITO_FIXTURES / "perceiver_posonly_mlm"
    mlm = AutoModelForMaskedLM.from_pretrained(folder)
    classifier = ConceptEncoderForSequenceClassification.from_pretrained(
        folder, num_labels=3, classifier_head="via_decoder"
    )
    assert classifier.config.decoder_query == "position"
    expected, loaded = decoder_and_encoder_weights(mlm), decoder_and_encoder_weights(classifier)
    assert expected.keys() == loaded.keys() and any(key.startswith("decoder.") for key in loaded)
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key
    assert classifier.classifier.linear.out_features == 3


@pytest.mark.parametrize("source", ["weighted_mlm", "encoder"])
def test_via_decoder_refuses_a_checkpoint_without_a_perceiver_decoder(tmp_path, source):
    """The head decodes with the pretrained decoder: from a checkpoint that has none it would be random, not new."""
    config = tiny_config(decoder_type="weighted")
    model = ConceptEncoderForMaskedLM(config) if source == "weighted_mlm" else ConceptEncoderModel(config)
    model.save_pretrained(tmp_path / source)
    with pytest.raises(ValueError, match="reuses the checkpoint's `decoder`, but the checkpoint .* has none"):
        ConceptEncoderForSequenceClassification.from_pretrained(tmp_path / source, classifier_head="via_decoder")
    pooled = ConceptEncoderForSequenceClassification.from_pretrained(tmp_path / source, classifier_head="pooled")
    assert pooled.config.classifier_head == "pooled"  # a new pooled head on the pretrained encoder is fine


@pytest.mark.parametrize("decoder_query", ["position", "token_and_position"])
def test_via_decoder_logits_do_not_depend_on_padding(decoder_query):
    torch.manual_seed(0)
    model = via_decoder(decoder_query=decoder_query).eval()
    input_ids = torch.randint(5, 200, (2, 7))
    padded = torch.cat([input_ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 7, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short = model(input_ids, torch.ones_like(input_ids)).logits
        long = model(padded, mask).logits
    torch.testing.assert_close(long, short, atol=1e-5, rtol=1e-4)


def test_via_decoder_problem_types():
    model = via_decoder(num_labels=1)
    input_ids = torch.randint(5, 200, (3, 6))
    loss = model(input_ids, labels=torch.tensor([0.5, 1.0, 2.0])).loss  # regression
    assert loss.ndim == 0 and loss > 0
    multi = via_decoder(num_labels=2, problem_type="multi_label_classification")
    assert multi(input_ids, labels=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])).loss > 0


def test_run_glue_fine_tunes_a_mrcogito_checkpoint_through_its_decoder(small_tokenizer, tmp_path):
    (summary,) = run_glue.main(
        [
            "--model_name_or_path", str(MRCOGITO_FIXTURES / "perceiver_posonly_mlm"),
            "--tokenizer_name", str(small_tokenizer),
            "--classifier", "via_decoder",
            "--task_name", "mrpc",
            "--data_dir", str(data_root() / "glue"),
            "--output_dir", str(tmp_path),
            "--max_train_samples", "32", "--max_eval_samples", "32", "--per_device_train_batch_size", "16",
            "--max_seq_length", "64", "--num_train_epochs", "1", "--save_strategy", "no",
            "--registry_file", "", "--report_to", "none", "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    assert summary["pair_encoding"] == "concat"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["ConceptEncoderForSequenceClassification"]
    assert config["classifier_head"] == "via_decoder"
    assert config["decoder_position_embeddings"] == "own" and "decoder_posonly" not in config
    assert 0.0 <= json.loads((tmp_path / "all_results.json").read_text())["eval_f1"] <= 1.0
    with pytest.raises(ValueError, match="--pair_encoding concat"):
        run_glue.main(["--model_name_or_path", str(MRCOGITO_FIXTURES / "perceiver_posonly_mlm"), "--task_name", "mrpc",
                       "--classifier", "via_decoder", "--pair_encoding", "separate", "--output_dir", str(tmp_path)])  # fmt: skip


def test_run_pretraining_continues_a_mrcogito_checkpoint_with_tsdae(small_tokenizer, tmp_path, monkeypatch):
    """Learning rate 0 keeps the weights as loaded: the saved encoder is MrCogito's, under our names."""
    corpus = tmp_path / "train.txt"
    corpus.write_text("the cat sat on the mat\nthe dog ran in the park\n" * 16)
    mrcogito = MRCOGITO_FIXTURES / "tsdae_posonly_bixt"
    argv = [
        "--model_name_or_path", str(mrcogito), "--tokenizer_name", str(small_tokenizer),
        "--model_type", "perceiver_posonly_mlm", "--objective", "tsdae", "--line_by_line",
        "--train_file", str(corpus), "--max_seq_length", "32", "--per_device_train_batch_size", "4",
        "--max_steps", "2", "--learning_rate", "0", "--do_train", "--report_to", "none", "--registry_file", "",
        "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["run_pretraining.py", *argv])
    run_pretraining.main()
    expected = AutoModelForMaskedLM.from_pretrained(mrcogito).state_dict()
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert saved.keys() <= expected.keys() and "encoder.layers.0.token_attention.q_proj.weight" in saved
    for key, tensor in saved.items():
        assert torch.equal(tensor, expected[key]), key


def config_of_flags(*flags: str):
    return run_pretraining.build_config(
        HfArgumentParser(run_pretraining.ModelArguments).parse_args_into_dataclasses(list(flags))[0]
    )


def test_tsdae_is_judged_by_the_config_not_the_model_type_string():
    for flags in (
        ["--model_type", "perceiver_mlm", "--config_overrides", "decoder_query=position"],
        ["--model_type", "perceiver_posonly_mlm"],
        ["--model_type", "perceiver_posonly_mlm", "--architecture", "mrcogito"],
    ):
        config = config_of_flags(*flags)
        assert (config.decoder_type, config.decoder_query) == ("perceiver", "position"), flags
        run_pretraining.check_model_and_objective(config, "tsdae")
    constant = config_of_flags("--model_type", "perceiver_mlm", "--config_overrides", "decoder_query=constant")
    run_pretraining.check_model_and_objective(constant, "tsdae")  # no input token in the queries either
    with pytest.raises(ValueError, match="decoder_query='token_and_position'"):
        run_pretraining.check_model_and_objective(config_of_flags("--model_type", "perceiver_mlm"), "tsdae")
    with pytest.raises(ValueError, match="decoder_query='position' only matters with decoder_type"):  # no queries
        config_of_flags("--model_type", "weighted_mlm", "--config_overrides", "decoder_query=position")
    with pytest.raises(ValueError, match="decoder_type='weighted'"):
        run_pretraining.check_model_and_objective(config_of_flags("--model_type", "weighted_mlm"), "tsdae")
    with pytest.raises(ValueError, match="token_and_position"):  # the overrides have the last word
        run_pretraining.check_model_and_objective(
            config_of_flags(
                "--model_type", "perceiver_posonly_mlm", "--config_overrides", "decoder_query=token_and_position"
            ),
            "tsdae",
        )


def test_a_pretrained_mlm_keeps_its_decoder(tmp_path):
    ConceptEncoderForMaskedLM(tiny_config(decoder_type="weighted")).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="give --model_type weighted_mlm"):
        config_of_flags("--model_name_or_path", str(tmp_path), "--model_type", "perceiver_mlm")
    assert (
        config_of_flags("--model_name_or_path", str(tmp_path), "--model_type", "weighted_mlm").decoder_type
        == "weighted"
    )
