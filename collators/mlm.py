"""Masked language modelling batches: `transformers.DataCollatorForLanguageModeling`, fitted to concept encoders."""

from dataclasses import dataclass

from transformers import DataCollatorForLanguageModeling


@dataclass
class DataCollatorForConceptMLM(DataCollatorForLanguageModeling):
    """Dynamic BERT masking for the concept-encoder MLM heads.

    Everything is the stock collator's (`mlm=True`, `mlm_probability=0.15`, 80/10/10 [MASK]/random/keep; special and
    pad tokens are never selected; labels are -100 at every unselected position; new masks on every call). The only
    addition: `token_type_ids`, which some tokenizers return and concept encoders have no use for, are dropped, so
    `model(**batch)` works with any `PreTrainedTokenizerFast`.

    Features are pre-tokenized: dicts with `input_ids` (and optionally `attention_mask`, `special_tokens_mask`), or
    plain id lists. Raw text is not accepted; with the Trainer's default `remove_unused_columns=True` a leftover
    `text` column is dropped before it reaches the collator.

    Example:
        collator = DataCollatorForConceptMLM(tokenizer, mlm_probability=0.15)
        batch = collator([tokenizer(text) for text in texts])  # input_ids, attention_mask, labels
    """

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        batch.pop("token_type_ids", None)
        return batch
