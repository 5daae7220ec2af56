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

import re
from collections import deque
from collections.abc import Callable

from ringfence.registrar.rules import SUPPORTED_OPTIONS
from ringfence.registrar.service import Registrar
from ringfence.sip.errors import ParseError
from ringfence.sip.message import SIP_VERSION, Headers, Request, serialize
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import Address, TimerConfig, server_key
from ringfence.sip.uri import SipURI, URIError, parse_uri
from ringfence.sip.validation import check_request
from ringfence.state.location import MemoryLocationService

__all__ = ["FastRegister"]

_REGISTER = b"REGISTER "

# The strict forms `FastRegister._read` reads a REGISTER in. Each is
# a subset of what the parser and `check_request` accept (RFC 3261 §25.1), so a request in
# these forms passes them; tests/registrar/test_fast.py checks both paths answer alike.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_TOP = r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_OCTET}(?:\.{_OCTET}){{3}}|(?:{_LABEL}\.)*{_TOP})"
_USER = r"[A-Za-z0-9._~-]+"
_PARAM = r"[A-Za-z0-9._~-]+(?:=[A-Za-z0-9._~-]+)?"
_DISPLAY = r'(?:"[A-Za-z0-9 ._-]*" ?)?'
#: Printable ASCII, no whitespace at either end (the parser would strip it).
_TEXT = r"[!-~](?:[ -~]*[!-~])?"
#: groups: the Request-URI, its host.
_START = re.compile(rf"REGISTER (sip:({_HOST}))(?: SIP/2\.0)", re.ASCII)
_LINES: dict[str, re.Pattern[str]] = {
    # groups: sent-by host, port, branch (magic cookie and at least one character more)
    "Via": re.compile(
        rf"SIP/2\.0/UDP ({_HOST})(?::([1-9][0-9]{{0,4}}))?"
        rf"(?:;rport)?;branch=(z9hG4bK[A-Za-z0-9._~!%*+`'-]+)(?:;rport)?"
    ),
    "Max-Forwards": re.compile(_OCTET),
    "From": re.compile(rf"{_DISPLAY}<sip:{_USER}@{_HOST}>;tag=[A-Za-z0-9._~!%*+`'-]+"),
    # groups: user, host
    "To": re.compile(rf"{_DISPLAY}<sip:({_USER})@({_HOST})>"),
    "Call-ID": re.compile(r"[A-Za-z0-9._~!%*+`'()<>:/\[\]?{}@-]+"),
    "CSeq": re.compile(r"[0-9]{1,9} REGISTER"),  # below 2**31
    "Contact": re.compile(
        rf"{_DISPLAY}<sip:(?:{_USER}@)?{_HOST}(?::[0-9]{{1,5}})?(?:;{_PARAM})*>(?:;{_PARAM})*"
    ),
    "Expires": re.compile(r"[0-9]{1,9}"),
    "Content-Length": re.compile(r"0"),
    # Checked by the registrar (a malformed one is answered 400 on either path).
    "Authorization": re.compile(_TEXT),
    # Read by nobody but the registrar, which keeps User-Agent as it is.
    "User-Agent": re.compile(_TEXT),
    "Allow": re.compile(_TEXT),
    "Supported": re.compile(_TEXT),
    "Allow-Events": re.compile(_TEXT),
    "Accept": re.compile(_TEXT),
}
_LINE_NAMES = {
    **{name: name for name in _LINES},
    **{name.lower(): name for name in _LINES},
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "k": "Supported",
    "u": "Allow-Events",
    "CSEQ": "CSeq",
    "Call-Id": "Call-ID",
}
_NEEDED = frozenset({"Via", "From", "To", "Call-ID", "CSeq", "Contact"})


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
        plain = self._read(data)
        if plain is None:
            try:
                message = parse_datagram(
                    data, max_header_bytes=self._max_header_bytes, max_headers=self._max_headers
                )
            except ParseError:
                return None
            if not isinstance(message, Request) or not self._plain(message):
                return None
            request, key = message, server_key(message)
        else:
            request, key = plain
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

    def _read(self, data: bytes) -> tuple[Request, str] | None:
        """The request and its transaction key, when every line has its form in `_LINES`.

        Those forms are a subset of what the parser and `check_request` accept, so such a
        request needs neither: this reads it in one pass over its lines. Anything else,
        None, goes through them.
        """
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 != len(data) or end + 4 > self._max_header_bytes:
            return None
        try:
            lines = data[:end].decode("ascii").split("\r\n")
        except UnicodeDecodeError:
            return None
        start = _START.fullmatch(lines[0])
        if start is None or len(lines) > self._max_headers:
            return None
        items: list[tuple[str, str]] = []
        seen: set[str] = set()
        via: re.Match[str] | None = None
        for line in lines[1:]:
            name, colon, value = line.partition(": ")
            canonical = _LINE_NAMES.get(name)
            if canonical is None or not colon or canonical in seen:
                return None
            match = _LINES[canonical].fullmatch(value)
            if match is None:
                return None
            seen.add(canonical)
            items.append((canonical, value))
            if canonical == "Via":
                via = match
        if via is None or not seen >= _NEEDED:
            return None
        port = via[2]
        if (port is not None and int(port) > 65535) or self._served(start[2]) is not True:
            return None
        request = Request("REGISTER", start[1], Headers(items), b"", SIP_VERSION, data)
        # `server_key`'s form (RFC 3261 §17.2.3: branch, sent-by, method).
        return request, f"s|{via[3]}|{via[1]}:{port}|REGISTER"

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
