"""Test environment: never the network, a throw-away HF_HOME, the real data in ../shared/data, tiny models, and
fresh processes that cannot import this repository."""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="concept-encoder-hf-home-")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig  # noqa: E402
from concept_encoder.training.tokenizer import train_tokenizer  # noqa: E402


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


# The sizes of every test model and run: hidden 32, 2 layers, 4 heads, 8 concepts, 64 positions.
TINY_SIZES = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    concept_num=8,
    max_position_embeddings=64,
)


def tiny_config(**overrides) -> ConceptEncoderConfig:
    """`TINY_SIZES` with vocab 200 (>= len(tokenizer)): fast enough for every test."""
    return ConceptEncoderConfig(**{**TINY_SIZES, "vocab_size": 200, "pad_token_id": 0, "mask_token_id": 4, **overrides})


# The first lines of every script run by `run_isolated`. `pip install -e .` makes this repository importable from
# anywhere (as `concept_encoder`) through a setuptools `__editable__` finder on sys.meta_path (or a path entry from a
# .pth file), and the repository's root on sys.path through `concept_encoder.py`: both are dropped, so that only a
# checkpoint folder's own code files can load.
ISOLATION_PREAMBLE = """
import importlib.util, os, sys

repo = os.path.realpath(sys.argv.pop(1))
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != repo]
for module in ("concept_encoder", "modeling_concept_encoder", "configuration_concept_encoder"):
    assert importlib.util.find_spec(module) is None, f"{module} is importable: the test would prove nothing"
"""


def run_isolated(script: str, *args, cwd: Path, timeout: int = 300) -> str:
    """Run `script` (after `ISOLATION_PREAMBLE`) in a fresh Python that cannot import this repository, offline, with
    `sys.argv[1:]` = `args`; returns its stdout, and fails the test with its stderr when it exits non-zero."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [sys.executable, "-c", ISOLATION_PREAMBLE + textwrap.dedent(script), str(REPO_ROOT), *map(str, args)]
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class Killed(Exception):
    """A kill that a test simulates (raised from a callback or a patched write)."""
