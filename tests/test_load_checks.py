"""Loads that would otherwise compute something else than the checkpoint was trained to, silently: an edited
`num_attention_heads` (no weight shape changes) and weights holding NaN or infinity; and loads that would fail
without naming the cause: a config whose sizes disagree with the weights, a damaged weights file."""

import json

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForMaskedLM

from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path)  # hidden 32, 4 heads of width 8
    return tmp_path


def edit_config(folder, **fields):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_saved_config_records_the_head_width_and_loads(checkpoint):
    assert json.loads((checkpoint / "config.json").read_text())["weights_head_dim"] == 8
    AutoModelForMaskedLM.from_pretrained(checkpoint)


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForMaskedLM])
def test_edited_num_attention_heads_is_refused_naming_both_values(checkpoint, auto_class):
    edit_config(checkpoint, num_attention_heads=2)
    with pytest.raises(ValueError, match=r"num_attention_heads=2 .*width 8 .*num_attention_heads=4"):
        auto_class.from_pretrained(checkpoint)


def test_num_attention_heads_given_to_from_pretrained_is_refused(checkpoint):
    with pytest.raises(ValueError, match="num_attention_heads=4 again"):
        ConceptEncoderForMaskedLM.from_pretrained(checkpoint, num_attention_heads=8)


def corrupt(folder, name: str, value: float):
    weights = load_file(folder / "model.safetensors")
    weights[name].view(-1)[3] = value
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_weight_is_refused_naming_the_tensor(checkpoint, value):
    name = "encoder.layers.1.ffn.wo.weight"
    corrupt(checkpoint, name, value)
    with pytest.raises(ValueError, match=rf"NaN or infinite values in \['{name}'\]"):
        AutoModelForMaskedLM.from_pretrained(checkpoint)


def test_huge_finite_weights_whose_sum_overflows_still_load(checkpoint):
    """The fast check sums each tensor; a sum that overflows is checked value by value before anything is refused."""
    weights = load_file(checkpoint / "model.safetensors")
    weights["encoder.concepts"].view(-1)[:4] = torch.finfo(torch.float32).max
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    model = AutoModelForMaskedLM.from_pretrained(checkpoint)
    assert torch.equal(model.encoder.concepts, weights["encoder.concepts"])  # the same tensor, loaded: exact


def test_a_damaged_weights_file_is_named(tmp_path):
    """0.1.0: `Error while deserializing header: incomplete metadata` without the path."""
    folder = tmp_path / "damaged"
    ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(folder)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(OSError, match=r"The weights of .*damaged cannot be read .*save or download it again"):
        ConceptEncoderForMaskedLM.from_pretrained(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"concept_num": 16}, r"config.json does not fit the weights of .*: concept_num=16, but the weights have 8"),
        ({"hidden_size": 64}, r"config.json does not fit the weights of .*: hidden_size=64, but the weights have 32"),
    ],
)
def test_a_config_that_disagrees_with_the_weights_names_the_field_and_both_sizes(tmp_path, edit, message):
    """Issue 23.9: an edited `hidden_size` or `concept_num` ended in transformers' "look at the above report"."""
    ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ValueError, match=message + r".*set \w+=\d+ again"):
        ConceptEncoderForMaskedLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"the config passed to from_pretrained does not fit"):
        ConceptEncoderModel.from_pretrained(tmp_path, config=ConceptEncoderConfig.from_pretrained(tmp_path))
