"""`ringfence privacy report`: each promise of the policy with the tests that prove it.

Tests carry a promise's id as a pytest marker: on the function
(`@pytest.mark.promise("P3")`), on a class, or for a whole module (`pytestmark = ...`,
one marker or a list). The report reads the test files' syntax trees, so it runs no test
and imports none: it shows what is claimed, and CI shows that those tests pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ringfence.privacy.promises import BY_ID, PROMISES, Promise


@dataclass(frozen=True)
class Report:
    """What the tests claim.

    Attributes:
        proofs: For each promise id, the tests (``path::Class::name``) that carry it, sorted.
        unknown: Markers naming no promise of the policy, as ``path:line: id``.
    """

    proofs: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def rows(self) -> Iterator[tuple[Promise, list[str]]]:
        for promise in PROMISES:
            yield promise, self.proofs.get(promise.id, [])

    @property
    def unproven(self) -> list[str]:
        """Ids of the promises no test carries yet."""
        return [promise.id for promise, tests in self.rows() if not tests]


def _promise_ids(node: ast.expr) -> list[tuple[str, int]]:
    """The ids of `pytest.mark.promise("Pn")` markers in a decorator or pytestmark value."""
    if isinstance(node, ast.List | ast.Tuple):
        return [found for element in node.elts for found in _promise_ids(element)]
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return []
    if node.func.attr != "promise" or ast.unparse(node.func.value) not in ("pytest.mark", "mark"):
        return []
    return [
        (arg.value, arg.lineno)
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    ]


def _pytestmark(body: Iterable[ast.stmt]) -> list[tuple[str, int]]:
    found = []
    for statement in body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark"
            for target in statement.targets
        ):
            found += _promise_ids(statement.value)
    return found


def _tests(
    body: Iterable[ast.stmt], prefix: str, inherited: list[tuple[str, int]]
) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            if statement.name.startswith("test"):
                marks = [m for d in statement.decorator_list for m in _promise_ids(d)]
                yield f"{prefix}::{statement.name}", inherited + marks
        elif isinstance(statement, ast.ClassDef) and statement.name.startswith("Test"):
            marks = [m for d in statement.decorator_list for m in _promise_ids(d)]
            marks += _pytestmark(statement.body)
            yield from _tests(statement.body, f"{prefix}::{statement.name}", inherited + marks)


def collect(tests_dir: Path) -> Report:
    """Read every ``test_*.py`` under `tests_dir`.

    Raises:
        FileNotFoundError: `tests_dir` is not a directory.
        SyntaxError: a test file does not parse.
    """
    if not tests_dir.is_dir():
        raise FileNotFoundError(f"no tests directory at {tests_dir}")
    report = Report()
    for path in sorted(tests_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        name = path.relative_to(tests_dir.parent).as_posix()
        for test, marks in _tests(tree.body, name, _pytestmark(tree.body)):
            for promise_id, line in marks:
                if promise_id not in BY_ID:
                    report.unknown.append(f"{name}:{line}: {promise_id}")
                    continue
                tests = report.proofs.setdefault(promise_id, [])
                if test not in tests:
                    tests.append(test)
    for tests in report.proofs.values():
        tests.sort()
    return report


def render(report: Report) -> str:
    lines = []
    for promise, tests in report.rows():
        lines.append(f"{promise.id}  {promise.promise}")
        lines.append(f"     how: {promise.mechanism}")
        if tests:
            lines += [f"     test: {test}" for test in tests]
        else:
            lines.append("     no test yet")
    proven = len(PROMISES) - len(report.unproven)
    lines.append("")
    lines.append(f"{proven} of {len(PROMISES)} promises carried by tests")
    if report.unproven:
        lines.append(f"no test yet: {', '.join(report.unproven)}")
    for marker in report.unknown:
        lines.append(f"unknown promise in {marker}")
    return "\n".join(lines)
