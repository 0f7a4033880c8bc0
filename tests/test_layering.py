"""Layering: no module imports another that (through any chain, function-level imports included) imports it back,
the collators stand without the model file, and the benchmarks use only run_pretraining's public functions."""

import ast
import re
import subprocess
from pathlib import Path

from conftest import REPO_ROOT

from concept_encoder import collators, modeling_concept_encoder, run_pretraining


def project_modules() -> dict[str, Path]:
    """Every tracked non-test Python file of the repository by the module name it is imported as: the package's
    modules as `concept_encoder.collators` (its `__init__.py`), `concept_encoder.run_glue`, ...; the checkout's
    benchmarks and scripts as `benchmarks.bench_encoder`, `scripts.study`."""
    listing = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    modules = {}
    for name in listing.stdout.split():
        if name.startswith("tests/") or name == "concept_encoder.py":  # the checkout's import shim
            continue
        module = name.removesuffix(".py").replace("/", ".").removesuffix("__init__").removesuffix(".")
        if not name.startswith(("benchmarks/", "scripts/")):
            module = f"concept_encoder.{module}".rstrip(".")
        modules[module] = REPO_ROOT / name
    return modules


def imported_modules(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in its body: `from a import b` counts as `a.b` when that is a
    module of its own, else as `a`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def test_no_import_cycles():
    modules = project_modules()
    graph = {module: imported_modules(path, module, modules) for module, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return False

    cycles = sorted((module, other) for module in graph for other in graph[module] if reaches(other, module))
    assert not cycles, f"(module, its import that imports it back): {cycles}"


def test_collators_use_the_models_ignore_index_without_importing_the_model():
    modules = project_modules()
    for module in (name for name in modules if name.startswith("concept_encoder.collators")):
        assert "concept_encoder.modeling_concept_encoder" not in imported_modules(modules[module], module, modules)
    assert collators.IGNORE_INDEX == modeling_concept_encoder.IGNORE_INDEX == -100


def test_benchmarks_use_only_run_pretrainings_public_functions():
    """The names listed under "Public functions" in run_pretraining's docstring are all that the benchmarks and
    scripts read from it."""
    section = run_pretraining.__doc__.split("Public functions:", 1)[1]
    public = set(re.findall(r"`(\w+)\(", section))
    assert {"main", "parse_arguments", "build_model", "tokenize_datasets"} <= public
    assert all(callable(getattr(run_pretraining, name)) for name in public)
    for path in [*REPO_ROOT.glob("benchmarks/*.py"), *REPO_ROOT.glob("scripts/*.py")]:
        used = set(re.findall(r"\brun_pretraining\.(\w+)\b", path.read_text(encoding="utf-8")))
        used -= {"py"}  # the script's file name in text
        assert used <= public, f"{path.name} uses {sorted(used - public)} of run_pretraining, which are not public"
