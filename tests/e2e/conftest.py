"""`ringfence serve` as a real process, with accounts made by the CLI, for peer tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.sipp import sipp_binary
from tests.support.net import free_port, wait_for_port
from tests.support.tools import missing_tool

BIN = Path(sys.executable).parent / "ringfence"
DOMAIN = "sip.acme.example"
PASSWORDS = {
    "alice": "alice-secret-1",
    "bob": "bob-secret-22",
    "carol": "carol-secret-333",
    "dave": "dave-secret-4444",
    "erin": "erin-secret-55555",
    "frank": "frank-secret-666666",
    "grace": "grace-secret-7777777",
    "heidi": "heidi-secret-88888888",
    "ivan": "ivan-secret-999999999",
    "judy": "judy-secret-1010101010",
    "ken": "ken-secret-11111111111",
    "laura": "laura-secret-121212121212",
}


@dataclass(frozen=True)
class Server:
    port: int  # UDP and TCP
    tls_port: int
    workdir: Path
    pid: int
    http_port: int = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _free_udp_and_tcp_port() -> int:
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@contextmanager
def serving(workdir: Path, tenant_options: Sequence[str] = (), **settings: str) -> Iterator[Server]:
    """`ringfence serve` in `workdir` with the e2e accounts; `settings`: more RINGFENCE_ env.

    `tenant_options`: more options of `ringfence tenant add` (overlay mode's --upstream).
    """
    if sipp_binary() is None:
        missing_tool("sipp", "sip-tester")
    port, tls_port, http_port = _free_udp_and_tcp_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")},
        "RINGFENCE_HTTP__PORT": str(http_port),
        "RINGFENCE_SIP__UDP_PORT": str(port),
        "RINGFENCE_SIP__TCP_PORT": str(port),
        "RINGFENCE_SIP__TLS_PORT": str(tls_port),
        "RINGFENCE_SIP__WS_PORT": "0",
        "RINGFENCE_SIP__DIGEST_ALGORITHMS": '["MD5"]',
        "RINGFENCE_LOGGING__LEVEL": "WARNING",
        **{f"RINGFENCE_{name.upper()}": value for name, value in settings.items()},
    }
    subprocess.run(
        [str(BIN), "tenant", "add", "acme", "--domain", DOMAIN, *tenant_options],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    for user, password in PASSWORDS.items():
        subprocess.run(
            [str(BIN), "account", "add", "acme", user, "--password", password],
            cwd=workdir,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
    log = (workdir / "serve.log").open("w")
    with subprocess.Popen(
        [str(BIN), "serve"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    ) as process:
        try:
            wait_for_port(port)
            wait_for_port(tls_port)
            # HTTP opens last: once SIP serves, every worker included.
            wait_for_port(http_port)
            yield Server(port, tls_port, workdir, process.pid, http_port)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("sip-e2e")) as running:
        yield running
