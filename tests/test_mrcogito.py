"""MrCogito's checkpoints (`../shared/fixtures/mrcogito/`, written by the code behind the research log, SEED_LOG.md)
load exactly through the Auto class a user would pick, the MrCogito preset builds MrCogito's model, and whatever the
loader cannot serve exactly is refused with the field named."""

import copy
import json
import re
import shutil
import textwrap

import pytest
import torch
from conftest import data_root, run_isolated, tiny_config
from safetensors.torch import load_file, save_file
from test_pretraining import run_main, tiny_args
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from concept_encoder import convert_mrcogito_checkpoint, run_glue
from concept_encoder import modeling_concept_encoder as modeling
from concept_encoder.configuration_concept_encoder import LEGACY_ARCHITECTURES, ConceptEncoderConfig
from concept_encoder.training.hub import HubAccessError
from concept_encoder.training.tokenizer import train_tokenizer

FIXTURES = data_root().parent / "fixtures" / "mrcogito"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
TIED = [name for name, entry in MANIFEST.items() if entry["config"].get("tie_word_embeddings")]


def auto_class_of(mrcogito_class: str):
    if mrcogito_class == "ConceptEncoder":
        return AutoModel
    return AutoModelForMaskedLM if "MaskedLM" in mrcogito_class else AutoModelForSequenceClassification


# Also run in a fresh process that cannot import this repository (after conversion), hence source text.
MAX_DIFFERENCES = textwrap.dedent(
    """
    import os

    import torch
    from safetensors.torch import load_file

    INPUT_KEYS = ("input_ids", "attention_mask", "input_ids_b", "attention_mask_b")


    def max_differences(model, folder) -> dict:
        \"\"\"Largest absolute difference of each output MrCogito stored in `folder/io.safetensors` from ours.\"\"\"
        io = load_file(os.path.join(folder, "io.safetensors"))
        inputs = {key: io[key] for key in INPUT_KEYS if key in io}
        model.eval()
        with torch.no_grad():
            if hasattr(model, "concepts"):  # the encoder alone
                outputs = {"concept_states": model(**inputs).last_hidden_state}
            else:
                outputs = {
                    "logits": model(**inputs).logits,
                    "concept_states": model.encoder(io["input_ids"], io["attention_mask"]).last_hidden_state,
                }
                if "input_ids_b" in inputs:
                    outputs["cosine_logits"] = model(**inputs, cosine_only=True).logits
        assert set(outputs) == {key for key in io if key not in INPUT_KEYS}, folder
        return {key: float((outputs[key] - io[key]).abs().max()) for key in outputs}
    """
)
_namespace = {}
exec(MAX_DIFFERENCES, _namespace)
max_differences = _namespace["max_differences"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_mrcogito_checkpoint_loads_exactly_through_the_auto_class(name):
    mrcogito_class = MANIFEST[name]["class"]
    model = auto_class_of(mrcogito_class).from_pretrained(FIXTURES / name)
    class_name, variant = LEGACY_ARCHITECTURES[mrcogito_class]
    assert type(model).__name__ == class_name
    assert {field: getattr(model.config, field) for field in variant} == variant
    differences = max_differences(model, FIXTURES / name)
    assert max(differences.values()) < 1e-5, differences
    # every tensor of the file went somewhere: none dropped as unexpected (a tied head is one tensor, not two)
    tied = 1 if model.config.tie_word_embeddings and hasattr(model, "lm_head") else 0
    saved = load_file(FIXTURES / name / "model.safetensors")
    fused = sum(key.endswith(("in_proj_weight", "in_proj_bias")) for key in saved)  # each split into q, k, v
    assert len(saved) + 2 * fused == len(model.state_dict()) - tied


@pytest.mark.parametrize("name", TIED)
def test_tied_mrcogito_checkpoint_loads_with_the_head_tied(name):
    assert "lm_head.weight" not in load_file(FIXTURES / name / "model.safetensors")
    model = AutoModelForMaskedLM.from_pretrained(FIXTURES / name)
    assert model.lm_head.decoder.weight is model.encoder.embeddings.token_embeddings.weight
    assert model.lm_head.decoder.bias is None  # MrCogito's bias-free Linear(H, V)


def test_mrcogito_config_translates_to_our_fields():
    config = ConceptEncoderConfig.from_pretrained(FIXTURES / "tsdae_posonly_bixt")
    assert config.max_position_embeddings == 64
    assert config.encoder_layer_type == "bixt"
    assert config.decoder_query == "position"
    assert (config.decoder_position_embeddings, config.decoder_ffn, config.decoder_lm_head) == (
        "own",
        "plain",
        "linear",
    )
    assert (config.layer_norm_eps, config.concept_norm_eps, config.initialization) == (1e-5, 1e-12, "xavier_attention")
    for field in ("max_sequence_length", "use_bixt", "decoder_posonly", "token_embedding_dim"):
        assert not hasattr(config, field), field
    weighted = ConceptEncoderConfig.from_pretrained(FIXTURES / "weighted_mlm")
    assert (weighted.decoder_lm_head, weighted.tie_word_embeddings) == ("norm_dense_act", False)


MRCOGITO_PARAMETERS = {  # H512 L6 C128 I2048 V50368, 512 positions: the counts of MrCogito's own classes
    "encoder": (modeling.ConceptEncoderModel, 57_645_056),
    "perceiver_mlm": (modeling.ConceptEncoderForMaskedLM, 61_059_584),
    "perceiver_posonly_mlm": (modeling.ConceptEncoderForMaskedLM, 61_059_584),
    "weighted_mlm": (modeling.ConceptEncoderForMaskedLM, 83_762_688),
}


@pytest.mark.parametrize("head", sorted(MRCOGITO_PARAMETERS))
def test_mrcogito_preset_has_the_mrcogito_parameter_count(head):
    model_class, count = MRCOGITO_PARAMETERS[head]
    with torch.device("meta"):
        model = model_class(ConceptEncoderConfig.from_mrcogito(head))
    assert sum(parameter.numel() for parameter in model.parameters()) == count


def test_mrcogito_preset_weights_have_the_mrcogito_names_and_shapes():
    """Every tensor of a MrCogito checkpoint has its counterpart, same shape, in the preset model of the same class."""
    for name, entry in MANIFEST.items():
        mrcogito_config = {key: value for key, value in entry["config"].items() if key not in ("use_bixt",)}
        sizes = dict(
            vocab_size=mrcogito_config["vocab_size"],
            hidden_size=mrcogito_config["hidden_size"],
            num_hidden_layers=mrcogito_config["num_hidden_layers"],
            num_attention_heads=mrcogito_config["num_attention_heads"],
            intermediate_size=mrcogito_config["intermediate_size"],
            concept_num=mrcogito_config["concept_num"],
            max_position_embeddings=mrcogito_config["max_sequence_length"],
            encoder_layer_type="bixt" if entry["config"].get("use_bixt") else "perceiver",
            tie_word_embeddings=entry["config"].get("tie_word_embeddings", False),
            num_labels=entry["config"].get("num_labels", 2),
        )
        head = {"ConceptEncoderForMaskedLMWeighted": "weighted_mlm"}.get(entry["class"], "perceiver_mlm")
        class_name, variant = LEGACY_ARCHITECTURES[entry["class"]]
        config = ConceptEncoderConfig.from_mrcogito(head, **sizes, **variant)
        ours = getattr(modeling, class_name)(config).state_dict()
        loaded = auto_class_of(entry["class"]).from_pretrained(FIXTURES / name).state_dict()
        assert {key: tuple(value.shape) for key, value in ours.items()} == {
            key: tuple(value.shape) for key, value in loaded.items()
        }, name


def test_mrcogito_preset_starts_from_the_mrcogito_initialisation():
    torch.manual_seed(0)
    config = ConceptEncoderConfig.from_mrcogito(
        "weighted_mlm", vocab_size=1000, hidden_size=256, num_hidden_layers=1, concept_num=64, intermediate_size=512
    )
    model = modeling.ConceptEncoderForMaskedLM(config)
    assert config.decoder_type == "weighted"
    encoder = model.encoder
    assert encoder.concepts.std().item() == pytest.approx(0.2, rel=0.05)
    for linear in (encoder.layers[0].cross_attention.out_proj, encoder.layers[0].ffn.wi, model.lm_head.dense):
        assert linear.weight.std().item() == pytest.approx(0.1, rel=0.05)
        assert not linear.bias.any()
    xavier_std = (2 / (256 + 3 * 256)) ** 0.5  # PyTorch MultiheadAttention's in_proj_weight [3H, H]
    assert encoder.layers[0].self_attention.q_proj.weight.std().item() == pytest.approx(xavier_std, rel=0.05)
    assert model.position_concept_logits.weight.std().item() == pytest.approx(64**-0.5, rel=0.05)
    assert not encoder.embeddings.token_embeddings.weight[config.pad_token_id].any()
    assert ConceptEncoderConfig().initialization == "normal"  # today's defaults stay the default


def test_mrcogito_renamings_leave_our_weight_names_alone():
    configs = [
        tiny_config(encoder_layer_type="bixt", encoder_token_ffn=True),
        tiny_config(decoder_position_embeddings="own", decoder_lm_head="norm_dense_act", tie_word_embeddings=False),
    ]
    for config in configs:
        for class_name, variant in LEGACY_ARCHITECTURES.values():  # every class and head variant
            variant_config = copy.deepcopy(config)
            variant_config.update(variant)
            for key in getattr(modeling, class_name)(variant_config).state_dict():
                for source in modeling.MRCOGITO_WEIGHT_RENAMINGS:
                    assert not re.search(source, key), (source, key)


def copy_fixture(name, tmp_path, **config_changes):
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(token_embedding_dim=16), "token_embedding_dim"),
        (dict(concept_position_type="learned"), "concept_position_type"),
        (dict(concept_position_type="sinusoidal"), "concept_position_type"),
    ],
)
def test_unsupported_mrcogito_config_is_refused_naming_the_field(tmp_path, changes, field):
    folder = copy_fixture("perceiver_mlm", tmp_path, **changes)
    with pytest.raises(ValueError, match=field):
        AutoModelForMaskedLM.from_pretrained(folder)


def test_mrcogito_fields_given_to_our_config_are_refused():
    with pytest.raises(ValueError, match="max_sequence_length"):
        ConceptEncoderConfig(max_sequence_length=64)
    with pytest.raises(ValueError, match="head"):
        ConceptEncoderConfig.from_mrcogito("diffusion_mlm")


def test_from_seed_is_a_deprecated_alias_of_from_mrcogito():
    with pytest.warns(DeprecationWarning, match="from_seed is deprecated .*use from_mrcogito"):
        old = ConceptEncoderConfig.from_seed("weighted_mlm", hidden_size=64)
    assert old.to_dict() == ConceptEncoderConfig.from_mrcogito("weighted_mlm", hidden_size=64).to_dict()


def mrcogito_encoder_with_bixt_flipped(tmp_path):
    """`use_bixt` set on a perceiver checkpoint: the BiXT token attention would be random."""
    return copy_fixture("encoder", tmp_path, use_bixt=True)


def our_mlm_without_an_encoder_weight(tmp_path):
    modeling.ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.layers.1.ffn.wo.bias"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


@pytest.mark.parametrize(
    "make_folder, auto_class, weight",
    [
        (mrcogito_encoder_with_bixt_flipped, AutoModel, "token_attention"),
        (our_mlm_without_an_encoder_weight, AutoModelForMaskedLM, r"encoder\.layers\.1\.ffn\.wo\.bias"),
    ],
)
def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path, make_folder, auto_class, weight):
    with pytest.raises(ValueError, match=weight):
        auto_class.from_pretrained(make_folder(tmp_path))


def test_checkpoint_with_half_a_head_is_refused_and_a_new_head_is_not(tmp_path):
    model = modeling.ConceptEncoderForSequenceClassification(tiny_config())
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["classifier.linear.bias"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"classifier\.linear\.bias"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)
    # a checkpoint of this class without a whole module: refused too
    weights = {key: value for key, value in weights.items() if not key.startswith("classifier.")}
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"classifier\.linear\.weight"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)
    # an MLM checkpoint under a classifier: the classifier is new (transformers reports it), the encoder loaded
    mlm_folder = tmp_path / "mlm"
    mlm = modeling.ConceptEncoderForMaskedLM(tiny_config())
    mlm.save_pretrained(mlm_folder)
    classifier = modeling.ConceptEncoderForSequenceClassification.from_pretrained(mlm_folder)
    torch.testing.assert_close(classifier.encoder.concepts, mlm.encoder.concepts, rtol=0, atol=0)


# Runs in the fresh process: argv = checkpoints root, JSON {folder: Auto class}.
CONVERTED_LOADER = MAX_DIFFERENCES + textwrap.dedent(
    """
    import json
    import sys

    import transformers

    checkpoints = sys.argv[1]
    differences = {}
    for name, auto_class in json.loads(sys.argv[2]).items():
        folder = os.path.join(checkpoints, name)
        model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        differences[name] = [type(model).__name__, max_differences(model, folder)]
    print(json.dumps(differences))
    """
)


def test_converted_mrcogito_checkpoints_load_with_remote_code_in_a_fresh_process(tmp_path):
    """`convert_mrcogito_checkpoint.py SRC OUT` writes a complete Hub folder of ours: it loads with
    `trust_remote_code=True` where this repository cannot be imported, with MrCogito's outputs."""
    tokenizer = train_tokenizer(["the cat sat on the mat", "a dog ran in the park"] * 20, vocab_size=60)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    auto_classes = {}
    for name, entry in MANIFEST.items():
        convert_mrcogito_checkpoint.main(
            [str(FIXTURES / name), str(tmp_path / name), "--tokenizer_name", str(tmp_path / "tokenizer")]
        )
        shutil.copy(FIXTURES / name / "io.safetensors", tmp_path / name)
        files = {path.name for path in (tmp_path / name).iterdir()}
        assert {"configuration_concept_encoder.py", "modeling_concept_encoder.py", "tokenizer.json"} <= files
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert "use_bixt" not in config and "auto_map" in config
        auto_classes[name] = auto_class_of(entry["class"]).__name__
    output = run_isolated(CONVERTED_LOADER, tmp_path, json.dumps(auto_classes), cwd=tmp_path)
    differences = json.loads(output.strip().splitlines()[-1])
    assert differences.keys() == MANIFEST.keys()
    for name, (class_name, difference) in differences.items():
        assert class_name == LEGACY_ARCHITECTURES[MANIFEST[name]["class"]][0]
        assert max(difference.values()) < 1e-5, (name, difference)


def test_converter_refuses_a_tokenizer_that_does_not_fit(tmp_path):
    tokenizer = train_tokenizer(["the cat sat on the mat"] * 20, vocab_size=60)
    tokenizer.add_tokens([f"extra{i}" for i in range(100)])
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="vocab_size"):
        convert_mrcogito_checkpoint.main(
            [str(FIXTURES / "encoder"), str(tmp_path / "out"), "--tokenizer_name", str(tmp_path / "tokenizer")]
        )


def test_converter_given_an_offline_hub_id_names_it_and_the_local_alternative(tmp_path):
    """Issue 23.13: `convert_mrcogito_checkpoint.py ksopyla/...` offline ended in transformers' OSError traceback."""
    with pytest.raises(HubAccessError, match=r"SRC ksopyla/concept-encoder-x is not a local folder .*OFFLINE.*local"):
        convert_mrcogito_checkpoint.main(["ksopyla/concept-encoder-x", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_one_tokenizer_rule_lets_the_readme_mrcogito_commands_run(monkeypatch, tmp_path, data_dir):
    """Issue 23.12: the converter accepted `len(tokenizer)` ≤ `vocab_size` while run_glue.py and run_pretraining.py
    demanded equality for a checkpoint without a tokenizer, which blocked the README's MrCogito-checkpoint commands. One
    rule now (at most `vocab_size` tokens, the config's pad and mask ids), on the MrCogito fixtures (vocab_size 100)."""
    mrcogito = FIXTURES / "perceiver_posonly_mlm"
    small = tmp_path / "small"  # fewer tokens than the checkpoint's 100 rows, [PAD] 0 and [MASK] 4 as its config
    train_tokenizer(["the cat sat on the mat", "a dog ran in the park"] * 20, vocab_size=60).save_pretrained(small)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("the cat sat on the mat\na dog ran in the park\n" * 40)
    (corpus / "valid.txt").write_text("the cat sat in the park\n" * 8)
    sizes = dict.fromkeys(["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "concept_num", "max_position_embeddings"])  # fmt: skip
    args = tiny_args(
        corpus, tmp_path / "tsdae", model_name_or_path=str(mrcogito), tokenizer_name=str(small), model_type=
        "perceiver_posonly_mlm", objective="tsdae", line_by_line=True, train_tokenizer_vocab_size=None, max_steps=1,
        save_steps=1, max_seq_length=16, **sizes,
    )  # fmt: skip
    run_main(monkeypatch, args)
    assert json.loads((tmp_path / "tsdae" / "config.json").read_text())["vocab_size"] == 100  # its rows kept
    glue = [
        "--model_name_or_path", str(mrcogito), "--tokenizer_name", str(small), "--classifier", "via_decoder",
        "--task_name", "mrpc", "--data_dir", str(data_dir / "glue"), "--max_train_samples", "8",
        "--max_eval_samples", "8", "--max_seq_length", "32", "--save_strategy", "no", "--registry_file", "",
        "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    run_glue.main([*glue, "--output_dir", str(tmp_path / "mrpc")])
    with pytest.raises(ValueError, match=r"has no tokenizer .*give --tokenizer_name"):
        run_glue.main([*glue[:2], *glue[4:], "--output_dir", str(tmp_path / "none")])
    large = tmp_path / "large"
    tokenizer = AutoTokenizer.from_pretrained(small)
    tokenizer.add_tokens([f"extra{i}" for i in range(60)])
    tokenizer.save_pretrained(large)
    message = r"has 1\d\d tokens but the model's vocab_size is 100"
    with pytest.raises(ValueError, match=message):
        run_main(monkeypatch, {**args, "tokenizer_name": str(large), "output_dir": str(tmp_path / "large_run")})
    with pytest.raises(ValueError, match=message):
        run_glue.main([*glue[:3], str(large), *glue[4:], "--output_dir", str(tmp_path / "large_glue")])
    with pytest.raises(ValueError, match=message):
        convert_mrcogito_checkpoint.main([str(mrcogito), str(tmp_path / "converted"), "--tokenizer_name", str(large)])
