"""Sending a push to the right provider: retries inside a deadline, a cap, dead tokens.

A push for a call is worth nothing after the call stops ringing, so every send has a
deadline (monotonic seconds), and temporary failures are retried with exponential backoff
(or the provider's Retry-After) only while the next try would still start before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from ringfence.clock import Clock
from ringfence.config import PushSettings
from ringfence.push.apns import ApnsProvider
from ringfence.push.fcm import FcmProvider
from ringfence.push.provider import (
    Misconfigured,
    Notification,
    PushProvider,
    PushResult,
    PushTarget,
    RetryAfter,
    TokenDead,
)
from ringfence.push.webhook import WebhookProvider

logger = logging.getLogger(__name__)

#: First backoff, doubled on each further try, capped.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 8.0
#: Tries per push, the first included.
MAX_TRIES = 5

TokenDeadHook = Callable[[PushTarget, TokenDead], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class PushDispatcher:
    """The one way the services send pushes."""

    def __init__(
        self,
        providers: Sequence[PushProvider],
        clock: Clock,
        *,
        max_in_flight: int = 100,
        on_token_dead: TokenDeadHook | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._providers = list(providers)
        self._clock = clock
        self._on_token_dead = on_token_dead
        self._sleep = sleep
        self._slots = {provider.name: asyncio.Semaphore(max_in_flight) for provider in providers}

    @property
    def services(self) -> frozenset[str]:
        """The RFC 8599 services that can be pushed to (`apns`, `fcm`, `webhook`)."""
        return frozenset(provider.name.value for provider in self._providers)

    def provider_for(self, target: PushTarget) -> PushProvider | None:
        return next((p for p in self._providers if p.serves(target)), None)

    async def send(
        self, target: PushTarget, notification: Notification, *, deadline: float
    ) -> PushResult:
        """Send `notification` to `target`, retrying temporary failures until `deadline`.

        Args:
            target: The device token.
            notification: What to send.
            deadline: Monotonic seconds (the clock's) after which no try starts.

        Returns:
            The last answer: `RetryAfter` means the deadline came first.
        """
        provider = self.provider_for(target)
        if provider is None:
            return Misconfigured(f"no {target.provider.value} settings for app {target.app!r}")
        result: PushResult = RetryAfter("not sent")
        for attempt in range(MAX_TRIES):
            async with self._slots[provider.name]:
                result = await provider.send(target, notification)
            if not isinstance(result, RetryAfter):
                break
            backoff = min(BACKOFF_FIRST_S * 2**attempt, BACKOFF_MAX_S)
            delay = result.seconds if result.seconds is not None else backoff
            if self._clock.monotonic() + delay >= deadline:
                break
            await self._sleep(delay)
        if isinstance(result, TokenDead) and self._on_token_dead is not None:
            await self._on_token_dead(target, result)
        if isinstance(result, Misconfigured):
            # An operator must act: say it loudly, once per push (no token in the line).
            logger.error("push to app %s refused: %s", target.app, result.reason)
        return result

    async def aclose(self) -> None:
        for provider in self._providers:
            await provider.aclose()


def make_dispatcher(
    settings: PushSettings, clock: Clock, *, on_token_dead: TokenDeadHook | None = None
) -> PushDispatcher:
    """The dispatcher with a provider for every configured service (webhook always).

    Raises:
        PushConfigError: a key, certificate or service account cannot be used.
    """
    providers: list[PushProvider] = []
    if settings.apns:
        providers.append(ApnsProvider(settings.apns, clock, timeout_s=settings.timeout_s))
    if settings.fcm:
        providers.append(FcmProvider(settings.fcm, clock, timeout_s=settings.timeout_s))
    providers.append(
        WebhookProvider(
            clock, timeout_s=settings.timeout_s, allow_private=settings.webhook_allow_private
        )
    )
    return PushDispatcher(
        providers, clock, max_in_flight=settings.max_in_flight, on_token_dead=on_token_dead
    )
