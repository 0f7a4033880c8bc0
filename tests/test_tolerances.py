"""Tests that hold on any machine: float comparisons state their tolerances. `torch.allclose`'s default atol (1e-8)
and `assert_close`'s float32 defaults (rtol 1.3e-6) fail where another CPU's BLAS or SDPA kernel rounds otherwise (a
fresh clone on another machine differed by 4.9e-7)."""

import ast

from conftest import REPO_ROOT

CLOSENESS = {"allclose", "assert_close", "isclose"}


def comparisons_without_tolerances(source: str) -> list[int]:
    """Lines of `allclose`/`assert_close`/`isclose` calls that give no `atol` (nor `**options`); `assert_close`
    takes `atol` only with `rtol`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name not in CLOSENESS:
            continue
        given = {keyword.arg for keyword in node.keywords}
        if None not in given and "atol" not in given:
            lines.append(node.lineno)
    return lines


def test_the_check_finds_a_default_tolerance():
    assert comparisons_without_tolerances("torch.allclose(a, b)\ntorch.testing.assert_close(a, b, rtol=0)") == [1, 2]
    assert comparisons_without_tolerances("torch.allclose(a, b, atol=1e-5)\nassert_close(a, **TOLERANCE)") == []


def test_every_float_comparison_in_the_tests_and_readme_states_its_tolerance():
    found = {}
    for path in sorted((REPO_ROOT / "tests").glob("*.py")):
        lines = comparisons_without_tolerances(path.read_text(encoding="utf-8"))
        if lines:
            found[path.name] = lines
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for index, block in enumerate(readme.split("```python\n")[1:]):
        lines = comparisons_without_tolerances(block.split("```")[0])
        if lines or "torch.equal(" in block:
            found[f"README.md python block {index + 1}"] = lines or ["torch.equal"]
    assert not found, f"float comparisons at default tolerances (give atol= and rtol=): {found}"
