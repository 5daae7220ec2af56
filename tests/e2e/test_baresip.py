"""baresip 1.0 (Debian `baresip-core`), a real softphone, against `ringfence serve`.

It registers with digest, is called by a SIPp user agent and answers (auto-answer), receives a
MESSAGE, and calls a registered SIPp user agent itself (answered through the proxy, 407 first).
Over TLS (the server's self-signed certificate as its CA file) it registers, calls and is
called, and sends a MESSAGE to another baresip. Headless per ../shared/PEERS.md: a sine source,
a null player, loopback only.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ringfence.transport.tls import CERT_FILE_NAME
from tests.e2e.conftest import DOMAIN, PASSWORDS, Server
from tests.peers.sipp import SippResult, free_udp_port, run_scenario, uas, write_injection
from tests.support.net import wait_until
from tests.support.tools import missing_tool

CONFIG = """\
poll_method epoll
sip_listen 127.0.0.1:{port}
net_interface 127.0.0.1
audio_source ausine,440
audio_player aubridge,null
ausrc_srate 48000
ausrc_channels 2
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aubridge.so
module_app account.so
module_app contact.so
module_app menu.so
"""


def baresip_port() -> int:
    """A port baresip can listen on: UDP and TCP on it, TLS on the next (sip_listen)."""
    while True:
        port = free_udp_port()
        try:
            for candidate in (port, port + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind(("127.0.0.1", candidate))
        except OSError:
            continue  # a free UDP port whose TCP twin is taken: baresip would fail to start
        return port


@pytest.fixture(scope="module")
def baresip_binary() -> str:
    found = shutil.which("baresip")
    if found is None:
        missing_tool("baresip", "baresip-core")
    return found


@contextmanager
def baresip(
    binary: str,
    server: Server,
    user: str,
    seconds: int,
    commands: tuple[str, ...] = (),
    *,
    tls: bool = False,
    contact: str | None = None,
) -> Iterator[Path]:
    """Run baresip registered as `user` for `seconds`; yield its log file (read it after).

    With `tls`, it registers over TLS and checks the server's certificate; `contact` is the
    URI its `/message` command writes to.
    """
    home = server.workdir / f"baresip-{user}"
    home.mkdir(exist_ok=True)
    config = CONFIG.format(port=baresip_port())
    if tls:
        config += f"sip_cafile {server.workdir / 'var' / 'tls' / CERT_FILE_NAME}\n"
        outbound = f"sip:127.0.0.1:{server.tls_port};transport=tls"
    else:
        outbound = f"sip:127.0.0.1:{server.port};transport=udp"
    (home / "config").write_text(config)
    (home / "accounts").write_text(
        f"<sip:{user}@{DOMAIN}>;auth_pass={PASSWORDS[user]};"
        f'outbound="{outbound}";answermode=auto;regint=600\n'
    )
    if contact is not None:
        (home / "contacts").write_text(f"<{contact}>\n")
        (home / "current_contact").write_text(f"{contact}\n")
    log = home / "baresip.log"
    # -s: the SIP trace goes to the log too, so tests can read what baresip received.
    argv = [binary, "-s", "-f", str(home), "-t", str(seconds)]
    for command in commands:
        argv += ["-e", command]
    with (
        log.open("w") as out,
        subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ) as process,
    ):
        try:
            wait_until(
                lambda: "200 OK" in log.read_text(errors="replace") or process.poll() is not None,
                10,
                "baresip registered",
            )
            assert process.poll() is None, log.read_text(errors="replace")
            yield log
        finally:
            process.wait(timeout=seconds + 10)


def register_sipp_user(server: Server, user: str) -> int:
    """Register `user` from a SIPp port (for a `uas` there); the port."""
    port = free_udp_port()
    injection = server.workdir / f"{user}-{port}.csv"
    write_injection(injection, [(user, PASSWORDS[user])], DOMAIN)
    result = run_scenario("register_auth.xml", server.port, inf=injection, local_port=port)
    assert result == SippResult(1, 0)
    return port


def test_baresip_registers_is_called_and_receives_a_message(
    server: Server, baresip_binary: str
) -> None:
    caller = server.workdir / "alice-to-dave.csv"
    write_injection(caller, [("alice", PASSWORDS["alice"])], DOMAIN, callee="dave")
    with baresip(baresip_binary, server, "dave", seconds=8) as log:
        assert run_scenario("uac_call.xml", server.port, inf=caller) == SippResult(1, 0)
        assert run_scenario("uac_message.xml", server.port, inf=caller) == SippResult(1, 0)
    text = log.read_text(errors="replace")
    assert "Call established: sip:alice@" in text


def test_baresip_calls_a_registered_sipp_user_agent(server: Server, baresip_binary: str) -> None:
    callee_port = register_sipp_user(server, "bob")
    with (
        uas(server.port, callee_port),
        baresip(
            baresip_binary, server, "dave", seconds=6, commands=(f"/dial sip:bob@{DOMAIN}",)
        ) as log,
    ):
        pass
    text = log.read_text(errors="replace")
    assert f"Call established: sip:bob@{DOMAIN}" in text, text[-2000:]


@pytest.mark.promise("P16")  # SIP encrypted in transit, with a checked certificate
def test_baresip_over_tls_calls_and_sends_a_message(server: Server, baresip_binary: str) -> None:
    callee_port = register_sipp_user(server, "bob")
    with (
        baresip(baresip_binary, server, "dave", seconds=10) as dave_log,
        uas(server.port, callee_port),
        # The outbound proxy is the TLS port only: erin registers, sends and calls over TLS.
        baresip(
            baresip_binary,
            server,
            "erin",
            seconds=6,
            commands=("/message hello over tls", f"/dial sip:bob@{DOMAIN}"),
            tls=True,
            contact=f"sip:dave@{DOMAIN}",
        ) as erin_log,
    ):
        pass
    erin = erin_log.read_text(errors="replace")
    assert f"Call established: sip:bob@{DOMAIN}" in erin, erin[-2000:]
    dave = dave_log.read_text(errors="replace")
    assert "hello over tls" in dave, dave[-2000:]
    # The proxy consumed erin's credentials: dave never sees her digest response.
    assert 'username="erin"' not in dave, dave[-3000:]


@pytest.mark.promise("P16")
def test_baresip_over_tls_is_called(server: Server, baresip_binary: str) -> None:
    caller = server.workdir / "alice-to-erin.csv"
    write_injection(caller, [("alice", PASSWORDS["alice"])], DOMAIN, callee="erin")
    with baresip(baresip_binary, server, "erin", seconds=8, tls=True) as log:
        # The INVITE reaches erin over the TLS connection she registered on.
        assert run_scenario("uac_call.xml", server.port, inf=caller) == SippResult(1, 0)
    text = log.read_text(errors="replace")
    assert "Call established: sip:alice@" in text, text[-2000:]
