"""A saved checkpoint folder is a complete Hub repo: it loads through the Auto classes with `trust_remote_code=True`
in a fresh process that cannot import this repository, offline, and reproduces this process's outputs exactly."""

import json

import torch
from conftest import run_isolated, tiny_config

from modeling_concept_encoder import (
    ConceptEncoderForMaskedLMPerceiver,
    ConceptEncoderForMaskedLMPerceiverPosOnly,
    ConceptEncoderForMaskedLMWeighted,
    ConceptEncoderForSentencePairClassification,
    ConceptEncoderForSequenceClassificationPerceiver,
)

# Runs in the fresh process: argv = checkpoints root, JSON list of loads to perform.
LOADER = """
import json

import torch
import transformers

checkpoints = sys.argv[1]
inputs = torch.load(os.path.join(checkpoints, "inputs.pt"))
results = {}
for name, folder, auto_class in json.loads(sys.argv[2]):
    model = getattr(transformers, auto_class).from_pretrained(
        os.path.join(checkpoints, folder), trust_remote_code=True
    ).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        if name.endswith("encoder"):  # the encoder of a head checkpoint, loaded alone or under another head
            module = model if auto_class == "AutoModel" else model.encoder
            output = module(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
        elif name == "pair":
            output = model(**inputs).logits
        else:
            output = model(inputs["input_ids"], inputs["attention_mask"]).logits
    results[name] = (type(model).__name__, output)
torch.save(results, os.path.join(checkpoints, "results.pt"))
"""


def test_checkpoints_load_with_trust_remote_code_in_a_fresh_process(tmp_path):
    layer_types = {
        "mlm": "bixt",
        "weighted": "perceiver",
        "posonly": "perceiver",
        "classifier": "bixt",
        "pair": "perceiver",
    }
    classes = {
        "mlm": ConceptEncoderForMaskedLMPerceiver,
        "weighted": ConceptEncoderForMaskedLMWeighted,
        "posonly": ConceptEncoderForMaskedLMPerceiverPosOnly,
        "classifier": ConceptEncoderForSequenceClassificationPerceiver,
        "pair": ConceptEncoderForSentencePairClassification,
    }
    torch.manual_seed(0)
    models = {}
    for folder, model_class in classes.items():
        model = model_class(tiny_config(encoder_layer_type=layer_types[folder], num_labels=3)).eval()
        model.save_pretrained(tmp_path / folder)
        models[folder] = model

    input_ids = torch.randint(5, 200, (2, 9))
    attention_mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    inputs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        input_ids_b=input_ids[:, :5].flip(0),
        attention_mask_b=torch.ones(2, 5, dtype=torch.long),
    )
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = {
            "mlm": models["mlm"](input_ids, attention_mask).logits,
            "mlm_encoder": models["mlm"].encoder(input_ids, attention_mask).last_hidden_state,
            "weighted": models["weighted"](input_ids, attention_mask).logits,
            "posonly": models["posonly"](input_ids, attention_mask).logits,
            "classifier": models["classifier"](input_ids, attention_mask).logits,
            "pair": models["pair"](**inputs).logits,
        }
    loads = [
        ("mlm", "mlm", "AutoModelForMaskedLM"),
        ("mlm_encoder", "mlm", "AutoModel"),
        ("finetune_encoder", "mlm", "AutoModelForSequenceClassification"),  # fine-tuning starts from a pretrained MLM
        ("weighted", "weighted", "AutoModelForMaskedLM"),
        ("posonly", "posonly", "AutoModelForMaskedLM"),
        ("classifier", "classifier", "AutoModelForSequenceClassification"),
        ("pair", "pair", "AutoModelForSequenceClassification"),
    ]
    expected_classes = {
        "mlm": "ConceptEncoderForMaskedLMPerceiver",
        "mlm_encoder": "ConceptEncoderModel",
        "finetune_encoder": "ConceptEncoderForSequenceClassificationPerceiver",
        "weighted": "ConceptEncoderForMaskedLMWeighted",
        "posonly": "ConceptEncoderForMaskedLMPerceiverPosOnly",
        "classifier": "ConceptEncoderForSequenceClassificationPerceiver",
        "pair": "ConceptEncoderForSentencePairClassification",
    }
    expected["finetune_encoder"] = expected["mlm_encoder"]

    for folder in classes:  # a complete Hub repo: both code files and an auto_map naming every Auto class
        assert {
            "config.json",
            "model.safetensors",
            "configuration_concept_encoder.py",
            "modeling_concept_encoder.py",
        } <= {path.name for path in (tmp_path / folder).iterdir()}
        auto_map = json.loads((tmp_path / folder / "config.json").read_text())["auto_map"]
        assert {"AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"} <= set(
            auto_map
        )

    run_isolated(LOADER, tmp_path, json.dumps(loads), cwd=tmp_path)

    results = torch.load(tmp_path / "results.pt")
    for name, (class_name, output) in results.items():
        assert class_name == expected_classes[name], name
        assert torch.equal(output, expected[name]), f"{name}: outputs differ from the saving process"
    assert results.keys() == expected_classes.keys()


def test_installed_package_auto_classes_load_every_head(tmp_path):
    """With the package imported, transformers prefers its registered classes to `auto_map`: every head must still
    come back as its own class, with or without `trust_remote_code`."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    heads = [
        (ConceptEncoderForMaskedLMWeighted, AutoModelForMaskedLM),
        (ConceptEncoderForMaskedLMPerceiver, AutoModelForMaskedLM),
        (ConceptEncoderForMaskedLMPerceiverPosOnly, AutoModelForMaskedLM),
        (ConceptEncoderForSequenceClassificationPerceiver, AutoModelForSequenceClassification),
        (ConceptEncoderForSentencePairClassification, AutoModelForSequenceClassification),
    ]
    for model_class, auto_class in heads:
        model = model_class(tiny_config())
        model.save_pretrained(tmp_path / model_class.__name__)
        for trust_remote_code in (False, True):
            loaded = auto_class.from_pretrained(tmp_path / model_class.__name__, trust_remote_code=trust_remote_code)
            assert type(loaded).__name__ == model_class.__name__
            assert all(torch.equal(tensor, loaded.state_dict()[name]) for name, tensor in model.state_dict().items())
        encoder = AutoModel.from_pretrained(tmp_path / model_class.__name__)
        assert torch.equal(encoder.concepts, model.encoder.concepts)
        # fine-tuning starts from any head's checkpoint: a new classifier over the same encoder
        classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / model_class.__name__, num_labels=2)
        assert torch.equal(classifier.encoder.concepts, model.encoder.concepts)
        if model_class is not ConceptEncoderForSentencePairClassification:
            assert type(classifier) is ConceptEncoderForSequenceClassificationPerceiver
