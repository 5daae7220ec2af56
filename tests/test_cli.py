"""The `ringfence` command, end to end: a real process, a real port, the printed curl lines."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree

from typer.testing import CliRunner

from ringfence.cli import app
from tests.support.net import free_port, wait_for_port

BIN = Path(sys.executable).parent / "ringfence"


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_tenant_and_account_commands(workdir: Path) -> None:
    assert "databases are at the newest schema" in _cli("migrate")
    _cli("tenant", "add", "acme", "--domain", "sip.acme.example", "--name", "Acme")
    assert "acme\tsip.acme.example\tAcme" in _cli("tenant", "list")
    out = _cli("account", "add", "acme", "alice", "--display-name", "Alice")
    assert "password: " in out  # generated, printed once
    _cli("account", "add", "acme", "bob", "--password", "correct horse")
    assert "alice\tactive\tAlice" in _cli("account", "list", "acme")
    shown = json.loads(_cli("account", "show", "acme", "alice"))
    assert shown["aor"] == "sip:alice@sip.acme.example"
    changed = json.loads(
        _cli(
            "account",
            "set",
            "acme",
            "alice",
            "--set",
            "push.mode=keepalive",
            "--set",
            "blf.enabled=true",
            "--status",
            "suspended",
        )
    )
    assert changed["config"]["push"]["mode"] == "keepalive"
    assert changed["config"]["blf"]["enabled"] is True
    assert changed["status"] == "suspended"
    assert _cli("admin", "token", "create", "ops").startswith("rfk_")
    assert (workdir / "var" / "kek.key").exists()


def test_errors_are_clear_and_exit_2(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["account", "add", "nope", "alice"])
    assert result.exit_code == 2
    assert "no tenant 'nope'" in result.output
    result = CliRunner().invoke(app, ["account", "set", "nope", "alice", "--set", "oops"])
    assert result.exit_code == 2
    assert "feature.key=value" in result.output


def test_check_config(workdir: Path) -> None:
    good = workdir / "good.toml"
    good.write_text("[http]\nport = 8443\n")
    assert "valid" in _cli("check-config", str(good))
    bad = workdir / "bad.toml"
    bad.write_text("[http]\nprot = 8443\n")
    result = CliRunner().invoke(app, ["check-config", str(bad)])
    assert result.exit_code == 2
    assert "http.prot: unknown key" in result.output


@contextmanager
def serving(workdir: Path, port: int) -> Iterator[str]:
    """Run `ringfence serve --demo` until it listens; yield what it printed until then."""
    env = {
        **os.environ,
        "RINGFENCE_HTTP__PORT": str(port),
        "RINGFENCE_LOGGING__LEVEL": "WARNING",
        # SIP on ports of its own, so that tests never collide with a server on 5060.
        "RINGFENCE_SIP__UDP_PORT": str(free_port()),
        "RINGFENCE_SIP__TCP_PORT": str(free_port()),
        "RINGFENCE_SIP__TLS_PORT": str(free_port()),
        "RINGFENCE_SIP__WS_PORT": str(free_port()),
    }
    with subprocess.Popen(
        [str(BIN), "serve", "--demo"],
        cwd=workdir,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        assert process.stdout is not None
        output = []
        while line := process.stdout.readline():
            output.append(line)
            if line.startswith("ringfence http://"):
                break
        try:
            wait_for_port(port)
            yield "".join(output)
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_serve_demo_prints_curl_lines_that_work(workdir: Path) -> None:
    with serving(workdir, free_port()) as output:
        _check_curl_lines(output)


def _check_curl_lines(output: str) -> None:
    curls = [line.strip() for line in output.splitlines() if line.strip().startswith("curl ")]
    assert len(curls) == 3, output
    json_line, xml_line, admin_line = curls
    assert re.search(r"password\s+\S+", output)

    config = json.loads(
        subprocess.run(
            shlex.split(json_line), capture_output=True, text=True, check=True, timeout=30
        ).stdout
    )
    assert config["account"]["username"] == "alice"
    assert "push" in config["features"]

    xml = subprocess.run(shlex.split(xml_line), capture_output=True, check=True, timeout=30).stdout
    root = ElementTree.fromstring(xml)  # noqa: S314 - our own server's output
    assert root.tag == "account"
    assert root.findtext("username") == "alice"

    tenants = json.loads(
        subprocess.run(
            shlex.split(admin_line), capture_output=True, text=True, check=True, timeout=30
        ).stdout
    )
    assert [t["code"] for t in tenants] == ["demo"]


def test_demo_is_created_only_once(workdir: Path) -> None:
    # First start prints the credentials; a second start on the same data must not.
    port = free_port()
    with serving(workdir, port) as first:
        assert "A demo tenant was created" in first
        assert "sip:alice@demo.localhost" in first
        assert "SIP udp 127.0.0.1:" in first
    with serving(workdir, port) as second:
        assert "A demo tenant was created" not in second
        assert "ringfence http://" in second


def test_account_import_from_csv(workdir: Path) -> None:
    _cli("tenant", "add", "acme", "--domain", "sip.acme.example")
    good = workdir / "accounts.csv"
    good.write_text(
        "username,password,display_name,e164\n"
        "alice,correct horse,Alice,+41445551234\n"
        "bob,battery staple,,\n"
    )
    assert "2 accounts created in acme" in _cli("account", "import", "acme", str(good))
    assert "alice\tactive\tAlice" in _cli("account", "list", "acme")
    bad = workdir / "bad.csv"
    bad.write_text("username,password\ncarol,carol's secret\ndan,short\n")
    result = CliRunner().invoke(app, ["account", "import", "acme", str(bad)])
    assert result.exit_code == 2
    assert "rows[1].password" in result.output
    assert "carol" not in _cli("account", "list", "acme")  # nothing was written
    headless = workdir / "headless.csv"
    headless.write_text("name,secret\nx,y\n")
    result = CliRunner().invoke(app, ["account", "import", "acme", str(headless)])
    assert result.exit_code == 2
    assert "lacks password, username" in result.output
