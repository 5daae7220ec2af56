"""The privacy commands of the CLI: requests an operator verified, and overdue ones."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ringfence.cli import app


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


@pytest.mark.promise("P19")
def test_an_operator_takes_an_access_request_and_writes_the_bundle(workdir: Path) -> None:
    cli("tenant", "add", "acme", "--domain", "sip.acme.example")
    cli("account", "add", "acme", "alice", "--password", "correct horse", "--email", "a@x.example")
    bundle = workdir / "alice.json"
    out = cli(
        "privacy", "request", "acme", "alice", "access",
        "--verified-by", "support", "--evidence", "call-back to the number of record",
        "--export", str(bundle),
    )  # fmt: skip
    assert "access, completed" in out
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    data = json.loads(bundle.read_text())
    assert data["categories"]["account identity"]["email"] == "a@x.example"
    assert cli("privacy", "overdue") == ""


def test_a_request_without_its_verification_changes_nothing(workdir: Path) -> None:
    cli("tenant", "add", "acme", "--domain", "sip.acme.example")
    cli("account", "add", "acme", "alice", "--password", "correct horse")
    out = cli(
        "privacy", "request", "acme", "alice", "erasure",
        "--verified-by", " ", "--evidence", "x", code=2,
    )  # fmt: skip
    assert "verified_by: required" in out
    assert "alice" in cli("account", "list", "acme")
    missing = cli(
        "privacy", "request", "acme", "bob", "erasure",
        "--verified-by", "s", "--evidence", "x", code=2,
    )  # fmt: skip
    assert "no account 'bob'" in missing
