"""A push sandbox on loopback (the APNs and FCM stand-ins over HTTP/2 and TLS) on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ringfence.push.apns import ApnsProvider
from ringfence.push.fcm import FcmProvider
from ringfence.sandbox.server import PushSandbox
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sandbox(tmp_path: Path, clock: FakeClock) -> AsyncIterator[PushSandbox]:
    async with PushSandbox(tmp_path / "sandbox", clock, accept_unknown_tokens=False) as box:
        yield box


@pytest.fixture
async def apns(sandbox: PushSandbox, clock: FakeClock) -> AsyncIterator[ApnsProvider]:
    provider = ApnsProvider(sandbox.settings().apns, clock, timeout_s=5)
    yield provider
    await provider.aclose()


@pytest.fixture
async def fcm(sandbox: PushSandbox, clock: FakeClock) -> AsyncIterator[FcmProvider]:
    provider = FcmProvider(sandbox.settings().fcm, clock, timeout_s=5)
    yield provider
    await provider.aclose()
