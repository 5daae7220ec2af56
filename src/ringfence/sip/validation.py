"""What a server checks in a request that parsed, and the response it refuses it with.

RFC 3261 §8.2 (UAS behaviour) and §16.3 (proxy request validation), in the order they say:
version, mandatory and single-valued headers, their grammar, the Request-URI scheme, then
extensions (§8.2.2.3) and content (§8.2.3). The answer is a `Rejection` value, not an
exception: the caller turns it into a response on the request's own transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ringfence.sip.fields import (
    MAGIC_COOKIE,
    FieldError,
    parse_cseq,
    parse_delta_seconds,
    parse_max_forwards,
    parse_via,
)
from ringfence.sip.message import SIP_VERSION, Request, Response
from ringfence.sip.uri import SipURI, URIError, parse_name_addr, parse_uri

#: RFC 3261 §8.1.1: every request carries these (Max-Forwards too, but RFC 2543 elements
#: omit it and §16.6 step 3 tells a proxy to add one, so its absence is tolerated).
MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
#: Headers that may appear once only (RFC 3261 §7.3.1, table 2; RFC 4475 §3.3.9, §3.3.10).
SINGLE = (
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Expires",
    "Min-Expires",
)
#: Methods of RFC 3261 and its extensions that this server knows (others are proxied).
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})
# RFC 3261 §20.17: rfc1123-date, always GMT.
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_CALL_ID = re.compile(r"[^\s]+")


@dataclass(frozen=True, slots=True)
class Rejection:
    """The response to give instead of processing the request."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def _options(values: Iterable[str]) -> list[str]:
    return [value.strip() for value in values if value.strip()]


def _check_common(message: Request | Response) -> str | None:
    """The grammar checks requests and responses share; the first failure, as a reason."""
    headers = message.headers
    for name in MANDATORY:
        if headers.get(name) is None:
            return f"Missing {name}"
    for name in SINGLE:
        if headers.repeated(name):
            return f"Multiple {name} values"
    try:
        for value in headers.values("Via"):
            parse_via(value)
        for name in ("From", "To"):
            parse_name_addr(headers.get(name) or "")
        for value in headers.values("Contact"):
            if value != "*":
                parse_name_addr(value)
        parse_cseq(headers.get("CSeq") or "")
        if (max_forwards := headers.get("Max-Forwards")) is not None:
            parse_max_forwards(max_forwards)
        if (expires := headers.get("Expires")) is not None:
            parse_delta_seconds(expires)
    except URIError as exc:
        return f"Bad header: {exc}"
    if not _CALL_ID.fullmatch(headers.get("Call-ID") or ""):
        return "Bad Call-ID"
    if (date := headers.get("Date")) is not None and not _DATE.fullmatch(date.strip()):
        return "Bad Date (RFC 3261 §20.17: rfc1123-date in GMT)"
    return None


def check_request(
    request: Request,
    *,
    supported: frozenset[str] = frozenset(),
    as_uas: bool = True,
    accept: frozenset[str] | None = None,
) -> Rejection | None:
    """Whether to refuse `request`, and how.

    Args:
        request: a request that parsed.
        supported: option tags we implement (Require / Proxy-Require, §8.2.2.3, §16.3 step 6).
        as_uas: we answer the request ourselves, so Require applies (a proxy checks only
            Proxy-Require).
        accept: body types we understand as a UAS; None when bodies pass through unread.
    """
    if request.version != SIP_VERSION:
        return Rejection(505, "Version Not Supported")
    if problem := _check_common(request):
        return Rejection(400, problem)
    cseq = parse_cseq(request.headers.get("CSeq") or "")
    if cseq.method != request.method:
        if request.method not in KNOWN_METHODS:
            # RFC 4475 §3.1.2.18: 501 for an unknown method ages better than 400.
            return Rejection(501, "Not Implemented")
        return Rejection(400, "CSeq method does not match the request method")
    if parse_via(request.headers.values("Via")[0]).branch == MAGIC_COOKIE:
        # RFC 4475 §3.2.1: the cookie announces a transaction id but none follows.
        return Rejection(400, "Missing transaction identifier in the Via branch")
    try:
        uri = parse_uri(request.uri)
    except URIError:
        return Rejection(400, "Bad Request-URI")
    if uri.scheme.lower() not in SUPPORTED_SCHEMES:
        return Rejection(416, "Unsupported URI Scheme")
    if isinstance(uri, SipURI) and uri.headers:
        # RFC 3261 §19.1.5: headers are not allowed in a Request-URI.
        return Rejection(400, "Headers in the Request-URI")
    required = _options(request.headers.values("Proxy-Require"))
    if as_uas:
        required += _options(request.headers.values("Require"))
    unknown = [tag for tag in dict.fromkeys(required) if tag.lower() not in supported]
    if unknown:
        return Rejection(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
    if accept is not None and request.body:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in accept:
            return Rejection(
                415, "Unsupported Media Type", (("Accept", ", ".join(sorted(accept))),)
            )
    return None


def check_response(response: Response) -> str | None:
    """Why `response` must be dropped (RFC 3261 §18.1.2), or None to process it."""
    if response.version != SIP_VERSION:
        return "unknown SIP version"
    if not 100 <= response.status <= 699:
        return f"status {response.status} outside 100-699"
    return _check_common(response)


__all__ = ["FieldError", "Rejection", "check_request", "check_response"]
