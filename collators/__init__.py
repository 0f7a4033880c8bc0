"""Data collators for concept-encoder objectives: MLM masking, TSDAE token deletion, sentence-pair batching."""

from .mlm import DataCollatorForConceptMLM
from .pairs import DataCollatorForSentencePairs
from .tsdae import DataCollatorForTSDAE

__all__ = ["DataCollatorForConceptMLM", "DataCollatorForSentencePairs", "DataCollatorForTSDAE"]
