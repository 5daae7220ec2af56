"""What a stand-in received, kept in memory for tests and the sandbox's inspection endpoint."""

from __future__ import annotations

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
    """The pushes received, in order."""

    pushes: list[ReceivedPush] = field(default_factory=list)

    def add(self, push: ReceivedPush) -> None:
        self.pushes.append(push)
