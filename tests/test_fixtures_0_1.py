"""Checkpoints written by concept-encoder 0.1.0 (`../shared/fixtures/concept_encoder_0.1/`): whatever the modeling code
becomes, each loads through the Auto class a user would pick and gives the outputs stored beside it."""

import json

import pytest
import torch
from conftest import data_root
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from concept_encoder import modeling_concept_encoder  # noqa: F401  (registers the Auto classes)
from concept_encoder.configuration_concept_encoder import LEGACY_ARCHITECTURES

FIXTURES = data_root().parent / "fixtures" / "concept_encoder_0.1"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
OUTPUT_KEYS = ("logits", "concept_states")


def auto_class_of(class_name: str):
    if class_name == "ConceptEncoderModel":
        return AutoModel
    return AutoModelForMaskedLM if "MaskedLM" in class_name else AutoModelForSequenceClassification


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_0_1_checkpoint_loads_to_its_stored_outputs(name):
    folder = FIXTURES / name
    model = auto_class_of(MANIFEST[name]["class"]).from_pretrained(folder).eval()
    class_name, variant = LEGACY_ARCHITECTURES.get(MANIFEST[name]["class"], (MANIFEST[name]["class"], {}))
    assert type(model).__name__ == class_name  # 0.1.0's class per variant → our class per Auto class + the variant
    assert {field: getattr(model.config, field) for field in variant} == variant
    io = load_file(folder / "io.safetensors")
    inputs = {key: value for key, value in io.items() if key not in OUTPUT_KEYS}
    (output_key,) = [key for key in OUTPUT_KEYS if key in io]
    with torch.no_grad():
        outputs = model(**inputs)
    got = outputs.last_hidden_state if output_key == "concept_states" else outputs.logits
    torch.testing.assert_close(got, io[output_key], atol=1e-5, rtol=1e-4)


def test_a_0_1_kendall_gal_checkpoint_loads_without_its_training_state(caplog):
    """0.1.0 saved Kendall-Gal log-variances in the weights and the loss settings in config.json: since 0.2 they are
    training state of a run (concept_encoder.training.losses), dropped on load with a note naming them."""
    folder = FIXTURES / "perceiver_mlm_kendall_gal"
    assert "concept_loss_log_vars" in load_file(folder / "model.safetensors")
    with caplog.at_level("WARNING"):
        model = AutoModelForMaskedLM.from_pretrained(folder)
    assert not any("concept_loss" in name for name, _ in model.named_parameters())
    assert "concept_loss_weighting" in caplog.text and "run_pretraining.py" in caplog.text
    assert "concept_loss_log_vars" not in caplog.text  # not reported as an unexpected weight
    assert not hasattr(model.config, "concept_losses")
