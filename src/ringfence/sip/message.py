"""SIP messages: requests, responses and their header fields (RFC 3261 §7).

Messages are immutable values. Header fields keep their order and their values exactly as
received (after unfolding, RFC 3261 §7.3.1), so a proxy forwards what it was given; names are
normalised to one spelling per header, compact forms expanded (§7.3.3), so lookups are simple.
A parsed message also keeps the bytes it came from (`raw`), which equality ignores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

SIP_VERSION = "SIP/2.0"

#: RFC 3261 §7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "Flow-Timer",
    "From",
    "Geolocation",
    "Geolocation-Routing",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]
_CANONICAL = {name.lower(): name for name in _KNOWN}
_CANONICAL.update(COMPACT_FORMS)


def canonical_name(name: str) -> str:
    """One spelling per header: compact forms expanded, known names in their RFC case.

    Unknown names are kept as received: header names compare case-insensitively
    (RFC 3261 §7.3.1), which `Headers` does for them.
    """
    return _names(name)[0]


def _lookup_key(name: str) -> str:
    return _KEYS.get(name) or _names(name)[1]


#: Header names as written -> (canonical name, lookup key). Every message names the same few
#: dozen headers; a peer inventing names stops adding entries at the bound.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_MAX = 4096


#: Header names as written -> lookup key, the hot half of `_NAMES` (`Headers.get` and the
#: like run a dozen times per message).
_KEYS: dict[str, str] = {}


def _names(name: str) -> tuple[str, str]:
    found = _NAMES.get(name)
    if found is None:
        canonical = _CANONICAL.get(name.lower(), name)
        found = (canonical, canonical.lower())
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = found
            _KEYS[name] = found[1]
    return found


#: Headers whose value is a comma-separated list (RFC 3261 §7.3.1: they may be split over
#: several header lines, or combined into one).
LIST_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Allow-Events",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Path",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    }
)


def split_list(value: str) -> list[str]:
    """Split a list header's value at commas outside quoted strings and angle brackets."""
    if "," not in value:
        return [value.strip()]  # one value: most Contact, Route and Via lines
    if '"' not in value and "<" not in value:
        # Nothing can hide a comma: most Via, Supported and Allow values.
        return [part.strip() for part in value.split(",")]
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == "," and not in_angle:
            parts.append(value[start:index].strip())
            start = index + 1
    parts.append(value[start:].strip())
    return parts


class Headers:
    """The header fields of a message, in order; an immutable value."""

    __slots__ = ("_first", "_items", "_lists", "_more")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Lookups by lowercase name, built once per message: a proxy reads Via, From, To,
        # Call-ID and CSeq several times for each message it handles. Most names occur once:
        # `_first` has the first value of each, `_more` every value of the repeated ones.
        # Both hold only strings, so the garbage collector does not track them.
        canonical_items: list[tuple[str, str]] = []
        first: dict[str, str] = {}
        more: dict[str, tuple[str, ...]] | None = None
        names = _NAMES
        for name, value in items:
            canonical, key = names.get(name) or _names(name)
            canonical_items.append((canonical, value))
            if key not in first:
                first[key] = value
            elif more is None:
                more = {key: (first[key], value)}
            else:
                more[key] = (*more.get(key, (first[key],)), value)
        self._items: tuple[tuple[str, str], ...] = tuple(canonical_items)
        self._first = first
        self._more = more
        # The split values of list headers, filled on first use (the value is immutable).
        self._lists: dict[str, tuple[str, ...]] | None = None

    def _all(self, key: str) -> tuple[str, ...]:
        if self._more is not None:
            found = self._more.get(key)
            if found is not None:
                return found
        value = self._first.get(key)
        return () if value is None else (value,)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (_KEYS.get(name) or _lookup_key(name)) in self._first

    def get_all(self, name: str) -> list[str]:
        """The value of every header line named `name`, in order."""
        return list(self._all(_KEYS.get(name) or _lookup_key(name)))

    def repeated(self, name: str) -> bool:
        """Whether more than one header line is named `name`."""
        return self._more is not None and (_KEYS.get(name) or _lookup_key(name)) in self._more

    def get(self, name: str) -> str | None:
        """The value of the first header line named `name`, or None."""
        return self._first.get(_KEYS.get(name) or _lookup_key(name))

    def values(self, name: str) -> list[str]:
        """Every value of a list header, over all its lines, split at top-level commas."""
        key = _KEYS.get(name) or _lookup_key(name)
        if self._lists is None:
            self._lists = {}
        split = self._lists.get(key)
        if split is None:
            split = tuple(part for line in self._all(key) for part in split_list(line))
            self._lists[key] = split
        return list(split)

    def add(self, name: str, value: str) -> Headers:
        return Headers((*self._items, (name, value)))

    def prepend(self, name: str, value: str) -> Headers:
        """Add a header line before every other (as a proxy adds its Via, §16.6 step 8)."""
        return Headers(((name, value), *self._items))

    def remove(self, name: str) -> Headers:
        wanted = canonical_name(name).lower()
        return Headers(item for item in self._items if item[0].lower() != wanted)

    def replace(self, name: str, value: str) -> Headers:
        """Set `name` to one line with `value`, where its first line stood (or at the end)."""
        return Headers(self._replaced(name, value))

    def forwarded(self, front: Iterable[tuple[str, str]], name: str, value: str) -> Headers:
        """`front` before every other line and `name` set as `replace` does, in one copy.

        What a proxy does to a request it forwards (RFC 3261 §16.6 steps 3, 4, 8: Max-
        Forwards, Record-Route and Route, Via), without a copy of the whole list per change.
        """
        return Headers((*front, *self._replaced(name, value)))

    def _replaced(self, name: str, value: str) -> list[tuple[str, str]]:
        wanted = canonical_name(name).lower()
        out: list[tuple[str, str]] = []
        placed = False
        for key, old in self._items:
            if key.lower() == wanted:
                if not placed:
                    out.append((key, value))
                    placed = True
            else:
                out.append((key, old))
        if not placed:
            out.append((name, value))
        return out


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION
    raw: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION
    raw: bytes | None = field(default=None, compare=False, repr=False)


Message: TypeAlias = Request | Response


def serialize(message: Message) -> bytes:
    """The message as bytes on the wire: start line, header lines, blank line, body.

    Headers are written as they are; `with_content_length` sets Content-Length to the body.
    """
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} {message.version}"
    else:
        start = f"{message.version} {message.status} {message.reason}"
    lines = [start, *(f"{name}: {value}" for name, value in message.headers), "", ""]
    return "\r\n".join(lines).encode() + message.body


def with_content_length(message: Message) -> Message:
    """The message with Content-Length set to its body's length (RFC 3261 §20.14)."""
    headers = message.headers.replace("Content-Length", str(len(message.body)))
    if isinstance(message, Request):
        return Request(message.method, message.uri, headers, message.body, message.version)
    return Response(message.status, message.reason, headers, message.body, message.version)


#: Reason phrases of RFC 3261 §21 and the extensions ringfence answers with.
REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
}


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` (RFC 3261 §8.2.6.2).

    It copies the request's Via (all of them, in order), From, To (adding `to_tag` unless it
    has a tag), Call-ID and CSeq, then adds `headers`.
    """
    items: list[tuple[str, str]] = [("Via", value) for value in request.headers.get_all("Via")]
    to = request.headers.get("To") or ""
    if to_tag is not None and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    items += [
        ("From", request.headers.get("From") or ""),
        ("To", to),
        ("Call-ID", request.headers.get("Call-ID") or ""),
        ("CSeq", request.headers.get("CSeq") or ""),
    ]
    items.extend(headers)
    items.append(("Content-Length", str(len(body))))
    return Response(status, reason or REASONS.get(status, "Unknown"), Headers(items), body)
