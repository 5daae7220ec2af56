"""URIs (sip, sips, tel and opaque others) and name-addr values, RFC 3261 §19.1 and §25.1.

Values keep their text as received (escapes included): a proxy forwards URIs unchanged, and
comparison (§19.1.4) is a separate, explicit operation. Unknown schemes such as
`urn:service:sos` (RFC 5031) are kept opaque: whether one is acceptable is the caller's call
(416 Unsupported URI Scheme, §21.4.17), not the parser's.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote

from ringfence.sip.errors import RemoteProtocolError
from ringfence.sip.memo import memoized

Params: TypeAlias = tuple[tuple[str, str | None], ...]


class URIError(RemoteProtocolError):
    """Text that is not a URI, or not a well-formed name-addr/addr-spec."""


# -- RFC 3261 §25.1 character classes ---------------------------------------------------------
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved ); user-unreserved = & = + $ , ; ? /
_USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
# password: unreserved, escaped, or one of "&", "=", "+", "$", ",".
_PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")
# paramchar: param-unreserved ("[", "]", "/", ":", "&", "+", "$"), unreserved or escaped.
_PARAMCHARS = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+")
# hname / hvalue: hnv-unreserved = [ ] / ? : + $
_HNAME = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})+")
_HVALUE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})*")
# hostname = *( domainlabel "." ) toplabel [ "." ]; toplabel starts with ALPHA
_DOMAINLABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?:{_DOMAINLABEL}\.)*[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?")
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# tel: RFC 3966 §3, leniently: visual separators allowed, digits required.
# Characters that end a URI inside a header (RFC 3261 §25.1: LWS, "<", ">", DQUOTE).
_URI_DELIMITERS = re.compile(r'[\s<>"]')
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@memoized(4096)
def is_ip_address(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address (IPv6 with or without brackets)."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


@memoized(4096)
@memoized(4096)
def is_valid_host(host: str) -> bool:
    """Whether `host` is a hostname, IPv4address or IPv6reference (RFC 3261 §25.1, RFC 5118)."""
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        address = host[1:-1]
        # RFC 5118 §4.10: RFC 3261's ABNF let the "::" before an embedded IPv4 address be
        # written ":::"; implementations must tolerate both forms.
        if ":::" in address and "." in address:
            address = address.replace(":::", "::", 1)
        return _is_ipv6(address)
    if _IPV4.fullmatch(host):
        return all(int(part) <= 255 for part in host.split("."))
    return bool(_HOSTNAME.fullmatch(host))


def split_hostport(text: str) -> tuple[str, int | None]:
    """`host[:port]` → (host, port); IPv6 references keep their brackets.

    Raises:
        URIError: not a valid host, or a port outside 0-65535.
    """
    if text.startswith("["):
        close = text.find("]")
        host, rest = text[: close + 1], text[close + 1 :]
        if close < 0 or (rest and not rest.startswith(":")):
            raise URIError(f"bad IPv6 reference {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_raw = text.partition(":")
        port_text = port_text_raw if colon else None
    if not is_valid_host(host):
        raise URIError(f"bad host {host!r}")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise URIError(f"bad port {port_text!r}")
    return host, int(port_text)


def params_text(params: Params) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def find_param(params: Params, name: str) -> tuple[bool, str | None]:
    lowered = name.lower()
    for key, value in params:
        if key.lower() == lowered:
            return True, value
    return False, None


@dataclass(frozen=True, slots=True)
class SipURI:
    """A sip: or sips: URI (RFC 3261 §19.1.1)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "")
            userinfo += "@"
        port = f":{self.port}" if self.port is not None else ""
        headers = "&".join(f"{name}={value}" for name, value in self.headers)
        return f"{self.scheme}:{userinfo}{self.host}{port}{params_text(self.params)}" + (
            f"?{headers}" if headers else ""
        )

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes decoded (RFC 3261 §19.1.4 compares these)."""
        return None if self.user is None else unquote(self.user, errors="surrogateescape")


@dataclass(frozen=True, slots=True)
class TelURI:
    """A tel: URI (RFC 3966): a telephone number and its parameters."""

    number: str
    params: Params = ()
    scheme: str = "tel"

    def __str__(self) -> str:
        return f"tel:{self.number}{params_text(self.params)}"


@dataclass(frozen=True, slots=True)
class AbsoluteURI:
    """Any other scheme, kept opaque (e.g. `urn:service:sos`)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


URI: TypeAlias = SipURI | TelURI | AbsoluteURI


def _parse_uri_params(text: str) -> Params:
    params: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not _PARAMCHARS.fullmatch(name) or (eq and not _PARAMCHARS.fullmatch(value)):
            raise URIError(f"bad URI parameter {part!r}")
        params.append((name, value if eq else None))
    return tuple(params)


def _parse_sip(scheme: str, rest: str) -> SipURI:
    user = password = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, colon, password_text = userinfo.partition(":")
        if not _USER.fullmatch(user):
            raise URIError(f"bad user part {user!r}")
        if colon:
            if not _PASSWORD.fullmatch(password_text):
                raise URIError("bad password part")
            password = password_text
    rest, question, headers_text = rest.partition("?")
    hostport, semi, params_text = rest.partition(";")
    host, port = split_hostport(hostport)
    params = _parse_uri_params(params_text) if semi else ()
    headers: list[tuple[str, str]] = []
    if question:
        for part in headers_text.split("&"):
            name, eq, value = part.partition("=")
            if not eq or not _HNAME.fullmatch(name) or not _HVALUE.fullmatch(value):
                raise URIError(f"bad URI header {part!r}")
            headers.append((name, value))
    return SipURI(scheme.lower(), user, host, port, password, params, tuple(headers))


@memoized(8192)
def parse_uri(text: str) -> URI:
    """Parse an absolute URI: sip/sips fully, tel leniently, other schemes opaquely.

    Raises:
        URIError: not a URI, or a malformed sip/sips/tel URI.
    """
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme) or not rest:
        raise URIError(f"not a URI: {text[:60]!r}")
    if _URI_DELIMITERS.search(rest):
        raise URIError(f"whitespace or delimiter inside URI {text[:60]!r}")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return _parse_sip(lowered, rest)
    if lowered == "tel":
        number, semi, params_text = rest.partition(";")
        if not _TEL_NUMBER.fullmatch(number):
            raise URIError(f"bad telephone number {number!r}")
        return TelURI(number, _parse_uri_params(params_text) if semi else ())
    return AbsoluteURI(scheme, rest)


# -- name-addr / addr-spec (RFC 3261 §20.10, §25.1) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From, To, Contact, Route or Record-Route value: display name, URI, header params."""

    uri: URI
    display_name: str | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)[1]

    def has_param(self, name: str) -> bool:
        return find_param(self.params, name)[0]

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def __str__(self) -> str:
        name = f"{quote_display_name(self.display_name)} " if self.display_name else ""
        return f"{name}<{self.uri}>{params_text(self.params)}"


def quote_display_name(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted-string at `start` (which holds `"`): its unescaped content and its end."""
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text):
                break
            out.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(out), index + 1
        out.append(char)
        index += 1
    raise URIError("unterminated quoted string")


def split_params(text: str) -> list[str]:
    """Split `;a=1 ; b = "x;y"` at semicolons outside quoted strings (SEMI = SWS ";" SWS)."""
    if '"' not in text:
        return text.split(";")  # no quoted string can hide a semicolon
    parts: list[str] = []
    start = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':
            _, index = _read_quoted(text, index)
            continue
        if char == ";":
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def parse_generic_params(text: str) -> Params:
    """`*( SEMI generic-param )`, where `text` starts at the first `;`.

    generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string.
    Quoted values keep their quotes, so they serialise back unchanged.

    Raises:
        URIError: an empty or malformed parameter.
    """
    stripped = text.strip()
    if not stripped:
        return ()
    if not stripped.startswith(";"):
        raise URIError(f"expected ';' before parameters, got {stripped[:20]!r}")
    params: list[tuple[str, str | None]] = []
    for part in split_params(stripped[1:]):
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not _TOKEN.fullmatch(name):
            raise URIError(f"bad parameter {part.strip()[:30]!r}")
        if eq:
            if value.startswith('"'):
                _, end = _read_quoted(value, 0)
                if end != len(value):
                    raise URIError(f"text after quoted value of {name!r}")
            # gen-value = token / host / quoted-string; Via's received takes a bare IPv6
            # address (RFC 3261 §25.1 via-received, RFC 5118 §4.5).
            elif not (_TOKEN.fullmatch(value) or is_valid_host(value) or _is_ipv6(value)):
                raise URIError(f"bad value for parameter {name!r}")
        params.append((name, value if eq else None))
    return tuple(params)


# The form nearly every From, To, Contact and Route value takes, <sip:user@host:port;params>
# then header parameters, with no display name, quoted string, whitespace, password or URI
# headers. `_parse_plain_name_addr` takes it apart in one match; everything else, and every
# error, is `_parse_name_addr`'s.
_PLAIN_NAME_ADDR = re.compile(
    r"<([sS][iI][pP][sS]?):(?:([^@<>;?:\s\"]+)@)?([^@<>;?:\s\"\[\]]+)(?::([0-9]{1,5}))?"
    r"((?:;[^@<>;?\s\"]*)*)>((?:;[^@<>;\s\"]*)*)"
)


@memoized(8192)
def parse_name_addr(value: str) -> NameAddr:
    """Parse one From/To/Contact/Route value: `name-addr` or `addr-spec`, then params.

    Raises:
        URIError: malformed (RFC 4475 §3.1.2.6, §3.1.2.13, §3.1.2.14, §3.1.2.15).
    """
    match = _PLAIN_NAME_ADDR.fullmatch(value)
    if match is not None:
        plain = _parse_plain_name_addr(match)
        if plain is not None:
            return plain
    return _parse_name_addr(value)


def _parse_plain_name_addr(match: re.Match[str]) -> NameAddr | None:
    """The value `_PLAIN_NAME_ADDR` matched, with `_parse_name_addr`'s checks; None: ask it."""
    scheme, user, host, port_text, uri_params, header_params = match.groups()
    if user is not None and not _USER.fullmatch(user):
        return None
    if not is_valid_host(host):
        return None
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None
    try:
        params = _parse_uri_params(uri_params[1:]) if uri_params else ()
        header = parse_generic_params(header_params) if header_params else ()
    except URIError:
        return None
    return NameAddr(SipURI(scheme.lower(), user, host, port, None, params), None, header)


def _parse_name_addr(value: str) -> NameAddr:
    text = value.strip(" \t")
    display: str | None = None
    rest: str
    if text.startswith('"'):
        display, end = _read_quoted(text, 0)
        rest = text[end:].lstrip(" \t")
        if not rest.startswith("<"):
            raise URIError("a quoted display name must be followed by <URI>")
    elif "<" in text:
        name = text[: text.index("<")].strip(" \t")
        # display-name = *(token LWS): tokens separated by whitespace.
        if name and not all(_TOKEN.fullmatch(word) for word in name.split()):
            raise URIError(f"display name {name[:40]!r} needs quotes")
        display = " ".join(name.split()) or None
        rest = text[text.index("<") :]
    else:
        rest = text
    if rest.startswith("<"):
        close = rest.find(">")
        if close < 0:
            raise URIError("unterminated <URI>")
        inner = rest[1:close]
        # LAQUOT = SWS "<" and RAQUOT = ">" SWS: no whitespace inside the brackets.
        uri = parse_uri(inner)
        params = parse_generic_params(rest[close + 1 :])
        return NameAddr(uri, display, params)
    # addr-spec without brackets: parameters after it are header parameters, and the URI
    # itself may hold no ',', '?' or ';' (RFC 3261 §20.10).
    semi = rest.find(";")
    uri_text = rest if semi < 0 else rest[:semi]
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text or "," in uri_text:
        raise URIError("a URI with '?' or ',' must be enclosed in <>")
    uri = parse_uri(uri_text)
    params = parse_generic_params(rest[semi:]) if semi >= 0 else ()
    return NameAddr(uri, None, params)
