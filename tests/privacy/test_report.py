"""`ringfence privacy report`: the promises, and the tests that carry their ids."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ringfence.privacy.promises import PROMISES
from ringfence.privacy.report import collect, render

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "ringfence"


def report_command(tests: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "privacy", "report", "--tests", str(tests)],
        capture_output=True,
        text=True,
        check=False,
    )


def write(root: Path, name: str, text: str) -> None:
    path = root / "tests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_policy_has_twenty_one_promises() -> None:
    assert [promise.id for promise in PROMISES] == [f"P{n}" for n in range(1, 22)]
    assert all(promise.promise and promise.mechanism for promise in PROMISES)


def test_markers_on_functions_classes_and_modules_are_found(tmp_path: Path) -> None:
    write(
        tmp_path,
        "test_a.py",
        "import pytest\n"
        "from pytest import mark\n\n"
        '@pytest.mark.promise("P3")\n'
        "def test_erased(): pass\n\n"
        '@mark.promise("P3")\n'
        '@pytest.mark.parametrize("x", [1])\n'
        "async def test_erased_async(x): pass\n\n"
        "def test_unmarked(): pass\n\n"
        '@pytest.mark.promise("P4")\n'
        "def helper(): pass\n",
    )
    write(
        tmp_path,
        "sub/test_b.py",
        "import pytest\n"
        'pytestmark = [pytest.mark.promise("P15"), pytest.mark.postgres]\n\n'
        '@pytest.mark.promise("P99")\n'
        "class TestRetention:\n"
        '    pytestmark = pytest.mark.promise("P17")\n'
        "    def test_kept(self): pass\n",
    )
    write(tmp_path, "helpers.py", '@pytest.mark.promise("P1")\ndef test_not_a_test_file(): pass\n')
    report = collect(tmp_path / "tests")
    assert report.proofs == {
        "P3": ["tests/test_a.py::test_erased", "tests/test_a.py::test_erased_async"],
        "P15": ["tests/sub/test_b.py::TestRetention::test_kept"],
        "P17": ["tests/sub/test_b.py::TestRetention::test_kept"],
    }
    assert report.unknown == ["tests/sub/test_b.py:4: P99"]
    assert "P3" not in report.unproven
    assert "P1" in report.unproven
    text = render(report)
    assert "P3  push data is shared with no one" in text
    assert "     test: tests/test_a.py::test_erased_async" in text
    assert "3 of 21 promises carried by tests" in text
    assert "unknown promise in tests/sub/test_b.py:4: P99" in text


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no tests directory"):
        collect(tmp_path / "nowhere")


def test_the_command_reads_this_repository() -> None:
    run = report_command(REPO / "tests")
    assert run.returncode == 0, run.stderr
    report = collect(REPO / "tests")
    assert run.stdout.rstrip("\n") == render(report)
    # Erasure by key destruction (P19) exists, and is proven.
    assert report.proofs["P19"]
    assert "unknown promise" not in run.stdout


def test_the_command_fails_on_an_unknown_promise(tmp_path: Path) -> None:
    write(tmp_path, "test_x.py", 'import pytest\n@pytest.mark.promise("P0")\ndef test_x(): pass\n')
    run = report_command(tmp_path / "tests")
    assert run.returncode == 1
    assert "unknown promise in tests/test_x.py:2: P0" in run.stdout
    missing = report_command(tmp_path / "none")
    assert missing.returncode == 2
    assert "no tests directory" in missing.stderr
