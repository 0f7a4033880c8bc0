"""ConceptEncoderConfig: MrCogito's defaults, serialisation, and a clear error naming the field for every bad value."""

import json
import warnings

import pytest
from conftest import tiny_config

from concept_encoder.configuration_concept_encoder import DEPENDENT_FIELDS, RENAMED_FIELDS, ConceptEncoderConfig
from concept_encoder.training.config_flags import apply_config_overrides, override_items


def test_defaults_follow_mrcogitos_h512_l6_c128_runs():
    config = ConceptEncoderConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.concept_num, config.num_attention_heads) == (
        512,
        6,
        128,
        8,
    )
    assert config.initializer_range == 0.1
    assert config.encoder_layer_type == "perceiver"
    assert config.model_type == "concept_encoder"


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(
        encoder_layer_type="bixt",
        decoder_query="position",
        decoder_type="weighted",
        classifier_head="via_decoder",
        classifier_pooling="mean",
    )
    config.save_pretrained(tmp_path)
    loaded = ConceptEncoderConfig.from_pretrained(tmp_path)
    for field in (
        "encoder_layer_type",
        "decoder_query",
        "decoder_type",
        "classifier_head",
        "classifier_pooling",
        "hidden_size",
        "concept_num",
        "vocab_size",
        "mask_token_id",
    ):
        assert getattr(loaded, field) == getattr(config, field), field


INVALID = [
    # (overrides, field the message must name, a fragment of what is allowed)
    (dict(hidden_size=30, num_attention_heads=4), "hidden_size", "divisible"),
    (dict(hidden_size=0), "hidden_size", "positive"),
    (dict(vocab_size=-5), "vocab_size", "positive"),
    (dict(num_hidden_layers=0), "num_hidden_layers", "positive"),
    (dict(num_attention_heads=0), "num_attention_heads", "positive"),
    (dict(intermediate_size=0), "intermediate_size", "positive"),
    (dict(concept_num=0), "concept_num", "positive"),
    (dict(concept_num=2.5), "concept_num", "positive integer"),
    (dict(max_position_embeddings=-1), "max_position_embeddings", "positive"),
    (dict(encoder_layer_type="transformer"), "encoder_layer_type", "bixt"),
    (dict(decoder_query="token"), "decoder_query", "token_and_position"),
    (dict(decoder_query="constant", decoder_position_embeddings="own"), "decoder_position_embeddings", "shared"),
    (dict(classifier_pooling="cls"), "classifier_pooling", "weighted"),
    (dict(decoder_type="diffusion"), "decoder_type", "weighted"),
    (dict(classifier_head="cls"), "classifier_head", "via_decoder"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob", "[0, 1)"),
    (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob", "[0, 1)"),
    (dict(classifier_dropout=1.5), "classifier_dropout", "[0, 1)"),
    (dict(cross_attention_normalization="queries"), "cross_attention_normalization", "retired in concept-encoder 0.2"),
    (dict(mask_token_id=500), "mask_token_id", "vocab_size"),
    (dict(pad_token_id=200), "pad_token_id", "vocab_size"),
]


@pytest.mark.parametrize(
    "overrides, field, allowed", INVALID, ids=[f"{case[1]}={list(case[0].values())[-1]!r}" for case in INVALID]
)
def test_bad_values_raise_naming_the_field(overrides, field, allowed):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    message = str(error.value)
    assert f"ConceptEncoderConfig.{field}" in message and allowed in message, message


def test_valid_edge_values_are_accepted(tmp_path):
    edges = dict(
        hidden_dropout_prob=0.0,
        classifier_dropout=None,
        mask_token_id=None,
        pad_token_id=199,  # the last id of the vocabulary
    )
    tiny_config(**edges).save_pretrained(tmp_path)
    loaded = ConceptEncoderConfig.from_pretrained(tmp_path)  # validated again on load
    assert {name: getattr(loaded, name) for name in edges} == edges


@pytest.mark.parametrize(
    "legacy, class_name, variant",
    [
        ("ConceptEncoder", "ConceptEncoderModel", {}),
        ("ConceptEncoderForMaskedLMWeighted", "ConceptEncoderForMaskedLM", {"decoder_type": "weighted"}),
        ("ConceptEncoderForMaskedLMPerceiver", "ConceptEncoderForMaskedLM", {"decoder_type": "perceiver"}),
        (
            "ConceptEncoderForMaskedLMPerceiverPosOnly",
            "ConceptEncoderForMaskedLM",
            {"decoder_type": "perceiver", "decoder_query": "position"},
        ),
        ("ConceptEncoderForSequenceClassificationPerceiver", "ConceptEncoderForSequenceClassification", {"classifier_head": "pooled"}),
        ("ConceptEncoderForSequenceClassificationViaDecoder", "ConceptEncoderForSequenceClassification", {"classifier_head": "via_decoder"}),
        ("ConceptEncoderForSentencePairClassification", "ConceptEncoderForSequenceClassification", {"classifier_head": "sentence_pair"}),
    ],
)  # fmt: skip
def test_a_class_per_variant_in_architectures_reads_as_our_class_and_its_fields(legacy, class_name, variant):
    """0.1.0 and MrCogito had a class per head variant; a config naming one reads as our class with the variant's
    fields, whatever the dict says of them (the old class fixed them), and saves under the new name."""
    written = {**tiny_config().to_dict(), "architectures": [legacy], "decoder_type": "weighted"}
    written.pop("classifier_head")  # 0.1.0 wrote no such field
    config = ConceptEncoderConfig.from_dict(written)
    assert config.architectures == [class_name]
    expected = {
        "decoder_type": "weighted",
        "decoder_query": "token_and_position",
        "classifier_head": "pooled",
        **variant,
    }
    assert {field: getattr(config, field) for field in expected} == expected


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("layer_norm_eps", -1.0, "layer_norm_eps=-1.0: must be positive"),
        ("encoder_token_ffn", "no", "encoder_token_ffn='no': must be a boolean"),
        ("hidden_act", "gelux", "hidden_act='gelux': must be one of \\['gelu'"),
        ("encoder_token_read_layers", "0", "encoder_token_read_layers=.*'0'.*: must be a list of integers"),
        ("mask_token_id", 4.0, "mask_token_id=4.0: must be an integer or None"),
        ("initializer_range", float("nan"), "initializer_range=nan: must be a finite number"),
    ],
)
def test_config_fields_are_type_and_range_checked(tmp_path, field, value, message):
    """0.1.0 accepted these: NaN logits, the string "no" read as true, a late bare KeyError, a list of characters."""
    with pytest.raises(ValueError, match=message):
        tiny_config(**{field: value})
    config = tiny_config()
    setattr(config, field, value)  # as an edited config.json or a caller would
    with pytest.raises(ValueError, match=message):
        config.validate_concept_encoder()
    config_dict = tiny_config().to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config_dict, field: value}))
    with pytest.raises(ValueError, match=message):
        ConceptEncoderConfig.from_pretrained(tmp_path)


def test_config_overrides_booleans_parse_as_booleans():
    """0.1.0 stored `bixt_token_ffn=no` as the string "no", which is true."""
    bixt = tiny_config(encoder_layer_type="bixt")
    assert apply_config_overrides(bixt, "encoder_token_ffn=true").encoder_token_ffn is True
    assert apply_config_overrides(bixt, "encoder_token_ffn=no").encoder_token_ffn is False
    with pytest.raises(ValueError, match="encoder_token_ffn"):
        apply_config_overrides(bixt, "encoder_token_ffn=maybe")


# A config.json of 0.1 (every field it could write under its old name or value) and what it reads as in 0.2.
OLD_SETTINGS = dict(
    mlm_decoder="weighted",
    lm_head_type="norm_dense_act",
    bixt_token_ffn=True,
    token_read_layers=[0],
    initialization="mrcogito",
    cross_attention_normalization="tokens",
    encoder_layer_type="bixt",
)
NEW_SETTINGS = dict(
    decoder_type="weighted",
    decoder_lm_head="norm_dense_act",
    encoder_token_ffn=True,
    encoder_token_read_layers=[0],
    initialization="xavier_attention",
    encoder_layer_type="bixt",
)


def test_a_config_json_of_0_1_loads_under_the_new_names_without_a_warning(tmp_path):
    """Renamed fields and values of 0.1 read as 0.2's; the retired switch at the value 0.2 computes is ignored. A
    saved file is not the reader's doing: no deprecation warning. Saved again, only the new names remain."""
    written = {key: value for key, value in tiny_config().to_dict().items() if key not in NEW_SETTINGS}
    (tmp_path / "config.json").write_text(json.dumps({**written, **OLD_SETTINGS}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = ConceptEncoderConfig.from_pretrained(tmp_path)
    assert not [warning for warning in caught if issubclass(warning.category, DeprecationWarning)]
    assert {field: getattr(config, field) for field in NEW_SETTINGS} == NEW_SETTINGS
    assert config.mlm_decoder == "weighted" and config.token_read_layers == [0]  # old names read the new fields
    config.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert not set(saved) & {*RENAMED_FIELDS, "cross_attention_normalization"}
    assert {field: saved[field] for field in NEW_SETTINGS} == NEW_SETTINGS


def test_old_names_a_caller_types_work_with_a_deprecation_warning():
    """As keyword arguments and in `--config_overrides`, each old name or value warns, naming the new one."""
    with pytest.warns(DeprecationWarning) as caught:
        config = tiny_config(**OLD_SETTINGS)
    assert {field: getattr(config, field) for field in NEW_SETTINGS} == NEW_SETTINGS
    messages = " ".join(str(warning.message) for warning in caught)
    for old, new in RENAMED_FIELDS.items():
        assert f"{old} is deprecated" in messages and f"use {new}" in messages, messages
    assert (
        "initialization='mrcogito' is deprecated" in messages
        and "cross_attention_normalization was retired" in messages
    )
    with pytest.warns(DeprecationWarning, match="field mlm_decoder is deprecated .* use decoder_type"):
        overridden = apply_config_overrides(tiny_config(), "mlm_decoder=weighted,initialization=mrcogito")
    assert (overridden.decoder_type, overridden.initialization) == ("weighted", "xavier_attention")


@pytest.mark.parametrize("source", ["config.json", "keyword", "--config_overrides"])
def test_a_retired_switch_that_changed_the_computation_is_refused_naming_field_value_and_version(tmp_path, source):
    """`cross_attention_normalization="concepts"` (Slot Attention) is gone in 0.2: a checkpoint trained with it would
    compute something else, so it is refused, never ignored."""
    expected = r"cross_attention_normalization='concepts' was retired in concept-encoder 0\.2.*concept-encoder 0\.1\.x"
    with pytest.raises(ValueError, match=expected):
        if source == "config.json":
            config = {**tiny_config().to_dict(), "cross_attention_normalization": "concepts"}
            (tmp_path / "config.json").write_text(json.dumps(config))
            ConceptEncoderConfig.from_pretrained(tmp_path)
        elif source == "keyword":
            tiny_config(cross_attention_normalization="concepts")
        else:
            apply_config_overrides(tiny_config(), "cross_attention_normalization=concepts")


# Every field that only matters under another field's value: (the setting, the field that does nothing there, the
# other field the error must name, a setting of that field under which it is accepted).
DEPENDENT = [
    (dict(encoder_token_ffn=True), "encoder_token_ffn", "encoder_layer_type", dict(encoder_layer_type="bixt")),
    (dict(decoder_type="weighted", decoder_query="position"), "decoder_query", "decoder_type", dict(decoder_type="perceiver")),
    (dict(decoder_type="weighted", decoder_query="constant"), "decoder_query", "classifier_head", dict(classifier_head="via_decoder")),
    (dict(decoder_type="weighted", decoder_memory="mean"), "decoder_memory", "decoder_type", dict(decoder_type="perceiver")),
    (dict(decoder_type="weighted", decoder_memory="mean"), "decoder_memory", "classifier_head", dict(classifier_head="via_decoder")),
    (dict(decoder_query="constant", decoder_position_embeddings="own"), "decoder_position_embeddings", "decoder_query", dict(decoder_query="position")),
    (dict(classifier_cosent_scale=10.0), "classifier_cosent_scale", "classifier_pair_score", dict(classifier_pair_score="cosine", classifier_pooling="mean")),
]  # fmt: skip


@pytest.mark.parametrize("setting, field, other, fix", DEPENDENT, ids=[f"{case[1]}-{case[2]}" for case in DEPENDENT])
def test_a_field_set_where_it_does_nothing_is_refused_naming_both_fields(setting, field, other, fix):
    with pytest.raises(ValueError) as error:
        tiny_config(**setting)
    message = str(error.value)
    assert f"ConceptEncoderConfig.{field}={setting[field]!r}" in message and other in message, message
    assert f"set {field}=" in message, message  # the fix
    tiny_config(**{**setting, **fix})  # where it matters, accepted


def test_every_dependent_field_and_each_field_it_depends_on_is_in_the_table():
    assert {(case[1], case[2]) for case in DEPENDENT} == {
        (field, other) for field, needs in DEPENDENT_FIELDS.items() for other in needs
    }


def test_a_weighted_mlm_keeps_the_decoder_settings_mrcogito_gives_every_head():
    """MrCogito's architecture (own decoder positions, plain FFN) is set for every head, its weighted MLM's included,
    and a converted weighted checkpoint carries it: not refused."""
    config = ConceptEncoderConfig.from_mrcogito("weighted_mlm")
    assert (config.decoder_type, config.decoder_position_embeddings, config.decoder_ffn) == ("weighted", "own", "plain")


@pytest.mark.parametrize(
    "retired, value",
    [("concept_losses", ["combined"]), ("concept_loss_weighting", "kendall_gal"), ("simcse_weight", 0.3)],
)
def test_retired_training_fields_are_refused_when_built_and_dropped_with_a_note_when_read(
    tmp_path, caplog, retired, value
):
    """0.1 kept training losses in the config; since 0.2 they are run arguments: building a config with one names
    where it goes, and an old config.json's are dropped on load, a non-default value named in a warning."""
    with pytest.raises(ValueError, match=f"{retired}.*run_pretraining.py --concept_losses"):
        tiny_config(**{retired: value})
    tiny_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, retired: value, "uniformity_temperature": 2.0}))
    with caplog.at_level("WARNING"):
        loaded = ConceptEncoderConfig.from_pretrained(tmp_path)
    assert not hasattr(loaded, retired) and not hasattr(loaded, "uniformity_temperature")
    assert retired in caplog.text and "uniformity_temperature" not in caplog.text  # a default needs no note
    loaded.save_pretrained(tmp_path / "again")
    assert retired not in json.loads((tmp_path / "again" / "config.json").read_text())


def test_a_training_field_in_config_overrides_is_refused_without_the_saved_checkpoint_note(caplog):
    """The scripts first look at --config_overrides without warning (`warn=None`), then apply them: a loss setting
    typed there is refused naming the flag to use, never read as a saved checkpoint's field."""
    with caplog.at_level("WARNING"), pytest.raises(ValueError, match="run_pretraining.py --concept_losses"):
        override_items("concept_losses=t_regs", tiny_config(), warn=None)
    assert "This checkpoint was trained" not in caplog.text
