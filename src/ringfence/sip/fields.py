"""Structured header fields: Via, CSeq, Max-Forwards, Expires (RFC 3261 §20, §25.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ringfence.sip.memo import memoized
from ringfence.sip.uri import (
    Params,
    URIError,
    find_param,
    params_text,
    parse_generic_params,
    split_hostport,
)

#: RFC 3261 §8.1.1.7: branches made by RFC 3261 elements start with this cookie.
MAGIC_COOKIE = "z9hG4bK"
#: RFC 3261 §8.1.1.5: the CSeq number is below 2**31.
CSEQ_MAX = 2**31 - 1
#: RFC 3261 §25.1: delta-seconds fit in 32 bits.
DELTA_SECONDS_MAX = 2**32 - 1

# sent-protocol = protocol-name SLASH protocol-version SLASH transport; SLASH = SWS "/" SWS;
# then LWS, then sent-by (RFC 3261 §25.1; RFC 4475 §3.1.1.1 has every whitespace variant).
_SENT_PROTOCOL = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+([^\s;]+(?:\s*:\s*[0-9]+)?)\s*(.*)",
    re.DOTALL,
)
_METHOD = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


class FieldError(URIError):
    """A header field value that does not follow its grammar."""


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    def with_param(self, name: str, value: str | None) -> Via:
        """This Via with `name` set (replaced if present), e.g. `received` (§18.2.1)."""
        kept = tuple((k, v) for k, v in self.params if k.lower() != name.lower())
        return replace(self, params=(*kept, (name, value)))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{params_text(self.params)}"


@memoized(4096)
def parse_via(value: str) -> Via:
    """Parse one Via value (split a header's list first with `Headers.values`).

    Raises:
        FieldError: malformed (RFC 4475 §3.1.2.1: empty parameters).
    """
    match = _SENT_PROTOCOL.fullmatch(value)
    if match is None:
        raise FieldError(f"malformed Via {value[:60]!r}")
    name, version, transport, sent_by, rest = match.groups()
    if not sent_by.isprintable() or " " in sent_by:  # LWS around the colon: rare
        sent_by = re.sub(r"\s+", "", sent_by)
    host, port = split_hostport(sent_by)
    try:
        params = parse_generic_params(rest)
    except URIError as exc:
        raise FieldError(f"Via parameters: {exc}") from exc
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@memoized(4096)
def parse_cseq(value: str) -> CSeq:
    """CSeq = 1*DIGIT LWS Method, the number below 2**31 (RFC 3261 §8.1.1.5).

    Raises:
        FieldError: malformed or out of range (RFC 4475 §3.1.2.4).
    """
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not _METHOD.fullmatch(parts[1]):
        raise FieldError(f"malformed CSeq {value[:40]!r}")
    if len(parts[0]) > 10 or int(parts[0]) > CSEQ_MAX:
        raise FieldError(f"CSeq number {parts[0][:20]} is not below 2**31")
    return CSeq(int(parts[0]), parts[1])


def parse_delta_seconds(value: str, *, maximum: int = DELTA_SECONDS_MAX) -> int:
    """delta-seconds = 1*DIGIT, up to `maximum` (Max-Forwards: 255; Expires: 2**32-1)."""
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 10 or int(text) > maximum:
        raise FieldError(f"{text[:20]!r} is not a number of 0 to {maximum}")
    return int(text)


def parse_max_forwards(value: str) -> int:
    """Max-Forwards = 1*DIGIT; 255 at most in practice (RFC 3261 §20.22, RFC 4475 §3.1.2.4)."""
    return parse_delta_seconds(value, maximum=255)
