"""The privacy commands of the CLI: requests an operator verified, and overdue ones."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ringfence.cli import app
from tests.support.sms import sms_gateway

NUMBER = "+41445551234"


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


@pytest.mark.promise("P21")
def test_an_operator_verifies_by_a_code_texted_to_the_number(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sms_gateway() as gateway:
        monkeypatch.setenv("RINGFENCE_SMS__URL", gateway.url)
        monkeypatch.setenv("RINGFENCE_SMS__TOKEN", gateway.token)
        cli("tenant", "add", "acme", "--domain", "sip.acme.example")
        cli("account", "add", "acme", "alice", "--password", "correct horse", "--e164", NUMBER)
        out = cli("privacy", "code-request", "acme", "alice", "access")
        request_id = out.split()[1].rstrip(":")
        assert "code sent to the number of record" in out
        [text] = gateway.texts_to(NUMBER)
        code = text.split(" is ")[1][:6]
        wrong = cli("privacy", "code", request_id, f"{(int(code) + 1) % 10**6:06d}", code=2)
        assert "wrong; 4 tries left" in wrong
        bundle = workdir / "alice.json"
        done = cli("privacy", "code", request_id, code, "--export", str(bundle))
        assert "access, completed" in done
        assert json.loads(bundle.read_text())["categories"]["account identity"]["e164"] == NUMBER
    # Without a gateway the method is refused and nothing is recorded.
    monkeypatch.delenv("RINGFENCE_SMS__URL")
    refused = cli("privacy", "code-request", "acme", "alice", "erasure", code=2)
    assert "no SMS gateway" in refused
    assert "alice" in cli("account", "list", "acme")
