"""HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 7616, RFC 8760).

Accounts keep their credentials only as HA1 = H(username ":" realm ":" password) for each
algorithm (RFC 7616 §3.4.2), never the password itself: HA1 is what a registrar needs to check
a digest response, and a leaked HA1 does not reveal the password used elsewhere.

Theory of operation (sans-IO: no sockets, no clock; the caller passes `now` in seconds):

* Headers. `parse_challenge` reads a WWW-Authenticate/Proxy-Authenticate value and
  `parse_credentials` an Authorization/Proxy-Authorization value, following the grammar of
  RFC 3261 §25.1. Both raise only `DigestError` subclasses, whatever the text. `render()` writes
  a value back that parses to an equal object.
* Server. `DigestServer.challenge` issues one challenge per algorithm, SHA-256 first and MD5
  second (RFC 8760 §2.3: in order of preference), sharing one nonce. The nonce carries its
  own issue time and an HMAC over it, so any node that shares the secret can check it
  without shared state.
  `DigestServer.verify` checks a response against the account's HA1 values and returns a
  `VerifyResult`. It never raises for anything a peer can send.
* Client. `choose_challenge` picks the best challenge a 401/407 offered, and `answer` computes
  the credentials for it.

Replay protection (RFC 7616 §3.4, "nc"): with qop=auth every request carries a nonce-count.
The server remembers, per nonce, the highest count that verified, and rejects any count not
above it. This is in-memory state of one `DigestServer`, bounded in size and pruned as nonces
expire; a node that did not see the earlier request cannot detect its replay, so a cluster
should route a client to the same node or accept that window (the nonce lifetime). Within a
node the nonce names the worker process that issued it (its `scope`), and only that worker
accepts it: the others answer STALE, and the client fetches a nonce of theirs.

Clients that send no qop (RFC 2069, kept by RFC 3261 §22.4 for compatibility) are accepted
unless the server is built with ``accept_without_qop=False``. Their response has no
nonce-count, so it can be replayed unchanged until the nonce expires; the short nonce
lifetime is the only bound on that.

Errors::

    DigestError
    ├── MalformedHeaderError        the text does not follow RFC 3261 §25.1
    │   ├── DuplicateParameterError a parameter appears twice
    │   └── MissingParameterError   a parameter the scheme requires is absent
    ├── UnsupportedSchemeError      the scheme is not Digest (Basic, Bearer, …)
    ├── UnsupportedAlgorithmError   no algorithm we can compute (answer, choose_challenge)
    └── UnsupportedQopError         the challenge offers qop but not "auth" (answer)
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping

from ringfence.sip.memo import memoized
from ringfence.sip.randomness import random_bytes, random_hex

__all__ = [
    "Challenge",
    "Credentials",
    "DigestAlgorithm",
    "DigestError",
    "DigestRealms",
    "DigestServer",
    "DuplicateParameterError",
    "MalformedHeaderError",
    "MissingParameterError",
    "UnsupportedAlgorithmError",
    "UnsupportedQopError",
    "UnsupportedSchemeError",
    "VerifyResult",
    "VerifyStatus",
    "answer",
    "choose_challenge",
    "ha1",
    "new_cnonce",
    "parse_challenge",
    "parse_credentials",
]


class DigestAlgorithm(enum.StrEnum):
    #: RFC 3261 §22.4; still what most deployed phones send.
    MD5 = "MD5"
    #: RFC 8760 §2.2; preferred when the client offers it.
    SHA256 = "SHA-256"


def _digest_hex(algorithm: DigestAlgorithm, data: bytes) -> str:
    # MD5 here is the digest scheme's own hash (RFC 3261 §22.4), not our choice of security.
    # The named constructors: `hashlib.new(name)` costs a lookup per call, three per request.
    if algorithm is DigestAlgorithm.MD5:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    return hashlib.sha256(data).hexdigest()


def _hash(algorithm: DigestAlgorithm, data: str) -> str:
    return _digest_hex(algorithm, data.encode())


def ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """HA1 of RFC 7616 §3.4.2 for the non-session algorithms, as lowercase hex."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


# --- errors -------------------------------------------------------------------------------


class DigestError(Exception):
    """Base of every error this module raises for a header or a challenge it cannot use."""


class MalformedHeaderError(DigestError):
    """The header value does not follow the grammar of RFC 3261 §25.1."""


class DuplicateParameterError(MalformedHeaderError):
    """A parameter appears twice (names compare case-insensitively)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"parameter {_shorten(name)!r} appears more than once")
        self.name = name


class MissingParameterError(MalformedHeaderError):
    """A parameter that RFC 3261 §25.1 requires is absent."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"{where} has no {name!r} parameter")
        self.name = name


class UnsupportedSchemeError(DigestError):
    """The header uses an authentication scheme other than Digest."""

    def __init__(self, scheme: str) -> None:
        super().__init__(f"authentication scheme {_shorten(scheme)!r} is not Digest")
        self.scheme = scheme


class UnsupportedAlgorithmError(DigestError):
    """No challenge offers an algorithm this module computes (MD5 or SHA-256)."""


class UnsupportedQopError(DigestError):
    """The challenge offers a qop, but not "auth" (auth-int is not implemented)."""


# --- grammar (RFC 3261 §25.1) -------------------------------------------------------------

# A token is 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~").
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE
# qdtext        = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair   = "\" (%x00-09 / %x0B-0C / %x0E-7F)
_QUOTED_RE = re.compile(
    r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"'
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
# LWS = [*WSP CRLF] 1*WSP: a folded line continues the field (RFC 3261 §7.3.1).
_FOLD_RE = re.compile(r"\r\n(?=[ \t])")
_WSP_RE = re.compile(r"[ \t]*")
# nc-value = 8LHEX; upper case is accepted too, and the text is hashed as sent.
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
# One `name = value` auth-param and the comma (or end) after it: the fast path of
# `_parse_params` for well-formed values; anything it does not match goes the slow way,
# which names the problem.
_PARAM_FAST_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=[ \t]*"
    r'(?:"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"'
    r"|([A-Za-z0-9\-.!%*_+`'~]+))[ \t]*(?:,|$)"
)
# Characters a quoted-string cannot carry even as a quoted-pair.
_UNQUOTABLE_RE = re.compile(r"[\r\n]")
# Characters that must be sent as a quoted-pair inside a quoted-string.
_ESCAPE_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _quote(value: str) -> str:
    if _UNQUOTABLE_RE.search(value):
        raise ValueError("a digest parameter value cannot contain CR or LF")
    return '"' + _ESCAPE_RE.sub(lambda m: "\\" + m.group(), value) + '"'


def _token_or_quoted(value: str) -> str:
    return value if _TOKEN_RE.fullmatch(value) else _quote(value)


def _parse_params(value: str, kind: str) -> dict[str, str]:
    """Split `Digest name=value, …` into lowercased names and unquoted values, in order."""
    return _parse_params_fast(value) or _parse_params_checked(value, kind)


def _parse_params_fast(value: str) -> dict[str, str] | None:
    """`_parse_params` for an unfolded, well-formed value: one regex match a parameter.

    None for anything else (every error included), which the checked parser then reads and
    names.
    """
    if "\r" in value or "\n" in value:
        return None
    text = value.strip(" \t")
    if text[:6].lower() != "digest" or text[6:7] not in (" ", "\t"):
        return None
    params: dict[str, str] = {}
    pos, end = 6, len(text)
    match = _PARAM_FAST_RE.match
    while pos < end:
        found = match(text, pos)
        if found is None:
            return None
        key, quoted, token = found.groups()
        key = key.lower()
        if key in params:
            return None
        if token is not None:
            params[key] = token
        else:
            params[key] = _QUOTED_PAIR_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
        pos = found.end()
        if text[pos - 1] == "," and pos == end:
            return None  # a trailing comma: the checked parser names it
    return params or None


def _parse_params_checked(value: str, kind: str) -> dict[str, str]:
    text = _FOLD_RE.sub("", value)
    if "\r" in text or "\n" in text:
        raise MalformedHeaderError(f"{kind} contains a CR or LF that is not line folding")
    text = text.strip(" \t")
    scheme = _TOKEN_RE.match(text)
    if scheme is None:
        raise MalformedHeaderError(f"{kind} does not start with an authentication scheme")
    # auth-scheme literals are case-insensitive (RFC 3261 §25: ABNF strings, RFC 2234).
    if scheme.group().lower() != "digest":
        raise UnsupportedSchemeError(scheme.group())
    pos = scheme.end()
    if pos == len(text):
        raise MalformedHeaderError(f"{kind} has the Digest scheme but no parameters")
    after = _skip_wsp(text, pos)
    if after == pos:
        raise MalformedHeaderError(f"{kind}: expected whitespace after 'Digest' at offset {pos}")
    pos = after
    params: dict[str, str] = {}
    while True:
        name = _TOKEN_RE.match(text, pos)
        if name is None:
            raise MalformedHeaderError(f"{kind}: expected a parameter name at offset {pos}")
        key = name.group().lower()
        pos = _skip_wsp(text, name.end())
        if not text.startswith("=", pos):
            raise MalformedHeaderError(
                f"{kind}: expected '=' after parameter {_shorten(key)!r} at offset {pos}"
            )
        pos = _skip_wsp(text, pos + 1)
        # auth-param = auth-param-name EQUAL ( token / quoted-string ); the known parameters
        # are read the same way, which also admits the quoting that deployed phones get wrong
        # (qop="auth", nc="00000001", algorithm="MD5").
        if text.startswith('"', pos):
            quoted = _QUOTED_RE.match(text, pos)
            if quoted is None:
                raise MalformedHeaderError(
                    f"{kind}: invalid quoted-string for {_shorten(key)!r} at offset {pos}"
                    " (unterminated, a control character, or a bad escape)"
                )
            item = _QUOTED_PAIR_RE.sub(r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            token = _TOKEN_RE.match(text, pos)
            if token is None:
                raise MalformedHeaderError(
                    f"{kind}: expected a token or quoted-string for {_shorten(key)!r}"
                    f" at offset {pos}"
                )
            item = token.group()
            pos = token.end()
        if key in params:
            raise DuplicateParameterError(key)
        params[key] = item
        pos = _skip_wsp(text, pos)
        if pos == len(text):
            return params
        if text[pos] != ",":
            raise MalformedHeaderError(f"{kind}: expected ',' between parameters at offset {pos}")
        pos = _skip_wsp(text, pos + 1)


def _skip_wsp(text: str, pos: int) -> int:
    match = _WSP_RE.match(text, pos)
    assert match is not None  # `[ \t]*` matches the empty string anywhere
    return match.end()


def _resolve_algorithm(token: str | None) -> DigestAlgorithm | None:
    # RFC 7616 §3.3: an absent algorithm means MD5. "-sess" variants and others are not
    # computed here, so they resolve to None.
    if token is None:
        return DigestAlgorithm.MD5
    for algorithm in DigestAlgorithm:
        if token.lower() == algorithm.value.lower():
            return algorithm
    return None


def _extra(params: dict[str, str], known: Iterable[str]) -> tuple[tuple[str, str], ...]:
    names = set(known)
    return tuple((name, value) for name, value in params.items() if name not in names)


# --- header values --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge, the value of WWW-Authenticate or Proxy-Authenticate.

    SIP carries one challenge per header field (RFC 3261 §20.44); a server that offers several
    algorithms sends several fields (RFC 8760 §2.3).

    Attributes:
        realm: The protection space (RFC 3261 §22.1).
        nonce: The server's nonce, opaque to the client.
        algorithm: The algorithm token as sent, or None when absent (which means MD5).
        qop: The qop-options offered, as sent (empty when the server sent none).
        opaque: Data the client must return unchanged, if the server sent any.
        stale: True when the previous nonce was refused only for being too old.
        extra: Other parameters as (lowercased name, value) pairs, in order (e.g. "domain").
    """

    realm: str
    nonce: str
    algorithm: str | None = None
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def digest_algorithm(self) -> DigestAlgorithm | None:
        """The algorithm to compute, or None when it is one this module does not implement."""
        return _resolve_algorithm(self.algorithm)

    def render(self) -> str:
        """Format the challenge as a header field value.

        Returns:
            The value, e.g. ``Digest realm="a", nonce="b", algorithm=SHA-256, qop="auth"``.

        Raises:
            ValueError: A value contains CR or LF, which no quoted-string can carry.
        """
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        if self.algorithm is not None:
            parts.append(f"algorithm={_token_or_quoted(self.algorithm)}")
        if self.qop:
            # qop-options = "qop" EQUAL LDQUOT qop-value *("," qop-value) RDQUOT
            parts.append(f"qop={_quote(', '.join(self.qop))}")
        parts.extend(f"{name}={_token_or_quoted(value)}" for name, value in self.extra)
        return "Digest " + ", ".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials, the value of Authorization or Proxy-Authorization.

    Attributes:
        username: The user, as the client names it.
        realm: The realm of the challenge being answered.
        nonce: The server nonce being answered.
        uri: The digest-uri; the server compares it with the Request-URI itself.
        response: The request-digest, lowercase hex.
        algorithm: The algorithm token as sent, or None when absent (which means MD5).
        cnonce: The client nonce (required with qop).
        opaque: The challenge's opaque, echoed.
        qop: The qop the client chose, or None for an RFC 2069 style response.
        nc: The nonce-count as sent: 8 hex digits (required with qop).
        extra: Other parameters as (lowercased name, value) pairs, in order.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def digest_algorithm(self) -> DigestAlgorithm | None:
        """The algorithm to compute, or None when it is one this module does not implement."""
        return _resolve_algorithm(self.algorithm)

    @property
    def nonce_count(self) -> int | None:
        """The nonce-count as a number, or None when absent."""
        return None if self.nc is None else int(self.nc, 16)

    def render(self) -> str:
        """Format the credentials as a header field value.

        Returns:
            The value, e.g. ``Digest username="a", realm="b", …, qop=auth, nc=00000001``.

        Raises:
            ValueError: A value contains CR or LF, which no quoted-string can carry.
        """
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={_token_or_quoted(self.algorithm)}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        # message-qop and nonce-count are unquoted tokens (RFC 3261 §25.1).
        if self.qop is not None:
            parts.append(f"qop={_token_or_quoted(self.qop)}")
        if self.nc is not None:
            parts.append(f"nc={_token_or_quoted(self.nc)}")
        parts.extend(f"{name}={_token_or_quoted(value)}" for name, value in self.extra)
        return "Digest " + ", ".join(parts)


_CHALLENGE_KNOWN = ("realm", "nonce", "algorithm", "qop", "opaque", "stale")
_CREDENTIALS_KNOWN = (
    "username",
    "realm",
    "nonce",
    "uri",
    "response",
    "algorithm",
    "cnonce",
    "opaque",
    "qop",
    "nc",
)


def parse_challenge(value: str) -> Challenge:
    """Parse a WWW-Authenticate or Proxy-Authenticate header value.

    Args:
        value: The field value after the colon; folded lines are accepted.

    Returns:
        The challenge. Unknown parameters are kept in `Challenge.extra`.

    Raises:
        UnsupportedSchemeError: The scheme is not Digest.
        DuplicateParameterError: A parameter appears twice.
        MissingParameterError: realm or nonce is absent.
        MalformedHeaderError: Anything else that does not follow RFC 3261 §25.1.
    """
    params = _parse_params(value, "challenge")
    for required in ("realm", "nonce"):
        if required not in params:
            raise MissingParameterError(required, "challenge")
    qop: tuple[str, ...] = ()
    if "qop" in params:
        # The list is read leniently: empty items are skipped, as in RFC 7230's #rule.
        qop = tuple(item.strip(" \t") for item in params["qop"].split(","))
        qop = tuple(item for item in qop if item)
        for item in qop:
            if not _TOKEN_RE.fullmatch(item):
                raise MalformedHeaderError(
                    f"challenge: qop option {_shorten(item)!r} is not a token"
                )
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm"),
        qop=qop,
        opaque=params.get("opaque"),
        # RFC 7616 §3.3: anything other than "true" (case-insensitive) means false.
        stale=params.get("stale", "").lower() == "true",
        extra=_extra(params, _CHALLENGE_KNOWN),
    )


# A proxy reads the same value twice: to verify it, then to remove what it consumed.
@memoized(1024)
def parse_credentials(value: str) -> Credentials:
    """Parse an Authorization or Proxy-Authorization header value.

    Args:
        value: The field value after the colon; folded lines are accepted.

    Returns:
        The credentials. Unknown parameters are kept in `Credentials.extra`.

    Raises:
        UnsupportedSchemeError: The scheme is not Digest.
        DuplicateParameterError: A parameter appears twice.
        MissingParameterError: username, realm, nonce, uri or response is absent.
        MalformedHeaderError: Anything else that does not follow RFC 3261 §25.1, such as an
            nc that is not 8 hex digits.
    """
    params = _parse_params(value, "credentials")
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise MissingParameterError(required, "credentials")
    nc = params.get("nc")
    if nc is not None and not _NC_RE.fullmatch(nc):
        raise MalformedHeaderError("credentials: nc must be exactly 8 hex digits")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        qop=params.get("qop"),
        nc=nc,
        extra=_extra(params, _CREDENTIALS_KNOWN),
    )


# --- the digest itself (RFC 7616 §3.4.1) ----------------------------------------------------


def _h(algorithm: DigestAlgorithm, *parts: str) -> str:
    # Like `_hash`, but never raises on text a peer sent: lone surrogates from a lenient
    # decoder are hashed as they are rather than aborting the check.
    return _digest_hex(algorithm, ":".join(parts).encode("utf-8", "surrogatepass"))


def _request_digest(
    algorithm: DigestAlgorithm,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    # RFC 7616 §3.4.3: A2 = Method ":" request-uri for qop=auth or no qop.
    ha2 = _h(algorithm, method, uri)
    if qop is None:
        # RFC 2069 compatibility (RFC 2617 §3.2.2.1, RFC 3261 §22.4): KD(HA1, nonce ":" HA2).
        return _h(algorithm, ha1_hex, nonce, ha2)
    assert nc is not None
    assert cnonce is not None
    # RFC 7616 §3.4.1: KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" HA2).
    return _h(algorithm, ha1_hex, nonce, nc, cnonce, qop, ha2)


def _same_digest(expected: str, received: str) -> bool:
    # Constant time; bytes because compare_digest refuses non-ASCII str. Hex is compared
    # case-insensitively since some clients send upper case despite LHEX.
    return hmac.compare_digest(
        expected.encode("ascii"), received.lower().encode("utf-8", "replace")
    )


# --- server ---------------------------------------------------------------------------------


class VerifyStatus(enum.Enum):
    """What `DigestServer.verify` concluded.

    Every status other than OK means the request is not authenticated; the caller answers
    401/407 with a fresh challenge (with ``stale=True`` for STALE, so the client retries
    without asking its user for the password again, RFC 7616 §3.3).
    """

    #: The response is right for a fresh nonce and, with qop, a new nonce-count.
    OK = "ok"
    #: The response is right, but the nonce has expired (RFC 7616 §3.3 "stale").
    STALE = "stale"
    #: The response does not match the account's HA1: wrong password or tampered request.
    WRONG_RESPONSE = "wrong-response"
    #: The nonce was not issued by a server holding our secret for this realm.
    INVALID_NONCE = "invalid-nonce"
    #: The credentials name another realm.
    REALM_MISMATCH = "realm-mismatch"
    #: The nonce-count is not above the highest already seen for this nonce.
    REPLAYED_NONCE_COUNT = "replayed-nonce-count"
    #: A parameter is missing: cnonce or nc with qop, or an empty uri.
    MISSING_PARAMETER = "missing-parameter"
    #: The algorithm is neither MD5 nor SHA-256, or the account has no HA1 for it.
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    #: The qop is not "auth", or no qop was sent and the server requires one.
    UNSUPPORTED_QOP = "unsupported-qop"


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of `DigestServer.verify`.

    Attributes:
        status: The conclusion.
        detail: A short reason for logs; it never contains a digest, nonce or HA1.
    """

    status: VerifyStatus
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the request is authenticated."""
        return self.status is VerifyStatus.OK


# Nonce layout, hex encoded (66 characters):
#   issued  8 bytes  milliseconds since the epoch, signed big-endian
#   scope   1 byte   the worker process that keeps its nonce-counts (`sip.workers`)
#   salt    8 bytes  random, so two challenges in the same millisecond differ
#   mac    16 bytes  HMAC-SHA-256(secret, label || issued || scope || salt || realm), truncated
# RFC 7616 §3.3 suggests time-stamp and private key in the nonce; the realm is in the MAC so a
# nonce from one realm is refused in another even when they share the secret. The scope is in
# it so that a nonce is checked for replay by one table only: a worker that is not its scope
# answers "stale" and the client takes a fresh nonce from that worker (RFC 7616 §3.3).
_NONCE_LABEL = b"ringfence digest nonce v2\x00"
_OPAQUE_LABEL = b"ringfence digest opaque v1\x00"
_NONCE_RE = re.compile(r"[0-9a-f]{66}")
_ISSUED_BYTES = 8
_SCOPE_BYTES = 1
_SALT_BYTES = 8
_MAC_BYTES = 16
_HEAD_BYTES = _ISSUED_BYTES + _SCOPE_BYTES + _SALT_BYTES
#: The scopes a nonce can name: one per worker process.
MAX_SCOPES = 256


class DigestServer:
    """The registrar/proxy side: issues challenges and verifies credentials.

    Nonces are stateless: their issue time and an HMAC under `secret` are inside them, so
    every node sharing the secret issues and accepts the same nonces. The only state is the
    replay table: the highest nonce-count seen per nonce, at most `max_tracked_nonces`
    entries. When it is full of live nonces, the oldest quarter is dropped and nonces issued
    up to then are answered STALE, so a forgotten nonce cannot be replayed; clients just
    fetch a new one.

    The opaque value is fixed per secret and realm and is not checked on return: the nonce
    already carries all state (RFC 2617 §3.3 notes that is easier and safer).
    """

    def __init__(
        self,
        secret: bytes,
        realm: str,
        *,
        nonce_lifetime_s: float = 300.0,
        max_tracked_nonces: int = 100_000,
        accept_without_qop: bool = True,
        algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        scope: int = 0,
    ) -> None:
        """Create a server for one realm.

        Args:
            secret: HMAC key for nonces, shared by all nodes of the realm; 16 bytes or more.
            realm: The realm to challenge for (RFC 3261 §22.1).
            nonce_lifetime_s: Seconds a nonce stays fresh; after that it is STALE.
            max_tracked_nonces: Bound of the nonce-count table.
            accept_without_qop: Accept RFC 2069 style responses (no qop, no replay check).
            algorithms: What to challenge with, in order of preference (RFC 8760 §2.3). Some
                clients (SIPp 3.6) answer only the first challenge and know only MD5.
            scope: Which of the node's worker processes this is (0 with one): nonces it
                issues name it, and nonces naming another worker are answered STALE here,
                because only the issuer's table knows their nonce-counts.

        Raises:
            ValueError: The secret is shorter than 16 bytes, a bound is not positive, or the
                scope is outside 0..255.
        """
        if len(secret) < 16:
            raise ValueError("the digest nonce secret must be at least 16 bytes")
        if nonce_lifetime_s <= 0:
            raise ValueError("nonce_lifetime_s must be positive")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        if not algorithms:
            raise ValueError("at least one digest algorithm is needed")
        if not 0 <= scope < MAX_SCOPES:
            raise ValueError(f"scope must be between 0 and {MAX_SCOPES - 1}")
        self._scope = scope.to_bytes(_SCOPE_BYTES, "big")
        self.algorithms = algorithms
        self.realm = realm
        self.nonce_lifetime_s = nonce_lifetime_s
        self.accept_without_qop = accept_without_qop
        self._secret = secret
        self._realm_bytes = realm.encode("utf-8", "surrogatepass")
        self._max_tracked = max_tracked_nonces
        opaque_mac = hmac.new(secret, _OPAQUE_LABEL + self._realm_bytes, "sha256")
        self._opaque = opaque_mac.hexdigest()[:32]
        # nonce -> (highest verified nonce-count, issue time in ms)
        self._highest_nc: dict[str, tuple[int, int]] = {}
        # Nonces issued at or before this (ms) and absent from the table are answered STALE.
        self._forgotten_up_to_ms: int | None = None
        self._next_prune_s: float | None = None

    def challenge(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """Issue challenges for a 401/407 response, one header field each.

        Args:
            now: Current time in seconds since the epoch.
            stale: Set when the request was refused as STALE (RFC 7616 §3.3).

        Returns:
            One challenge per configured algorithm (by default SHA-256, then MD5), sharing
            one fresh nonce (RFC 8760 §2.3: in order of preference), each offering qop="auth".
        """
        nonce = self._make_nonce(now)
        return [
            Challenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=algorithm.value,
                qop=("auth",),
                opaque=self._opaque,
                stale=stale,
            )
            for algorithm in self.algorithms
        ]

    def verify(
        self,
        credentials: Credentials,
        method: str,
        ha1_by_algorithm: Mapping[DigestAlgorithm, str],
        now: float,
    ) -> VerifyResult:
        """Check credentials against an account's HA1 values.

        The caller looks the account up by `credentials.username` (and `credentials.realm`),
        compares `credentials.uri` with the Request-URI, and passes the request's method.

        Args:
            credentials: The parsed Authorization or Proxy-Authorization value.
            method: The SIP method of the request.
            ha1_by_algorithm: The account's HA1, lowercase hex, for each algorithm it has.
            now: Current time in seconds since the epoch.

        Returns:
            The outcome; an OK with qop records the nonce-count so it cannot be reused.
        """
        self._prune(now)
        # RFC 7616 §3.4: with qop, cnonce and nc are required; without, RFC 2069 rules.
        qop = credentials.qop
        if qop is None:
            if not self.accept_without_qop:
                return VerifyResult(VerifyStatus.UNSUPPORTED_QOP, "no qop; qop=auth required")
        elif qop.lower() != "auth":
            return VerifyResult(VerifyStatus.UNSUPPORTED_QOP, "only qop=auth is supported")
        elif credentials.cnonce is None:
            return VerifyResult(VerifyStatus.MISSING_PARAMETER, "qop=auth without cnonce")
        elif credentials.nc is None or not _NC_RE.fullmatch(credentials.nc):
            return VerifyResult(VerifyStatus.MISSING_PARAMETER, "qop=auth without a valid nc")
        if not credentials.uri:
            return VerifyResult(VerifyStatus.MISSING_PARAMETER, "empty uri")

        algorithm = credentials.digest_algorithm
        if algorithm is None:
            return VerifyResult(VerifyStatus.UNSUPPORTED_ALGORITHM, "algorithm not supported")
        account_ha1 = ha1_by_algorithm.get(algorithm)
        if account_ha1 is None:
            return VerifyResult(
                VerifyStatus.UNSUPPORTED_ALGORITHM, f"account has no {algorithm.value} HA1"
            )
        if credentials.realm != self.realm:
            return VerifyResult(VerifyStatus.REALM_MISMATCH, "credentials for another realm")
        checked = self._check_nonce(credentials.nonce)
        if checked is None:
            return VerifyResult(VerifyStatus.INVALID_NONCE, "nonce not issued for this realm")
        issued_ms, ours = checked

        expected = _request_digest(
            algorithm,
            account_ha1,
            credentials.nonce,
            method,
            credentials.uri,
            qop,
            credentials.nc,
            credentials.cnonce,
        )
        if not _same_digest(expected, credentials.response):
            return VerifyResult(VerifyStatus.WRONG_RESPONSE, "response does not match")
        # RFC 7616 §3.3: stale only once the digest itself is right, so that stale=true
        # never tells a client with a wrong password to just retry.
        if self._is_expired(issued_ms, now):
            return VerifyResult(VerifyStatus.STALE, "nonce expired")
        if not ours:
            # Another worker's nonce: its nonce-counts are in that worker's table. Accepting
            # it here would let a captured request be replayed once per worker.
            return VerifyResult(VerifyStatus.STALE, "nonce of another worker")
        if qop is None:
            # RFC 2069 style: there is no nonce-count, so a replay within the lifetime
            # cannot be told apart (see the module docstring).
            return VerifyResult(VerifyStatus.OK, "no qop: not protected against replay")
        return self._record_nonce_count(credentials.nonce, credentials.nonce_count, issued_ms, now)

    def _record_nonce_count(
        self, nonce: str, nc: int | None, issued_ms: int, now: float
    ) -> VerifyResult:
        assert nc is not None  # checked in verify with the rest of qop=auth
        entry = self._highest_nc.get(nonce)
        if entry is None:
            if self._forgotten_up_to_ms is not None and issued_ms <= self._forgotten_up_to_ms:
                # Its nonce-counts were evicted; make the client take a new nonce.
                return VerifyResult(VerifyStatus.STALE, "nonce evicted from the replay table")
            if len(self._highest_nc) >= self._max_tracked:
                self._evict(now)
            highest = 0
        else:
            highest = entry[0]
        # RFC 7616 §3.4: the count must increase. SIP retransmissions do not reach here
        # twice: the transaction layer absorbs them (RFC 3261 §17.2).
        if nc <= highest:
            return VerifyResult(VerifyStatus.REPLAYED_NONCE_COUNT, "nonce-count not increasing")
        self._highest_nc[nonce] = (nc, issued_ms)
        return VerifyResult(VerifyStatus.OK)

    def _make_nonce(self, now: float) -> str:
        issued = round(now * 1000).to_bytes(_ISSUED_BYTES, "big", signed=True)
        head = issued + self._scope + random_bytes(_SALT_BYTES)
        return (head + self._nonce_mac(head)).hex()

    def _nonce_mac(self, head: bytes) -> bytes:
        message = _NONCE_LABEL + head + self._realm_bytes
        return hmac.digest(self._secret, message, "sha256")[:_MAC_BYTES]

    def _check_nonce(self, nonce: str) -> tuple[int, bool] | None:
        """(issue time in ms, whether it names this scope) if a holder of the secret issued it."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = bytes.fromhex(nonce)
        head, mac = raw[:_HEAD_BYTES], raw[_HEAD_BYTES:]
        if not hmac.compare_digest(mac, self._nonce_mac(head)):
            return None
        scope = head[_ISSUED_BYTES : _ISSUED_BYTES + _SCOPE_BYTES]
        return int.from_bytes(head[:_ISSUED_BYTES], "big", signed=True), scope == self._scope

    def _is_expired(self, issued_ms: int, now: float) -> bool:
        return now - issued_ms / 1000 > self.nonce_lifetime_s

    def _prune(self, now: float) -> None:
        # Expired nonces are refused as STALE before the table is consulted, so their
        # entries are dead weight; sweep them once per lifetime (amortised O(1) per call).
        if self._next_prune_s is not None and now < self._next_prune_s:
            return
        self._next_prune_s = now + self.nonce_lifetime_s
        self._highest_nc = {
            nonce: entry
            for nonce, entry in self._highest_nc.items()
            if not self._is_expired(entry[1], now)
        }

    def _evict(self, now: float) -> None:
        self._next_prune_s = None
        self._prune(now)
        if len(self._highest_nc) < self._max_tracked:
            return
        by_age = sorted(self._highest_nc.items(), key=lambda item: item[1][1])
        dropped = by_age[: max(1, self._max_tracked // 4)]
        for nonce, _ in dropped:
            del self._highest_nc[nonce]
        newest_dropped = dropped[-1][1][1]
        if self._forgotten_up_to_ms is None or newest_dropped > self._forgotten_up_to_ms:
            self._forgotten_up_to_ms = newest_dropped


# --- client ---------------------------------------------------------------------------------


def without_credentials_for(values: Iterable[str], realm: str) -> list[str]:
    """Authorization-type header values minus the Digest credentials for `realm`.

    What a proxy forwards after consuming its own realm's credentials; other schemes, other
    realms (a proxy further on may want them) and values that do not parse stay.
    """
    kept = []
    for value in values:
        try:
            if parse_credentials(value).realm.lower() == realm.lower():
                continue
        except DigestError:
            pass
        kept.append(value)
    return kept


def new_cnonce() -> str:
    """A fresh random client nonce (RFC 7616 §3.4: unpredictable, 128 bits here)."""
    return random_hex(16)


def _answerable(challenge: Challenge) -> bool:
    offers_auth = not challenge.qop or any(q.lower() == "auth" for q in challenge.qop)
    return challenge.digest_algorithm is not None and offers_auth


def choose_challenge(challenges: Iterable[Challenge]) -> Challenge:
    """Pick the challenge to answer among those of one 401/407 response.

    SHA-256 is preferred over MD5 wherever it appears. RFC 8760 §2.4 has the client take the
    topmost supported challenge "unless a local policy dictates otherwise"; this is that
    policy, because challenges are not integrity-protected and an on-path attacker could
    reorder them to put MD5 first (RFC 8760 §3). Within one algorithm the first offered wins.
    Challenges with another algorithm, or with qop options lacking "auth", are skipped.

    Args:
        challenges: The parsed WWW-Authenticate or Proxy-Authenticate values.

    Returns:
        The chosen challenge.

    Raises:
        UnsupportedAlgorithmError: None of the challenges can be answered.
    """
    usable = [challenge for challenge in challenges if _answerable(challenge)]
    for algorithm in (DigestAlgorithm.SHA256, DigestAlgorithm.MD5):
        for challenge in usable:
            if challenge.digest_algorithm is algorithm:
                return challenge
    raise UnsupportedAlgorithmError(
        "no challenge offers MD5 or SHA-256 with qop=auth or without qop"
    )


def answer(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    *,
    ha1_hex: str | None = None,
    cnonce: str,
    nc: int = 1,
) -> Credentials:
    """Compute credentials answering a challenge (RFC 7616 §3.4, RFC 3261 §22.2).

    With qop=auth offered the response is H(HA1:nonce:nc:cnonce:qop:HA2), HA2 = H(method:uri);
    without qop it is the RFC 2069 form H(HA1:nonce:HA2), and `cnonce` and `nc` are unused.

    Args:
        challenge: The challenge to answer, e.g. from `choose_challenge`.
        method: The SIP method of the request being sent.
        uri: The Request-URI of that request (the digest-uri).
        username: The user name to present.
        password: The password; give this or `ha1_hex`.
        ha1_hex: The precomputed HA1 for the challenge's algorithm and realm.
        cnonce: The client nonce, e.g. from `new_cnonce`.
        nc: How many requests this client has sent with this nonce, this one included.

    Returns:
        The credentials; `Credentials.render()` gives the Authorization header value.

    Raises:
        UnsupportedAlgorithmError: The challenge's algorithm is neither MD5 nor SHA-256.
        UnsupportedQopError: The challenge offers qop options, none of them "auth".
        ValueError: Not exactly one of `password` and `ha1_hex`, or `nc` outside 1..2**32-1.
    """
    if (password is None) == (ha1_hex is None):
        raise ValueError("give exactly one of password and ha1_hex")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError("nc must be between 1 and 0xffffffff")
    algorithm = challenge.digest_algorithm
    if algorithm is None:
        raise UnsupportedAlgorithmError("the challenge's algorithm is not MD5 or SHA-256")
    qop: str | None = None
    if challenge.qop:
        qop = next((q for q in challenge.qop if q.lower() == "auth"), None)
        if qop is None:
            raise UnsupportedQopError("the challenge offers qop options but not auth")
    if password is not None:
        secret_ha1 = ha1(algorithm, username, challenge.realm, password)
    else:
        assert ha1_hex is not None
        secret_ha1 = ha1_hex
    nc_text = f"{nc:08x}" if qop is not None else None
    used_cnonce = cnonce if qop is not None else None
    response = _request_digest(
        algorithm, secret_ha1, challenge.nonce, method, uri, qop, nc_text, used_cnonce
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        # RFC 7616 §3.4: the algorithm and opaque of the challenge are echoed.
        algorithm=challenge.algorithm,
        cnonce=used_cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
    )


class DigestRealms:
    """One `DigestServer` per realm, and the header work registrar and proxy share.

    A registrar answers 401 and reads Authorization, a proxy 407 and Proxy-Authorization;
    each realm's server keeps its own nonce-count table.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        nonce_lifetime_s: float = 300.0,
        algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        scope: int = 0,
    ) -> None:
        self._secret = secret
        self._nonce_lifetime_s = nonce_lifetime_s
        self._algorithms = algorithms
        self._scope = scope
        self._servers: dict[str, DigestServer] = {}

    def server(self, realm: str) -> DigestServer:
        server = self._servers.get(realm)
        if server is None:
            server = self._servers[realm] = DigestServer(
                self._secret,
                realm,
                nonce_lifetime_s=self._nonce_lifetime_s,
                algorithms=self._algorithms,
                scope=self._scope,
            )
        return server

    @staticmethod
    def credentials_for(values: Iterable[str], realm: str) -> Credentials | None:
        """The Digest credentials for `realm` among Authorization-type header values.

        Other schemes are skipped (RFC 4475 §3.3.7: challenge in ours instead).

        Raises:
            DigestError: a Digest value that does not parse.
        """
        for value in values:
            try:
                parsed = parse_credentials(value)
            except UnsupportedSchemeError:
                continue
            if parsed.realm.lower() == realm.lower():
                return parsed
        return None

    def challenge_headers(
        self, realm: str, header: str, now: float, *, stale: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """One `header` (WWW- or Proxy-Authenticate) per algorithm (RFC 8760 §2.3)."""
        return tuple(
            (header, challenge.render())
            for challenge in self.server(realm).challenge(now, stale=stale)
        )
