"""`ringfence serve` with two SIP worker processes (`sip.workers = 2`), against SIPp.

Either worker may read any datagram or accept any connection; each Call-ID and each AOR has
one owner (`transport.cluster`). SIPp's Call-IDs are its own, so over twenty calls both
workers own some (all on one: one chance in 2**19): a call owned by the worker that did not
take the callee's REGISTER finds the binding only through replication, and one owned by the
worker without the callee's TCP connection reaches it only by asking the other to send.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import DOMAIN, PASSWORDS, Server, serving
from tests.peers.sipp import SippResult, free_udp_port, run_scenario, uas, write_injection
from tests.support.net import free_port, wait_until


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("sip-workers"), sip__workers="2") as running:
        yield running


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def injection(server: Server, name: str, user: str, callee: str | None = None) -> Path:
    path = server.workdir / f"{name}.csv"
    write_injection(path, [(user, PASSWORDS[user])], DOMAIN, callee=callee)
    return path


def test_the_parent_runs_one_more_worker(two_workers: Server) -> None:
    [worker] = children(two_workers.pid)
    assert b"sip-worker" in Path(f"/proc/{worker}/cmdline").read_bytes()


@pytest.mark.parametrize("callee_transport", ["u1", "t1"])
def test_calls_cancels_and_messages_whichever_worker_owns_them(
    two_workers: Server, callee_transport: str
) -> None:
    callee_port = free_udp_port() if callee_transport == "u1" else free_port()
    callee = "bob" if callee_transport == "u1" else "dave"
    registered = run_scenario(
        "register_auth.xml",
        two_workers.port,
        inf=injection(two_workers, f"{callee}-{callee_transport}", callee),
        local_port=callee_port,
        transport=callee_transport,
    )
    assert registered == SippResult(1, 0)
    caller = injection(two_workers, f"alice-{callee_transport}", "alice", callee=callee)
    with uas(two_workers.port, callee_port, transport=callee_transport):
        calls = run_scenario("uac_call.xml", two_workers.port, inf=caller, calls=20, rate=20)
        cancels = run_scenario("uac_cancel.xml", two_workers.port, inf=caller, calls=6, rate=20)
        messages = run_scenario("uac_message.xml", two_workers.port, inf=caller, calls=20, rate=40)
    assert (calls, cancels, messages) == (SippResult(20, 0), SippResult(6, 0), SippResult(20, 0))


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_registrations_of_every_user(two_workers: Server, transport: str) -> None:
    # Five AORs: each worker owns some of them (their owners are fixed by their names).
    for user in PASSWORDS:
        result = run_scenario(
            "register_auth.xml",
            two_workers.port,
            inf=injection(two_workers, f"reg-{user}-{transport}", user),
            calls=3,
            rate=20,
            transport=transport,
        )
        assert result == SippResult(3, 0), user


def test_a_worker_stops_with_its_parent_and_the_node_with_a_worker(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with serving(tmp_path_factory.mktemp("sip-workers-stop"), sip__workers="3") as running:
        first, second = children(running.pid)
        os.kill(first, signal.SIGKILL)
        # A node that lost a worker would drop a third of its calls: it stops instead.
        wait_until(
            lambda: not Path(f"/proc/{running.pid}").exists() or _zombie(running.pid),
            20,
            "the parent to stop",
        )
        # ... and the parent's other workers end with it.
        wait_until(
            lambda: not Path(f"/proc/{second}").exists() or _zombie(second),
            20,
            "the last worker to stop",
        )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_a_worker_outlives_no_killed_parent(tmp_path_factory: pytest.TempPathFactory) -> None:
    with serving(tmp_path_factory.mktemp("sip-workers-orphan"), sip__workers="2") as running:
        [worker] = children(running.pid)
        os.kill(running.pid, signal.SIGKILL)  # no chance to stop its workers itself
        wait_until(lambda: _zombie(worker), 20, "the orphaned worker to exit")
