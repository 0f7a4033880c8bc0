"""Every model class and head variant on tiny random configs: shapes, losses, gradients, save/load, padding,
decoding, checkpointing."""

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SIZES, tiny_config
from transformers import pipeline

from concept_encoder.modeling_concept_encoder import (
    ConceptEncoderForMaskedLM,
    ConceptEncoderForSequenceClassification,
    ConceptEncoderModel,
)

# Every head the log names: the config fields of its variant (one class per Auto class).
MLM_HEADS = {
    "weighted_mlm": {"decoder_type": "weighted"},
    "perceiver_mlm": {"decoder_type": "perceiver"},
    "perceiver_posonly_mlm": {"decoder_type": "perceiver", "decoder_query": "position"},
    "perceiver_constant_mlm": {"decoder_type": "perceiver", "decoder_query": "constant"},
    "perceiver_mean_memory_mlm": {"decoder_type": "perceiver", "decoder_query": "position", "decoder_memory": "mean"},
}
CLASSIFIER_HEADS = {head: {"classifier_head": head} for head in ("pooled", "via_decoder", "sentence_pair")}
HEADS = {
    "encoder": (ConceptEncoderModel, {}),
    **{name: (ConceptEncoderForMaskedLM, variant) for name, variant in MLM_HEADS.items()},
    **{name: (ConceptEncoderForSequenceClassification, variant) for name, variant in CLASSIFIER_HEADS.items()},
}
LAYER_TYPES = ["perceiver", "bixt"]
BATCH, SEQ, PAD = 3, 10, 0


def build(head, layer_type, **overrides):
    """A fresh model of `head` (a key of `HEADS`)."""
    torch.manual_seed(0)
    model_class, variant = HEADS[head]
    return model_class(tiny_config(encoder_layer_type=layer_type, **variant, **overrides))


def random_ids(generator, batch=BATCH, length=SEQ, vocab=200):
    """Ids in [5, vocab) (never a special token) with the last rows shortened by padding."""
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, length - 2 * row :] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def make_inputs(head, with_labels: bool, seed: int = 0) -> dict:
    """Forward keyword arguments for `head`, with labels of the right kind when asked."""
    generator = torch.Generator().manual_seed(seed)
    input_ids, attention_mask = random_ids(generator)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if head == "sentence_pair":
        inputs["input_ids_b"], inputs["attention_mask_b"] = random_ids(generator, length=SEQ - 3)
    if not with_labels or head == "encoder":
        return inputs
    if head in MLM_HEADS:
        labels = torch.full_like(input_ids, -100)
        labels[:, 1:4] = input_ids[:, 1:4]  # three labelled positions per row, all real tokens
        inputs["labels"] = labels
    else:
        inputs["labels"] = torch.tensor([0, 1, 0])
    return inputs


def outputs_of(model, inputs) -> torch.Tensor:
    output = model(**inputs)
    return output.last_hidden_state if isinstance(model, ConceptEncoderModel) else output.logits


def encoder_of(model) -> ConceptEncoderModel:
    return model if isinstance(model, ConceptEncoderModel) else model.encoder


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("head", HEADS)
def test_forward_shapes_loss_and_gradients(head, layer_type):
    model = build(head, layer_type).train()
    config = model.config

    unlabelled = model(**make_inputs(head, with_labels=False))
    if head == "encoder":
        assert unlabelled.last_hidden_state.shape == (BATCH, config.concept_num, config.hidden_size)
        expected_tokens = (BATCH, SEQ, config.hidden_size) if layer_type == "bixt" else None
        assert getattr(unlabelled.token_hidden_state, "shape", None) == expected_tokens
        objective = unlabelled.last_hidden_state.pow(2).mean()
    elif head in MLM_HEADS:
        assert unlabelled.logits.shape == (BATCH, SEQ, config.vocab_size)  # dense without labels
        assert unlabelled.loss is None
    else:
        assert unlabelled.logits.shape == (BATCH, config.num_labels)
        assert unlabelled.loss is None

    if head != "encoder":
        inputs = make_inputs(head, with_labels=True)
        labelled = model(**inputs)
        if head in MLM_HEADS:
            assert labelled.logits.shape == ((inputs["labels"] != -100).sum(), config.vocab_size)  # sparse
        assert torch.isfinite(labelled.loss)
        assert labelled.concept_states.shape[-2:] == (config.concept_num, config.hidden_size)  # for training losses
        objective = labelled.loss

    objective.backward()
    encoder = encoder_of(model)
    for name, parameter in (
        ("concepts", encoder.concepts),
        ("token embeddings", encoder.embeddings.token_embeddings.weight),
    ):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"no gradient reaches the {name}"


@pytest.mark.parametrize("head", CLASSIFIER_HEADS)
@pytest.mark.parametrize(
    "num_labels, problem_type, labels, reference",
    [
        (1, None, torch.tensor([0.5, -1.0, 2.0]), lambda logits, y: F.mse_loss(logits.squeeze(-1), y)),
        (
            3,
            "multi_label_classification",
            torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 1, 0]]),
            F.binary_cross_entropy_with_logits,
        ),
        (3, None, torch.tensor([2, 0, 1]), F.cross_entropy),
    ],
    ids=["regression", "multi_label", "single_label"],
)
def test_classifier_problem_types(head, num_labels, problem_type, labels, reference):
    model = build(head, "perceiver", num_labels=num_labels, problem_type=problem_type).eval()
    inputs = make_inputs(head, with_labels=False)
    output = model(**inputs, labels=labels)
    assert output.logits.shape == (BATCH, num_labels)
    torch.testing.assert_close(output.loss, reference(output.logits, labels), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_encoder_hidden_states_and_attentions(layer_type):
    model = build("encoder", layer_type).eval()
    config = model.config
    inputs = make_inputs("encoder", with_labels=False)
    output = model(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(output.hidden_states) == config.num_hidden_layers + 1
    assert len(output.attentions) == len(output.cross_attentions) == config.num_hidden_layers
    heads, concepts = config.num_attention_heads, config.concept_num
    assert output.attentions[0].shape == (BATCH, heads, concepts, concepts)
    assert output.cross_attentions[0].shape == (BATCH, heads, concepts, SEQ)
    # padded keys get no attention; the eager path (weights requested) matches the SDPA path
    padded = inputs["attention_mask"] == 0
    assert (
        output.cross_attentions[-1].permute(0, 2, 3, 1)[padded[:, None, :].expand(-1, concepts, -1)].abs().max() < 1e-6
    )
    torch.testing.assert_close(output.last_hidden_state, model(**inputs).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_pair_head_returns_both_sentences_attentions():
    """The pair head takes `output_attentions`/`output_hidden_states` like every head: per-layer tuples of sentence
    A's states and weights, then sentence B's."""
    model = build("sentence_pair", "bixt").eval()
    inputs = make_inputs("sentence_pair", with_labels=False)
    output = model(**inputs, output_hidden_states=True, output_attentions=True)
    layers = model.config.num_hidden_layers
    assert len(output.hidden_states) == 2 * (layers + 1) and len(output.attentions) == 2 * layers
    assert [weights.shape[-1] for weights in output.cross_attentions] == [SEQ] * layers + [SEQ - 3] * layers
    torch.testing.assert_close(output.logits, model(**inputs).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("head", HEADS)
def test_save_load_round_trip(head, layer_type, tmp_path):
    model = build(head, layer_type).eval()
    with torch.no_grad():  # move every tensor off its initial value, so a re-initialised one cannot pass
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    model.save_pretrained(tmp_path)
    model_class, variant = HEADS[head]
    loaded = model_class.from_pretrained(tmp_path).eval()

    assert type(loaded) is model_class
    assert {field: getattr(loaded.config, field) for field in variant} == variant
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), f"{name} changed in the save/load round trip"  # saved: exact
    inputs = make_inputs(head, with_labels=False)
    with torch.no_grad():
        torch.testing.assert_close(outputs_of(loaded, inputs), outputs_of(model, inputs), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_padding_does_not_change_concept_states(layer_type):
    model = build("encoder", layer_type, hidden_dropout_prob=0.1).eval()
    ids = torch.randint(5, 200, (1, 7), generator=torch.Generator().manual_seed(1))
    padded_ids = torch.cat([ids, torch.full((1, 9), PAD)], dim=1)
    padded_mask = torch.cat([torch.ones(1, 7, dtype=torch.long), torch.zeros(1, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain = model(ids)
        padded = model(padded_ids, padded_mask)
    torch.testing.assert_close(padded.last_hidden_state, plain.last_hidden_state, atol=1e-5, rtol=0)
    if layer_type == "bixt":
        torch.testing.assert_close(padded.token_hidden_state[:, :7], plain.token_hidden_state, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("head", ["encoder", "perceiver_mlm"])
def test_fully_padded_row_is_finite(head, layer_type):
    model = build(head, layer_type).eval()
    input_ids, attention_mask = random_ids(torch.Generator().manual_seed(2))
    input_ids[0], attention_mask[0] = PAD, 0
    with torch.no_grad():
        output = outputs_of(model, {"input_ids": input_ids, "attention_mask": attention_mask})
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("head", MLM_HEADS)
def test_sparse_decoding_matches_dense_cross_entropy(head):
    model = build(head, "perceiver").eval()
    inputs = make_inputs(head, with_labels=True)
    labels = inputs.pop("labels")
    selected = labels != -100
    with torch.no_grad():
        dense = model(**inputs).logits  # [batch, seq, vocab]
        sparse = model(**inputs, labels=labels)
    torch.testing.assert_close(sparse.logits, dense[selected], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse.loss, F.cross_entropy(dense[selected], labels[selected]), atol=1e-5, rtol=1e-5)


def test_posonly_decodes_every_label_position_from_a_shorter_input():
    """TSDAE delete mode: the encoder sees the surviving tokens, the decoder restores all `labels.shape[1]`."""
    model = build("perceiver_posonly_mlm", "perceiver").train()
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(5, 200, (2, 12), generator=generator)
    labels[1, 9:] = -100  # the shorter original sentence is padded
    input_ids = labels[:, ::3].clamp_min(PAD)  # 4 surviving tokens per row
    output = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    assert output.logits.shape == ((labels != -100).sum(), model.config.vocab_size)
    assert torch.isfinite(output.loss)


def test_constant_queries_make_the_loss_the_bag_of_words_likelihood():
    """One query at every position: every position gets the same distribution p, so the loss is the mean of
    -log p(word) over the sentence's words, whatever their order."""
    model = build("perceiver_constant_mlm", "perceiver").eval()
    labels = torch.randint(5, 200, (2, 9))
    input_ids = labels[:, ::2]  # a shorter input, as TSDAE's delete mode gives
    logits = model(input_ids=input_ids).logits  # [2, 5, vocab]
    torch.testing.assert_close(logits, logits[:, :1].expand_as(logits), atol=1e-5, rtol=1e-4)
    log_p = model(input_ids=input_ids, labels=labels[:, :1]).logits.log_softmax(-1)  # [2, vocab]: one position each
    expected = -log_p.gather(1, labels).mean()
    assert torch.allclose(model(input_ids=input_ids, labels=labels).loss, expected, atol=1e-5)
    assert torch.allclose(model(input_ids=input_ids, labels=labels.flip(1)).loss, expected, atol=1e-5)


def test_mean_memory_decodes_from_the_mean_concept_alone():
    """`decoder_memory="mean"`: two concept sets with the same mean decode alike; with every concept the same
    the mean memory and the full memory agree."""
    model = build("perceiver_mean_memory_mlm", "perceiver").eval()
    queries = torch.randn(2, 5, model.config.hidden_size)
    concepts = torch.randn(2, model.config.concept_num, model.config.hidden_size)
    shuffled = concepts - concepts.mean(dim=1, keepdim=True)
    shuffled = shuffled[:, torch.randperm(concepts.shape[1])].flip(-1) + concepts.mean(dim=1, keepdim=True)
    assert torch.allclose(model.decoder(queries, concepts), model.decoder(queries, shuffled), atol=1e-5)
    same = concepts.mean(dim=1, keepdim=True).expand_as(concepts)
    full = build("perceiver_posonly_mlm", "perceiver").eval()
    full.load_state_dict(model.state_dict())
    assert torch.allclose(model.decoder(queries, concepts), full.decoder(queries, same), atol=1e-5)
    assert not torch.allclose(full.decoder(queries, concepts), full.decoder(queries, shuffled), atol=1e-3)


def test_token_queries_refuse_labels_longer_than_the_input():
    model = build("perceiver_mlm", "perceiver")
    labels = torch.randint(5, 200, (2, 12))
    with pytest.raises(ValueError, match="decoder_query='position'"):
        model(input_ids=labels[:, :6], labels=labels)


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(layer_type):
    model = build("perceiver_mlm", layer_type, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    inputs = make_inputs("perceiver_mlm", with_labels=True)
    layer_calls = []
    # a pre-hook inside the checkpointed layer: the recomputation stops early, before post-hooks of its last block
    model.encoder.layers[0].ffn.register_forward_pre_hook(lambda *_: layer_calls.append(1))

    def loss_and_gradients():
        model.zero_grad()
        layer_calls.clear()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    loss, gradients = loss_and_gradients()
    assert len(layer_calls) == 1
    model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
    checkpointed_loss, checkpointed_gradients = loss_and_gradients()
    assert len(layer_calls) == 2, "gradient checkpointing did not recompute the layer in the backward pass"
    torch.testing.assert_close(checkpointed_loss, loss, atol=1e-6, rtol=1e-6)
    assert checkpointed_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed_gradients[name], gradient, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("head", MLM_HEADS)
def test_lm_head_tying_survives_save_and_load(head, tied, tmp_path):
    model = build(head, "perceiver", tie_word_embeddings=tied)
    model.save_pretrained(tmp_path)
    loaded = ConceptEncoderForMaskedLM.from_pretrained(tmp_path)
    for candidate in (model, loaded):
        head, embeddings = candidate.lm_head.decoder.weight, candidate.encoder.embeddings.token_embeddings.weight
        assert (head.data_ptr() == embeddings.data_ptr()) is tied
    assert torch.equal(loaded.lm_head.decoder.weight, model.lm_head.decoder.weight)


@pytest.mark.parametrize("head", MLM_HEADS)
def test_fill_mask_pipeline(head, tokenizer):
    config = tiny_config(
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MLM_HEADS[head],
    )
    model = ConceptEncoderForMaskedLM(config).eval()
    fill_mask = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    text = f"the {tokenizer.mask_token} of the city"
    predictions = fill_mask(text, top_k=3)
    inputs = tokenizer(text, return_tensors="pt")
    (position,) = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0].tolist()
    with torch.no_grad():
        best = model(**inputs).logits[0, position].softmax(dim=-1).topk(3)  # what the pipeline must report
    assert [p["token"] for p in predictions] == best.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_over_long_sequence_raises_a_clear_error():
    model = build("encoder", "perceiver")
    too_long = torch.randint(5, 200, (1, model.config.max_position_embeddings + 1))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(too_long)


@pytest.mark.parametrize("bad_id", [-1, 200])
def test_ids_outside_the_vocabulary_raise_a_clear_error(bad_id):
    model = build("encoder", "perceiver")
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[5, 6, bad_id]]))


def test_each_classifier_head_refuses_the_inputs_of_another():
    """The sentence-pair head's second sentence and `cosine_only` belong to it alone; the decoders need input_ids."""
    inputs = make_inputs("sentence_pair", with_labels=False)
    for head in ("pooled", "via_decoder"):
        with pytest.raises(ValueError, match=f"classifier_head='{head}'"):
            build(head, "perceiver")(**inputs)
        with pytest.raises(ValueError, match=f"classifier_head='{head}'"):
            build(head, "perceiver")(inputs["input_ids"], cosine_only=True)
    with pytest.raises(ValueError, match="needs input_ids_b"):
        build("sentence_pair", "perceiver")(inputs["input_ids"], inputs["attention_mask"])
    embeddings = torch.randn(BATCH, SEQ, TINY_SIZES["hidden_size"])
    for head in ("via_decoder", "perceiver_mlm"):
        with pytest.raises(ValueError, match="needs input_ids"):
            build(head, "perceiver")(inputs_embeds=embeddings)


def test_a_head_field_set_after_the_config_was_built_is_validated_with_the_model():
    config = tiny_config()
    config.classifier_head = "cls"  # as from_pretrained(..., classifier_head="cls") sets it
    with pytest.raises(ValueError, match="ConceptEncoderConfig.classifier_head='cls'"):
        ConceptEncoderForSequenceClassification(config)


def cosine_pair_model(**overrides):
    torch.manual_seed(0)
    config = tiny_config(
        classifier_head="sentence_pair", classifier_pair_score="cosine", classifier_pooling="mean", num_labels=1
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return ConceptEncoderForSequenceClassification(config)


def test_cosine_pair_score_is_the_zero_shot_cosine_and_adds_no_weight():
    """`classifier_pair_score="cosine"`: the logit is the cosine of the two sentence vectors (the concepts' means,
    what zero-shot scoring reads), and the head adds no parameter to the encoder's."""
    model = cosine_pair_model().eval()
    inputs = make_inputs("sentence_pair", with_labels=False)
    with torch.no_grad():
        u = model.encoder(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state.mean(dim=1)
        v = model.encoder(inputs["input_ids_b"], inputs["attention_mask_b"]).last_hidden_state.mean(dim=1)
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, F.cosine_similarity(u, v, dim=-1).unsqueeze(-1), atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.encoder.parameters())


def test_cosent_loss_known_answers():
    from concept_encoder.modeling_concept_encoder import cosent_loss

    labels = torch.tensor([0.0, 2.5, 5.0])
    ordered, reversed_ = torch.tensor([-0.5, 0.1, 0.9]), torch.tensor([0.9, 0.1, -0.5])
    # reversed: the three pairs of pairs are misordered by 0.6, 0.8 and 1.4 of cosine
    expected = torch.log(1 + torch.exp(20 * torch.tensor([0.6, 0.8, 1.4])).sum())
    torch.testing.assert_close(cosent_loss(reversed_, labels, 20.0), expected, atol=1e-4, rtol=1e-5)
    assert cosent_loss(ordered, labels, 20.0) < 1e-4  # the right order, by a margin: almost no loss
    assert cosent_loss(ordered, torch.full((3,), 3.0), 20.0) == 0  # equal gold scores: nothing to order
    # only the order of the gold scores counts: 0–5 and 1–5 scales give the same loss
    torch.testing.assert_close(cosent_loss(reversed_, labels * 0.8 + 1, 20.0), expected, atol=1e-4, rtol=1e-5)


def test_cosine_pair_score_trains_the_order_of_the_cosines():
    """A few steps of CoSENT on fixed pairs raise the Spearman correlation of the cosines with the gold scores."""
    from scipy.stats import spearmanr

    model = cosine_pair_model()
    generator = torch.Generator().manual_seed(3)
    ids_a, mask_a = random_ids(generator, batch=8)
    ids_b, mask_b = random_ids(generator, batch=8)
    labels = torch.linspace(0, 5, 8)
    inputs = {"input_ids": ids_a, "attention_mask": mask_a, "input_ids_b": ids_b, "attention_mask_b": mask_b}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def correlation():
        model.eval()
        with torch.no_grad():
            return spearmanr(model(**inputs).logits.squeeze(-1).numpy(), labels.numpy())[0]

    before = correlation()
    model.train()
    for _ in range(30):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert correlation() > max(before, 0.0) + 0.3


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"classifier_pooling": "weighted"}, "classifier_pooling='mean'"),
        ({"classifier_cosent_scale": 0.0}, "classifier_cosent_scale"),
    ],
)
def test_cosine_pair_score_refuses_settings_it_cannot_use(overrides, named):
    settings = {"classifier_head": "sentence_pair", "classifier_pair_score": "cosine", "classifier_pooling": "mean"}
    with pytest.raises(ValueError, match=re.escape(named)):
        tiny_config(**{**settings, **overrides}).validate_concept_encoder()


def test_cosine_pair_score_refuses_a_classification_task_and_a_single_sentence_head():
    with pytest.raises(ValueError, match=re.escape("num_labels=2 needs classifier_pair_score='features'")):
        cosine_pair_model(num_labels=2)
    with pytest.raises(ValueError, match=re.escape("classifier_head='pooled': fine-tune a pair task")):
        cosine_pair_model(classifier_head="pooled")


@pytest.mark.parametrize("shape", [(0, 5), (2, 0)], ids=["empty-batch", "zero-length"])
def test_the_model_names_an_empty_input(shape):
    """0.1.0: `cannot reshape tensor of 0 elements into shape [0, 8, -1]`."""
    for model in (ConceptEncoderModel(tiny_config()), ConceptEncoderForMaskedLM(tiny_config())):
        with pytest.raises(ValueError, match=rf"Empty input \(batch {shape[0]}, length {shape[1]}\)"):
            model.eval()(torch.zeros(shape, dtype=torch.long))
