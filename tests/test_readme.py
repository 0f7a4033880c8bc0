"""The README's Python examples run as written."""

import re

from conftest import REPO_ROOT


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "README.md has no ```python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    assert "ConceptEncoderForMaskedLM (2, 12, 100) (2, 8, 32)" in capsys.readouterr().out
