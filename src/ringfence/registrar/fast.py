"""REGISTER over UDP answered without the proxy engine: the registrar's fast path, sans-IO.

Most of what a SIP node receives is REGISTER refreshes: every phone every few minutes, and
each twice (a 401, then the answer with credentials). The general path gives each of them a
server transaction object, a task, engine events and an outbox, which costs several times
the registrar's own work (benchmarks/sip/README.md). For a REGISTER whose answer is all in
memory this path runs the same code synchronously instead:

- the same parser and the same request checks (`parse_datagram`, `check_request`); a
  request they refuse is left to the general path, which answers it;
- the same registrar steps (`Registrar.handle_now`: §10.3 steps 2-8, digest, failure
  limits, the rules of `rules.process_register`) with the accounts, the tenant domains and
  the bindings read from memory; when any of them is not loaded it changes nothing and
  leaves the request to the general path, which loads them;
- the transaction of RFC 3261 §17.2.2 reduced to what a completed non-INVITE server
  transaction does over UDP: the final response is kept until Timer J (64*T1) and sent
  again for each retransmission of the request.

It takes only requests the general path would give to the registrar as they are: a REGISTER
with one Via (so no loop to detect and no Path to weigh, RFC 5626 §6 first hop), no Route,
and a Request-URI naming a tenant's domain (one naming the node by address goes the general
way). A request
whose transaction the general path already holds is left to it. The test that both paths
answer alike is tests/registrar/test_fast.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ringfence.registrar.rules import SUPPORTED_OPTIONS
from ringfence.registrar.service import Registrar
from ringfence.sip.errors import ParseError
from ringfence.sip.message import Request, serialize
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import Address, TimerConfig, server_key
from ringfence.sip.uri import SipURI, URIError, parse_uri
from ringfence.sip.validation import check_request
from ringfence.state.location import MemoryLocationService

__all__ = ["FastRegister"]

_REGISTER = b"REGISTER "


class FastRegister:
    """Answers plain REGISTERs from memory; `handle` gives bytes to send, or None.

    Args:
        registrar: The registrar of the general path (its nonces, limits and policy).
        location: The in-memory location service that registrar writes to.
        served: A tenant's SIP domain? True, False, or None when the list is not loaded.
        known: Does the general path hold a server transaction with this key?
        max_header_bytes: The transport's limit on a header block.
        max_headers: The transport's limit on header fields.
        timers: T1, for Timer J (64*T1).
    """

    def __init__(
        self,
        registrar: Registrar,
        location: MemoryLocationService,
        served: Callable[[str], bool | None],
        known: Callable[[str], bool],
        *,
        max_header_bytes: int,
        max_headers: int,
        timers: TimerConfig | None = None,
    ) -> None:
        self._registrar = registrar
        self._location = location
        self._served = served
        self._known = known
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._timer_j = 64 * (timers or TimerConfig()).t1
        # Completed transactions: key -> the final response as sent; and their expiry in
        # the order they completed (Timer J is the same for all, so a FIFO suffices).
        self._answered: dict[str, bytes] = {}
        self._expiry: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        """Completed transactions still answering retransmissions."""
        return len(self._answered)

    def handle(self, data: bytes, source: Address, now: float) -> bytes | None:
        """The response to send back to `source` for the datagram `data`, or None.

        None leaves the datagram to the general path, with nothing changed.

        Args:
            data: One UDP datagram.
            source: Where it came from.
            now: The current time on the SIP clock (bindings, nonces, Timer J).
        """
        if not data.startswith(_REGISTER):
            return None
        self._expire(now)
        try:
            request = parse_datagram(
                data, max_header_bytes=self._max_header_bytes, max_headers=self._max_headers
            )
        except ParseError:
            return None
        if not isinstance(request, Request) or not self._plain(request):
            return None
        key = server_key(request)
        answered = self._answered.get(key)
        if answered is not None:
            return answered  # §17.2.2: a retransmission gets the final response again
        if self._known(key):
            return None
        response = self._registrar.handle_now(request, source, now, self._location)
        if response is None:
            return None
        sent = serialize(response)
        self._answered[key] = sent
        self._expiry.append((now + self._timer_j, key))
        return sent

    def _plain(self, request: Request) -> bool:
        """Whether the general path would hand `request` to the registrar as it is."""
        headers = request.headers
        if request.method != "REGISTER" or headers.get("Route") is not None:
            return False
        if check_request(request, supported=SUPPORTED_OPTIONS, as_uas=True) is not None:
            return False
        if len(headers.values("Via")) != 1:
            return False
        try:
            uri = parse_uri(request.uri)
        except URIError:
            return False
        return isinstance(uri, SipURI) and self._served(uri.host) is True

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, key = expiry.popleft()
            self._answered.pop(key, None)
