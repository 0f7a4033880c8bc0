"""TSDAE batches: delete most tokens of each sentence; the model reconstructs the whole sentence from the rest."""

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label of a position that carries no loss: transformers' convention (CrossEntropyLoss's default)
TSDAE_MODES = ("mask", "delete")
# Modes retired in 0.2 (RESEARCH.md: prefix → suffix reconstruction was the study's worst zero-shot row; no recipe uses
# it): refused, naming what replaced them.
RETIRED_TSDAE_MODES = ("suffix",)


def check_tsdae_mode(mode: str, name: str = "DataCollatorForTSDAE: mode"):
    """Raise `ValueError` naming `name` (the argument or flag) unless `mode` is one of `TSDAE_MODES`."""
    if mode in RETIRED_TSDAE_MODES:
        raise ValueError(
            f"{name}={mode!r} (prefix → suffix) was retired in concept-encoder 0.2 (RESEARCH.md: the worst zero-shot "
            f"row): choose one of {list(TSDAE_MODES)}, or concept-encoder 0.1.x to rerun it."
        )
    if mode not in TSDAE_MODES:
        raise ValueError(f"{name}={mode!r} is unknown: choose one of {list(TSDAE_MODES)}.")


class DataCollatorForTSDAE:
    """Token-deletion noise for TSDAE pretraining (Wang et al., 2021) with dense reconstruction labels.

    Each token that is neither special ([CLS], [SEP], ...) nor padding is deleted with probability `deletion_prob`;
    when every such token of a row is drawn, one of them (chosen at random) survives. `labels` are the original ids
    at every non-pad position (special tokens included) and -100 at padding, so the loss never counts padding.

    - `mode="mask"` (MrCogito's runs): tokens stay at their original positions; deleted ones are hidden through
      `attention_mask` (0) and their ids are replaced by the pad id, so no head can read them. A row's first token
      is never hidden (a [CLS] is special anyway): the model reads leading masked columns as left padding.
    - `mode="delete"` (the TSDAE paper): deleted tokens are removed from `input_ids`, survivors close the gap in
      their original order and rows are padded to the longest survivor row. `labels` keep the full original length,
      so the encoder input is shorter than the labels: use the perceiver MLM with `decoder_query="position"`
      (`perceiver_posonly_mlm`), which decodes `labels.shape[1]` positions from the concepts alone.

    New noise is drawn on every call (torch's global RNG; `torch.manual_seed` makes it reproducible), vectorised
    over the whole batch.

    Features are dicts with either pre-tokenized `input_ids` (rows longer than `max_length` are refused; the
    Trainer's default `remove_unused_columns=True` is fine) or raw `text`, tokenised here with truncation to
    `max_length` (then the Trainer needs `remove_unused_columns=False`, or it drops the `text` column, which the
    model's forward does not take).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        deletion_prob: float = 0.6,
        mode: str = "mask",
        max_length: int | None = None,
    ):
        if not 0.0 <= deletion_prob < 1.0:
            raise ValueError(f"DataCollatorForTSDAE: deletion_prob={deletion_prob!r} must be in [0, 1).")
        check_tsdae_mode(mode)
        if tokenizer.pad_token_id is None:
            raise ValueError("DataCollatorForTSDAE needs a tokenizer with a pad token (tokenizer.pad_token).")
        if max_length is not None and max_length < 1:
            raise ValueError(f"DataCollatorForTSDAE: max_length={max_length!r} must be a positive number of tokens.")
        self.tokenizer = tokenizer
        self.deletion_prob = deletion_prob
        self.mode = mode
        self.max_length = max_length
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def _pad(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """`input_ids`, `attention_mask` `[batch, longest row]` from pre-tokenized ids or raw text, padded on the right
        whatever the tokenizer's `padding_side`: the modes below read rows from their first column."""
        if all("input_ids" in feature for feature in features):
            lengths = [len(feature["input_ids"]) for feature in features]
            if self.max_length is not None and max(lengths) > self.max_length:
                raise ValueError(
                    f"DataCollatorForTSDAE: a row has {max(lengths)} tokens, more than max_length={self.max_length}; "
                    f"tokenize with truncation=True, max_length={self.max_length}."
                )
            rows = [{"input_ids": feature["input_ids"]} for feature in features]
            return self.tokenizer.pad(rows, return_tensors="pt", padding_side="right")
        if all("text" in feature for feature in features):
            texts = [feature["text"] for feature in features]
            return self.tokenizer(
                texts,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                padding_side="right",
                return_tensors="pt",
            )
        raise ValueError(
            f"DataCollatorForTSDAE: features need 'input_ids' (pre-tokenized) or 'text' (raw); got keys "
            f"{sorted(features[0])}. With raw text, set remove_unused_columns=False in TrainingArguments."
        )

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        padded = self._pad(features)
        input_ids = padded["input_ids"]  # [batch, seq]
        real = padded["attention_mask"].bool()
        labels = input_ids.masked_fill(~real, IGNORE_INDEX)
        pad_id = self.tokenizer.pad_token_id
        deletable = real & ~torch.isin(input_ids, self.special_ids)
        if self.mode == "mask":  # a hidden first token would read as left padding and shift the row's positions
            deletable[:, 0] = False
        deleted = (torch.rand(input_ids.shape) < self.deletion_prob) & deletable
        # Rows whose deletable tokens were all drawn keep one of them, picked uniformly at random.
        emptied = deletable.any(dim=1) & ~(deletable & ~deleted).any(dim=1)
        rescued = torch.rand(input_ids.shape).masked_fill(~deletable, -1.0).argmax(dim=1)  # [batch]
        deleted[emptied, rescued[emptied]] = False
        kept = real & ~deleted
        if self.mode == "mask":
            return {"input_ids": input_ids.masked_fill(~kept, pad_id), "attention_mask": kept.long(), "labels": labels}
        # Stable sort by "not kept" moves survivors to the front in their original order.
        order = torch.argsort((~kept).int(), dim=1, stable=True)
        length = int(kept.sum(dim=1).max())
        attention_mask = kept.gather(1, order)[:, :length]
        input_ids = input_ids.gather(1, order)[:, :length].masked_fill(~attention_mask, pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask.long(), "labels": labels}
