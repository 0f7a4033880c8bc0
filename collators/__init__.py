"""Data collators for concept-encoder objectives: MLM masking, TSDAE token deletion, distillation, sentence pairs.

A label of `IGNORE_INDEX` (-100, transformers' convention) marks a position without loss. The collators define it
themselves rather than import the model file; a test checks that the model's heads use the same value."""

from .distill import DataCollatorForDistillation
from .mlm import DataCollatorForConceptMLM
from .pairs import DataCollatorForSentencePairs
from .tsdae import IGNORE_INDEX, DataCollatorForTSDAE

__all__ = [
    "IGNORE_INDEX",
    "DataCollatorForConceptMLM",
    "DataCollatorForDistillation",
    "DataCollatorForSentencePairs",
    "DataCollatorForTSDAE",
]
