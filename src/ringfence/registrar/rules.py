"""What a REGISTER does to the bindings of an address-of-record, sans-IO.

RFC 3261 §10.3 lists the registrar's steps. The service does steps 1-5 (the Request-URI is
checked by the transport driver; authentication and authorisation need the accounts), using
`address_of_record` for step 5. `process_register` does steps 6-8 with RFC 3327 (Path) and
RFC 5626 §6 (outbound): it takes the request, the AOR's current bindings, where the request
came from and `now`, and returns a `RegisterOutcome`: the status, the header fields of the
response, and the complete new binding list (or None when nothing changes). It reads no clock
and stores nothing, so every rule is tested with plain values.

Order of the checks, first failure wins (each names the section that demands it):

==========================================================  ======  ========================
condition                                                   status  where
==========================================================  ======  ========================
Call-ID missing, CSeq or a Path value malformed             400     §8.2.2, §20.16, 3327 §4
Path without ``Supported: path`` (policy, default on)       420     RFC 3327 §5.3
no Contact                                                  200     §10.3 step 6 (a query)
``*`` with another Contact, or Expires not 0                400     §10.3 step 6
``*``: same Call-ID, CSeq not above a binding's             500     §10.3 step 6
a Contact, q, reg-id or +sip.instance malformed             400     §20.10, RFC 5626 §4
a Contact URI not sip/sips (we route only SIP)              400     local policy
reg-id, not first hop, Path without ``ob``, outbound        439     RFC 5626 §6
two Contacts with non-zero expiry, one with a reg-id        400     RFC 5626 §6
0 < expiry < min_expires, and < 3600                        423     §10.3 step 7, §21.4.17
same binding, same Call-ID, CSeq not above the stored one   500     §10.3 step 7
more than max_contacts_per_aor bindings after the request   403     local policy
otherwise                                                   200     §10.3 step 8
==========================================================  ======  ========================

Which binding a Contact updates (§10.3 step 7 "searches the list of current bindings"):
with a +sip.instance and a reg-id that outbound processing kept, the binding of that
instance and reg-id, whatever its URI (RFC 5626 §6: a new flow replaces the old one);
otherwise every binding without a reg-id whose Contact URI is equal by RFC 3261 §19.1.4
(`sip_uri_equal`). Expiry: the Contact's ``expires`` parameter, else the Expires header, else
the policy default (§10.2.1.1); a malformed value means 3600 (§10.2, §20.19); above
max_expires it is shortened (§10.3 step 7 "MAY choose an expiration less than requested");
0 removes the binding.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from ringfence.sip.fields import CSeq, FieldError, parse_cseq
from ringfence.sip.message import Request
from ringfence.sip.transaction import Address
from ringfence.sip.uri import (
    Params,
    SipURI,
    URIError,
    find_param,
    params_text,
    parse_name_addr,
    parse_uri,
)
from ringfence.state.location import Binding

__all__ = [
    "DEFAULT_POLICY",
    "SUPPORTED_OPTIONS",
    "AddressOfRecord",
    "RegisterOutcome",
    "RegistrarError",
    "RegistrarPolicy",
    "address_of_record",
    "contact_value",
    "process_register",
    "sip_uri_equal",
]

#: Option tags the registrar implements, for Supported and for Require checks (§8.2.2.3).
SUPPORTED_OPTIONS = frozenset({"path", "outbound"})
#: RFC 3261 §10.2 ("expires" parameter) and §20.19 (Expires): malformed means 3600.
MALFORMED_EXPIRES = 3600
#: RFC 3261 §10.3 step 7: 423 only for intervals "smaller than one hour".
_ONE_HOUR = 3600
#: RFC 5626 §4.2: reg-id = 1*DIGIT, from 1 to 2**31-1.
_REG_ID_MAX = 2**31 - 1
#: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ) (RFC 3261 §25.1).
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_DIGITS = re.compile(r"[0-9]+")
#: URI parameters that never match when only one URI has them (RFC 3261 §19.1.4).
_PARAMS_REQUIRED_IN_BOTH = ("user", "ttl", "method", "maddr")


class RegistrarError(Exception):
    """A REGISTER refused: the status, reason phrase and header fields to answer with.

    The reason never quotes the request (no user, AOR or Contact): responses are logged.
    """

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Create a refusal.

        Args:
            status: The SIP status code.
            reason: The reason phrase.
            headers: Header fields the response needs (Min-Expires, Unsupported).
        """
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class AddressOfRecord:
    """The canonical AOR of RFC 3261 §10.3 step 5: `sip:user@domain`, nothing else.

    Attributes:
        user: The user part with escapes decoded.
        domain: The host, lowercased (the tenant's SIP domain when it is ours).
    """

    user: str = field(repr=False)
    domain: str

    def __str__(self) -> str:
        return f"sip:{self.user}@{self.domain}"


def address_of_record(request: Request) -> AddressOfRecord:
    """The AOR a REGISTER is about, from its To header field (RFC 3261 §10.3 step 5).

    The URI is reduced to its canonical form: URI parameters, port, password and headers
    removed, escapes decoded, the host lowercased, and sips: written as sip: (one set of
    bindings per user).

    Args:
        request: The REGISTER.

    Returns:
        The canonical AOR.

    Raises:
        RegistrarError: 400 when To is missing, malformed, or not a SIP or SIPS URI (RFC 3261
            §10.2 "This address-of-record MUST be a SIP URI or SIPS URI"; RFC 4475 §3.3.4);
            404 when it has no user part (no account can match it).
    """
    to = request.headers.get("To")
    if to is None:
        raise RegistrarError(400, "Missing To")
    try:
        uri = parse_name_addr(to).uri
    except URIError as exc:
        raise RegistrarError(400, "Malformed To") from exc
    if not isinstance(uri, SipURI):
        raise RegistrarError(400, "To is not a SIP or SIPS URI")
    user = uri.user_unescaped
    if not user:
        raise RegistrarError(404, "Not Found")
    return AddressOfRecord(user, uri.host.lower())


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """Local choices RFC 3261 leaves to the registrar.

    Attributes:
        min_expires: Shorter requests get 423 with this as Min-Expires (§10.3 step 7).
        max_expires: Longer requests are shortened to this (§10.3 step 7).
        default_expires: The interval when the request names none (§10.2.1.1).
        max_contacts_per_aor: Bindings one AOR may hold; a request that would grow the set
            beyond it gets 403.
        path_requires_support: Refuse a Path the UA did not announce support for with 420,
            as RFC 3327 §5.3 recommends; False accepts it.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts_per_aor: int = 10
    path_requires_support: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 1 <= min_expires <= default_expires <= max_expires")
        if self.max_contacts_per_aor < 1:
            raise ValueError("max_contacts_per_aor must be at least 1")


DEFAULT_POLICY = RegistrarPolicy()


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """What to answer a REGISTER with, and what the AOR's bindings become.

    Attributes:
        status: The response status.
        reason: The reason phrase.
        headers: Header fields for the response, in order: for 200 one Contact per current
            binding with its ``expires`` (§10.3 step 8), the request's Path (RFC 3327 §5.3)
            and ``Require: outbound`` when outbound processing applied (RFC 5626 §6); for 423
            Min-Expires (§21.4.17); for 420 Unsupported.
        bindings: The complete new binding list of the AOR, to store as a whole (§10.3 step
            7: all or nothing); None when the request changes nothing (a query, a refusal).
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    bindings: tuple[Binding, ...] | None = None

    @property
    def ok(self) -> bool:
        """True for a 2xx."""
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class _Contact:
    """One Contact value of the request, parsed and checked."""

    uri: SipURI
    params: Params
    expires: int
    q: float | None
    instance: str | None
    reg_id: int | None
    #: `str(uri)`: what a binding stores, and what most re-registrations repeat exactly.
    text: str = ""


def process_register(
    request: Request,
    *,
    aor: str,
    existing: Sequence[Binding],
    source: Address,
    now: float,
    policy: RegistrarPolicy = DEFAULT_POLICY,
) -> RegisterOutcome:
    """Apply RFC 3261 §10.3 steps 6-8 (with RFC 3327 and RFC 5626 §6) to one REGISTER.

    The caller has authenticated the request and authorised it for `aor` (steps 3-5).

    Args:
        request: The REGISTER.
        aor: The canonical AOR (`str(address_of_record(request))`).
        existing: The AOR's current bindings; expired ones are ignored.
        source: Where the request came from; its flow is kept on the new bindings only when
            this node is the first hop (one Via, RFC 5626 §6).
        now: The current time, on the clock of the bindings' `expires_at`.
        policy: The local choices.

    Returns:
        The outcome; see the module docstring for every status it can have.
    """
    try:
        return _process(request, aor, existing, source, now, policy)
    except RegistrarError as refusal:
        return RegisterOutcome(refusal.status, refusal.reason, refusal.headers)


def _process(
    request: Request,
    aor: str,
    existing: Sequence[Binding],
    source: Address,
    now: float,
    policy: RegistrarPolicy,
) -> RegisterOutcome:
    headers = request.headers
    call_id = (headers.get("Call-ID") or "").strip()
    if not call_id:
        raise RegistrarError(400, "Missing Call-ID")
    try:
        cseq = parse_cseq(headers.get("CSeq") or "")
    except FieldError as exc:
        raise RegistrarError(400, "Malformed CSeq") from exc
    supported = {tag.strip().lower() for tag in headers.values("Supported")}
    path = tuple(value for value in headers.values("Path") if value)
    first_path_uri = _check_path(path)
    if path and policy.path_requires_support and "path" not in supported:
        # RFC 3327 §5.3: "The recommended policy is for the registrar to reject the request
        # with a 420 'Bad Extension' response indicating the Path extension."
        raise RegistrarError(420, "Bad Extension", (("Unsupported", "path"),))

    # A push binding whose registration expired is kept (its device sleeps, RFC 8599): a
    # refresh replaces it like any binding, but only registered ones are listed (step 8).
    live = [binding for binding in existing if binding.until > now]
    header_expires = _header_expires(headers.get("Expires"))
    values = headers.values("Contact")
    if not values:
        # §10.3 step 6: no Contact, a query; step 8 lists the current bindings.
        return _ok(live, now, path, require_outbound=False, new=None)
    if any(value.strip() == "*" for value in values):
        return _remove_all(values, header_expires, live, call_id, cseq, path, now)

    contacts = [_parse_contact(value, header_expires, policy) for value in values]

    # RFC 5626 §6: outbound processing applies when we are the first hop, or when the first
    # Path URI (the edge proxy next to the UA) carries "ob".
    first_hop = len(headers.values("Via")) <= 1
    outbound_possible = first_hop or (first_path_uri is not None and first_path_uri.has_param("ob"))
    if not outbound_possible and any(contact.reg_id is not None for contact in contacts):
        if "outbound" in supported:
            raise RegistrarError(439, "First Hop Lacks Outbound Support")
        # "otherwise, the registrar MUST ignore the reg-id parameter".
        contacts = [dataclasses.replace(contact, reg_id=None) for contact in contacts]
    # "If the registrar processes a Contact header field value with a reg-id but no
    # instance-id, it simply ignores the reg-id parameter."
    contacts = [
        contact
        if contact.instance is not None or contact.reg_id is None
        else dataclasses.replace(contact, reg_id=None)
        for contact in contacts
    ]
    registering = [contact for contact in contacts if contact.expires > 0]
    if len(registering) > 1 and any(contact.reg_id is not None for contact in registering):
        # RFC 5626 §6: a reg-id registers one instance over one flow; "the entire
        # registration SHOULD be rejected with a 400 (Bad Request) response".
        raise RegistrarError(400, "Only one Contact with a reg-id may register at a time")
    for contact in contacts:
        # §10.3 step 7: "If and only if the requested expiration interval is greater than
        # zero AND smaller than one hour AND less than a registrar-configured minimum".
        if 0 < contact.expires < policy.min_expires and contact.expires < _ONE_HOUR:
            raise RegistrarError(
                423, "Interval Too Brief", (("Min-Expires", str(policy.min_expires)),)
            )

    binding_source = source if first_hop else dataclasses.replace(source, flow=None)
    user_agent = headers.get("User-Agent")
    # (binding, stored): only bindings stored before this request are checked for order, so
    # a Contact listed twice in one request does not refuse itself.
    working: list[tuple[Binding, bool]] = [(binding, True) for binding in live]
    for contact in contacts:
        matches = [i for i, (binding, _) in enumerate(working) if _same(binding, contact)]
        for i in matches:
            binding, stored = working[i]
            if stored:
                _check_order(binding, call_id, cseq)
        position = matches[0] if matches else len(working)
        gone = set(matches)
        working = [item for i, item in enumerate(working) if i not in gone]
        granted = min(contact.expires, policy.max_expires)
        if granted > 0:
            new = Binding(
                aor=aor,
                contact=contact.text,
                instance=contact.instance,
                reg_id=contact.reg_id,
                expires_at=now + granted,
                q=contact.q,
                call_id=call_id,
                cseq=cseq.number,
                path=path,
                source=binding_source,
                params=contact.params,
                user_agent=user_agent,
            )
            working.insert(position, (new, False))

    bindings = [binding for binding, _ in working]
    if len(bindings) > policy.max_contacts_per_aor and len(bindings) > len(live):
        # No RFC status fits a registrar's own limit. 403: the request is understood and
        # refused, and "the request SHOULD NOT be repeated" (§21.4.4) until a binding is
        # removed or expires; 503 would invite the retries the limit is there to stop.
        raise RegistrarError(403, "Too many registrations")
    # RFC 5626 §6: Require: outbound iff a reg-id was used and the UA supports outbound.
    require_outbound = "outbound" in supported and any(
        contact.reg_id is not None for contact in contacts
    )
    return _ok(bindings, now, path, require_outbound=require_outbound, new=tuple(bindings))


def _check_path(path: tuple[str, ...]) -> SipURI | None:
    """Check every Path value parses (RFC 3327 §4: name-addr); the first one's URI."""
    first: SipURI | None = None
    for index, value in enumerate(path):
        try:
            uri = parse_name_addr(value).uri
        except URIError as exc:
            raise RegistrarError(400, "Malformed Path") from exc
        if index == 0 and isinstance(uri, SipURI):
            first = uri
    return first


def _remove_all(
    values: list[str],
    header_expires: int | None,
    live: list[Binding],
    call_id: str,
    cseq: CSeq,
    path: tuple[str, ...],
    now: float,
) -> RegisterOutcome:
    # §10.3 step 6: "*" is valid only alone and with Expires: 0, else 400.
    if len(values) != 1 or header_expires != 0:
        raise RegistrarError(400, "Contact * needs Expires: 0 and no other Contact")
    # "If it does agree, it MUST remove the binding only if the CSeq in the request is
    # higher than the value stored for that binding. Otherwise, the update MUST be aborted
    # and the request fails."
    for binding in live:
        _check_order(binding, call_id, cseq)
    return _ok([], now, path, require_outbound=False, new=())


def _check_order(binding: Binding, call_id: str, cseq: CSeq) -> None:
    # §10.3 step 7: same Call-ID and a CSeq not above the stored one: a delayed or replayed
    # REGISTER. "the update MUST be aborted and the request fails"; the step's failure
    # response is 500 (as for out-of-order requests in a dialog, §12.2.2).
    if binding.call_id == call_id and cseq.number <= binding.cseq:
        raise RegistrarError(500, "Request out of order")


def _ok(
    bindings: Sequence[Binding],
    now: float,
    path: tuple[str, ...],
    *,
    require_outbound: bool,
    new: tuple[Binding, ...] | None,
) -> RegisterOutcome:
    # §10.3 step 8: "The response MUST contain Contact header field values enumerating all
    # current bindings. Each Contact value MUST feature an 'expires' parameter". The Date
    # it SHOULD carry needs the wall clock; the transport adds it if wanted.
    out: list[tuple[str, str]] = [
        ("Contact", contact_value(b, now)) for b in bindings if b.expires_at > now
    ]
    if path:
        # RFC 3327 §5.3: "The registrar copies the Path header field values into a Path
        # header field in the successful (200 class) REGISTER response."
        out.append(("Path", ", ".join(path)))
    if require_outbound:
        out.append(("Require", "outbound"))
    return RegisterOutcome(200, "OK", tuple(out), new)


def contact_value(binding: Binding, now: float) -> str:
    """A binding as a Contact value of a 200 to REGISTER (RFC 3261 §10.3 step 8).

    The parameters are those registered (so a UA finds its +sip.instance and reg-id, RFC
    5626 §4.2.1), with ``expires`` set to the seconds left, at least 1.

    Args:
        binding: A live binding.
        now: The current time on the binding's clock.

    Returns:
        The value, e.g. ``<sip:alice@192.0.2.1:5060>;+sip.instance="<urn:uuid:…>";expires=3600``.
    """
    params = tuple((name, value) for name, value in binding.params if name.lower() != "expires")
    remaining = max(1, round(binding.expires_at - now))
    return f"<{binding.contact}>{params_text(params)};expires={remaining}"


def _header_expires(value: str | None) -> int | None:
    return None if value is None else _delta_seconds(value)


def _delta_seconds(value: str | None) -> int:
    # §10.2 / §20.19: "Malformed values SHOULD be treated as equivalent to 3600"; values
    # above 2**32-1 MAY be treated as 2**32-1: they are shortened to max_expires anyway.
    text = (value or "").strip()
    return int(text) if text.isascii() and _DIGITS.fullmatch(text) else MALFORMED_EXPIRES


def _parse_contact(value: str, header_expires: int | None, policy: RegistrarPolicy) -> _Contact:
    try:
        name_addr = parse_name_addr(value)
    except URIError as exc:
        raise RegistrarError(400, "Malformed Contact") from exc
    if not isinstance(name_addr.uri, SipURI):
        # The proxy routes only to sip:/sips: contacts; a binding it cannot use is refused
        # rather than stored.
        raise RegistrarError(400, "Contact URI scheme not supported")
    params = name_addr.params
    has_expires, expires_text = find_param(params, "expires")
    if has_expires:
        expires = _delta_seconds(expires_text)
    elif header_expires is not None:
        expires = header_expires
    else:
        expires = policy.default_expires
    has_q, q_text = find_param(params, "q")
    q: float | None = None
    if has_q:
        if q_text is None or not _QVALUE.fullmatch(q_text.strip()):
            raise RegistrarError(400, "Malformed q in Contact")
        q = float(q_text)
    has_instance, instance_text = find_param(params, "+sip.instance")
    instance = _instance(instance_text) if has_instance else None
    has_reg_id, reg_id_text = find_param(params, "reg-id")
    reg_id = _reg_id(reg_id_text) if has_reg_id else None
    uri = name_addr.uri
    return _Contact(uri, params, expires, q, instance, reg_id, str(uri))


def _instance(value: str | None) -> str:
    # RFC 5626 §4.1 / RFC 5627: +sip.instance="<urn:uuid:...>", a quoted, bracketed URN.
    text = (value or "").strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if len(text) >= 2 and text[0] == "<" and text[-1] == ">":
        text = text[1:-1]
    if not text or any(char.isspace() or char in '<>"' for char in text):
        raise RegistrarError(400, "Malformed +sip.instance in Contact")
    return instance_urn(text)


def instance_urn(text: str) -> str:
    """A `+sip.instance` URN in its one lexical form, so that equal ones compare equal.

    URN lexical equivalence (RFC 8141 §3.1): "urn" and the NID are case-insensitive; a
    UUID's hex digits too (RFC 4122 §3).
    """
    scheme, _, rest = text.partition(":")
    nid, colon, nss = rest.partition(":")
    if scheme.lower() != "urn" or not colon:
        return text
    nid = nid.lower()
    return f"urn:{nid}:{nss.lower() if nid == 'uuid' else nss}"


def _reg_id(value: str | None) -> int:
    text = (value or "").strip()
    if not (text.isascii() and _DIGITS.fullmatch(text)) or len(text) > 10:
        raise RegistrarError(400, "Malformed reg-id in Contact")
    number = int(text)
    if not 1 <= number <= _REG_ID_MAX:
        raise RegistrarError(400, "Malformed reg-id in Contact")
    return number


def _same(binding: Binding, contact: _Contact) -> bool:
    """Whether `contact` updates `binding` (see the module docstring)."""
    if contact.reg_id is not None:
        # RFC 5626 §6: the binding is "between an AOR and the combination of the
        # instance-id ... and the value of reg-id"; the URI is not compared.
        return binding.reg_id == contact.reg_id and binding.instance == contact.instance
    if binding.reg_id is not None:
        return False
    if binding.contact == contact.text:
        return True  # the same text is the same URI; §19.1.4 only matters when they differ
    try:
        stored = parse_uri(binding.contact)
    except URIError:
        return False
    return isinstance(stored, SipURI) and sip_uri_equal(stored, contact.uri)


def sip_uri_equal(a: SipURI, b: SipURI) -> bool:
    """Whether two SIP/SIPS URIs are equal by RFC 3261 §19.1.4.

    Scheme, host and parameters compare case-insensitively, user and password
    case-sensitively, all after decoding %-escapes. A port must be present in both or
    neither. A parameter present in both must match; user, ttl, method and maddr must be in
    both or neither; any other parameter in only one URI is ignored (so ``transport`` is
    compared only when both have it). URI headers must all match.

    Args:
        a: One URI.
        b: The other.

    Returns:
        True when they are equal.
    """
    if a.scheme.lower() != b.scheme.lower():
        return False
    if _unescape(a.user) != _unescape(b.user) or _unescape(a.password) != _unescape(b.password):
        return False
    if _host_key(a.host) != _host_key(b.host) or a.port != b.port:
        return False
    params_a, params_b = _param_map(a.params), _param_map(b.params)
    for name in params_a.keys() & params_b.keys():
        if params_a[name] != params_b[name]:
            return False
    if any((name in params_a) != (name in params_b) for name in _PARAMS_REQUIRED_IN_BOTH):
        return False
    return _header_map(a.headers) == _header_map(b.headers)


def _unescape(text: str | None) -> str | None:
    return None if text is None else unquote(text, errors="surrogateescape")


def _host_key(host: str) -> str:
    lowered = host.lower()
    if lowered.startswith("[") and lowered.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(lowered[1:-1]).compressed}]"
        except ValueError:
            return lowered
    return lowered


def _header_map(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {unquote(name).lower(): unquote(value) for name, value in headers}


def _param_map(params: Params) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name, value in params:
        key = (_unescape(name) or "").lower()
        if key not in found:
            found[key] = None if value is None else (_unescape(value) or "").lower()
    return found
