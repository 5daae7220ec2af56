"""The location service: live registrations (RFC 3261 §10), kept in memory, never stored.

A binding ties an address-of-record to one contact of one device: where to send its calls,
which proxies lie on the way (Path, RFC 3327), over which connection it registered (RFC 5626
flows) and, for a later push issue, the Contact parameters it registered with (`pn-*` of
RFC 8599). The registrar decides what the bindings of an AOR are; this module only keeps them
until they expire.

Personal data: a binding holds a user's address, device addresses and push tokens. It lives in
process memory only, disappears when it expires (`lookup` never returns it, `purge` frees it),
and its `repr` leaves all of that out, so a stray log line or traceback cannot carry it.

Contract of a `LocationService`, which every implementation (this one, a later Redis one)
keeps:

1. Keys are canonical AOR strings (`sip:user@domain`, domain lowercased), as the registrar
   builds them; an implementation compares them as opaque text.
2. Time is an argument. `expires_at` and every `now` are seconds on one clock, the caller's;
   a binding is live while `now < binding.until` (its `expires_at`, or the later
   `keep_until` of a push binding whose device sleeps).
3. `lookup(aor, now)` returns the live bindings of `aor`, in the order `replace` stored them,
   as a new list the caller may change. Expired bindings are never returned, purged or not.
4. `replace(aor, bindings, now)` makes `bindings` the complete set of `aor`, atomically: a
   concurrent `lookup` sees the old set or the new one, never a mix (RFC 3261 §10.3 step 7:
   updates are committed all together or not at all). Bindings already expired at `now` are
   dropped; an empty list removes the AOR. Each binding's `aor` must equal `aor`.
   The registrar reads with `lookup` and writes with `replace`. In one process with this
   implementation nothing runs in between (neither method suspends), so REGISTERs for one
   AOR are serialised for free; a shared implementation must give the same guarantee, e.g.
   with an optimistic check (Redis WATCH/MULTI on the AOR key) or a per-AOR lock.
5. `remove_flow(flow_id)` removes every binding whose `source.flow` is `flow_id`, whatever
   its AOR (RFC 5626 §7: a flow that can no longer deliver invalidates its bindings), and
   returns how many it removed.
6. `count()` is the number of bindings held, expired ones included until purged.
7. `purge(now)` frees the bindings expired at `now` and returns how many; a shared store may
   instead expire entries by itself (Redis key TTLs), then `purge` has little to do.
8. Failure: an implementation that cannot reach its store raises `LocationServiceError`
   (the registrar answers 500, RFC 3261 §10.3 step 7). The memory one never does.

Several worker processes of one node (`sip.workers`) each keep a `ReplicaLocationService`:
a full copy, in which every REGISTER for an AOR is processed by one worker, the AOR's owner
(the transport steers it there), so each AOR has a single writer. The owner's `replace`
publishes the new set (`encode_bindings`), and the other copies `apply` it; point 4 holds
because nothing else writes that AOR. A closed flow is announced to every copy, and each
removes its bindings over it (point 5) and refuses them from later updates that crossed the
announcement.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ringfence.sip.transaction import Address

__all__ = [
    "Binding",
    "LocationService",
    "LocationServiceError",
    "MemoryLocationService",
    "ReplicaLocationService",
    "decode_bindings",
    "encode_bindings",
]


class LocationServiceError(Exception):
    """The location store could not be read or written (e.g. a shared store is down)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One registered contact of an address-of-record (RFC 3261 §10, RFC 5626 §6).

    Attributes:
        aor: The canonical address-of-record, `sip:user@domain`, domain lowercased.
        contact: The Contact URI as registered (where requests to the AOR are sent).
        instance: The `+sip.instance` URN without its quotes and brackets (RFC 5626 §4.1).
        reg_id: The `reg-id` (RFC 5626 §4.2), only when outbound processing applied.
        expires_at: When the binding ends, in seconds on the caller's clock.
        q: The Contact's q-value (RFC 3261 §20.10), None when absent.
        call_id: The Call-ID of the REGISTER that made it (RFC 3261 §10.3 step 7).
        cseq: The CSeq number of that REGISTER.
        path: The Path header values of that REGISTER, in order (RFC 3327 §5.3).
        source: Where that REGISTER came from; `source.flow` is set only when the device's
            own connection ends here (RFC 5626 §6), not for one relayed by an edge proxy.
        params: Every Contact header parameter as given, in order (`expires`, `q`,
            `+sip.instance`, `reg-id`, RFC 8599's `pn-provider`, `pn-prid`, `pn-param`, ...).
        user_agent: The User-Agent header of that REGISTER, if any.
        keep_until: For a binding with RFC 8599 push parameters, when it is forgotten:
            after its registration expires the device sleeps, and a request for it wakes it
            by push, until the account's push instance max age has passed (P3). None for
            every other binding.
        pushed_at: For such a binding, when the REGISTER that gave its push parameters came,
            in UNIX seconds (a wall time: APNs dates a token's end in one, and a 410 older
            than this does not prune the binding). 0.0 for every other binding.
    """

    aor: str = field(repr=False)
    contact: str = field(repr=False)
    instance: str | None = field(default=None, repr=False)
    reg_id: int | None = None
    expires_at: float
    q: float | None = None
    call_id: str = field(repr=False)
    cseq: int
    path: tuple[str, ...] = field(default=(), repr=False)
    source: Address = field(repr=False)
    params: tuple[tuple[str, str | None], ...] = field(default=(), repr=False)
    user_agent: str | None = field(default=None, repr=False)
    keep_until: float | None = None
    pushed_at: float = 0.0

    @property
    def until(self) -> float:
        """When the binding is forgotten: its expiry, or later for a push binding."""
        keep = self.keep_until
        return self.expires_at if keep is None or keep < self.expires_at else keep

    def registered(self, now: float) -> bool:
        """Whether the registration itself is current (not only a sleeping push binding)."""
        return self.expires_at > now

    @property
    def flow(self) -> str | None:
        """The flow (connection id) the device registered over, if it ends here."""
        return self.source.flow

    def expires_in(self, now: float) -> float:
        """Seconds left at `now` (negative once expired)."""
        return self.expires_at - now


class LocationService(Protocol):
    """Where live bindings are kept; see the module docstring for the contract."""

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        """The live bindings of `aor` at `now`, in stored order."""
        ...

    async def replace(self, aor: str, bindings: list[Binding], now: float) -> None:
        """Make `bindings` the complete set of `aor`, atomically; expired ones are dropped."""
        ...

    async def remove_flow(self, flow_id: str) -> int:
        """Remove every binding registered over `flow_id`; how many were removed."""
        ...

    async def count(self) -> int:
        """How many bindings are held (expired ones included until purged)."""
        ...

    async def purge(self, now: float) -> int:
        """Free the bindings expired at `now`; how many were freed."""
        ...


def flow_bound(binding: Binding) -> bool:
    """Whether the binding can be reached only over the flow it registered on.

    RFC 5626 outbound registrations (reg-id) and WebSocket clients (RFC 7118 §5: their Contact
    host is not resolvable) are; a plain TCP/TLS registration is not: its Contact can be
    reached over a new connection (RFC 3261 §18.2.2), so it outlives its connection.
    """
    return binding.reg_id is not None or binding.source.transport.upper() in ("WS", "WSS")


class MemoryLocationService:
    """The location service of one process: dicts, no I/O, nothing survives a restart.

    Costs: `lookup`, `replace` and `remove_flow` touch only the bindings of the AORs
    involved (at most the registrar's per-AOR limit each). `purge` pops a heap of
    expiry times, so it does work in proportion to what expired (plus stale heap entries
    left by refreshes), not to everything held.
    """

    def __init__(self) -> None:
        self._by_aor: dict[str, tuple[Binding, ...]] = {}
        # flow id -> the AORs that have a binding over it (RFC 5626 §7 invalidation).
        self._by_flow: dict[str, set[str]] = {}
        # (earliest expires_at of the AOR when it was set, aor); stale entries are
        # recognised on pop and skipped.
        self._expiries: list[tuple[float, str]] = []
        self._count = 0
        #: Called with (aor, new bindings) after every change of an AOR's set: the proxy
        #: forwards a request parked for a sleeping device when it registers (RFC 8599).
        self.on_change: Callable[[str, tuple[Binding, ...]], None] | None = None

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        return self.lookup_now(aor, now)

    async def replace(self, aor: str, bindings: list[Binding], now: float) -> None:
        self.replace_now(aor, bindings, now)

    def lookup_now(self, aor: str, now: float) -> list[Binding]:
        """`lookup` without awaiting: this service is memory (the registrar's fast path)."""
        return [binding for binding in self._by_aor.get(aor, ()) if binding.until > now]

    def replace_now(self, aor: str, bindings: list[Binding], now: float) -> None:
        """`replace` without awaiting."""
        for binding in bindings:
            if binding.aor != aor:
                raise ValueError("every binding must belong to the AOR being replaced")
        self._set(aor, (binding for binding in bindings if binding.until > now))

    async def remove_flow(self, flow_id: str) -> int:
        removed = 0
        for aor in list(self._by_flow.get(flow_id, ())):
            kept = tuple(
                b for b in self._by_aor.get(aor, ()) if not flow_bound(b) or b.flow != flow_id
            )
            removed += len(self._by_aor.get(aor, ())) - len(kept)
            self._set(aor, kept)
        return removed

    async def count(self) -> int:
        return self._count

    async def purge(self, now: float) -> int:
        purged = 0
        while self._expiries and self._expiries[0][0] <= now:
            _, aor = heapq.heappop(self._expiries)
            current = self._by_aor.get(aor, ())
            live = tuple(binding for binding in current if binding.until > now)
            if len(live) != len(current):
                purged += len(current) - len(live)
                self._set(aor, live)
        return purged

    def _set(self, aor: str, bindings: Iterable[Binding]) -> None:
        new = tuple(bindings)
        old = self._by_aor.get(aor, ())
        old_flows = {b.source.flow for b in old if b.source.flow is not None}
        new_flows = {b.source.flow for b in new if b.source.flow is not None}
        for flow_id in old_flows - new_flows:
            aors = self._by_flow[flow_id]
            aors.discard(aor)
            if not aors:
                del self._by_flow[flow_id]
        for flow_id in new_flows - old_flows:
            self._by_flow.setdefault(flow_id, set()).add(aor)
        self._count += len(new) - len(old)
        if new:
            self._by_aor[aor] = new
            heapq.heappush(self._expiries, (min(b.until for b in new), aor))
        else:
            self._by_aor.pop(aor, None)
        if self.on_change is not None:
            self.on_change(aor, new)


def _binding_fields(binding: Binding) -> list[Any]:
    source = binding.source
    return [
        binding.contact,
        binding.instance,
        binding.reg_id,
        binding.expires_at,
        binding.q,
        binding.call_id,
        binding.cseq,
        list(binding.path),
        [source.transport, source.host, source.port, source.flow],
        [list(param) for param in binding.params],
        binding.user_agent,
        binding.keep_until,
        binding.pushed_at,
    ]


def encode_bindings(aor: str, bindings: Iterable[Binding]) -> bytes:
    """The complete binding set of `aor` as bytes for another worker (`decode_bindings`).

    JSON, not pickle: the bytes cross a process boundary, and decoding must not be able to
    run code whatever they hold.
    """
    document = [aor, [_binding_fields(binding) for binding in bindings]]
    return json.dumps(document, separators=(",", ":")).encode()


def decode_bindings(data: bytes) -> tuple[str, tuple[Binding, ...]]:
    """The AOR and bindings `encode_bindings` wrote.

    Raises:
        ValueError: the bytes are not such a document.
    """
    try:
        aor, rows = json.loads(data)
        bindings = tuple(
            Binding(
                aor=aor,
                contact=contact,
                instance=instance,
                reg_id=reg_id,
                expires_at=float(expires_at),
                q=q,
                call_id=call_id,
                cseq=cseq,
                path=tuple(path),
                source=Address(transport, host, port, flow),
                params=tuple((name, value) for name, value in params),
                user_agent=user_agent,
                keep_until=None if keep_until is None else float(keep_until),
                pushed_at=float(pushed_at),
            )
            for (
                contact,
                instance,
                reg_id,
                expires_at,
                q,
                call_id,
                cseq,
                path,
                (transport, host, port, flow),
                params,
                user_agent,
                keep_until,
                pushed_at,
            ) in rows
        )
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"not a binding set: {exc}") from exc
    if not isinstance(aor, str):
        raise ValueError("not a binding set: the AOR is not text")
    return aor, bindings


#: Closed flows a replica remembers, to refuse bindings over them from a late update.
CLOSED_FLOWS_KEPT = 65_536


class ReplicaLocationService(MemoryLocationService):
    """One worker's copy of the node's bindings (see the module docstring).

    Args:
        publish: called with the AOR and its complete new set after every `replace`, that
            is after each write this worker makes as the AOR's owner; not called for
            `apply`, `remove_flow` or `purge`, which every copy does for itself.
    """

    def __init__(self, publish: Callable[[str, tuple[Binding, ...]], None]) -> None:
        super().__init__()
        self._publish = publish
        self._closed: set[str] = set()
        self._closed_order: deque[str] = deque()

    def replace_now(self, aor: str, bindings: list[Binding], now: float) -> None:
        super().replace_now(aor, bindings, now)
        self._publish(aor, self._by_aor.get(aor, ()))

    def apply(self, aor: str, bindings: Iterable[Binding], now: float) -> None:
        """Take the owner's new set of `aor`, less what expired or rode a closed flow."""
        self._set(
            aor,
            (
                binding
                for binding in bindings
                if binding.aor == aor
                and binding.until > now
                and not (flow_bound(binding) and binding.flow in self._closed)
            ),
        )

    async def remove_flow(self, flow_id: str) -> int:
        if flow_id not in self._closed:
            self._closed.add(flow_id)
            self._closed_order.append(flow_id)
            if len(self._closed_order) > CLOSED_FLOWS_KEPT:
                self._closed.discard(self._closed_order.popleft())
        return await super().remove_flow(flow_id)

    def flow_closed(self, flow_id: str) -> bool:
        """Whether `flow_id` was announced closed (of those remembered)."""
        return flow_id in self._closed
