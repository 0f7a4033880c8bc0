"""Offline tokenizers: train a fast WordPiece or BPE tokenizer on the training text with the `tokenizers` library."""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
ALGORITHMS = ("wordpiece", "bpe")


def train_tokenizer(texts: Iterable[str], vocab_size: int, algorithm: str = "wordpiece") -> PreTrainedTokenizerFast:
    """A fast tokenizer trained on `texts`, with the special tokens the collators need ([PAD] id 0, [MASK], ...).

    Single texts are encoded `[CLS] A [SEP]`, pairs `[CLS] A [SEP] B [SEP]`; only `input_ids` and `attention_mask`
    are returned (concept encoders have no segment embeddings).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"Unknown tokenizer algorithm {algorithm!r}: choose one of {list(ALGORITHMS)}.")
    specials = list(SPECIAL_TOKENS.values())
    if algorithm == "wordpiece":
        backend = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
        backend.normalizer = normalizers.BertNormalizer(lowercase=True)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    else:
        backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
        backend.normalizer = normalizers.NFKC()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    backend.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_input_names=["input_ids", "attention_mask"], **SPECIAL_TOKENS
    )


def limit_to_positions(tokenizer, max_position_embeddings: int):
    """Cap `tokenizer.model_max_length` at the model's position limit, so that the saved tokenizer config carries it:
    `truncation=True` and pipelines then cut inputs to what the model accepts (a trained tokenizer has no limit of
    its own, 1e30)."""
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_position_embeddings)
