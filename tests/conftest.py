"""Test environment: never the network, a throw-away HF_HOME, the real data in ../shared/data, tiny models."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="concept-encoder-hf-home-")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from concept_encoder_training.tokenizer import train_tokenizer  # noqa: E402
from configuration_concept_encoder import ConceptEncoderConfig  # noqa: E402


def data_root() -> Path:
    """`$CONCEPT_ENCODER_DATA`, else `../shared/data` beside the repo; CI always has it, so a missing one fails."""
    root = Path(os.environ.get("CONCEPT_ENCODER_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder {root} not found: set CONCEPT_ENCODER_DATA to the shared data folder.")
    return root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def wikitext_lines(data_dir) -> list[str]:
    """The first 2,000 non-empty lines of WikiText-2 train."""
    lines = []
    with open(data_dir / "corpus" / "wikitext-2" / "train.txt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line.strip())
            if len(lines) == 2000:
                break
    return lines


@pytest.fixture(scope="session")
def tokenizer(wikitext_lines):
    """A WordPiece tokenizer (158 tokens with specials and alphabet) trained offline on real text."""
    return train_tokenizer(wikitext_lines, vocab_size=120)


def tiny_config(**overrides) -> ConceptEncoderConfig:
    """hidden 32, 2 layers, 4 heads, 8 concepts, vocab 200 (>= len(tokenizer)): fast enough for every test."""
    values = dict(
        vocab_size=200,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        concept_num=8,
        max_position_embeddings=64,
        pad_token_id=0,
        mask_token_id=4,
    )
    values.update(overrides)
    return ConceptEncoderConfig(**values)
