"""What a stand-in received, kept in memory for tests and the sandbox's inspection endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReceivedPush:
    """One push a stand-in accepted.

    Attributes:
        service: `apns` or `fcm`.
        environment: APNs `production` or `sandbox`; FCM the project id.
        token: The device token it was addressed to.
        headers: The request headers (lowercased names), authorization removed.
        payload: The decoded JSON body.
        http_version: The HTTP version the client spoke ("2" for both services).
        received_at: When it arrived, on the stand-in clock's monotonic scale.
    """

    service: str
    environment: str
    token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    http_version: str
    received_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "environment": self.environment,
            "token": self.token,
            "headers": self.headers,
            "payload": self.payload,
            "http_version": self.http_version,
        }


@dataclass
class Fault:
    """An answer to give instead of the normal one, for the next `count` requests."""

    status: int
    reason: str
    retry_after: str | None = None
    count: int = 1


@dataclass
class Inbox:
    """The pushes received, in order, with a way to wait for the next one."""

    pushes: list[ReceivedPush] = field(default_factory=list)
    _changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def add(self, push: ReceivedPush) -> None:
        condition = self._condition()
        async with condition:
            self.pushes.append(push)
            condition.notify_all()

    async def wait_for(
        self, predicate: Callable[[ReceivedPush], bool], timeout_s: float = 10.0
    ) -> ReceivedPush:
        """The first push, received or still to come, for which `predicate` holds.

        Raises:
            TimeoutError: none came within `timeout_s`.
        """
        condition = self._condition()

        def found() -> ReceivedPush | None:
            return next((push for push in self.pushes if predicate(push)), None)

        async with asyncio.timeout(timeout_s), condition:
            await condition.wait_for(lambda: found() is not None)
        push = found()
        assert push is not None
        return push
