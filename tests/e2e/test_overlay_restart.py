"""Overlay mode at scale: 1,000 devices' registrations through restarts, under the ceiling.

Kamailio stands for the tenant's PBX with 1,000 users (user0000..user0999) and logs the
arrival time of every REGISTER (``Pbx(log_registers=True)``). ringfence holds 1,000 overlay
instances, one per account of the tenant "acme", each with its PBX account: they are made
in this process through a `Runtime` on the server's data directory before `ringfence serve`
starts, so its very first start already restores 1,000 registrations. Then:

1. served: the 1,000 bindings appear on the PBX, and no second of the PBX's log holds more
   REGISTERs than ``[overlay] max_register_rate`` (first REGISTERs and challenge answers
   alike: the PBX challenges each one);
2. ringfence stopped and started again (same data, same ports): every registration is
   restored once more, spread over ``restore_window_s`` at least, still under the ceiling;
3. Kamailio restarted (every binding lost: usrloc in memory): the refreshes bring all 1,000
   back (50-80% of the 60 s granted after each registration), still under the ceiling.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringfence.clock import SystemClock
from ringfence.config import Settings, StorageSettings
from ringfence.provisioning.models import UpstreamPbx, UpstreamTransport
from ringfence.provisioning.service import NewAccount
from ringfence.pushgw.instances import InstanceReport, PushService, SipAccount
from ringfence.runtime import Runtime
from tests.peers.kamailio import Pbx, free_udp_and_tcp_port, kamailio_binary, kamcmd_binary
from tests.support.net import free_port, wait_for_port
from tests.support.tools import missing_tool

logger = logging.getLogger(__name__)
CLOCK = SystemClock()
BIN = Path(sys.executable).parent / "ringfence"
TENANT = "acme"
DOMAIN = "sip.acme.example"
PBX_DOMAIN = "pbx.example"
DEVICES = 1000
#: The users on the PBX, and the ringfence account of each one's device.
PBX_USERS = {f"user{i:04d}": f"pbx-secret-{i:04d}" for i in range(DEVICES)}
ACCOUNTS = {f"dev{i:04d}": f"device-secret-{i:04d}" for i in range(DEVICES)}
#: [overlay]: the ceiling asserted, and the restore window (short, to keep the test short:
#: at this rate 2,000 REGISTERs take 10 s anyway).
MAX_REGISTER_RATE = 200
RESTORE_WINDOW_S = 5
#: What ringfence asks the PBX for: refreshes come 30 to 48 s after each registration.
UPSTREAM_EXPIRES_S = 60
#: A 1 s window that starts on a REGISTER holds the ceiling's worth at exactly its spacing,
#: and one more as soon as that spacing jitters by a microsecond (the times are the PBX's).
EDGE = 1
#: How long every restore may take: 2 REGISTERs per registration (the PBX challenges
#: each), at the ceiling, and a margin for the start and a slow machine.
RESTORE_TIMEOUT_S = 2 * DEVICES / MAX_REGISTER_RATE + 20
#: How long the bindings may take to come back after Kamailio restarts: the last refresh
#: is due 80% of the way through the 60 s granted, after the last registration.
COMEBACK_TIMEOUT_S = 0.8 * UPSTREAM_EXPIRES_S + 2 * DEVICES / MAX_REGISTER_RATE + 15


@dataclass(frozen=True)
class Ringfence:
    """How to run `ringfence serve` in `workdir` (a process per `serving` call)."""

    workdir: Path
    env: dict[str, str]
    sip_port: int
    http_port: int

    @property
    def log(self) -> Path:
        return self.workdir / "serve.log"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    if kamailio_binary() is None or kamcmd_binary() is None:
        missing_tool("kamailio", "kamailio")
    with Pbx(tmp_path_factory.mktemp("pbx"), PBX_USERS, PBX_DOMAIN, log_registers=True) as running:
        yield running


def prepare(workdir: Path, pbx: Pbx) -> Ringfence:
    """The settings file, the tenant, its 1,000 accounts and their instances."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "var"
    config = workdir / "ringfence.toml"
    config.write_text(
        f"[storage]\ndata_dir = {json.dumps(str(data_dir))}\n\n"
        f"[overlay]\nmax_register_rate = {MAX_REGISTER_RATE}\n"
        f"restore_window_s = {RESTORE_WINDOW_S}\n",
        encoding="utf-8",
    )
    sip_port, http_port = free_udp_and_tcp_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")},
        "RINGFENCE_CONFIG": str(config),
        "RINGFENCE_HTTP__PORT": str(http_port),
        "RINGFENCE_SIP__UDP_PORT": str(sip_port),
        "RINGFENCE_SIP__TCP_PORT": str(sip_port),
        "RINGFENCE_SIP__TLS_PORT": "0",
        "RINGFENCE_SIP__WS_PORT": "0",
        "RINGFENCE_LOGGING__LEVEL": "INFO",
    }
    upstream = UpstreamPbx(
        "127.0.0.1", pbx.port, UpstreamTransport.UDP, expires_s=UPSTREAM_EXPIRES_S
    )
    asyncio.run(_provision(Settings(storage=StorageSettings(data_dir=data_dir)), upstream))
    return Ringfence(workdir, env, sip_port, http_port)


async def _provision(settings: Settings, upstream: UpstreamPbx) -> None:
    """What `tenant add --upstream`, `account import` and 1,000 apps' PUT
    /v1/push/instances would store, straight through the services (seconds, not minutes)."""
    runtime = Runtime(settings)
    try:
        await runtime.migrate()
        provisioning = runtime.provisioning
        await provisioning.create_tenant(TENANT, "Acme", DOMAIN, upstream=upstream)
        rows = [NewAccount(user, password) for user, password in ACCOUNTS.items()]
        assert await provisioning.import_accounts(TENANT, rows) == DEVICES
        accounts = await provisioning.accounts(TENANT, limit=DEVICES)
        assert len(accounts) == DEVICES
        for account in accounts:
            index = int(account.username.removeprefix("dev"))
            user = f"user{index:04d}"
            _, new = await runtime.push_instances.report(
                account.id,
                account.config,
                InstanceReport(
                    selector=f"{account.username}-phone",
                    service=PushService.APNS,
                    app_id="com.example.ringfence",
                    call_token=secrets.token_hex(32),
                    sip_instance=f"urn:uuid:00000000-0000-4000-8000-{index:012d}",
                    sip_account=SipAccount(
                        username=user, domain=PBX_DOMAIN, password=PBX_USERS[user]
                    ),
                ),
            )
            assert new
    finally:
        await runtime.aclose()


@contextmanager
def serving(server: Ringfence) -> Iterator[subprocess.Popen[bytes]]:
    """`ringfence serve` until the block ends (SIGTERM: a clean stop, no unregistering)."""
    with (
        server.log.open("a") as log,
        subprocess.Popen(
            [str(BIN), "serve"],
            cwd=server.workdir,
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        try:
            wait_for_port(server.sip_port)
            wait_for_port(server.http_port)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


def ours(pbx: Pbx) -> int:
    """How many bindings ringfence holds on the PBX, all users together."""
    return pbx.count_contacts("rfo-")


def busiest_second(times: list[float]) -> tuple[int, float]:
    """The most REGISTERs within any 1 s (sliding) window, and when that window starts."""
    ordered = sorted(times)
    best, start = 0, ordered[0] if ordered else 0.0
    for i, t in enumerate(ordered):
        count = bisect.bisect_left(ordered, t + 1.0, lo=i) - i
        if count > best:
            best, start = count, t
    return best, start


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: Callable[[], str], every_s: float
) -> float:
    """Poll `check` every `every_s` until it holds; how long it took.

    Not too often: the test shares the machine with ringfence, whose REGISTER timing it
    measures.
    """
    started = CLOCK.monotonic()
    while not check():
        elapsed = CLOCK.monotonic() - started
        assert elapsed < timeout_s, f"{what()} after {elapsed:.0f} s"
        time.sleep(every_s)
    return CLOCK.monotonic() - started


def saved_users(pbx: Pbx, since: float) -> set[str]:
    """The users whose binding the PBX saved (a REGISTER answered 200) since `since`."""
    return {line.user for line in pbx.registers(since) if line.event == "saved"}


def restore(pbx: Pbx, server: Ringfence, since: float) -> dict[str, float]:
    """Wait until every user's registration reached the PBX since `since`; the figures."""
    took = wait_until(
        lambda: len(saved_users(pbx, since)) == DEVICES,
        RESTORE_TIMEOUT_S,
        lambda: (
            f"{len(saved_users(pbx, since))} of {DEVICES} registrations restored "
            f"(see {server.log} and {pbx.log})"
        ),
        every_s=0.5,
    )
    lines = pbx.registers(since)
    arrived = [line for line in lines if line.event == "arrived"]
    saved = [line for line in lines if line.event == "saved"]
    busiest, _ = busiest_second([line.time for line in arrived])
    return {
        "took_s": took,
        "registers": len(arrived),
        "call_ids": len({line.call_id for line in arrived}),
        "spread_s": max(line.time for line in saved) - min(line.time for line in arrived),
        "busiest_second": busiest,
    }


def test_a_thousand_registrations_survive_restarts_under_the_rate_ceiling(
    pbx: Pbx, tmp_path: Path
) -> None:
    began = CLOCK.now().timestamp()
    server = prepare(tmp_path / "ringfence", pbx)
    figures: dict[str, dict[str, float]] = {}
    with serving(server):
        # 1. The first start restores the 1,000 instances made before it.
        figures["first start"] = first = restore(pbx, server, began)
        assert ours(pbx) == DEVICES
    # 2. Stopped (the bindings stay on the PBX) and started again: every one restored.
    restarted = CLOCK.now().timestamp()
    with serving(server):
        figures["restart"] = second = restore(pbx, server, restarted)
        assert ours(pbx) == DEVICES
        # 3. The PBX forgets every binding; ringfence's refreshes bring them back.
        pbx.restart()
        lost = CLOCK.now().timestamp()
        assert ours(pbx) == 0
        # Their refreshes are due 30 to 48 s after each registration: watched in the log.
        came_back = wait_until(
            lambda: len(saved_users(pbx, lost)) == DEVICES,
            COMEBACK_TIMEOUT_S,
            lambda: (
                f"{len(saved_users(pbx, lost))} of {DEVICES} bindings back after Kamailio "
                f"restarted (see {server.log} and {pbx.log})"
            ),
            every_s=0.5,
        )
        assert ours(pbx) == DEVICES
        figures["pbx restart"] = {
            "took_s": came_back,
            "busiest_second": busiest_second(pbx.register_times(lost))[0],
        }
    busiest, at = busiest_second(pbx.register_times(began))
    logger.info("%d overlay registrations, ceiling %s/s: %s", DEVICES, MAX_REGISTER_RATE, figures)

    for phase in (first, second):
        # Every registration restored, each under a Call-ID of its own.
        assert phase["call_ids"] == DEVICES, figures
        assert phase["registers"] >= DEVICES, figures
        # Spread over the window (here longer: the ceiling makes them take 10 s at least).
        assert phase["spread_s"] >= RESTORE_WINDOW_S * 0.9, figures
    errors = [line for line in server.log.read_text().splitlines() if '"level": "ERROR"' in line]
    assert errors == [], errors[:5]
    # No second of the PBX's log, over the whole test, above the ceiling.
    assert busiest <= MAX_REGISTER_RATE + EDGE, (
        f"{busiest} REGISTERs within 1 s from {at:.6f} (Unix time; see {pbx.log}), "
        f"ceiling {MAX_REGISTER_RATE}: {figures}"
    )
