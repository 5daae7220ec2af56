"""Many upstream registrations kept at once, under one REGISTER rate ceiling (sans-IO).

Every REGISTER ringfence sends to the PBXes leaves through `ready`, which spaces them at
least `1 / max_rate` seconds apart: first registrations, refreshes, retries and the answers
to challenges alike. A restart restores every registration at a random point of
`restore_window_s`, so that the PBX never sees a storm (and the ceiling holds even when the
window is too short for the number of registrations: they then take longer).

The caller (the I/O edge) sends what `ready` gives, hands each final response to
`on_response` (or a timeout to `timed_out`), and calls `ready` again at `wake_at`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ringfence.overlay.registration import State, UpstreamRegistration
from ringfence.sip.message import Request, Response

K = TypeVar("K", bound=Hashable)

#: The grid runs this much under the ceiling, so that what the PBX sees holds it too: a
#: send late within its slot, then the next on time, plus up to 20 ms of jitter on the way
#: and in the PBX's own timestamps (seen here: 202 in a second at Kamailio under a ceiling
#: of 200 with a grid of exactly 1/200 s).
CEILING_MARGIN = 0.02


@dataclass(slots=True)
class _Entry:
    registration: UpstreamRegistration
    #: A REGISTER of this registration is out, waiting for its final response.
    busy: bool = False
    #: Not registered yet: when its first REGISTER is due.
    start_at: float | None = None
    #: Its answer to a challenge, waiting in the queue for a slot (not sent yet).
    queued: Request | None = None
    #: The app was told of the PBX refusing its credentials (once a refusal streak).
    told_refused: bool = False
    #: Until when the PBX may hold a binding it never confirmed: a REGISTER of this key
    #: went unanswered (Timer F), the PBX may have taken it all the same.
    unknown_until: float = -math.inf
    #: The registration this one replaced, while its binding may last (same Contact):
    #: removing the key before this one is taken unregisters with the credentials that
    #: made that binding.
    prior: UpstreamRegistration | None = None
    prior_until: float = -math.inf
    #: New credentials handed while a REGISTER is out, and whether to spread their start:
    #: they replace these once it is answered (RFC 3261 §10.2: one REGISTER at a time).
    replacement: tuple[UpstreamRegistration, bool] | None = None

    def bound_until(self, now: float) -> float:
        """Until when the PBX may hold a binding of this key (in the past: none)."""
        registration = self.registration
        until = max(self.unknown_until, self.prior_until)
        if registration.expires_at is not None:
            until = max(until, registration.expires_at)
        if self.busy:  # a REGISTER out may yet be taken
            until = max(until, now + registration.expires)
        return until

    def unregisterer(self) -> UpstreamRegistration:
        """Whose credentials remove the binding: the ones the PBX took."""
        return _choose(self.registration, self.prior)[0]


def _choose(
    registration: UpstreamRegistration, prior: UpstreamRegistration | None
) -> tuple[UpstreamRegistration, UpstreamRegistration | None]:
    """The credentials to unregister with, and the others to try if the PBX refuses them.

    The ones the PBX took last: the new ones once taken, else those they replaced (the app
    may have handed a wrong password); the new ones still if the user changed it there.
    """
    if registration.accepted or prior is None:
        return registration, None
    return prior, registration


@dataclass(slots=True)
class _Leaving(Generic[K]):
    """A registration removed while it may hold a binding: its unregister (Expires: 0)."""

    key: K
    registration: UpstreamRegistration
    #: Its REGISTER in flight when removed: the unregister waits for its final response
    #: (RFC 3261 §10.2: no new REGISTER before the previous one's final response).
    waiting: bool
    #: The CSeq of the unregister (or of the answer to its challenge) last queued.
    cseq: int = 0
    #: While waiting: the registration it replaced, and until when a binding may last
    #: without the response waited for (see `_Entry`).
    prior: UpstreamRegistration | None = None
    until: float = -math.inf
    #: Where the caller sends it (the PBX of the instance, which is gone by then).
    where: object = None
    #: Other credentials to unregister with if the PBX refuses these (`_choose`).
    fallback: UpstreamRegistration | None = None


def cseq_number(message: Request | Response) -> int:
    """The sequence number of a message's CSeq (-1 when it has none)."""
    number = (message.headers.get("CSeq") or "").split(maxsplit=1)
    return int(number[0]) if number and number[0].isdigit() else -1


class Upkeep(Generic[K]):
    """The registrations of every instance, keyed by the caller's key (an instance id)."""

    def __init__(
        self, max_rate: float, restore_window_s: float, rng: random.Random | None = None
    ) -> None:
        if max_rate <= 0:
            raise ValueError("max_rate must be positive")
        self._interval = (1.0 + CEILING_MARGIN) / max_rate
        self._window = restore_window_s
        self._rng = rng or random.SystemRandom()
        self._entries: dict[K, _Entry] = {}
        # (due, seq, key): lazily invalidated (an entry's due time is checked when popped).
        self._due: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        #: Keys with a request queued, in order (unregisters of removed entries included).
        self._urgent: deque[tuple[K, Request]] = deque()
        #: Queued requests not to send after all (by id: each is held by `_urgent` until
        #: popped, so its id is not reused meanwhile); skipped as `ready` reaches them, so
        #: that removing many keys stays linear.
        self._dropped: set[int] = set()
        self._next_slot = float("-inf")
        self._ended: list[K] = []
        self._refused: list[K] = []
        #: Unregisters going on, by Call-ID, until answered or timed out.
        self._leaving: dict[str, _Leaving[K]] = {}
        #: How many of them each key has.
        self._leaving_keys: dict[K, int] = {}
        #: REGISTERs sent in all (for the bench and the stats).
        self.sent = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def registration(self, key: K) -> UpstreamRegistration | None:
        entry = self._entries.get(key)
        return entry.registration if entry is not None else None

    def set_expires(self, key: K, seconds: int) -> None:
        """Ask for another registration interval from the next REGISTER of `key` on."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.registration.expires = seconds
            if entry.replacement is not None:
                entry.replacement[0].expires = seconds

    def add(self, key: K, registration: UpstreamRegistration, now: float, *, spread: bool) -> None:
        """Keep `registration`; it starts now, or (a restore) at a random point of the window.

        A registration already kept under `key` is replaced (the app handed its account
        again: the new credentials count from now), once a REGISTER of it that is out has
        its final response (RFC 3261 §10.2: one at a time; its outcome says which binding
        there is). The Contact is the same: the new registration takes over the old
        binding (§10.3 step 7), so nothing is unregistered, and until the PBX takes the
        new credentials the old ones are kept to remove that binding if the key is
        removed first.
        """
        old = self._entries.get(key)
        if old is not None:
            # The old credentials' answer to a challenge must not follow the new ones.
            self._drop_queued(old)
            if old.busy:
                # Its REGISTER is out: what it does to the binding is known first.
                old.replacement = (registration, spread)
                return
        self._put(key, registration, now, spread=spread, old=old)

    def _put(
        self,
        key: K,
        registration: UpstreamRegistration,
        now: float,
        *,
        spread: bool,
        old: _Entry | None,
    ) -> None:
        start = now + (self._rng.uniform(0.0, self._window) if spread else 0.0)
        entry = _Entry(registration, start_at=start)
        if old is not None:
            until = old.bound_until(now)
            if until > now:
                entry.prior = old.unregisterer()
                entry.prior_until = until
        self._entries[key] = entry
        heapq.heappush(self._due, (start, next(self._seq), key))

    def remove(self, key: K, now: float, where: object = None) -> bool:
        """Stop keeping `key`; a binding the PBX may hold is removed (Expires: 0).

        Returns:
            Whether an unregister is queued or follows the REGISTER out (`ready` gives
            it; `leaving` says when it is over: answered, its challenge answered, or
            timed out). `where`: the caller's, for `destination` (where to send it).
        """
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        # A challenge answer still queued would register the binding again: dropped.
        self._drop_queued(entry)
        entry.replacement = None  # handed too late: the instance goes
        until = max(entry.unknown_until, entry.prior_until)
        if entry.busy:
            # Its REGISTER is out: the PBX may yet take it. The unregister follows its
            # final response (`on_response`, `timed_out`).
            self._enter(
                _Leaving(
                    key,
                    entry.registration,
                    waiting=True,
                    prior=entry.prior,
                    until=until,
                    where=where,
                )
            )
            return True
        chosen, fallback = _choose(entry.registration, entry.prior)
        if entry.bound_until(now) > now:
            self._unregister(key, chosen, where, fallback)
            return True
        return False

    def _enter(self, leaving: _Leaving[K]) -> None:
        self._leaving[leaving.registration.call_id] = leaving
        self._leaving_keys[leaving.key] = self._leaving_keys.get(leaving.key, 0) + 1

    def _left(self, leaving: _Leaving[K]) -> None:
        del self._leaving[leaving.registration.call_id]
        left = self._leaving_keys.pop(leaving.key) - 1
        if left:
            self._leaving_keys[leaving.key] = left

    def _drop_queued(self, entry: _Entry) -> None:
        """Drop the entry's queued challenge answer: then none of its REGISTERs is out."""
        if entry.queued is not None:
            self._dropped.add(id(entry.queued))
            entry.queued = None
            entry.busy = False

    def _unregister(
        self,
        key: K,
        registration: UpstreamRegistration,
        where: object,
        fallback: UpstreamRegistration | None = None,
    ) -> None:
        request = registration.unregister()
        self._enter(
            _Leaving(
                key,
                registration,
                waiting=False,
                cseq=cseq_number(request),
                where=where,
                fallback=fallback,
            )
        )
        self._urgent.append((key, request))

    def _waited(self, leaving: _Leaving[K], now: float, *, answered: bool) -> None:
        """The REGISTER out when the key was removed is over: unregister if need be."""
        registration = leaving.registration
        self._left(leaving)
        # Unanswered, the PBX may have taken it; answered, the response says.
        if not answered or registration.expires_at is not None or leaving.until > now:
            chosen, fallback = _choose(registration, leaving.prior)
            self._unregister(leaving.key, chosen, leaving.where, fallback or leaving.fallback)

    def send_waiting(self, now: float) -> None:
        """Queue every unregister still waiting for a REGISTER out (the node is leaving)."""
        for leaving in [item for item in self._leaving.values() if item.waiting]:
            self._waited(leaving, now, answered=False)

    def leaving(self, call_id: str) -> bool:
        """Whether the unregister of the registration with this Call-ID is still going on."""
        return call_id in self._leaving

    def leaving_key(self, key: K) -> bool:
        """Whether an unregister of `key` (removed) is still going on."""
        return key in self._leaving_keys

    def leaving_any(self) -> bool:
        """Whether any unregister is still going on."""
        return bool(self._leaving)

    def destination(self, call_id: str) -> object:
        """The `where` given to `remove` for the unregister with this Call-ID."""
        leaving = self._leaving.get(call_id)
        return leaving.where if leaving is not None else None

    def _slot(self, now: float) -> bool:
        # The slots lie on a grid 1/max_rate apart. A sender late by less than a slot keeps
        # the grid (each send stays within its own slot); later than that, the grid starts
        # again from now: missed slots are lost, never made up by a burst (one measured
        # here: 13-28 ms stalls, then 3-5 REGISTERs in 1 ms, put 205 in a second under a
        # ceiling of 200). With the grid 2% under the ceiling, any window of one second
        # holds at most max_rate + 1 where the PBX sees them (jitter of up to 20 ms).
        if self._next_slot > now:
            return False
        late = now - self._next_slot
        self._next_slot = (now if late >= self._interval else self._next_slot) + self._interval
        return True

    def ready(self, now: float) -> list[tuple[K, Request]]:
        """The REGISTERs to send now, within the rate ceiling."""
        out: list[tuple[K, Request]] = []
        while self._urgent:
            key, queued = self._urgent[0]
            if id(queued) in self._dropped:
                self._dropped.discard(id(queued))
                self._urgent.popleft()
                continue
            if not self._slot(now):
                break
            self._urgent.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.queued is queued:
                entry.queued = None
            out.append((key, queued))
        while not self._urgent and self._due and self._due[0][0] <= now:
            due, _, key = self._due[0]
            entry = self._entries.get(key)
            if entry is None or entry.busy or self._stale(entry, due):
                heapq.heappop(self._due)
                continue
            if not self._slot(now):
                break
            heapq.heappop(self._due)
            if entry.start_at is not None:
                entry.start_at = None
                request: Request | None = entry.registration.start(now)
            else:
                request = entry.registration.due(now)
            if request is not None:
                entry.busy = True
                out.append((key, request))
        self.sent += len(out)
        return out

    @staticmethod
    def _stale(entry: _Entry, due: float) -> bool:
        if entry.start_at is not None:
            return entry.start_at != due
        return entry.registration.due_at != due

    def on_response(
        self, key: K, response: Response, now: float, request: Request | None = None
    ) -> None:
        """The final response to a REGISTER of `key`.

        `request`: the REGISTER it answers, when known. Its Call-ID and CSeq say whose it
        is (the transaction matched the response by its Via branch, RFC 3261 §17.1.3: a
        PBX that mangles the response's would otherwise leave the key waiting for good).
        """
        sent = request if request is not None else response
        call_id = sent.headers.get("Call-ID") or ""
        leaving = self._leaving.get(call_id)
        if leaving is not None:
            self._leaving_answered(leaving, response, now, cseq_number(sent))
            return
        entry = self._entries.get(key)
        if entry is None:
            return  # removed meanwhile
        if call_id != entry.registration.call_id:
            return  # not its REGISTER (a stray)
        follow = entry.registration.on_response(response, now)
        if entry.replacement is not None:
            # New credentials wait: the exchange ends here (a challenge is not answered).
            entry.busy = False
            self._replace(key, entry, now)
            return
        if follow is not None:
            entry.queued = follow
            self._urgent.append((key, follow))  # still busy: the exchange goes on
            return
        entry.busy = False
        registration = entry.registration
        if registration.refused and not entry.told_refused:
            entry.told_refused = True
            self._refused.append(key)
        elif registration.state is State.REGISTERED:
            entry.told_refused = False
            # The binding is known now (the 2xx lists it), and these credentials hold it.
            entry.unknown_until = entry.prior_until = -math.inf
            entry.prior = None
        self._schedule(key, entry)

    def _leaving_answered(
        self, leaving: _Leaving[K], response: Response, now: float, cseq: int
    ) -> None:
        registration = leaving.registration
        if leaving.waiting:
            # The REGISTER that was out when the key was removed: its outcome says
            # whether the PBX holds a binding to remove (its challenge is not answered).
            registration.on_response(response, now)
            self._waited(leaving, now, answered=True)
            return
        if cseq != leaving.cseq:
            return  # not the answer to the unregister last sent
        follow = registration.on_response(response, now)
        if follow is not None:
            leaving.cseq = cseq_number(follow)  # the unregister's challenge answered
            self._urgent.append((leaving.key, follow))
            return
        self._left(leaving)
        fallback = leaving.fallback
        if not 200 <= response.status < 300 and fallback is not None and not fallback.refused:
            # These credentials no longer hold (the user changed the password on the
            # PBX): the others may.
            self._unregister(leaving.key, fallback, leaving.where)

    def refused(self) -> list[K]:
        """Keys whose credentials the PBX refused since the last call (once a streak)."""
        refused, self._refused = self._refused, []
        return [key for key in refused if key in self._entries]

    def timed_out(
        self, key: K, now: float, call_id: str | None = None, cseq: int | None = None
    ) -> None:
        """No final response to a REGISTER of `key` (Timer F, or the transport failed).

        `call_id`, `cseq`: the REGISTER's, when known (an unregister's is not the
        registration in force; the CSeq tells the unregister from an earlier REGISTER).
        """
        leaving = self._leaving.get(call_id) if call_id is not None else None
        if leaving is not None:
            if leaving.waiting:
                # Whether the PBX took it is unknown: the unregister goes all the same.
                self._waited(leaving, now, answered=False)
            elif cseq is None or cseq == leaving.cseq:
                self._left(leaving)
            return
        entry = self._entries.get(key)
        if entry is None:
            return
        if call_id is not None and entry.registration.call_id != call_id:
            return
        # The PBX may have taken it: a binding that may last this long (sent before now).
        entry.unknown_until = max(entry.unknown_until, now + entry.registration.expires)
        entry.registration.timed_out(now)
        entry.busy = False
        if entry.replacement is not None:
            self._replace(key, entry, now)
            return
        self._schedule(key, entry)

    def _replace(self, key: K, entry: _Entry, now: float) -> None:
        """Put the credentials handed meanwhile in place of `entry`'s."""
        assert entry.replacement is not None
        registration, spread = entry.replacement
        self._put(key, registration, now, spread=spread, old=entry)

    def _schedule(self, key: K, entry: _Entry) -> None:
        if entry.registration.state is State.ENDED:
            self._ended.append(key)
            return
        due = entry.registration.due_at
        if due is not None:
            heapq.heappush(self._due, (due, next(self._seq), key))

    def ended(self) -> list[K]:
        """Keys whose registration was given up (12 hours of failures).

        The caller removes them (`remove`): the last REGISTER may have gone unanswered,
        and a binding the PBX may hold is then unregistered.
        """
        ended, self._ended = self._ended, []
        gone = []
        for key in ended:
            entry = self._entries.get(key)
            # Added again since (the app handed its account anew): that one goes on.
            if entry is not None and entry.registration.state is State.ENDED and not entry.busy:
                gone.append(key)
        return gone

    def wake_at(self, now: float) -> float | None:
        """When `ready` may have something next (None: nothing is scheduled)."""
        while self._urgent and id(self._urgent[0][1]) in self._dropped:
            self._dropped.discard(id(self._urgent.popleft()[1]))
        if self._urgent:
            return max(self._next_slot, now)
        while self._due:
            due, _, key = self._due[0]
            entry = self._entries.get(key)
            if entry is None or entry.busy or self._stale(entry, due):
                heapq.heappop(self._due)
                continue
            return max(due, self._next_slot)
        return None

    def states(self) -> dict[State, int]:
        """How many registrations are in each state."""
        counts: dict[State, int] = {}
        for entry in self._entries.values():
            state = entry.registration.state
            counts[state] = counts.get(state, 0) + 1
        return counts
