"""The speed rewrite of `modeling_concept_encoder.py` changes no result: every class, loaded with the same weights,
gives the same loss, logits, attentions and gradients as the last version before the rewrite (read from git)."""

import importlib.util
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, tiny_config

import modeling_concept_encoder as current

REFERENCE_COMMIT = "c992d011452d1e90405a58aadc49d1c64f43b0c7"  # modeling file before the speed work (issue 6)
CLASS_NAMES = [
    "ConceptEncoderModel",
    "ConceptEncoderForMaskedLMWeighted",
    "ConceptEncoderForMaskedLMPerceiver",
    "ConceptEncoderForMaskedLMPerceiverPosOnly",
    "ConceptEncoderForSequenceClassificationPerceiver",
    "ConceptEncoderForSentencePairClassification",
]
CONFIGS = {
    "tiny-perceiver": dict(encoder_layer_type="perceiver"),
    "tiny-bixt": dict(encoder_layer_type="bixt"),
    "tiny-bixt-token-ffn-kendall-gal": dict(
        encoder_layer_type="bixt",
        bixt_token_ffn=True,
        concept_losses=["vicreg", "uniformity"],
        concept_loss_weighting="kendall_gal",
    ),
    "medium-perceiver": dict(
        encoder_layer_type="perceiver", hidden_size=128, num_attention_heads=8, intermediate_size=256, concept_num=24
    ),
    "medium-bixt": dict(
        encoder_layer_type="bixt", hidden_size=128, num_attention_heads=8, intermediate_size=256, concept_num=24
    ),
}
BATCH, SEQ = 3, 48


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The modeling module at `REFERENCE_COMMIT`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{REFERENCE_COMMIT}:modeling_concept_encoder.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = tmp_path_factory.mktemp("reference") / "reference_modeling_concept_encoder.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("reference_modeling_concept_encoder", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "reference"  # a packaged copy leaves the Auto classes to the current module (see its end)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_inputs(class_name: str, config) -> dict:
    """Padded batch (rows shortened by 0, 7, 14 tokens) with labels of the right kind."""
    generator = torch.Generator().manual_seed(1)

    def ids_and_mask(length):
        ids = torch.randint(5, config.vocab_size, (BATCH, length), generator=generator)
        mask = torch.ones_like(ids)
        for row in range(1, BATCH):
            mask[row, length - 7 * row :] = 0
        return ids.masked_fill(mask == 0, config.pad_token_id), mask

    input_ids, attention_mask = ids_and_mask(SEQ)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if class_name == "ConceptEncoderForSentencePairClassification":
        inputs["input_ids_b"], inputs["attention_mask_b"] = ids_and_mask(SEQ - 5)
        inputs["labels"] = torch.tensor([0, 1, 0])
    elif class_name == "ConceptEncoderForSequenceClassificationPerceiver":
        inputs["labels"] = torch.tensor([1, 0, 1])
    elif "MaskedLM" in class_name:
        labels = torch.full_like(input_ids, -100)
        labels[:, 2:9] = input_ids[:, 2:9]
        inputs["labels"] = labels
    return inputs


def run(model, inputs: dict) -> dict[str, torch.Tensor]:
    """Training-mode forward + backward: every output tensor and every parameter gradient, by name."""
    model.zero_grad()
    outputs = model(**inputs)
    results = {}
    if getattr(outputs, "loss", None) is not None:
        outputs.loss.backward()
    else:
        outputs.last_hidden_state.square().mean().backward()
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            results[key] = value.detach()
        elif isinstance(value, dict):
            results.update({f"{key}.{name}": tensor.detach() for name, tensor in value.items()})
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            results[f"grad.{name}"] = parameter.grad
    return results


def assert_same(new: dict, old: dict):
    assert new.keys() == old.keys()
    for key in old:
        torch.testing.assert_close(new[key], old[key], atol=1e-5, rtol=1e-4, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("class_name", CLASS_NAMES)
def test_training_step_matches_reference(reference, class_name, config_name):
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **CONFIGS[config_name])
    torch.manual_seed(0)
    new_model = getattr(current, class_name)(config).train()
    old_model = getattr(reference, class_name)(config).train()
    old_model.load_state_dict(new_model.state_dict())
    inputs = make_inputs(class_name, config)
    assert_same(run(new_model, inputs), run(old_model, inputs))


@pytest.mark.parametrize("layer_type", ["perceiver", "bixt"])
def test_eval_outputs_with_attentions_match_reference(reference, layer_type):
    """Eval mode, dense MLM logits, hidden states and attention weights (the eager path)."""
    config = tiny_config(encoder_layer_type=layer_type)
    torch.manual_seed(0)
    new_model = current.ConceptEncoderForMaskedLMPerceiver(config).eval()
    old_model = reference.ConceptEncoderForMaskedLMPerceiver(config).eval()
    old_model.load_state_dict(new_model.state_dict())
    inputs = make_inputs("ConceptEncoderModel", config)
    with torch.no_grad():
        new = new_model(**inputs, output_attentions=True, output_hidden_states=True)
        old = old_model(**inputs, output_attentions=True, output_hidden_states=True)
    for key in ("logits", "hidden_states", "attentions", "cross_attentions"):
        torch.testing.assert_close(new[key], old[key], atol=1e-5, rtol=1e-4, msg=lambda m: f"{key}: {m}")
