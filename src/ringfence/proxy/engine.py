"""The stateful proxy's mechanics (RFC 3261 §16), sans-IO, over the transaction layer.

Theory of operation
-------------------
Every request that arrives opens a server transaction. The engine decides alone what needs no
knowledge of users: CANCEL (§16.10), ACK for a 2xx (forwarded statelessly, §16.11), loop
detection (§16.3 step 4), Max-Forwards (§16.3 step 3), in-dialog requests that carry our own
Record-Route (the flow token names the next hop). Everything else waits in `pending()` for a
decision from the router (which looks up accounts and registrations): `reply(...)` or
`forward(...)` to one or more targets (parallel forking).

For a forwarded request, each target gets a branch: a client transaction with our Via, the
Record-Route, Max-Forwards decremented. Responses come back through a response context
(§16.7): provisional ones (but 100) and every 2xx are passed upstream at once; the other final
responses are kept until every branch has one, then the best is sent (§16.7 step 6). A 2xx or
6xx cancels the other pending branches (§16.7 step 10, §16.10).

Time is an argument; the engine keeps no clock. Drain `data_to_send()` to the transport.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field, replace

from ringfence.proxy import flow_token
from ringfence.sip.fields import MAGIC_COOKIE, parse_cseq, parse_max_forwards, parse_via
from ringfence.sip.message import Headers, Message, Request, Response, make_response, split_list
from ringfence.sip.randomness import random_hex
from ringfence.sip.transaction import (
    AckReceived,
    Address,
    RequestReceived,
    ResponseReceived,
    StrayResponseReceived,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    server_key,
)
from ringfence.sip.uri import SipURI, URIError, is_ip_address, parse_name_addr, parse_uri

DEFAULT_MAX_FORWARDS = 70
#: Timer C (RFC 3261 §16.6 step 11): how long an INVITE branch may go without a provisional
#: or final response; "MUST be larger than 3 minutes".
TIMER_C_S = 181.0
#: After Timer C has CANCELled a branch, how long the callee has to answer the CANCEL before
#: the branch is taken as a 408 (64*T1, the lifetime of a non-INVITE transaction).
CANCEL_GRACE_S = 32.0


@dataclass(frozen=True, slots=True)
class Listener:
    """Where we listen on one transport: what goes in our Via and Record-Route."""

    transport: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Identity:
    """Who we are: our listeners, and other names of ours (so we know our own Route)."""

    listeners: tuple[Listener, ...]
    aliases: frozenset[str] = frozenset()

    def listener(self, transport: str) -> Listener:
        wanted = transport.upper()
        for listener in self.listeners:
            if listener.transport == wanted:
                return listener
        # WSS/WS and TLS/TCP share a listener's address family; fall back to the first.
        return self.listeners[0]

    def is_us(self, uri: SipURI) -> bool:
        host = uri.host.lower()
        if host in self.aliases:
            return True
        default = 5061 if uri.scheme == "sips" else 5060
        port = uri.port or default
        return any(
            host == listener.host.lower() and port == listener.port for listener in self.listeners
        )


@dataclass(frozen=True, slots=True)
class Target:
    """One branch: the new Request-URI, the next hop, and Route headers to add (Path)."""

    uri: str
    destination: Address
    route: tuple[str, ...] = ()
    #: Where to try next when `destination` fails (RFC 3263 §4.3: the further DNS targets).
    alternates: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class Incoming:
    """A request waiting for the router's decision.

    `hop` is the next hop already known from our own Record-Route (an in-dialog request);
    `request` has our Route entries removed.
    """

    key: str
    request: Request
    source: Address
    hop: Address | None = None
    in_dialog: bool = False


@dataclass(slots=True)
class _Branch:
    key: str
    request: Request
    destination: Address
    final: Response | None = None
    provisional: bool = False
    cancel_pending: bool = False
    #: When Timer C fires for this INVITE branch; None for other methods and once final.
    timer_c: float | None = None
    #: Timer C has fired once and sent a CANCEL.
    timed_out: bool = False
    #: What a retry at the next address needs (RFC 3263 §4.3).
    target: Target | None = None
    attempt: int = 0
    original: Request | None = None
    branch_id: str = ""
    record_route: bool = False


@dataclass(slots=True)
class _Context:
    """§16.2: a response context, one per forwarded request."""

    server_key: str
    request: Request
    source: Address
    branches: list[_Branch] = field(default_factory=list)
    final_sent: bool = False
    cancelled: bool = False
    #: Devices are being woken for it (RFC 8599): more branches may come, so failed
    #: branches do not end it yet (`ProxyEngine.release`).
    held: bool = False
    #: It was held once: its final response is reported by `ProxyEngine.settled`.
    parked: bool = False


def loop_hash(request: Request) -> str:
    """§16.6 step 8: a hash of what identifies the request, stable across a loop."""
    headers = request.headers
    parts = [
        request.uri,
        _tag(headers.get("From")),
        _tag(headers.get("To")),
        headers.get("Call-ID") or "",
        str(parse_cseq(headers.get("CSeq") or "0 X").number),
        ",".join(headers.values("Proxy-Require")),
        ",".join(headers.get_all("Proxy-Authorization")),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _tag(value: str | None) -> str:
    if not value:
        return ""
    try:
        return parse_name_addr(value).tag or ""
    except URIError:
        return ""


def uri_destination(uri: SipURI) -> Address:
    """The next hop a URI names (RFC 3263 in its simplest form: no DNS lookups here)."""
    transport = (uri.param("transport") or ("tls" if uri.scheme == "sips" else "udp")).upper()
    secure = uri.scheme == "sips" or transport in ("TLS", "WSS")
    return Address(transport, uri.host, uri.port or (5061 if secure else 5060))


def pop_top_via(headers: Headers) -> Headers:
    """The headers without the first Via value (a proxy removes its own, §16.7 step 3)."""
    items = list(headers)
    for index, (name, value) in enumerate(items):
        if name == "Via":
            rest = split_list(value)[1:]
            if rest:
                items[index] = (name, ", ".join(rest))
            else:
                del items[index]
            break
    return Headers(items)


def _next_max_forwards(headers: Headers) -> str:
    """§16.6 step 3: the Max-Forwards to send on (one less, or the default when absent)."""
    value = headers.get("Max-Forwards")
    return str(DEFAULT_MAX_FORWARDS if value is None else parse_max_forwards(value) - 1)


#: 4xx responses that tell the caller how to retry, preferred within the class (§16.7 step 6).
_RESUBMISSION_HINTS = (401, 407, 415, 420, 484)
_CHALLENGES = ("WWW-Authenticate", "Proxy-Authenticate")


def _best(finals: list[Response]) -> Response:
    """§16.7 steps 6-7: the response to send upstream when every branch has failed.

    A 6xx if any, else one of the lowest class; within 4xx one that tells the caller how to
    retry (401, 407, 415, 420, 484). A chosen 401 or 407 carries the challenges of every
    401 and 407 received (step 7), so the caller can answer all the realms at once. A 503
    becomes 500: the 503 was about the next hop, not about us (§16.7 step 6).
    """
    six = [response for response in finals if response.status >= 600]
    if six:
        best = six[0]
    else:
        lowest = min(response.status // 100 for response in finals)
        in_class = [response for response in finals if response.status // 100 == lowest]
        hinted = [response for response in in_class if response.status in _RESUBMISSION_HINTS]
        best = (hinted or in_class)[0]
    if best.status in (401, 407):
        extra = [
            (name, value)
            for response in finals
            if response is not best and response.status in (401, 407)
            for name, value in response.headers
            if name in _CHALLENGES
        ]
        if extra:
            headers = best.headers
            for name, value in extra:
                headers = headers.add(name, value)
            best = replace(best, headers=headers, raw=None)
    if best.status == 503:
        best = replace(best, status=500, reason="Server Internal Error")
    return best


class ProxyEngine:
    def __init__(
        self,
        identity: Identity,
        flow_key: bytes,
        timers: TimerConfig | None = None,
        *,
        timer_c_s: float = TIMER_C_S,
    ) -> None:
        self.identity = identity
        self._timer_c_s = timer_c_s
        # Timer C of every pending INVITE branch: (deadline, order, branch key); lazy, an
        # entry whose branch has moved its deadline since is skipped.
        self._timer_c: list[tuple[float, int, str]] = []
        self._timer_c_order = 0
        self._flow_key = flow_key
        self.layer = TransactionLayer(timers)
        self._contexts: dict[str, _Context] = {}
        self._branch_of: dict[str, tuple[_Context, _Branch]] = {}
        self._pending: list[Incoming] = []
        self._outbox: list[tuple[Address, Message]] = []
        # Stateless requests whose next hop is a host name, with the URI that names it.
        self._by_name: list[tuple[SipURI, Request]] = []
        # Held contexts that got their final response: (server key, status).
        self._settled: list[tuple[str, int]] = []
        # Requests of our own (held messages delivered): client key -> None, and the final
        # status of those that ended since the last `outcomes`.
        self._originated: dict[str, None] = {}
        self._outcomes: list[tuple[str, int, Response | None]] = []

    # -- driving ----------------------------------------------------------------------------

    def receive(self, message: Message, source: Address, now: float) -> None:
        self.layer.receive(message, source, now)
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        self.layer.handle_timer(now)
        self._pump(now)
        while self._timer_c and self._timer_c[0][0] <= now:
            deadline, _, key = heapq.heappop(self._timer_c)
            found = self._branch_of.get(key)
            if found is not None and found[1].timer_c == deadline:
                self._on_timer_c(key, found[0], found[1], now)
        self._pump(now)

    def next_deadline(self) -> float | None:
        layer = self.layer.next_deadline()
        while self._timer_c:
            deadline, _, key = self._timer_c[0]
            found = self._branch_of.get(key)
            if found is not None and found[1].timer_c == deadline:
                return deadline if layer is None else min(layer, deadline)
            heapq.heappop(self._timer_c)
        return layer

    def _set_timer_c(self, branch: _Branch, deadline: float | None) -> None:
        branch.timer_c = deadline
        if deadline is not None:
            self._timer_c_order += 1
            heapq.heappush(self._timer_c, (deadline, self._timer_c_order, branch.key))

    def _on_timer_c(self, key: str, context: _Context, branch: _Branch, now: float) -> None:
        """§16.8: CANCEL a branch that rang too long; one that never answered is a 408."""
        if branch.provisional and not branch.timed_out:
            branch.timed_out = True
            self._set_timer_c(branch, now + CANCEL_GRACE_S)
            self._cancel_branch(branch, now)
            return
        self._set_timer_c(branch, None)
        self._on_response(key, make_response(branch.request, 408), now)
        # Nothing more will come of this transaction: end it (its failure event finds the
        # branch final already and changes nothing).
        self.layer.transport_error(key, now)

    def data_to_send(self) -> list[tuple[Address, Message]]:
        out = self.layer.data_to_send() + self._outbox
        self._outbox = []
        return out

    def to_resolve(self) -> list[tuple[SipURI, Request]]:
        """Stateless requests (an ACK for a 2xx, §16.11) whose next hop is a host name.

        RFC 3263 needs DNS, which is I/O and not the engine's: the caller resolves the URI
        and sends the request there (or drops it, for a domain served here).
        """
        out, self._by_name = self._by_name, []
        return out

    def pending(self) -> list[Incoming]:
        out, self._pending = self._pending, []
        return out

    def settled(self) -> list[tuple[str, int]]:
        """Held requests (`forward(hold=True)`) answered since the last call, with the status."""
        out, self._settled = self._settled, []
        return out

    def outcomes(self) -> list[tuple[str, int, Response | None]]:
        """Requests of our own (`originate`) that ended since the last call.

        Each with its final status and response; a timeout is 408, a transport failure 503
        (RFC 3261 §8.1.3.1), both without a response.
        """
        out, self._outcomes = self._outcomes, []
        return out

    def originate(self, request: Request, target: Target, *, now: float) -> str:
        """Send a request of ours to `target`; returns the key `outcomes` will name.

        For a MESSAGE held while its recipient slept (RFC 3428 §7: a store-and-forward
        server sends it on as a new request). `request` has no Via: ours is added, with the
        target's Route set.
        """
        destination = target.destination
        listener = self.identity.listener(destination.transport)
        branch = f"{MAGIC_COOKIE}{random_hex(16)}"
        via = f"SIP/2.0/{listener.transport} {listener.host}:{listener.port};branch={branch}"
        front = [("Via", via)] + [("Route", route) for route in target.route]
        headers = Headers([*front, *request.headers])
        outgoing = Request(request.method, target.uri, headers, request.body)
        key = self.layer.send_request(outgoing, destination, now)
        self._originated[key] = None
        self._pump(now)
        return key

    def _originated_ended(self, key: str, status: int, response: Response | None = None) -> bool:
        if key not in self._originated:
            return False
        if status >= 200:
            del self._originated[key]
            self._outcomes.append((key, status, response))
        return True

    def is_answered(self, key: str) -> bool:
        """Whether the request of `key` has had its final response (or is gone)."""
        context = self._contexts.get(key)
        return context is None or context.final_sent

    def release(self, key: str, *, now: float, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Stop holding `key`: answer it if every branch has ended (480 when it has none).

        `headers` go in that 480.
        """
        context = self._contexts.get(key)
        if context is None or not context.held:
            return
        context.held = False
        if context.final_sent:
            return
        if not context.branches:
            self.reply(key, 480, headers=headers, now=now)
        elif all(branch.final is not None for branch in context.branches):
            self._send_best(context, now)
        self._pump(now)

    # -- decisions --------------------------------------------------------------------------

    def reply(
        self,
        key: str,
        status: int,
        reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        now: float,
    ) -> None:
        request = self.layer.request(key)
        if request is None:
            return
        tag = None if status == 100 else loop_hash(request)[:10]
        self.respond(
            key, make_response(request, status, reason, to_tag=tag, headers=headers), now=now
        )

    def respond(self, key: str, response: Response, *, now: float) -> None:
        if self.layer.state(key) is None:
            return  # the transaction ended meanwhile (e.g. CANCEL answered it)
        context = self._contexts.get(key)
        if context is not None and response.status >= 200:
            self._final_sent(context, response.status)
        self.layer.send_response(key, response, now)
        self._pump(now)

    def _final_sent(self, context: _Context, status: int) -> None:
        if not context.final_sent and context.parked:
            self._settled.append((context.server_key, status))
        context.final_sent = True

    def forward(
        self,
        key: str,
        request: Request,
        targets: list[Target],
        *,
        now: float,
        record_route: bool = True,
        hold: bool = False,
        report: bool = False,
    ) -> None:
        """Fork `request` (already stripped of our Route) to `targets` in parallel.

        With `hold`, more targets may follow (devices woken by push): the request is not
        answered when `targets` is empty or every branch fails, until `release`. Called again
        for the same request, it adds branches. A held request's final status is reported by
        `settled`; with `report`, that of one not held too.
        """
        context = self._contexts.get(key)
        source = context.source if context else None
        if context is None:
            original = self.layer.request(key)
            if original is None:
                return
            context = _Context(key, original, Address("UDP", "0.0.0.0", 0))  # noqa: S104
            self._contexts[key] = context
        if context.final_sent:
            return
        if hold:
            context.held = True
        if hold or report:
            context.parked = True
        if context.cancelled:
            self.reply(key, 487, now=now)
            return
        if not targets:
            if not context.held:
                self.reply(key, 480, now=now)
            return
        max_forwards = request.headers.get("Max-Forwards")
        if max_forwards is not None and parse_max_forwards(max_forwards) == 0:
            self.reply(key, 483, now=now)  # §16.3 step 3
            return
        base = loop_hash(request)
        record_route = record_route and source is not None
        first = len(context.branches)  # branches added later get ids of their own
        for index, target in enumerate(targets, start=first):
            self._send_branch(context, request, target, f"{base}.{index}", record_route, now)
        self._pump(now)

    def _send_branch(
        self,
        context: _Context,
        request: Request,
        target: Target,
        branch_id: str,
        record_route: bool,
        now: float,
        *,
        attempt: int = 0,
        position: int | None = None,
    ) -> None:
        """Send one branch (§16.6 steps 2-9); `position` replaces a failed branch."""
        destination = target.destination
        listener = self.identity.listener(destination.transport)
        branch = f"{MAGIC_COOKIE}{branch_id}" + (f".{attempt}" if attempt else "")
        via = f"SIP/2.0/{listener.transport} {listener.host}:{listener.port};branch={branch}"
        # Top down: our Via (step 8), our Record-Route (step 4), the target's Route set.
        front = [("Via", via)]
        if record_route:
            front += [
                ("Record-Route", value) for value in self._record_route(context.source, destination)
            ]
        front += [("Route", route) for route in target.route]
        headers = request.headers.forwarded(
            front, "Max-Forwards", _next_max_forwards(request.headers)
        )
        outgoing = Request(request.method, target.uri, headers, request.body)
        client_key = self.layer.send_request(outgoing, destination, now)
        state = _Branch(
            client_key,
            outgoing,
            destination,
            target=target,
            attempt=attempt,
            original=request,
            branch_id=branch_id,
            record_route=record_route,
        )
        if position is None:
            context.branches.append(state)
        else:
            context.branches[position] = state
        self._branch_of[client_key] = (context, state)
        if request.method == "INVITE":
            self._set_timer_c(state, now + self._timer_c_s)

    def _try_next(self, context: _Context, branch: _Branch, now: float) -> bool:
        """RFC 3263 §4.3: a branch whose next hop failed goes to the next address, if any."""
        target = branch.target
        if (
            target is None
            or not target.alternates
            or branch.provisional
            or context.final_sent
            or context.cancelled
            or branch.original is None
        ):
            return False
        following = replace(
            target, destination=target.alternates[0], alternates=target.alternates[1:]
        )
        self._set_timer_c(branch, None)
        branch.final = make_response(branch.request, 503)  # this one is over either way
        self._send_branch(
            context,
            branch.original,
            following,
            branch.branch_id,
            branch.record_route,
            now,
            attempt=branch.attempt + 1,
            position=context.branches.index(branch),
        )
        return True

    def _record_route(self, caller: Address, callee: Address) -> list[str]:
        """§16.6 step 4: our Record-Route values, top first, with both flows in the URI.

        Two entries when the transports differ, so each side reaches us over its own
        (RFC 5658 double record-routing).
        """
        token = flow_token.encode(self._flow_key, caller, callee)

        def entry(transport: str) -> str:
            # sip: with transport=tls, not sips:, for the TLS side: a sips: Record-Route
            # would claim TLS on every hop of the dialog (RFC 5630 §3.1.3), which the other
            # side may not have; baresip 1.0 ends such a dialog at once (ENOSYS on the ACK).
            listener = self.identity.listener(transport)
            return (
                f"<sip:{token}@{listener.host}:{listener.port};"
                f"transport={listener.transport.lower()};lr>"
            )

        caller_side, callee_side = entry(caller.transport), entry(callee.transport)
        if caller_side == callee_side:
            return [callee_side]
        # The callee uses the route set in order, the caller reversed (§12.1.1, §12.1.2).
        return [callee_side, caller_side]

    # -- events from the transaction layer --------------------------------------------------

    def _pump(self, now: float) -> None:
        for event in self.layer.events():
            if isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif isinstance(event, ResponseReceived):
                if not self._originated_ended(event.key, event.response.status, event.response):
                    self._on_response(event.key, event.response, now)
            elif isinstance(event, TransactionTimedOut | TransportFailed):
                status = 408 if isinstance(event, TransactionTimedOut) else 503
                if self._originated_ended(event.key, status):
                    continue
                found = self._branch_of.get(event.key)
                if found is not None and found[1].final is None:
                    context, branch = found
                    if not self._try_next(context, branch, now):
                        status = 408 if isinstance(event, TransactionTimedOut) else 503
                        self._on_response(event.key, make_response(branch.request, status), now)
            elif isinstance(event, TransactionTerminated):
                self._contexts.pop(event.key, None)
                self._branch_of.pop(event.key, None)
            elif isinstance(event, StrayResponseReceived):
                self._forward_stray(event.response)
            elif isinstance(event, AckReceived):
                pass  # an ACK to a 2xx we sent ourselves: nothing follows from it

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        if event.key is None:
            self._forward_ack(request, event.source)
            return
        if request.method == "CANCEL":
            self._on_cancel(event.key, request, now)
            return
        if self._looped(request):
            self.reply(event.key, 482, now=now)
            return
        stripped, hop, ours = self.strip_own_routes(request, event.source)
        if request.method == "INVITE":
            self._contexts[event.key] = _Context(event.key, request, event.source)
        in_dialog = _tag(request.headers.get("To")) != "" and ours
        self._pending.append(Incoming(event.key, stripped, event.source, hop, in_dialog))

    def _looped(self, request: Request) -> bool:
        """§16.3 step 4: whether one of our Vias carries this very request's hash.

        A spiral changes the Request-URI, so its hash differs; a loop does not.
        """
        expected: str | None = None  # hashed only once one of our Vias is found
        for value in request.headers.values("Via"):
            via = parse_via(value)
            listener_match = any(
                via.host == listener.host and (via.port or 5060) == listener.port
                for listener in self.identity.listeners
            )
            if not listener_match:
                continue
            if expected is None:
                expected = MAGIC_COOKIE + loop_hash(request)
            if (via.branch or "").startswith(expected):
                return True
        return False

    def strip_own_routes(
        self, request: Request, source: Address
    ) -> tuple[Request, Address | None, bool]:
        """§16.4: remove the Route entries that name us; the hop their flow token gives."""
        routes = request.headers.values("Route")
        hop: Address | None = None
        removed = 0
        for value in routes:
            try:
                uri = parse_name_addr(value).uri
            except URIError:
                break
            if not isinstance(uri, SipURI) or not self.identity.is_us(uri):
                break
            removed += 1
            flows = flow_token.decode(self._flow_key, uri.user or "") if uri.user else None
            if flows is not None and hop is None:
                caller, callee = flows
                if flow_token.same_flow(source, caller):
                    hop = callee
                elif flow_token.same_flow(source, callee):
                    hop = caller
        if not removed:
            return request, None, False
        headers = request.headers.remove("Route")
        for value in reversed(routes[removed:]):
            headers = headers.prepend("Route", value)
        if hop is None and routes[removed:]:
            try:
                next_uri = parse_name_addr(routes[removed]).uri
            except URIError:
                next_uri = None
            if isinstance(next_uri, SipURI):
                hop = uri_destination(next_uri)
        return replace(request, headers=headers), hop, True

    def _on_cancel(self, key: str, cancel: Request, now: float) -> None:
        """§16.10: answer the CANCEL, then cancel every branch still pending."""
        context = self._contexts.get(server_key(replace(cancel, method="INVITE")))
        if context is None or context.final_sent:
            self.reply(key, 481, now=now)
            return
        self.reply(key, 200, now=now)
        context.cancelled = True
        context.held = False  # no device woken from now on gets it
        if not context.branches:
            # Still waiting for the router, or for woken devices: answered now.
            self.reply(context.server_key, 487, now=now)
            return
        for branch in context.branches:
            self._cancel_branch(branch, now)

    def _cancel_branch(self, branch: _Branch, now: float) -> None:
        if branch.final is not None:
            return
        if not branch.provisional:
            # §9.1: no CANCEL before a provisional response; send it when one arrives.
            branch.cancel_pending = True
            return
        invite = branch.request
        headers = [("Via", invite.headers.values("Via")[0])]
        headers += [("Route", value) for value in invite.headers.get_all("Route")]
        headers += [
            ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
            ("From", invite.headers.get("From") or ""),
            ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.headers.get("Call-ID") or ""),
            ("CSeq", f"{parse_cseq(invite.headers.get('CSeq') or '').number} CANCEL"),
            ("Content-Length", "0"),
        ]
        branch.cancel_pending = False
        self.layer.send_request(
            Request("CANCEL", invite.uri, Headers(headers)), branch.destination, now
        )

    def _on_response(self, key: str, response: Response, now: float) -> None:
        found = self._branch_of.get(key)
        if found is None:
            return  # a response to a CANCEL we sent
        context, branch = found
        if branch.final is not None and response.status >= 300:
            return  # the branch has ended (Timer C made it a 408)
        upstream = replace(response, headers=pop_top_via(response.headers), raw=None)
        if response.status < 200:
            branch.provisional = True
            if branch.timer_c is not None and not branch.timed_out:
                self._set_timer_c(branch, now + self._timer_c_s)  # §16.7 step 2
            if branch.cancel_pending:
                self._cancel_branch(branch, now)
            if response.status > 100 and not context.final_sent:
                self.layer.send_response(context.server_key, upstream, now)
            return
        if response.status == 503 and self._try_next(context, branch, now):
            return  # §4.3 of RFC 3263: a 503 is a failure of this server; try the next
        branch.final = response
        self._set_timer_c(branch, None)
        if 200 <= response.status < 300:
            # Every 2xx goes upstream, even after another: each creates its own dialog.
            self._final_sent(context, response.status)
            self.layer.send_response(context.server_key, upstream, now)
            if context.request.method == "INVITE":
                for other in context.branches:
                    self._cancel_branch(other, now)
            return
        if response.status >= 600 and context.request.method == "INVITE":
            for other in context.branches:
                self._cancel_branch(other, now)
        if context.final_sent or context.held or any(b.final is None for b in context.branches):
            return
        self._send_best(context, now)

    def _send_best(self, context: _Context, now: float) -> None:
        finals = [b.final for b in context.branches if b.final is not None]
        best = _best(finals)
        self._final_sent(context, best.status)
        self.layer.send_response(
            context.server_key, replace(best, headers=pop_top_via(best.headers), raw=None), now
        )

    # -- stateless forwarding ---------------------------------------------------------------

    def _forward_ack(self, ack: Request, source: Address) -> None:
        """§16.11: an ACK for a 2xx follows the route set, statelessly."""
        stripped, hop, _ = self.strip_own_routes(ack, source)
        # §16.12: the next hop is the first Route left, else the Request-URI. A flow token's
        # hop is always an address; only these may name a host.
        routes = stripped.headers.values("Route")
        try:
            named = parse_name_addr(routes[0]).uri if routes else parse_uri(stripped.uri)
        except URIError:
            return
        if hop is None:
            if not isinstance(named, SipURI):
                return
            hop = uri_destination(named)
        listener = self.identity.listener(hop.transport)
        branch = f"{MAGIC_COOKIE}{loop_hash(stripped)}.a"
        via = f"SIP/2.0/{listener.transport} {listener.host}:{listener.port};branch={branch}"
        headers = stripped.headers.forwarded(
            [("Via", via)], "Max-Forwards", _next_max_forwards(stripped.headers)
        )
        forwarded = replace(stripped, headers=headers, raw=None)
        if isinstance(named, SipURI) and not is_ip_address(hop.host):
            self._by_name.append((named, forwarded))
            return
        self._outbox.append((hop, forwarded))

    def _forward_stray(self, response: Response) -> None:
        """§16.7 step 3 for a 2xx no transaction matches: forward it to the next Via."""
        vias = response.headers.values("Via")
        if len(vias) < 2:
            return
        try:
            ours, upstream = parse_via(vias[0]), parse_via(vias[1])
        except URIError:
            return
        if not any(ours.host == listener.host for listener in self.identity.listeners):
            return
        host = upstream.param("received") or upstream.host
        rport = upstream.param("rport")
        port = int(rport) if rport and rport.isdigit() else (upstream.port or 5060)
        destination = Address(upstream.transport, host, port)
        self._outbox.append(
            (destination, replace(response, headers=pop_top_via(response.headers), raw=None))
        )
