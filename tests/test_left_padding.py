"""Left padding (a tokenizer with `padding_side="left"`, a user's or one set in `tokenizer_config.json`): positions
follow the attention mask, so every head gives a sentence the same outputs whether the batch is padded on the left,
on the right, or holds that sentence alone."""

import copy

import pytest
import torch
from conftest import tiny_config
from transformers import TextClassificationPipeline, pipeline

from concept_encoder.modeling_concept_encoder import (
    ConceptEncoderForMaskedLM,
    ConceptEncoderForSequenceClassification,
    ConceptEncoderModel,
)
from concept_encoder.pipeline_concept_encoder import ConceptEncoderPairClassificationPipeline

HEADS = {
    "encoder": (ConceptEncoderModel, {}),
    "weighted_mlm": (ConceptEncoderForMaskedLM, {"decoder_type": "weighted"}),
    "perceiver_mlm": (ConceptEncoderForMaskedLM, {"decoder_type": "perceiver"}),
    "perceiver_posonly_mlm": (ConceptEncoderForMaskedLM, {"decoder_query": "position"}),
    "perceiver_own_positions_mlm": (ConceptEncoderForMaskedLM, {"decoder_position_embeddings": "own"}),
    "pooled": (ConceptEncoderForSequenceClassification, {"classifier_head": "pooled"}),
    "via_decoder": (ConceptEncoderForSequenceClassification, {"classifier_head": "via_decoder"}),
    "sentence_pair": (ConceptEncoderForSequenceClassification, {"classifier_head": "sentence_pair"}),
}
LENGTHS, LENGTHS_B = (9, 4, 6), (3, 8, 5)  # mixed lengths: each batch pads every row but one
PAD = 0
TOLERANCE = dict(atol=1e-5, rtol=1e-4)  # float32 through different batch shapes and kernels


def sentences(lengths, seed) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 200, (length,), generator=generator) for length in lengths]


def padded(rows: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids`, `attention_mask` of `rows` padded to the longest on `side`."""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), PAD)
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        columns = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        ids[index, columns], mask[index, columns] = row, 1
    return ids, mask


def real_columns(row: torch.Tensor, length: int, side: str) -> slice:
    return slice(length - len(row), length) if side == "left" else slice(0, len(row))


def per_sentence_outputs(model, head, first, second, side: str) -> list[dict[str, torch.Tensor]]:
    """Each sentence's outputs (concept states, token states, dense logits at its real tokens, class logits) in a
    batch of `first` (and `second`, the pair head's B side) padded on `side` (`"alone"`: one sentence per batch)."""
    if side == "alone":
        return [
            per_sentence_outputs(model, head, [a], [b], "right")[0]
            for a, b in zip(first, second, strict=True)  # a batch of one has no padding
        ]
    ids, mask = padded(first, side)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if head == "sentence_pair":
        inputs["input_ids_b"], inputs["attention_mask_b"] = padded(second, side)
    with torch.no_grad():
        output = model(**inputs)
    results = []
    for index, row in enumerate(first):
        columns = real_columns(row, ids.shape[1], side)
        if head == "encoder":
            result = {"concepts": output.last_hidden_state[index]}
            if output.token_hidden_state is not None:
                result["tokens"] = output.token_hidden_state[index, columns]
        elif isinstance(model, ConceptEncoderForMaskedLM):
            result = {"logits": output.logits[index, columns]}
        else:
            result = {"logits": output.logits[index]}
        results.append(result)
    return results


@pytest.mark.parametrize("layer_type", ["perceiver", "bixt"])
@pytest.mark.parametrize("head", HEADS)
def test_left_and_right_padding_and_a_batch_of_one_give_the_same_outputs(head, layer_type):
    torch.manual_seed(0)
    model_class, variant = HEADS[head]
    model = model_class(tiny_config(encoder_layer_type=layer_type, **variant)).eval()
    first, second = sentences(LENGTHS, seed=1), sentences(LENGTHS_B, seed=2)
    alone = per_sentence_outputs(model, head, first, second, "alone")
    for side in ("right", "left"):
        for expected, got in zip(alone, per_sentence_outputs(model, head, first, second, side), strict=True):
            for name, value in expected.items():
                torch.testing.assert_close(got[name], value, **TOLERANCE, msg=f"{side}-padded {name} differ")


@pytest.mark.parametrize("head", ["weighted_mlm", "perceiver_mlm", "perceiver_posonly_mlm"])
def test_left_padded_mlm_loss_and_sparse_logits_equal_right_padded(head):
    """With labels (sparse decoding), the labelled positions of a left-padded batch decode as in a right-padded one."""
    torch.manual_seed(0)
    model_class, variant = HEADS[head]
    model = model_class(tiny_config(**variant)).eval()
    rows = sentences(LENGTHS, seed=3)
    outputs = {}
    for side in ("right", "left"):
        ids, mask = padded(rows, side)
        labels = torch.full_like(ids, -100)
        for index, row in enumerate(rows):
            start = real_columns(row, ids.shape[1], side).start
            labels[index, start + 1 : start + 3] = row[1:3]  # two labelled tokens per sentence
        with torch.no_grad():
            outputs[side] = model(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(outputs["left"].logits, outputs["right"].logits, **TOLERANCE)
    torch.testing.assert_close(outputs["left"].loss, outputs["right"].loss, **TOLERANCE)


def left_padding(tokenizer):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "left"
    return tokenizer


def tokenizer_config(tokenizer, **variant):
    return tiny_config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id, **variant
    )


TEXTS = ["the city", "the history of the city was written in the records of the old church", "a word"]


def test_fill_mask_pipeline_scores_do_not_depend_on_the_batch_with_left_padding(tokenizer):
    torch.manual_seed(0)
    tokenizer = left_padding(tokenizer)
    model = ConceptEncoderForMaskedLM(tokenizer_config(tokenizer)).eval()
    fill_mask = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    texts = [f"{text} {tokenizer.mask_token} ." for text in TEXTS]
    batched = fill_mask(texts, top_k=3, batch_size=len(texts))
    for text, predictions in zip(texts, batched, strict=True):
        alone = fill_mask(text, top_k=3)
        assert [p["token"] for p in predictions] == [p["token"] for p in alone]
        assert [p["score"] for p in predictions] == pytest.approx([p["score"] for p in alone], abs=1e-5)


@pytest.mark.parametrize("head", ["pooled", "via_decoder"])
def test_text_classification_pipeline_scores_do_not_depend_on_the_batch_with_left_padding(tokenizer, head):
    torch.manual_seed(0)
    tokenizer = left_padding(tokenizer)
    model = ConceptEncoderForSequenceClassification(tokenizer_config(tokenizer, classifier_head=head)).eval()
    classify = TextClassificationPipeline(model=model, tokenizer=tokenizer)
    batched = classify(TEXTS, batch_size=len(TEXTS))
    for text, result in zip(TEXTS, batched, strict=True):
        (alone,) = classify([text])
        assert result["score"] == pytest.approx(alone["score"], abs=1e-5)


def test_pair_pipeline_scores_do_not_depend_on_the_batch_with_left_padding(tokenizer):
    torch.manual_seed(0)
    tokenizer = left_padding(tokenizer)
    model = ConceptEncoderForSequenceClassification(tokenizer_config(tokenizer, classifier_head="sentence_pair"))
    classify = ConceptEncoderPairClassificationPipeline(model=model.eval(), tokenizer=tokenizer)
    pairs = [{"text": a, "text_pair": b} for a, b in zip(TEXTS, reversed(TEXTS), strict=True)]
    batched = classify(pairs, batch_size=len(pairs))
    for pair, result in zip(pairs, batched, strict=True):
        assert result["score"] == pytest.approx(classify(pair)["score"], abs=1e-5)


@pytest.mark.parametrize("mode", ["mask", "delete"])
def test_tsdae_batches_do_not_depend_on_the_tokenizer_padding_side(tokenizer, mode):
    """The TSDAE modes read rows from their first column: the collator pads on the right whatever the
    tokenizer's `padding_side`."""
    from concept_encoder.collators import DataCollatorForTSDAE

    features = [{"input_ids": tokenizer(text)["input_ids"]} for text in TEXTS]
    batches = []
    for side_tokenizer in (tokenizer, left_padding(tokenizer)):
        torch.manual_seed(0)
        batches.append(DataCollatorForTSDAE(side_tokenizer, mode=mode)(features))
    for name, value in batches[0].items():
        assert torch.equal(batches[1][name], value), name  # integer ids and masks: exact


def test_tsdae_mask_mode_never_hides_the_first_token(tokenizer):
    """A hidden first token would read as left padding (`position_ids_from_mask`) and shift the row's positions."""
    from concept_encoder.collators import DataCollatorForTSDAE

    words = tokenizer("the history of the city was written", add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    batch = DataCollatorForTSDAE(tokenizer, deletion_prob=0.99, mode="mask")([{"input_ids": words}] * 64)
    assert batch["attention_mask"][:, 0].all()
