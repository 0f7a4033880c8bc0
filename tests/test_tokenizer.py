"""The tokenizer trainer (`training/tokenizer.py`): the same text gives the same tokenizer in every
process."""

import os
import subprocess
import sys
import textwrap

from conftest import REPO_ROOT


def test_trained_tokenizer_is_the_same_in_every_process(tmp_path, wikitext_lines):
    """0.1.0's WordPiece gave the `##` tokens ids in the order of a Rust hash map seeded per process, and ties between
    equally frequent pairs went by those ids: two processes trained different vocabularies from the same text."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(wikitext_lines[:300]) + "\n", encoding="utf-8")
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from concept_encoder.training.tokenizer import train_tokenizer

        texts = Path(sys.argv[1]).read_text(encoding="utf-8").splitlines()
        for algorithm in ("wordpiece", "bpe"):
            train_tokenizer(iter(texts), vocab_size=300, algorithm=algorithm).save_pretrained(f"{sys.argv[2]}/{algorithm}")
    """)
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)}
        command = [sys.executable, "-c", script, str(corpus), str(tmp_path / seed)]
        subprocess.run(command, env=environment, check=True, capture_output=True, timeout=300)
    for algorithm in ("wordpiece", "bpe"):
        first, second = tmp_path / "1" / algorithm, tmp_path / "2" / algorithm
        assert sorted(path.name for path in first.iterdir()) == sorted(path.name for path in second.iterdir())
        for path in first.iterdir():
            assert path.read_bytes() == (second / path.name).read_bytes(), f"{algorithm}: {path.name} differs"
