"""The README matches the tree: its examples run as written, offline, and its commands exist.

- Every ```python block runs, from the repository's root (as a user runs them, with `../shared` beside it).
- Every ```bash block runs (in a copy of the repository's layout, so nothing is written into the repository) unless
  the line before it is `<!-- readme-test: skip (REASON) -->`: blocks that train for minutes, need the Hub or GPUs,
  or name placeholders. Such a marker must give its reason.
- Every command of every bash block, run or skipped, names a script, module, make target or extra that exists, and
  only flags that its parser accepts (read from its `--help`), so a renamed flag or file fails here.
- The layout table names every script, helper module, benchmark and folder of the tree.
"""

import configparser
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, data_root

README = REPO_ROOT / "README.md"
BLOCK = re.compile(
    r"(?:<!-- readme-test: skip \((?P<reason>[^)]*)\) -->\n)?```(?P<language>python|bash)\n(?P<code>.*?)```", re.S
)
# scripts and modules whose flags the bash blocks use: what to import, and the positional words their --help needs
MAINS = {
    "run_pretraining.py": "concept_encoder.run_pretraining",
    "run_glue.py": "concept_encoder.run_glue",
    "convert_mrcogito_checkpoint.py": "concept_encoder.convert_mrcogito_checkpoint",
    "scripts/study.py": "scripts.study",
    "benchmarks/bench_encoder.py": "benchmarks.bench_encoder",
    "benchmarks/bench_pipeline.py": "benchmarks.bench_pipeline",
    "benchmarks/bench_recipe_cost.py": "benchmarks.bench_recipe_cost",
}
SUBCOMMANDS = {  # --help after the command
    "concept_encoder.training.registry",
    "concept_encoder.training.ecosystem",
}


def readme_blocks() -> list[tuple[str, str, str | None, int]]:
    """`(language, code, skip reason or None, line)` of every python and bash block."""
    text = README.read_text(encoding="utf-8")
    return [
        (match["language"], match["code"], match["reason"], text.count("\n", 0, match.start("code")) + 1)
        for match in BLOCK.finditer(text)
    ]


def commands_of(code: str) -> list[list[str]]:
    """The words of each command of a bash block: continuation lines joined, comments dropped, `VAR=value`
    prefixes and the `python -c '...'` program left out."""
    commands, command = [], ""
    for line in code.replace("\\\n", " ").splitlines():
        command += line + "\n"
        try:
            words = shlex.split(command, comments=True)
        except ValueError:  # an open quote: the command goes on, on the next line
            continue
        command = ""
        while words and re.fullmatch(r"\w+=\S*", words[0]):
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def help_text(module: str, positionals: list[str]) -> str:
    """The `--help` of a module's `main(argv)`, run in this process."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit):
        importlib.import_module(module).main([*positionals, "--help"])
    return output.getvalue()


def check_command(words: list[str], where: str) -> None:
    """The script, module, make target or extra exists, and each `--flag` is one its parser accepts."""
    program, rest = words[0], words[1:]
    if program == "make":
        targets = re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
        assert set(rest) <= set(targets), f"{where}: make {rest}: the Makefile has {targets}"
        return
    if program == "pip":
        setup = configparser.ConfigParser()
        setup.read(REPO_ROOT / "setup.cfg")
        for extras in re.findall(r"\.\[([\w,-]+)\]", " ".join(rest)):
            assert set(extras.split(",")) <= set(setup["options.extras_require"]), f"{where}: extra [{extras}]"
        return
    if program in ("python", "python3") and rest[:1] == ["-c"]:
        return  # a program, not a script
    if program in ("python", "python3") and rest[:1] == ["-m"]:
        target, arguments, module = rest[1], rest[2:], rest[1]
        assert importlib.util.find_spec(target) is not None, f"{where}: no module {target}"
    else:  # python SCRIPT, torchrun/accelerate launch ... SCRIPT
        scripts = [index for index, word in enumerate(rest) if word.endswith(".py")]
        if not scripts:
            return  # another tool's own command (wandb sync, tensorboard, ...)
        target, arguments = rest[scripts[0]], rest[scripts[0] + 1 :]
        assert (REPO_ROOT / target).is_file(), f"{where}: no script {target}"
        module = MAINS.get(target)
    flags = {word.split("=")[0] for word in arguments if word.startswith("--")}
    if not flags or module is None:
        return  # nothing to check, or a script without main(argv)
    accepted = help_text(module, arguments[:1] if module in SUBCOMMANDS else [])
    unknown = sorted(flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", accepted))
    assert not unknown, f"{where}: {target} does not accept {unknown}"


def test_every_block_is_run_or_skipped_with_a_reason():
    blocks = readme_blocks()
    assert sum(language == "python" for language, *_ in blocks) >= 3
    assert all(reason is None or reason.strip() for _, _, reason, _ in blocks), "a skip marker without its reason"


def test_readme_python_examples_run(monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)  # examples name ../shared relative to the repository, as the bash blocks do
    ran = 0
    for language, code, reason, line in readme_blocks():
        if language == "python" and reason is None:
            exec(compile(code, f"README.md, line {line}", "exec"), {"__name__": "__readme__"})
            ran += 1
    output = capsys.readouterr().out
    assert ran >= 3 and "ConceptEncoderForMaskedLM (2, 12, 100) (2, 8, 32)" in output
    assert "['last_hidden_state']" in output  # the ONNX export's named output


def test_readme_bash_examples_run(tmp_path):
    """In `tmp/repo` (every entry of the repository linked, so outputs/ and experiments/ are written in tmp) beside
    `tmp/shared` (the shared data's folder), with this Python as `python`, offline."""
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    repo.mkdir()
    bin_dir.mkdir()
    for entry in REPO_ROOT.iterdir():
        if entry.name not in ("outputs", "experiments", ".git"):
            (repo / entry.name).symlink_to(entry)
    (tmp_path / "shared").symlink_to(data_root().parent)
    (bin_dir / "python").symlink_to(sys.executable)
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    ran = 0
    for language, code, reason, line in readme_blocks():
        if language != "bash" or reason is not None:
            continue
        result = subprocess.run(
            ["bash", "-e", "-c", code], cwd=repo, env=environment, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=240,
        )  # fmt: skip
        assert result.returncode == 0, f"README.md, line {line}:\n{result.stderr[-3000:]}"
        ran += 1
    assert ran >= 1
    assert (repo / "experiments" / "registry.md").is_file()  # the registry rebuild block


def test_every_command_names_what_exists_and_flags_its_parser_accepts():
    for language, code, _, line in readme_blocks():
        if language == "bash":
            for words in commands_of(code):
                check_command(words, f"README.md, line {line}")


def tracked_files() -> list[str]:
    """The repository's files as git knows them: what a run, an install or CI leaves beside them is not the tree."""
    listing = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return listing.stdout.split()


def test_layout_table_names_every_part_of_the_tree():
    """Every tracked top-level script and folder, and every module of the helper, benchmark and script folders, by
    its name (`trainer.py`) or its path (`scripts/study.py`)."""
    text = README.read_text(encoding="utf-8")
    layout = text[text.index("## Layout") : text.index("## Installation")]
    named = set(re.findall(r"`[^`]+`", layout))
    files = tracked_files()
    folders = sorted({path.split("/")[0] for path in files if "/" in path and not path.startswith(".")})
    missing = [path for path in files if "/" not in path and path.endswith(".py") and f"`{path}`" not in named]
    missing += [f"{folder}/" for folder in folders if f"`{folder}/" not in layout]
    for folder in ("training", "benchmarks", "scripts"):
        for path in files:
            name = path.rsplit("/", 1)[-1]
            if path == f"{folder}/{name}" and name.endswith(".py") and name != "__init__.py":
                if not {f"`{name}`", f"`{path}`"} & named:
                    missing.append(path)
    assert not missing, f"README.md's layout table does not name {missing}"
