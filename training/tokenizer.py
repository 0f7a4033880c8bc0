"""Offline tokenizers: train a fast WordPiece or BPE tokenizer on the training text with the `tokenizers` library,
deterministically (the same text gives the same tokenizer.json in every process)."""

import json
import sys
from collections.abc import Iterable
from pathlib import Path

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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # a saved tokenizer has at least one of these


def show_progress() -> bool:
    """Whether the tokenizers trainers draw their progress bars: on a terminal only. Elsewhere (a log file, a
    captured pipe) each bar becomes blank lines."""
    return sys.stderr.isatty()


def train_tokenizer(texts: Iterable[str], vocab_size: int, algorithm: str = "wordpiece") -> PreTrainedTokenizerFast:
    """A fast tokenizer trained on `texts`, with the special tokens the collators need ([PAD] id 0, [MASK], ...).

    Single texts are encoded `[CLS] A [SEP]`, pairs `[CLS] A [SEP] B [SEP]`; only `input_ids` and `attention_mask`
    are returned (concept encoders have no segment embeddings). The result depends on the texts alone, not on the
    process (`train_wordpiece`); WordPiece reads `texts` twice (an iterator is first turned into a list).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"Unknown tokenizer algorithm {algorithm!r}: choose one of {list(ALGORITHMS)}.")
    specials = list(SPECIAL_TOKENS.values())
    if algorithm == "wordpiece":
        backend = train_wordpiece(texts, vocab_size, specials)
    else:  # no subword prefix: the BPE trainer's ids and ties are already fixed (alphabet in code-point order)
        backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
        backend.normalizer = normalizers.NFKC()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress(),
        )
        backend.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_input_names=["input_ids", "attention_mask"], **SPECIAL_TOKENS
    )


def wordpiece_backend() -> Tokenizer:
    """An untrained BERT-style WordPiece tokenizer (lower-cased, split at whitespace and punctuation)."""
    backend = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    return backend


def train_wordpiece(texts: Iterable[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    """WordPiece trained on `texts`, the same in every process.

    `tokenizers`' WordPiece trainer (its BPE trainer with the `##` prefix) gives each continuing-subword token
    (`##c`) its id in the iteration order of a Rust hash map whose seed is random per process (ahash), and breaks
    ties between equally frequent pairs by token id, so two processes learned different vocabularies from the same
    text (neither threads nor PYTHONHASHSEED change that). Here a first pass without merges finds the base tokens (the
    alphabet and every `##c`); the real pass gets them, after the special tokens, in a fixed order (characters, then
    `##` tokens, each by code point), so that every id and every tie is decided by the text alone. The base tokens
    are then ordinary vocabulary entries again (not added tokens).
    """
    if iter(texts) is texts:
        texts = list(texts)
    scan = wordpiece_backend()
    scan_trainer = trainers.WordPieceTrainer(vocab_size=0, special_tokens=specials, show_progress=show_progress())
    scan.train_from_iterator(texts, trainer=scan_trainer)
    prefix = trainers.WordPieceTrainer().continuing_subword_prefix
    base = sorted(
        (token for token in scan.get_vocab(with_added_tokens=False) if token not in specials),
        key=lambda token: (token.startswith(prefix), [ord(character) for character in token]),
    )
    backend = wordpiece_backend()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials + base, show_progress=show_progress()
    )
    backend.train_from_iterator(texts, trainer=trainer)
    saved = json.loads(backend.to_str())
    saved["added_tokens"] = [token for token in saved["added_tokens"] if token["content"] in specials]
    return Tokenizer.from_str(json.dumps(saved))


def limit_to_positions(tokenizer, max_position_embeddings: int):
    """Cap `tokenizer.model_max_length` at the model's position limit, so that the saved tokenizer config carries it:
    `truncation=True` and pipelines then cut inputs to what the model accepts (a trained tokenizer has no limit of
    its own, 1e30)."""
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_position_embeddings)


def check_tokenizer_fits(tokenizer, config, name: str, fix: str) -> None:
    """The one rule by which every script (run_pretraining.py, run_glue.py, the converter) accepts a tokenizer for a
    model's embeddings: each of its ids indexes a row (`len(tokenizer)` ≤ `vocab_size`; rows beyond it are padding,
    as ModernBERT's 50368 rows for 50280 tokens or a MrCogito checkpoint's 100 rows for a smaller tokenizer), and its
    pad and mask ids are the ones the config records (the model was trained with them). Raise `ValueError` naming the
    tokenizer (`name`), the sizes or ids, and `fix`."""
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"{name} has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}: its ids would "
            f"index past the embeddings; {fix}"
        )
    for field in ("pad_token_id", "mask_token_id"):
        expected = getattr(config, field, None)
        if expected is not None and getattr(tokenizer, field) != expected:
            raise ValueError(
                f"{name} has {field}={getattr(tokenizer, field)} but the model's config {field}={expected}: it is "
                f"not the tokenizer the model was trained with; {fix}"
            )


def check_has_tokenizer(source: str) -> None:
    """Refuse a local folder without tokenizer files (a MrCogito checkpoint ships none) naming `--tokenizer_name`,
    rather than with transformers' message about converting slow tokenizers."""
    folder = Path(source)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{folder} has no tokenizer (no {' or '.join(TOKENIZER_FILES)}): give --tokenizer_name with the tokenizer "
            "it was trained with (at most its vocab_size tokens, the same pad and mask ids)."
        )
