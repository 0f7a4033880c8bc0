"""`encoder_token_read_layers`: concepts read the tokens only in the listed layers (Perceiver IO reads them once); the
default (every layer, MrCogito's) builds exactly the modules it always did."""

import json

import pytest
import torch
from conftest import tiny_config
from transformers import HfArgumentParser

from concept_encoder import run_pretraining
from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel


def encoder(**overrides) -> ConceptEncoderModel:
    torch.manual_seed(0)
    return ConceptEncoderModel(
        tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)
    ).eval()


def test_default_reads_in_every_layer_with_the_same_modules():
    default, explicit = encoder(), encoder(encoder_token_read_layers=list(range(tiny_config().num_hidden_layers)))
    assert default.config.encoder_token_read_layers is None
    assert all(layer.cross_attention is not None for layer in default.layers)
    assert default.state_dict().keys() == explicit.state_dict().keys()
    inputs = torch.randint(5, 200, (2, 12))
    torch.testing.assert_close(
        default(inputs).last_hidden_state, explicit(inputs).last_hidden_state, atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("layer_type", ["perceiver", "bixt"])
def test_read_once_drops_the_other_layers_cross_attention(layer_type):
    layers = tiny_config().num_hidden_layers
    assert layers >= 2, "the test needs a layer that does not read"
    full, once = (
        encoder(encoder_layer_type=layer_type),
        encoder(encoder_layer_type=layer_type, encoder_token_read_layers=[0]),
    )
    assert once.layers[0].cross_attention is not None
    assert all(layer.cross_attention is None for layer in once.layers[1:])
    assert not any(hasattr(layer, "token_attention") for layer in once.layers[1:])  # BiXT: no token update there
    assert not any(".cross_attention" in name for name in once.state_dict() if not name.startswith("layers.0."))
    assert once.num_parameters() < full.num_parameters()
    inputs = torch.randint(5, 200, (2, 12))
    outputs = once(inputs, output_attentions=True)
    assert outputs.cross_attentions[0].shape == (2, once.config.num_attention_heads, once.config.concept_num, 12)
    assert all(weights is None for weights in outputs.cross_attentions[1:])
    other = inputs.clone()
    other[:, 3] = (other[:, 3] + 1) % 195 + 5
    changed = once(other).last_hidden_state  # it still reads the input
    assert not torch.allclose(outputs.last_hidden_state, changed, atol=1e-5, rtol=1e-4)


def test_only_reading_layers_get_token_gradients():
    """Reading in layer 1 only: the first layer's output cannot depend on the tokens, the model's does."""
    model = encoder(encoder_token_read_layers=[1])
    model.train()
    inputs = torch.randint(5, 200, (2, 12))
    model(inputs).last_hidden_state.square().mean().backward()
    assert model.embeddings.token_embeddings.weight.grad.abs().sum() > 0
    assert model.layers[1].cross_attention.k_proj.weight.grad.abs().sum() > 0


def test_save_and_load_keep_the_reading_layers(tmp_path):
    model = ConceptEncoderForMaskedLM(tiny_config(encoder_token_read_layers=[1]))
    model.save_pretrained(tmp_path)
    loaded = ConceptEncoderForMaskedLM.from_pretrained(tmp_path)
    assert loaded.config.encoder_token_read_layers == [1]
    inputs = torch.randint(5, 200, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(inputs).logits, loaded.eval()(inputs).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bad", [[], [0, 0], [-1], [99], ["0"], [True], [0.0]])
def test_bad_reading_layers_name_the_field(bad):
    with pytest.raises(ValueError, match=r"ConceptEncoderConfig\.encoder_token_read_layers="):
        ConceptEncoderConfig(num_hidden_layers=3, encoder_token_read_layers=bad)


def test_run_pretraining_sets_encoder_token_read_layers_from_its_flag():
    parser = HfArgumentParser(run_pretraining.ModelArguments)
    (arguments,) = parser.parse_args_into_dataclasses(["--encoder_token_read_layers", "0", "--num_hidden_layers", "2"])
    assert run_pretraining.build_config(arguments).encoder_token_read_layers == [0]
    (arguments,) = parser.parse_args_into_dataclasses(["--encoder_token_read_layers", "5", "--num_hidden_layers", "2"])
    with pytest.raises(ValueError, match="encoder_token_read_layers"):
        run_pretraining.build_config(arguments)


def test_the_flag_of_0_1_still_works_with_a_warning(tmp_path, caplog):
    """`--token_read_layers` (0.1's name), as a flag or a `.json` key, sets `--encoder_token_read_layers`."""
    flags = ["--num_hidden_layers", "2", "--output_dir", str(tmp_path)]
    arguments = tmp_path / "arguments.json"
    arguments.write_text(json.dumps({"token_read_layers": [0], "num_hidden_layers": 2, "output_dir": str(tmp_path)}))
    for argv in ([*flags, "--token_read_layers", "0"], [*flags, "--token_read_layers=0"], [str(arguments)]):
        caplog.clear()
        with pytest.warns(DeprecationWarning):
            model_args, *_ = run_pretraining.parse_arguments(argv)
        assert run_pretraining.build_config(model_args).encoder_token_read_layers == [0], argv
        assert (
            "--token_read_layers is deprecated (renamed in 0.2, removed in 0.3): use --encoder_token_read_layers"
            in caplog.text
        )
