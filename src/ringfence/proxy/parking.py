"""Requests parked for sleeping devices (RFC 8599): push, wait for the REGISTER, forward.

An INVITE for a user some of whose bindings carry push parameters is parked for those
devices: each gets one push, and the request waits until the device refreshes its binding
(matched by `+sip.instance`, else by its push token), then goes to the new binding as one
more branch. Whatever did not come back by the deadline is given up; the INVITE is then
answered by its other branches, or 480 when there were none.

Pure bookkeeping: the transport driver feeds it time and binding changes, the engine forks,
and a `Waker` sends the pushes.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ringfence.sip.message import Request
from ringfence.sip.pn import PushParameterError, PushParameters, push_parameters
from ringfence.sip.randomness import random_hex
from ringfence.state.location import Binding

#: How long an INVITE waits for a woken device (RFC 8599 leaves it to the proxy; OpenSIPS
#: waits 6 s, Acrobits up to 2 minutes). The caller hears ringing meanwhile.
DEFAULT_WAIT_S = 30.0


#: Steps one call's push trace keeps (a few per device woken).
MAX_TRACE_STEPS = 64


class EndReason(enum.StrEnum):
    """Why a device that was woken for a call is told the call is over (the push's `reason`)."""

    CANCELLED = "cancelled"
    ANSWERED_ELSEWHERE = "answered_elsewhere"
    NO_ANSWER = "no_answer"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PushDevice:
    """A device known by the push instance it reported over HTTPS (`ringfence.pushgw`).

    Attributes:
        instance: The `+sip.instance` it registers with, when it said so.
        push: Its push parameters.
        registered_at: When it last reported them (UNIX seconds; APNs's 410 rule).
    """

    instance: str | None
    push: PushParameters
    registered_at: float = 0.0


@dataclass(slots=True)
class Sleeper:
    """One device woken for one parked request.

    Attributes:
        instance: Its `+sip.instance`, the best match for its next REGISTER.
        push: Its push parameters (provider, app, tokens).
        registration: (Call-ID, CSeq) of the REGISTER behind the binding at park time: a
            binding with another is a refresh, the device is awake.
        known: For a device known only by its push instance, with no `+sip.instance`: the
            registrations of the AOR at park time, as (Call-ID, CSeq), and as (Call-ID, -1)
            those the request went to directly. Any other that comes is the woken app (the
            best a device that names itself nowhere in SIP allows). None otherwise.
        awake: The device has registered again and been given the request.
        registered_at: When its tokens were last received (UNIX seconds), when known: an
            APNs 410 older than that does not prune them.
    """

    instance: str | None
    push: PushParameters
    registration: tuple[str, int]
    known: frozenset[tuple[str, int]] | None = None
    awake: bool = False
    registered_at: float = 0.0

    @property
    def device(self) -> str:
        """What identifies the device: its instance, else its call token."""
        return self.instance or self.push.device_key

    def matches(self, binding: Binding) -> bool:
        if (binding.call_id, binding.cseq) == self.registration:
            return False  # the same registration: not a refresh
        if self.instance is not None and binding.instance is not None:
            return binding.instance == self.instance
        if self.known is not None and self.instance is None:
            # (Call-ID, -1): a registration the request already went to, refreshed or not.
            return (binding.call_id, binding.cseq) not in self.known and (
                binding.call_id,
                -1,
            ) not in self.known
        try:
            params = push_parameters(binding.contact)
        except PushParameterError:
            return False
        return params is not None and params.device_key == self.push.device_key


#: Acrobits' SIPIS push statuses (X-Sipis-Push-Status in the 180 to the PBX).
ALERTING_DEVICE = "Alerting-Device"
PUSH_SENT = "Push-Notification-Sent"
DEVICE_PROGRESS = "Device-Making-Progress"
#: X-Sipis-Reason of the 480 when no device came back in time.
NO_RESPONSE_FROM_DEVICE = "No-Response-From-Device"


@dataclass(slots=True)
class ParkedRequest:
    """A request waiting for woken devices.

    Attributes:
        key: The server transaction's key in the proxy engine.
        request: The request as it will be forwarded (our Route and consumed credentials
            removed).
        aor: The callee's address-of-record.
        push_id: The opaque id the pushes carry (Acrobits' `X-Push-ID`).
        deadline: When waiting stops.
        sleepers: The devices pushed.
        started: When it was parked, on the same clock as `deadline`.
        account_id: The callee's account, whose push trace this call is (None: untraced).
        trace: The steps so far: (time, step, detail), for `ringfence.pushgw.traces`.
    """

    key: str
    request: Request
    aor: str
    push_id: str
    deadline: float
    sleepers: list[Sleeper] = field(default_factory=list)
    started: float = 0.0
    account_id: str | None = None
    trace: list[tuple[float, str, str]] = field(default_factory=list)
    #: Told of the call's progress (overlay mode: the PBX hears it as
    #: X-Sipis-Push-Status in a 180); None: nobody listens.
    on_progress: Callable[[str], None] | None = None

    def progress(self, status: str) -> None:
        """The call made progress: `PUSH_SENT` or `DEVICE_PROGRESS`."""
        if self.on_progress is not None:
            self.on_progress(status)

    def note(self, now: float, step: str, detail: str = "") -> None:
        """Add a step to the call's push trace (bounded: a trace is a summary)."""
        if len(self.trace) < MAX_TRACE_STEPS:
            self.trace.append((now, step, detail))

    @property
    def call_id(self) -> str:
        return self.request.headers.get("Call-ID") or ""

    def waiting(self) -> list[Sleeper]:
        return [sleeper for sleeper in self.sleepers if not sleeper.awake]


class Registration(Protocol):
    """What parking needs of a binding (a `state.location.Binding`)."""

    @property
    def contact(self) -> str: ...

    @property
    def instance(self) -> str | None: ...

    @property
    def call_id(self) -> str: ...

    @property
    def cseq(self) -> int: ...

    @property
    def pushed_at(self) -> float: ...


class Waker(Protocol):
    """Sends the pushes of parked requests (`ringfence.push` implements it)."""

    def ring(self, parked: ParkedRequest, sleeper: Sleeper) -> None:
        """Wake `sleeper` for `parked` (a call: a VoIP push), at most once per call."""
        ...

    def ended(self, parked: ParkedRequest, sleepers: Sequence[Sleeper], reason: EndReason) -> None:
        """Tell devices woken for `parked` that it is over (an alert, never a VoIP push)."""
        ...

    def message_waiting(self, aor: str, sleepers: Sequence[Sleeper]) -> None:
        """Tell sleeping devices that a message waits for them (an alert)."""
        ...

    def refresh(self, aor: str, sleeper: Sleeper, ttl_s: int) -> None:
        """Ask a device to REGISTER again before its binding lapses (RFC 8599 +sip.pnsreg)."""
        ...


def sleepers_of(bindings: Sequence[Registration]) -> list[Sleeper]:
    """The devices among `bindings` that are woken by push (one per device)."""
    found: dict[str, Sleeper] = {}
    for binding in bindings:
        try:
            params = push_parameters(binding.contact)
        except PushParameterError:
            continue  # the registrar refused such parameters; an old binding at worst
        if params is None or params.token_for_call() is None:
            continue
        sleeper = Sleeper(
            binding.instance,
            params,
            (binding.call_id, binding.cseq),
            registered_at=binding.pushed_at,
        )
        found.setdefault(sleeper.device, sleeper)
    return list(found.values())


def sleepers_with(
    sleepers: Sequence[Sleeper],
    devices: Sequence[PushDevice],
    bindings: Sequence[Registration],
    awake: Sequence[Registration],
) -> list[Sleeper]:
    """`sleepers` (from RFC 8599 bindings) and the devices of push instances, once each.

    A device whose `+sip.instance` has a live binding in `awake` is reachable without a
    push; one that is already among `sleepers` (same instance or call token) is pushed once.

    Args:
        sleepers: The sleepers of the AOR's push bindings.
        devices: The account's push instances.
        bindings: Every binding of the AOR (their registrations are `known`).
        awake: The bindings the request goes to directly.
    """
    out = list(sleepers)
    seen = {s.device for s in sleepers} | {s.push.device_key for s in sleepers}
    reachable = {b.instance for b in awake if b.instance is not None}
    known = frozenset([(b.call_id, b.cseq) for b in bindings] + [(b.call_id, -1) for b in awake])
    for device in devices:
        key = device.push.device_key
        if not key or key in seen or (device.instance and device.instance in seen):
            continue
        if device.instance is not None and device.instance in reachable:
            continue
        sleeper = Sleeper(
            device.instance, device.push, ("", 0), known, registered_at=device.registered_at
        )
        seen.add(sleeper.device)
        seen.add(key)
        out.append(sleeper)
    return out


class Parking:
    """Every parked request of one proxy engine."""

    def __init__(self, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.wait_s = wait_s
        self._parked: dict[str, ParkedRequest] = {}
        self._by_aor: dict[str, set[str]] = {}
        self._deadlines: list[tuple[float, str]] = []

    def park(
        self,
        key: str,
        request: Request,
        aor: str,
        sleepers: list[Sleeper],
        now: float,
        account_id: str | None = None,
        wait_s: float | None = None,
    ) -> ParkedRequest:
        # Opaque: the push crosses Apple's or Google's servers, the Call-ID may name a host.
        push_id = random_hex(16)
        deadline = now + (self.wait_s if wait_s is None else wait_s)
        parked = ParkedRequest(key, request, aor, push_id, deadline, sleepers, now, account_id)
        self._parked[key] = parked
        self._by_aor.setdefault(aor, set()).add(key)
        heapq.heappush(self._deadlines, (parked.deadline, key))
        return parked

    def has(self, aor: str) -> bool:
        return aor in self._by_aor

    def registered(
        self, aor: str, bindings: Sequence[Binding], now: float
    ) -> list[tuple[ParkedRequest, list[Binding]]]:
        """The parked requests that woken devices of `aor` can now take, with their bindings.

        Args:
            aor: The AOR whose binding set changed.
            bindings: Its complete new set.
            now: The current time on the bindings' clock.
        """
        out: list[tuple[ParkedRequest, list[Binding]]] = []
        for key in list(self._by_aor.get(aor, ())):
            parked = self._parked[key]
            ready: list[Binding] = []
            for sleeper in parked.waiting():
                for binding in bindings:
                    if binding.registered(now) and sleeper.matches(binding):
                        sleeper.awake = True
                        ready.append(binding)
                        break
            if ready:
                out.append((parked, ready))
        return out

    def remove(self, key: str) -> ParkedRequest | None:
        """Stop waiting for `key` (answered, cancelled, or timed out)."""
        parked = self._parked.pop(key, None)
        if parked is not None:
            keys = self._by_aor.get(parked.aor)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_aor[parked.aor]
        return parked

    def expired(self, now: float) -> list[ParkedRequest]:
        """The parked requests whose wait is over; they are removed."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, key = heapq.heappop(self._deadlines)
            parked = self._parked.get(key)
            if parked is not None and parked.deadline <= now:
                self.remove(key)
                out.append(parked)
        return out

    def next_deadline(self) -> float | None:
        while self._deadlines:
            deadline, key = self._deadlines[0]
            if key in self._parked:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def __len__(self) -> int:
        return len(self._parked)
