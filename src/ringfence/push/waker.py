"""Pushes for parked SIP requests: the `proxy.parking.Waker` that uses the dispatcher.

One VoIP push per device per call, whatever the forks and retransmissions (iOS punishes
VoIP pushes that show no call); a call that ends before the device took it gives an alert
on the device's other token, never a second VoIP push. A dead token prunes the binding.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from ringfence.clock import Clock
from ringfence.proxy.parking import PUSH_SENT, EndReason, ParkedRequest, Sleeper
from ringfence.push.dispatcher import PushDispatcher
from ringfence.push.provider import (
    Delivered,
    Notification,
    ProviderName,
    PushKind,
    PushTarget,
    TokenDead,
)
from ringfence.sip.pn import PushParameters
from ringfence.sip.randomness import random_hex

logger = logging.getLogger(__name__)

#: (Call-ID, device) pairs remembered, to push each device once per call.
RUNG_KEPT = 65_536
#: How long a "call ended" alert may wait for an offline phone (then it is pointless).
ENDED_TTL_S = 600
#: How long a "message waiting" alert may wait for an offline phone: as long as the message.
MESSAGE_TTL_S = 7 * 86_400

_SERVICES = {
    "apns": ProviderName.APNS,
    "fcm": ProviderName.FCM,
    "webhook": ProviderName.WEBHOOK,
}

#: Called with the AOR and the device whose token a push service called dead.
Prune = Callable[[str, Sleeper], Awaitable[None]]


def push_target(
    params: PushParameters, token: str | None, registered_at: float = 0.0
) -> PushTarget | None:
    """The push target of one of a binding's tokens; None for a service we do not serve."""
    provider = _SERVICES.get(params.service)
    if provider is None or not token:
        return None
    return PushTarget(provider, params.app, token, registered_at, sandbox=params.sandbox)


class PushWaker:
    """Wakes devices for parked requests through a `PushDispatcher`."""

    def __init__(
        self,
        dispatcher: PushDispatcher,
        clock: Clock,
        *,
        ring_window_s: float,
        prune: Prune | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._clock = clock
        self._ring_window_s = ring_window_s
        self._prune = prune
        self._rung: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def ring(self, parked: ParkedRequest, sleeper: Sleeper) -> None:
        key = (parked.call_id, sleeper.device)
        if key in self._rung:
            return  # another fork or transaction of the same call: pushed already
        self._rung[key] = None
        while len(self._rung) > RUNG_KEPT:
            self._rung.popitem(last=False)
        target = push_target(sleeper.push, sleeper.push.token_for_call(), sleeper.registered_at)
        if target is None:
            return
        notification = Notification(PushKind.CALL, parked.push_id, ttl_s=0)
        self._spawn(parked.aor, sleeper, target, notification, parked)

    def ended(self, parked: ParkedRequest, sleepers: Sequence[Sleeper], reason: EndReason) -> None:
        for sleeper in sleepers:
            if (parked.call_id, sleeper.device) not in self._rung:
                continue  # never woken for this call
            # The other token (iOS: the "remote" one): a VoIP push would have to show a call.
            target = push_target(
                sleeper.push, sleeper.push.token_for_alert(), sleeper.registered_at
            )
            if target is None:
                logger.info("no alert token to tell a device a call ended (%s)", reason)
                continue
            notification = Notification(
                PushKind.CALL_ENDED,
                parked.push_id,
                ttl_s=ENDED_TTL_S,
                collapse_id=parked.push_id,
                data={"reason": reason.value},
            )
            self._spawn(parked.aor, sleeper, target, notification, parked)

    def message_waiting(self, aor: str, sleepers: Sequence[Sleeper]) -> None:
        for sleeper in sleepers:
            # One alert per device however many messages wait: the app fetches them all.
            self._on_other_token(aor, sleeper, PushKind.MESSAGE, MESSAGE_TTL_S, "rf-message")

    def refresh(self, aor: str, sleeper: Sleeper, ttl_s: int) -> None:
        # A background push (priority 5), asking the app to REGISTER again.
        self._on_other_token(aor, sleeper, PushKind.WAKE, ttl_s, "rf-refresh")

    def notice(self, aor: str, sleeper: Sleeper, kind: PushKind, ttl_s: int, reason: str) -> None:
        """Tell a device about its push instance (overlay: expiring, ended), never by VoIP."""
        self._on_other_token(aor, sleeper, kind, ttl_s, f"rf-{reason}", {"reason": reason})

    def _on_other_token(
        self,
        aor: str,
        sleeper: Sleeper,
        kind: PushKind,
        ttl_s: int,
        collapse_id: str,
        data: dict[str, str] | None = None,
    ) -> None:
        """A push that is not a call: to the alert token, never the VoIP one.

        iOS requires every VoIP push to show a call.
        """
        target = push_target(sleeper.push, sleeper.push.token_for_alert(), sleeper.registered_at)
        if target is None:
            logger.info("a device has no token for %s pushes", kind.value)
            return
        notification = Notification(
            kind, random_hex(16), ttl_s=ttl_s, collapse_id=collapse_id, data=data or {}
        )
        self._spawn(aor, sleeper, target, notification)

    def _spawn(
        self,
        aor: str,
        sleeper: Sleeper,
        target: PushTarget,
        notification: Notification,
        parked: ParkedRequest | None = None,
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._send(aor, sleeper, target, notification, parked)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        aor: str,
        sleeper: Sleeper,
        target: PushTarget,
        notification: Notification,
        parked: ParkedRequest | None = None,
    ) -> None:
        deadline = self._clock.monotonic() + self._ring_window_s
        kind = notification.kind.value
        if parked is not None:
            parked.note(self._clock.monotonic(), f"{kind} push sent", target.fingerprint)
        try:
            result = await self._dispatcher.send(target, notification, deadline=deadline)
        except Exception:
            logger.exception("a %s push failed", kind)
            if parked is not None:
                parked.note(self._clock.monotonic(), f"{kind} push failed", target.fingerprint)
            return
        if parked is not None:
            answer = "accepted" if isinstance(result, Delivered) else repr(result)
            parked.note(self._clock.monotonic(), f"{kind} push {target.provider.value}", answer)
            if isinstance(result, Delivered) and notification.kind is PushKind.CALL:
                parked.progress(PUSH_SENT)
        if not isinstance(result, Delivered):
            logger.info("%s push to %s: %s", notification.kind.value, target.fingerprint, result)
        if isinstance(result, TokenDead) and self._prune is not None:
            await self._prune(aor, sleeper)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._dispatcher.aclose()
