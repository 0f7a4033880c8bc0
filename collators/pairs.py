"""Sentence-pair batches for separate encoding of the two sides (the `classifier_head="sentence_pair"` classifier)."""

import torch
from transformers import PreTrainedTokenizerBase

PAIR_KEYS = ("input_ids", "attention_mask", "input_ids_b", "attention_mask_b")


class DataCollatorForSentencePairs:
    """Pads each side of a sentence pair on its own: `input_ids, attention_mask` (side a, padded to the longest a)
    and `input_ids_b, attention_mask_b` (side b, padded to the longest b), plus `labels`.

    Features are pre-tokenized dicts with `input_ids`, `input_ids_b` (attention masks optional) and `label` or
    `labels`; integer labels become a long tensor (classification), float labels a float tensor (regression, e.g.
    STS-B). Features without labels (test sets) give a batch without `labels`. Raw text is not accepted.
    With the Trainer set `label_names=["labels"]` (the model's forward has two inputs per side, so the Trainer
    cannot guess the label column); `remove_unused_columns=True` is fine.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None):
        if tokenizer.pad_token_id is None:
            raise ValueError("DataCollatorForSentencePairs needs a tokenizer with a pad token (tokenizer.pad_token).")
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def _pad_side(self, features: list[dict], suffix: str) -> dict[str, torch.Tensor]:
        """Pads one side (`suffix` "" for a, "_b" for b) to its own longest row."""
        if any(f"input_ids{suffix}" not in feature for feature in features):
            raise ValueError(
                f"DataCollatorForSentencePairs: every feature needs 'input_ids{suffix}'; got keys "
                f"{sorted(features[0])}. Tokenize the two sentences separately into input_ids and input_ids_b."
            )
        side = [
            {key: feature[key + suffix] for key in ("input_ids", "attention_mask") if key + suffix in feature}
            for feature in features
        ]
        padded = self.tokenizer.pad(side, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of)
        return {"input_ids" + suffix: padded["input_ids"], "attention_mask" + suffix: padded["attention_mask"]}

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = {**self._pad_side(features, ""), **self._pad_side(features, "_b")}
        labels = [feature.get("labels", feature.get("label")) for feature in features]
        if any(label is not None for label in labels):
            if any(label is None for label in labels):
                raise ValueError("DataCollatorForSentencePairs: some features have a label and some do not.")
            labels = torch.as_tensor(labels)
            batch["labels"] = labels.float() if labels.is_floating_point() else labels.long()
        return batch
