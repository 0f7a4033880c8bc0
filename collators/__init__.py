"""Data collators for concept-encoder objectives: MLM masking, TSDAE token deletion, distillation, sentence pairs."""

from .distill import DataCollatorForDistillation
from .mlm import DataCollatorForConceptMLM
from .pairs import DataCollatorForSentencePairs
from .tsdae import DataCollatorForTSDAE

__all__ = [
    "DataCollatorForConceptMLM",
    "DataCollatorForDistillation",
    "DataCollatorForSentencePairs",
    "DataCollatorForTSDAE",
]
