"""Dialogs (RFC 3261 §12): what two user agents keep between the requests of one call.

A proxy keeps no dialogs (its Record-Route flow token carries what it needs); a user agent
does: the overlay registration client, a B2BUA leg, the tests' own phones. A dialog is made
from the request that creates it and a response with a To tag, from the side of the UAC
(`Dialog.as_uac`, §12.1.2) or of the UAS (`Dialog.as_uas`, §12.1.1). Then it builds the
requests of its side (`request`, §12.2.1.1, loose and strict routing included) and checks the
requests of the other side (`receive_request`, §12.2.2), updating the remote target on
target refresh requests (§12.2: re-INVITE, UPDATE) and on 2xx/1xx responses (§12.1.2,
§13.2.2.4).

As everything in `ringfence.sip`, it does no I/O: Via, which names the transport, is the
caller's to give.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ringfence.sip.errors import RemoteProtocolError
from ringfence.sip.fields import parse_cseq
from ringfence.sip.message import Headers, Request, Response
from ringfence.sip.uri import NameAddr, SipURI, URIError, parse_name_addr

#: Methods whose requests (and their 2xx) may change the remote target (RFC 3261 §12.2,
#: RFC 3311 §5.1 for UPDATE).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})
DEFAULT_MAX_FORWARDS = 70


class DialogError(RemoteProtocolError):
    """The messages cannot make or continue a dialog (no To tag, no Contact, ...)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag and remote tag, as seen from one side."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True)
class Dialog:
    """One side's dialog state (§12.1): an immutable value, each change gives a new one."""

    id: DialogId
    state: DialogState
    #: The local and remote name-addr values, with their tags (From and To of our requests).
    local: str
    remote: str
    #: The URI requests go to: the peer's Contact (§12.1.1, §12.1.2).
    remote_target: str
    #: Route header values, in the order our requests carry them.
    route_set: tuple[str, ...]
    #: The CSeq of our last request (None: none sent yet) and of the peer's (§12.1).
    local_seq: int | None
    remote_seq: int | None
    #: §12.1.1: sips Request-URI over TLS; its requests then use sips too.
    secure: bool = False

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def as_uac(cls, request: Request, response: Response, *, secure: bool = False) -> Dialog:
        """The UAC's dialog from its request and a 1xx/2xx with a To tag (§12.1.2).

        Raises:
            DialogError: the response has no To tag or (not for early 1xx) no Contact.
        """
        remote, remote_tag, state = _creating(response)
        local = _header(request, "From")
        return cls(
            id=DialogId(_header(request, "Call-ID"), _tag(local) or "", remote_tag),
            state=state,
            local=local,
            remote=remote,
            remote_target=_contact_uri(response, required=response.status >= 200) or "",
            # §12.1.2: "the route set MUST be set to the list of URIs in the Record-Route
            # header field from the response, taken in reverse order".
            route_set=tuple(reversed(response.headers.values("Record-Route"))),
            local_seq=parse_cseq(_header(request, "CSeq")).number,
            remote_seq=None,
            secure=secure,
        )

    @classmethod
    def as_uas(cls, request: Request, response: Response, *, secure: bool = False) -> Dialog:
        """The UAS's dialog from the request and its own 1xx/2xx with a To tag (§12.1.1).

        Raises:
            DialogError: the request has no Contact or the response no To tag.
        """
        local, local_tag, state = _creating(response)
        remote = _header(request, "From")
        return cls(
            id=DialogId(_header(request, "Call-ID"), local_tag, _tag(remote) or ""),
            state=state,
            local=local,
            remote=remote,
            remote_target=_contact_uri(request, required=True) or "",
            # §12.1.1: the Record-Route values of the request, in order.
            route_set=tuple(request.headers.values("Record-Route")),
            local_seq=None,
            remote_seq=parse_cseq(_header(request, "CSeq")).number,
            secure=secure,
        )

    # -- the UAC side: responses and our requests -------------------------------------------

    def on_response(self, response: Response) -> Dialog:
        """A later 1xx/2xx to our dialog-creating request: confirm, refresh the target.

        §12.1.2 and §13.2.2.4: the 2xx confirms the early dialog; its Contact is the remote
        target from then on (the route set, though, stays as the first response set it).
        """
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else self.state
        target = _contact_uri(response, required=False) or self.remote_target
        return replace(self, state=state, remote_target=target)

    def request(
        self,
        method: str,
        via: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> tuple[Dialog, Request]:
        """A request within the dialog (§12.2.1.1) and the dialog that sent it.

        The CSeq is one above the last (ACK and CANCEL take their INVITE's: pass `cseq`).
        With a loose-routing first route (`lr`), the Request-URI is the remote target and
        the route set is the Route; else (strict routing, RFC 2543) the first route is the
        Request-URI and the remote target goes last in Route.

        Args:
            method: The method.
            via: Our Via value (with its branch), the transport layer's to choose.
            headers: More header fields (Contact for a target refresh, Content-Type, ...).
            body: The body; Content-Length is set to it.
            cseq: A CSeq number to reuse instead of the next one.
        """
        if cseq is None:
            cseq = (self.local_seq or 0) + 1
            dialog = replace(self, local_seq=cseq)
        else:
            dialog = self
        uri, routes = self._uri_and_routes()
        items: list[tuple[str, str]] = [("Via", via)]
        items += [("Route", route) for route in routes]
        items += [
            ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
            ("From", self.local),
            ("To", self.remote),
            ("Call-ID", self.id.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        items.extend(headers)
        items.append(("Content-Length", str(len(body))))
        return dialog, Request(method, uri, Headers(items), body)

    def _uri_and_routes(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0]).uri
        if isinstance(first, SipURI) and first.has_param("lr"):
            return self.remote_target, list(self.route_set)
        # §12.2.1.1 strict routing: the first route becomes the Request-URI, the remote
        # target the last Route.
        return str(first), [*self.route_set[1:], f"<{self.remote_target}>"]

    # -- the UAS side: the peer's requests --------------------------------------------------

    def receive_request(self, request: Request) -> tuple[Dialog, int | None]:
        """Check a request of the peer within this dialog (§12.2.2).

        Returns:
            The dialog after it, and None to go on, or the status to answer: 500 for a CSeq
            lower than the last (out of order, §12.2.2), 400 for a malformed one.
        """
        try:
            cseq = parse_cseq(_header(request, "CSeq")).number
        except (URIError, DialogError):
            return self, 400
        if request.method in ("ACK", "CANCEL"):
            return self, None  # they reuse the CSeq of their INVITE
        if self.remote_seq is not None and cseq < self.remote_seq:
            return self, 500
        dialog = replace(self, remote_seq=cseq)
        if request.method in TARGET_REFRESH:
            target = _contact_uri(request, required=False)
            if target:
                dialog = replace(dialog, remote_target=target)
        return dialog, None


def dialog_id(message: Request | Response, *, as_uas: bool) -> DialogId:
    """The id of the dialog a message belongs to, for the side that received or sent it.

    A request arriving at a UAS: local tag from To, remote from From (§12.2.2); a response
    at the UAC: local from From, remote from To.
    """
    from_tag = _tag(_header(message, "From")) or ""
    to_tag = _tag(_header(message, "To")) or ""
    local, remote = (to_tag, from_tag) if as_uas else (from_tag, to_tag)
    return DialogId(_header(message, "Call-ID"), local, remote)


def _creating(response: Response) -> tuple[str, str, DialogState]:
    """The To value and tag of a dialog-creating response, and the state it gives (§12.1).

    Raises:
        DialogError: not a 101-299 response, or no To tag.
    """
    if not 101 <= response.status < 300:
        raise DialogError(f"a {response.status} creates no dialog")
    to = _header(response, "To")
    tag = _tag(to)
    if not tag:
        raise DialogError("no To tag in the response")
    return to, tag, DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY


def _header(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise DialogError(f"no {name}")
    return value


def _tag(value: str) -> str | None:
    try:
        return parse_name_addr(value).tag
    except URIError as exc:
        raise DialogError(f"malformed From/To: {exc}") from exc


def _contact_uri(message: Request | Response, *, required: bool) -> str | None:
    values = message.headers.values("Contact")
    if not values:
        if required:
            raise DialogError("no Contact")
        return None
    try:
        contact: NameAddr = parse_name_addr(values[0])
    except URIError as exc:
        raise DialogError(f"malformed Contact: {exc}") from exc
    return str(contact.uri)
