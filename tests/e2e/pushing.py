"""What the push end-to-end tests share: the push stand-ins in a thread, and waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ringfence.clock import SystemClock
from ringfence.sandbox.record import ReceivedPush
from ringfence.sandbox.server import SandboxThread
from tests.peers.sipp import SippResult

CLOCK = SystemClock()


class Sandbox(SandboxThread):
    def pushes(self) -> list[ReceivedPush]:
        return list(self.box.apns.inbox.pushes)


def wait_for(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = CLOCK.monotonic() + timeout_s
    while not check():
        assert CLOCK.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def voip_pushes(sandbox: Sandbox, token: str) -> list[ReceivedPush]:
    return [
        p for p in sandbox.pushes() if p.token == token and p.headers["apns-push-type"] == "voip"
    ]


def in_background(job: Callable[[], SippResult]) -> Future[SippResult]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(job)
    pool.shutdown(wait=False)
    return future
