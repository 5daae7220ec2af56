"""Binding-refresh pushes (RFC 8599 `+sip.pnsreg`): wake a device to REGISTER again in time.

A UA that puts the `+sip.pnsreg` media feature tag in the Contact of its REGISTER asks the
proxy to wake it by push before the binding expires, so that it stays registered while its
app is suspended (RFC 8599 §5.3, §14.3). The 200 then carries `+sip.pnsreg="N"` in
Feature-Caps: the push comes at least N seconds before expiry. A refresh that arrives first
makes the push unneeded: only the registration that is about to lapse is pushed.

Pure bookkeeping, like `parking`: the driver feeds binding changes and time, and sends
what is due through the `Waker`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ringfence.proxy.parking import Registration, Sleeper, sleepers_of
from ringfence.sip.pn import PNSREG_S, PNSREG_TAG


class Refreshable(Registration, Protocol):
    """What the schedule needs of a binding (a `state.location.Binding`)."""

    @property
    def expires_at(self) -> float: ...

    @property
    def params(self) -> tuple[tuple[str, str | None], ...]: ...


def wants_refresh(binding: Refreshable) -> bool:
    """Whether the binding's Contact asked for binding-refresh pushes."""
    return any(name.lower() == PNSREG_TAG for name, _ in binding.params)


def refresh_at(expires_at: float, now: float) -> float:
    """When to push: PNSREG_S before expiry, or halfway for a shorter registration."""
    if expires_at - now > 2 * PNSREG_S:
        return expires_at - PNSREG_S
    return now + (expires_at - now) / 2


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    aor: str = field(compare=False)
    registration: tuple[str, int] = field(compare=False)
    sleeper: Sleeper = field(compare=False)


class RefreshSchedule:
    """The binding-refresh pushes to come."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        #: The registrations of each AOR that wait for a push: what a due entry must match.
        self._current: dict[str, set[tuple[str, int]]] = {}
        #: Registrations pushed already: not again, whatever else changes for the AOR.
        self._pushed: dict[str, set[tuple[str, int]]] = {}

    def tracks(self, aor: str) -> bool:
        return aor in self._current or aor in self._pushed

    def changed(self, aor: str, bindings: Sequence[Refreshable], now: float) -> None:
        """`aor` has a new set of bindings: schedule its refresh pushes afresh."""
        current: set[tuple[str, int]] = set()
        present = {(b.call_id, b.cseq) for b in bindings}
        pushed = self._pushed.pop(aor, set()) & present
        if pushed:
            self._pushed[aor] = pushed
        for binding in bindings:
            if binding.expires_at <= now or not wants_refresh(binding):
                continue
            registration = (binding.call_id, binding.cseq)
            if registration in pushed or registration in self._current.get(aor, ()):
                continue
            sleepers = sleepers_of([binding])
            if not sleepers:
                continue  # no push parameters: nothing to wake it with
            current.add(registration)
            due = refresh_at(binding.expires_at, now)
            heapq.heappush(self._heap, _Entry(due, aor, registration, sleepers[0]))
        # Scheduled registrations that are still there keep their entry.
        current |= self._current.get(aor, set()) & present
        if current:
            self._current[aor] = current
        else:
            self._current.pop(aor, None)

    def due(self, now: float) -> list[tuple[str, Sleeper]]:
        """The devices to push now; each once per registration."""
        out = []
        while self._heap and self._heap[0].due <= now:
            entry = heapq.heappop(self._heap)
            waiting = self._current.get(entry.aor)
            if waiting is None or entry.registration not in waiting:
                continue  # refreshed, removed, or pushed already
            waiting.discard(entry.registration)
            if not waiting:
                del self._current[entry.aor]
            self._pushed.setdefault(entry.aor, set()).add(entry.registration)
            out.append((entry.aor, entry.sleeper))
        return out

    def next_deadline(self) -> float | None:
        while self._heap:
            entry = self._heap[0]
            waiting = self._current.get(entry.aor)
            if waiting is not None and entry.registration in waiting:
                return entry.due
            heapq.heappop(self._heap)
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self._current.values())
