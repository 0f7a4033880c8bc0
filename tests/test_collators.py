"""Collators on real WikiText lines: MLM masking rates, TSDAE deletion (every mode), sentence-pair padding."""

import pytest
import torch
from conftest import tiny_config

from concept_encoder.collators import DataCollatorForConceptMLM, DataCollatorForSentencePairs, DataCollatorForTSDAE
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM

BATCH = 32
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def features(tokenizer, wikitext_lines):
    """Pre-tokenized WikiText lines (as a dataset map would give them), about 50k tokens."""
    return [dict(tokenizer(line, truncation=True, max_length=MAX_LENGTH)) for line in wikitext_lines[:1000]]


def batches(features):
    return [features[start : start + BATCH] for start in range(0, len(features), BATCH)]


def special_mask(tokenizer, input_ids: torch.Tensor) -> torch.Tensor:
    return torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids))


def test_mlm_masking_rates_and_special_tokens(tokenizer, features):
    torch.manual_seed(0)
    collator = DataCollatorForConceptMLM(tokenizer)
    mask_id = tokenizer.mask_token_id
    candidates = selected = replaced = kept = 0
    for chunk in batches(features):
        original = tokenizer.pad(chunk, return_tensors="pt")["input_ids"]
        batch = collator(chunk)
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        special = special_mask(tokenizer, original)  # includes padding
        chosen = batch["labels"] != -100
        assert not (chosen & special).any(), "a special or pad token was selected for masking"
        assert torch.equal(batch["input_ids"][special], original[special])
        assert torch.equal(batch["labels"][chosen], original[chosen])
        assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
        candidates += int((~special).sum())
        selected += int(chosen.sum())
        replaced += int((batch["input_ids"][chosen] == mask_id).sum())
        kept += int((batch["input_ids"][chosen] == original[chosen]).sum())
    assert candidates >= 20_000
    assert selected / candidates == pytest.approx(0.15, abs=0.01)
    assert replaced / selected == pytest.approx(0.8, abs=0.025)
    assert kept / selected == pytest.approx(0.1, abs=0.02)  # a random token equal to the original counts as kept
    assert (selected - replaced - kept) / selected == pytest.approx(0.1, abs=0.02)


def test_mlm_collator_drops_token_type_ids(tokenizer, features):
    with_segments = [{**feature, "token_type_ids": [0] * len(feature["input_ids"])} for feature in features[:4]]
    assert "token_type_ids" not in DataCollatorForConceptMLM(tokenizer)(with_segments)


def tsdae_counts(tokenizer, features, mode: str, deletion_prob: float = 0.6):
    """Yields (original padded batch, collated batch) over all features."""
    collator = DataCollatorForTSDAE(tokenizer, deletion_prob=deletion_prob, mode=mode)
    for chunk in batches(features):
        yield tokenizer.pad(chunk, return_tensors="pt"), collator(chunk)


@pytest.mark.parametrize("mode", ["mask", "delete"])
def test_tsdae_deletion_rate_and_labels(tokenizer, features, mode):
    torch.manual_seed(0)
    deletable = deleted = 0
    for original, batch in tsdae_counts(tokenizer, features, mode):
        ids, real = original["input_ids"], original["attention_mask"].bool()
        assert torch.equal(batch["labels"][real], ids[real])
        assert (batch["labels"][~real] == -100).all()
        assert batch["labels"].shape == ids.shape
        content = real & ~special_mask(tokenizer, ids)
        surviving = batch["attention_mask"].bool() & ~special_mask(tokenizer, batch["input_ids"])
        assert (surviving.sum(dim=1) >= 1).all(), "a row lost every token"
        if mode == "mask":
            assert batch["input_ids"].shape == ids.shape
            assert (batch["attention_mask"].bool() <= real).all()
            assert torch.equal(batch["input_ids"][surviving], ids[surviving])  # survivors stay where they were
        deletable += int(content.sum())
        deleted += int(content.sum() - surviving.sum())
    assert deletable > 20_000
    assert deleted / deletable == pytest.approx(0.6, abs=0.02)


def is_subsequence(short: list[int], long: list[int]) -> bool:
    remaining = iter(long)
    return all(token in remaining for token in short)


def test_tsdae_delete_mode_removes_deleted_tokens_in_order(tokenizer, features):
    chunk = features[:BATCH]
    torch.manual_seed(1)
    masked = DataCollatorForTSDAE(tokenizer, mode="mask")(chunk)
    torch.manual_seed(1)  # the same draws: the same tokens are deleted in both modes
    deleted = DataCollatorForTSDAE(tokenizer, mode="delete")(chunk)
    assert deleted["input_ids"].shape[1] == int(masked["attention_mask"].sum(dim=1).max()) < masked["labels"].shape[1]
    for row in range(len(chunk)):
        survivors = masked["input_ids"][row][masked["attention_mask"][row].bool()].tolist()
        compact = deleted["input_ids"][row][deleted["attention_mask"][row].bool()].tolist()
        assert compact == survivors
        assert is_subsequence(compact, chunk[row]["input_ids"])
        padding = deleted["input_ids"][row][~deleted["attention_mask"][row].bool()]
        assert (padding == tokenizer.pad_token_id).all()
        assert deleted["attention_mask"][row].tolist() == sorted(deleted["attention_mask"][row].tolist(), reverse=True)


@pytest.mark.parametrize("mode", ["mask", "delete"])
def test_tsdae_keeps_one_token_when_nearly_everything_is_deleted(tokenizer, features, mode):
    torch.manual_seed(0)
    for original, batch in tsdae_counts(tokenizer, features[:256], mode, deletion_prob=0.999):
        content = original["attention_mask"].bool() & ~special_mask(tokenizer, original["input_ids"])
        surviving = batch["attention_mask"].bool() & ~special_mask(tokenizer, batch["input_ids"])
        assert torch.equal(surviving.sum(dim=1), content.any(dim=1).long())


@pytest.mark.parametrize("mode", ["suffix", "prefix"])
def test_a_retired_or_unknown_tsdae_mode_is_refused_naming_the_modes(tokenizer, mode):
    """`mode="suffix"` (prefix → suffix) was retired in 0.2: refused naming the release, never run as another mode."""
    expected = "retired in concept-encoder 0.2" if mode == "suffix" else "is unknown"
    with pytest.raises(ValueError, match=rf"mode={mode!r}.*{expected}.*\['mask', 'delete'\]"):
        DataCollatorForTSDAE(tokenizer, mode=mode)


def test_tsdae_draws_new_noise_on_every_call(tokenizer, features):
    collator = DataCollatorForTSDAE(tokenizer)
    first, second = collator(features[:BATCH]), collator(features[:BATCH])
    assert not torch.equal(first["attention_mask"], second["attention_mask"])
    assert torch.equal(first["labels"], second["labels"])


def test_tsdae_raw_text_and_length_limit(tokenizer, wikitext_lines):
    collator = DataCollatorForTSDAE(tokenizer, max_length=16)
    batch = collator([{"text": line} for line in wikitext_lines[:8]])
    assert batch["labels"].shape[1] <= 16
    with pytest.raises(ValueError, match="max_length=16"):
        collator([dict(tokenizer(line)) for line in wikitext_lines[:8]])
    with pytest.raises(ValueError, match="'input_ids'.*'text'"):
        collator([{"sentence": "no usable column"}])


def test_tsdae_delete_batch_trains_the_posonly_model(tokenizer, features):
    torch.manual_seed(0)
    model = ConceptEncoderForMaskedLM(tiny_config(decoder_query="position", vocab_size=len(tokenizer))).train()
    batch = DataCollatorForTSDAE(tokenizer, mode="delete")(features[:8])
    output = model(**batch)
    output.loss.backward()
    assert torch.isfinite(output.loss) and model.encoder.concepts.grad.abs().sum() > 0


def test_sentence_pair_sides_are_padded_independently(tokenizer, wikitext_lines):
    texts_a, texts_b = wikitext_lines[:4], [line[:20] for line in wikitext_lines[4:8]]
    features = []
    for a, b, label in zip(texts_a, texts_b, [0, 1, 1, 0]):
        side_a, side_b = tokenizer(a, truncation=True, max_length=40), tokenizer(b)
        features.append(
            {**side_a, "input_ids_b": side_b["input_ids"], "attention_mask_b": side_b["attention_mask"], "label": label}
        )
    batch = DataCollatorForSentencePairs(tokenizer)(features)
    for suffix in ("", "_b"):
        lengths = [len(feature["input_ids" + suffix]) for feature in features]
        assert batch["input_ids" + suffix].shape == (4, max(lengths))
        assert batch["attention_mask" + suffix].sum(dim=1).tolist() == lengths
        for row, feature in enumerate(features):
            assert batch["input_ids" + suffix][row, : lengths[row]].tolist() == feature["input_ids" + suffix]
            assert (batch["input_ids" + suffix][row, lengths[row] :] == tokenizer.pad_token_id).all()
    assert batch["input_ids"].shape[1] != batch["input_ids_b"].shape[1]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 1, 0]

    scores = DataCollatorForSentencePairs(tokenizer)([{**f, "label": 3.5} for f in features])["labels"]
    assert scores.dtype == torch.float32
    assert "labels" not in DataCollatorForSentencePairs(tokenizer)([{**f, "label": None} for f in features])
