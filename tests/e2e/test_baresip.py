"""baresip 1.0 (Debian `baresip-core`), a real softphone, against `ringfence serve`.

It registers with digest, is called by a SIPp user agent and answers (auto-answer), receives a
MESSAGE, and calls a registered SIPp user agent itself (answered through the proxy, 407 first).
Headless per ../shared/PEERS.md: a sine source, a null player, loopback only.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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
module_app menu.so
"""


@pytest.fixture(scope="module")
def baresip_binary() -> str:
    found = shutil.which("baresip")
    if found is None:
        missing_tool("baresip", "baresip-core")
    return found


@contextmanager
def baresip(
    binary: str, server: Server, user: str, seconds: int, commands: tuple[str, ...] = ()
) -> Iterator[Path]:
    """Run baresip registered as `user` for `seconds`; yield its log file (read it after)."""
    home = server.workdir / f"baresip-{user}"
    home.mkdir(exist_ok=True)
    (home / "config").write_text(CONFIG.format(port=free_udp_port()))
    (home / "accounts").write_text(
        f"<sip:{user}@{DOMAIN}>;auth_pass={PASSWORDS[user]};"
        f'outbound="sip:127.0.0.1:{server.port};transport=udp";answermode=auto;regint=600\n'
    )
    log = home / "baresip.log"
    argv = [binary, "-f", str(home), "-t", str(seconds)]
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
    callee_port = free_udp_port()
    bob = server.workdir / "bob-for-baresip.csv"
    write_injection(bob, [("bob", PASSWORDS["bob"])], DOMAIN)
    assert run_scenario("register_auth.xml", server.port, inf=bob, local_port=callee_port) == (
        SippResult(1, 0)
    )
    with (
        uas(server.port, callee_port),
        baresip(
            baresip_binary, server, "dave", seconds=6, commands=(f"/dial sip:bob@{DOMAIN}",)
        ) as log,
    ):
        pass
    text = log.read_text(errors="replace")
    assert f"Call established: sip:bob@{DOMAIN}" in text, text[-2000:]
