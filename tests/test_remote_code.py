"""A saved checkpoint folder is a complete Hub repo: it loads through the Auto classes with `trust_remote_code=True`
in a fresh process that cannot import this repository, offline, and reproduces this process's outputs exactly; two
same-named checkpoint folders loaded in one process each run their own code."""

import json

import torch
from conftest import run_isolated, tiny_config

from concept_encoder.modeling_concept_encoder import (
    ConceptEncoderForMaskedLM,
    ConceptEncoderForSequenceClassification,
    ConceptEncoderModel,
)

MLM, CLASSIFIER = ConceptEncoderForMaskedLM.__name__, ConceptEncoderForSequenceClassification.__name__
# Each saved head: its class and the config fields of its variant.
HEADS = {
    "mlm": (ConceptEncoderForMaskedLM, {"decoder_type": "perceiver"}),
    "weighted": (ConceptEncoderForMaskedLM, {"decoder_type": "weighted"}),
    "posonly": (ConceptEncoderForMaskedLM, {"decoder_query": "position"}),
    "classifier": (ConceptEncoderForSequenceClassification, {"classifier_head": "pooled"}),
    "via_decoder": (ConceptEncoderForSequenceClassification, {"classifier_head": "via_decoder"}),
    "pair": (ConceptEncoderForSequenceClassification, {"classifier_head": "sentence_pair"}),
}

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
    variant = {field: getattr(model.config, field) for field in ("decoder_type", "decoder_query", "classifier_head")}
    results[name] = (type(model).__name__, variant, output)
torch.save(results, os.path.join(checkpoints, "results.pt"))
"""


def test_checkpoints_load_with_trust_remote_code_in_a_fresh_process(tmp_path):
    layer_types = {"mlm": "bixt", "classifier": "bixt", "via_decoder": "bixt"}  # the others: perceiver
    torch.manual_seed(0)
    models = {}
    for folder, (model_class, variant) in HEADS.items():
        layer_type = layer_types.get(folder, "perceiver")
        model = model_class(tiny_config(encoder_layer_type=layer_type, num_labels=3, **variant)).eval()
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
            "via_decoder": models["via_decoder"](input_ids, attention_mask).logits,
            "pair": models["pair"](**inputs).logits,
        }
    loads = [
        ("mlm", "mlm", "AutoModelForMaskedLM"),
        ("mlm_encoder", "mlm", "AutoModel"),
        ("finetune_encoder", "mlm", "AutoModelForSequenceClassification"),  # fine-tuning starts from a pretrained MLM
        ("weighted", "weighted", "AutoModelForMaskedLM"),
        ("posonly", "posonly", "AutoModelForMaskedLM"),
        ("classifier", "classifier", "AutoModelForSequenceClassification"),
        ("via_decoder", "via_decoder", "AutoModelForSequenceClassification"),
        ("pair", "pair", "AutoModelForSequenceClassification"),
    ]
    expected_classes = {
        **{name: model_class.__name__ for name, (model_class, _) in HEADS.items()},
        "mlm_encoder": "ConceptEncoderModel",
        "finetune_encoder": CLASSIFIER,
    }
    expected["finetune_encoder"] = expected["mlm_encoder"]

    for folder in HEADS:  # a complete Hub repo: both code files and an auto_map naming every Auto class
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
    for name, (class_name, variant, output) in results.items():
        assert class_name == expected_classes[name], name
        expected_variant = HEADS[name][1] if name in HEADS else {}
        assert expected_variant.items() <= variant.items(), (name, variant)
        torch.testing.assert_close(
            output, expected[name], atol=1e-5, rtol=1e-4, msg=f"{name}: outputs differ from the saving process"
        )
    assert results.keys() == expected_classes.keys()


def test_installed_package_auto_classes_load_every_head(tmp_path):
    """With the package imported, transformers prefers its registered classes to `auto_map`: every head must still
    come back as its own class, with or without `trust_remote_code`."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    auto_classes = {MLM: AutoModelForMaskedLM, CLASSIFIER: AutoModelForSequenceClassification}
    for name, (model_class, variant) in HEADS.items():
        model = model_class(tiny_config(**variant))
        model.save_pretrained(tmp_path / name)
        for trust_remote_code in (False, True):
            loaded = auto_classes[model_class.__name__].from_pretrained(
                tmp_path / name, trust_remote_code=trust_remote_code
            )
            assert type(loaded).__name__ == model_class.__name__
            assert {field: getattr(loaded.config, field) for field in variant} == variant
            assert all(torch.equal(tensor, loaded.state_dict()[key]) for key, tensor in model.state_dict().items())
        encoder = AutoModel.from_pretrained(tmp_path / name)
        assert torch.equal(encoder.concepts, model.encoder.concepts)
        # fine-tuning starts from any head's checkpoint: a classifier over the same encoder (a new one for an MLM)
        classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / name, num_labels=2)
        assert torch.equal(classifier.encoder.concepts, model.encoder.concepts)
        assert type(classifier) is ConceptEncoderForSequenceClassification


def test_save_pretrained_keeps_a_users_own_auto_map_entries(tmp_path):
    model = ConceptEncoderModel(tiny_config())
    model.config.auto_map = {"AutoModel": "old.Name", "AutoModelForTokenClassification": "mine.Tagger"}
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForTokenClassification"] == "mine.Tagger"  # the user's, kept
    assert auto_map["AutoModel"] == "modeling_concept_encoder.ConceptEncoderModel"  # ours, replaced


def test_same_named_checkpoint_folders_each_run_their_own_code(tmp_path):
    """Two `pretrained` folders whose model code differs, loaded with trust_remote_code in one process: 0.1.0's second
    load ran the first folder's model. transformers names a local folder's modules after the folder and a hash of
    the file, so both folders share one config class (equal configuration files), and the Auto class reused the
    model class registered under it without importing the second folder's modeling file."""
    for run, marker in (("run_a", "a"), ("run_b", "b")):
        folder = tmp_path / run / "pretrained"
        ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(folder)
        with open(folder / "modeling_concept_encoder.py", "a", encoding="utf-8") as f:
            f.write(f'\nRUN_MARKER = "{marker}"\n')
    script = """
        import pickle, sys
        from transformers import AutoModel, AutoModelForMaskedLM

        for auto_class, folder in zip([AutoModelForMaskedLM] * 3 + [AutoModel] * 2, sys.argv[1:]):
            model = auto_class.from_pretrained(folder, trust_remote_code=True)
            assert pickle.loads(pickle.dumps(model.config)).to_dict() == model.config.to_dict()
            print(sys.modules[type(model).__module__].RUN_MARKER)
    """
    a, b = tmp_path / "run_a" / "pretrained", tmp_path / "run_b" / "pretrained"
    output = run_isolated(script, a, b, a, b, a, cwd=tmp_path)
    assert output.split() == ["a", "b", "a", "b", "a"]
