"""Distillation batches: the student's tokens of each sentence and the teacher's embedding of the same text."""

import torch
from transformers import PreTrainedTokenizerBase

TEACHER_EMBEDDING = "teacher_embedding"  # the feature and batch key of the teacher's vectors
CLEAN_PREFIX = "distill_"  # joint objectives: the unnoised input the sentence vector is computed from


class DataCollatorForDistillation:
    """Pads pre-tokenized `input_ids` (on the right) and stacks each feature's `teacher_embedding` into
    `[batch, D]` float32.

    With `objective_collator` (TSDAE's or MLM's, a joint objective) the batch is that collator's (noised `input_ids`,
    `attention_mask`, `labels`) plus the clean input as `distill_input_ids` and `distill_attention_mask`: the sentence
    vector that is distilled is computed from the text the teacher read, not from its noised copy.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, objective_collator=None):
        if tokenizer.pad_token_id is None:
            raise ValueError("DataCollatorForDistillation needs a tokenizer with a pad token (tokenizer.pad_token).")
        self.tokenizer = tokenizer
        self.objective_collator = objective_collator

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        missing = [i for i, feature in enumerate(features) if TEACHER_EMBEDDING not in feature]
        if missing:
            raise ValueError(
                f"DataCollatorForDistillation: features {missing[:5]} have no {TEACHER_EMBEDDING!r}; with the Trainer "
                f"keep the column (label_names=[{TEACHER_EMBEDDING!r}, ...] or remove_unused_columns=False)."
            )
        rows = [{"input_ids": feature["input_ids"]} for feature in features]
        clean = self.tokenizer.pad(rows, return_tensors="pt", padding_side="right")
        teacher = torch.tensor([feature[TEACHER_EMBEDDING] for feature in features], dtype=torch.float32)
        if self.objective_collator is None:
            return {
                "input_ids": clean["input_ids"],
                "attention_mask": clean["attention_mask"],
                TEACHER_EMBEDDING: teacher,
            }
        batch = self.objective_collator(rows)
        batch[CLEAN_PREFIX + "input_ids"] = clean["input_ids"]
        batch[CLEAN_PREFIX + "attention_mask"] = clean["attention_mask"]
        batch[TEACHER_EMBEDDING] = teacher
        return batch
