"""The SIP node: drives the sans-IO proxy engine with the network, the clock and the services.

Messages arrive from the transports, are validated (RFC 3261 §16.3), and go to the engine; the
engine's requests that need a decision go to the registrar (REGISTER for our domains) or the
router, as tasks; what the engine wants sent goes to the transports; one timer handle follows
the engine's next deadline. All SIP time is the event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from email.utils import format_datetime

from ringfence.messaging.held import HeldMessage, HeldMessages, HoldRefusedError
from ringfence.messaging.history import MessageHistory, Outgoing, Sent
from ringfence.proxy.engine import Incoming, ProxyEngine, Target
from ringfence.proxy.parking import (
    ALERTING_DEVICE,
    DEVICE_PROGRESS,
    NO_RESPONSE_FROM_DEVICE,
    EndReason,
    ParkedRequest,
    Parking,
    Waker,
)
from ringfence.proxy.refresh import RefreshSchedule, wants_refresh
from ringfence.proxy.router import Forward, Hold, Parties, Reply, Router
from ringfence.pushgw.traces import PushTraces, TraceStep
from ringfence.sip.digest import without_credentials_for
from ringfence.sip.message import Headers, Message, Request, Response, make_response
from ringfence.sip.pn import PNSREG_S
from ringfence.sip.randomness import random_hex
from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, URIError, parse_name_addr, parse_uri
from ringfence.sip.validation import check_request, check_response
from ringfence.state.location import Binding

logger = logging.getLogger(__name__)

#: Calls released from parking whose answer is still to come, remembered for their trace.
UNSETTLED_KEPT = 10_000

#: Option tags we implement (Require / Proxy-Require, RFC 3261 §8.2.2.3).
SUPPORTED = frozenset({"outbound", "path"})


class SipNode:
    def __init__(
        self,
        engine: ProxyEngine,
        router: Router,
        register: Callable[[Request, Address, float], Awaitable[Message]],
        is_local_domain: Callable[[str], Awaitable[bool]],
        send: Callable[[Address, Message], bool],
        *,
        waker: Waker | None = None,
        parking: Parking | None = None,
        messages: HeldMessages | None = None,
        refreshes: RefreshSchedule | None = None,
        traces: PushTraces | None = None,
        history: MessageHistory | None = None,
    ) -> None:
        self._engine = engine
        # Every MESSAGE routed between users is kept in their histories (when they have
        # messaging on): what each device fetches later.
        self._history = history
        # MESSAGEs routed whose final status will say whether the histories keep them.
        self._keeping: dict[str, tuple[Request, Parties]] = {}
        # RFC 3428 §7: MESSAGEs for users whose devices all sleep wait here, in the database.
        self._messages = messages
        self._outcomes: dict[str, asyncio.Future[tuple[int, Response | None]]] = {}
        # RFC 8599 +sip.pnsreg: pushes that ask devices to refresh their binding in time (one
        # process of a node schedules them: None in the others).
        self._refreshes = refreshes
        # "Why did I miss this call": the steps of each parked call, kept when it ends.
        self._traces = traces
        self._unsettled: dict[str, ParkedRequest] = {}
        self._router = router
        # RFC 8599: requests for sleeping devices wait here while a push wakes them.
        self._waker = waker
        self._parking = parking if parking is not None else Parking()
        self._register = register
        self._is_local_domain = is_local_domain
        self._send = send
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def engine(self) -> ProxyEngine:
        return self._engine

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- input ------------------------------------------------------------------------------

    def on_message(self, message: Message, source: Address) -> None:
        now = self._now()
        if isinstance(message, Request):
            # A REGISTER is ours to answer (UAS: Require applies); the rest we proxy.
            registering = message.method == "REGISTER"
            rejection = check_request(message, supported=SUPPORTED, as_uas=registering)
            if rejection is not None:
                if message.method != "ACK":
                    # Stateless: the request may be too broken for a transaction (§16.3).
                    response = make_response(
                        message,
                        rejection.status,
                        rejection.reason,
                        to_tag="rf-stateless",
                        headers=rejection.headers,
                    )
                    self._send(source, response)
                return
        elif check_response(message) is not None:
            return
        self._engine.receive(message, source, now)
        self._process()

    def _process(self) -> None:
        for incoming in self._engine.pending():
            self._spawn(self._decide(incoming))
        for key, status in self._engine.settled():
            self._settled(key, status)
        for key, status, response in self._engine.outcomes():
            future = self._outcomes.pop(key, None)
            if future is not None and not future.done():
                future.set_result((status, response))
        self._flush()

    # -- requests parked for sleeping devices (RFC 8599) ------------------------------------

    def _park(self, incoming: Incoming, request: Request, decision: Forward, now: float) -> None:
        """Wake the sleeping devices of a request the engine holds for them."""
        wake = decision.wake
        assert wake is not None
        assert self._waker is not None
        if self._engine.is_answered(incoming.key):
            return  # cancelled meanwhile
        overlay = wake.overlay
        parked = self._parking.park(
            incoming.key,
            request,
            wake.aor,
            list(wake.sleepers),
            now,
            wake.account_id,
            wait_s=overlay.wait_s if overlay is not None else None,
        )
        parked.note(
            now, "parked", f"{len(parked.sleepers)} device(s) asleep, {len(decision.targets)} awake"
        )
        if overlay is not None:
            # Acrobits' SIPIS: the PBX hears each step as a 180 with X-Sipis-Push-Status.
            key = incoming.key
            parked.on_progress = lambda status: self._progress(key, status)
            self._progress(key, ALERTING_DEVICE)
        elif not decision.targets:
            # The caller hears ringing while the devices wake (Acrobits' SIPIS does so too).
            self._engine.reply(incoming.key, 180, "Ringing", now=now)
        for sleeper in parked.sleepers:
            self._waker.ring(parked, sleeper)

    def _progress(self, key: str, status: str) -> None:
        if self._engine.is_answered(key):
            return
        now = self._now()
        headers = (("X-Sipis-Push-Status", status),)
        self._engine.reply(key, 180, "Ringing", headers, now=now)
        self._process()

    def watches(self, aor: str, bindings: Sequence[Binding] = ()) -> bool:
        """Whether a change of `aor`'s bindings concerns this node (asked on every change).

        It does when a request waits for a device, a message is held, or a refresh is due.
        """
        return (
            self._parking.has(aor)
            or (self._messages is not None and self._messages.may_have(aor))
            or (
                self._refreshes is not None
                and (self._refreshes.tracks(aor) or any(wants_refresh(b) for b in bindings))
            )
        )

    def bindings_changed(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        """A REGISTER changed `aor`'s bindings: forward what waits for a woken device."""
        now = self._now()
        for parked, ready in self._parking.registered(aor, bindings, now):
            targets = [self._router.target_of(binding) for binding in ready]
            more = bool(parked.waiting())
            parked.note(now, "device back", f"{len(ready)} registered again")
            parked.progress(DEVICE_PROGRESS)
            self._engine.forward(parked.key, parked.request, targets, now=now, hold=more)
            parked.note(now, "forwarded", f"to {len(targets)} device(s)")
            if not more:
                self._parking.remove(parked.key)
                self._ending(parked)
                self._engine.release(parked.key, now=now)
        if self._messages is not None and self._messages.may_have(aor):
            awake = [self._router.target_of(b) for b in bindings if b.expires_at > now]
            if awake:
                self._spawn(self._deliver(aor, awake))
        if self._refreshes is not None:
            self._refreshes.changed(aor, bindings, now)
        self._process()

    # -- message history and messages held for sleeping devices (RFC 3428 §7) ---------------

    async def send_message(
        self,
        sender: Outgoing,
        to: str,
        content_type: str,
        body: bytes,
        disposition: str | None = None,
    ) -> Sent:
        """Send a MESSAGE from `sender` to the user `to` names (`messaging.MessageSender`).

        Delivered to every registered device of the recipient (the first 2xx counts), or
        held for its sleeping ones (202, RFC 3428 §7); kept in both histories.
        """
        try:
            target = parse_uri(to)
        except URIError:
            target = None
        if not isinstance(target, SipURI) or not target.user:
            return Sent(400, "Not a SIP URI of a user")
        decision = await self._router.route_message(target, self._now())
        if isinstance(decision, Reply):
            return Sent(decision.status, decision.reason or "Refused")
        parties = decision.history or Parties()
        if sender.retention_days is not None:
            parties = replace(
                parties, sender=sender.account_id, sender_retention_days=sender.retention_days
            )
        recipient = f"<sip:{target.user}@{target.host.lower()}>"
        origin = f"<{sender.aor}>;tag={random_hex(8)}"
        if isinstance(decision, Hold):
            outcome = await self._hold_message(decision, origin, recipient, content_type, body)
        else:
            request = _message(origin, recipient, content_type, body)
            statuses = await asyncio.gather(
                *(self._originate(request, branch) for branch in decision.targets)
            )
            best = min(statuses, key=lambda s: (not 200 <= s < 300, s)) if statuses else 480
            outcome = Sent(best, "OK" if 200 <= best < 300 else "Not delivered")
        if not (200 <= outcome.status < 300) or self._history is None or not parties:
            return outcome
        recorded = await self._history.record(
            parties, sender.aor, _uri_of(recipient), content_type, body, disposition
        )
        return replace(outcome, seq=recorded.sent)

    async def _hold_message(
        self, decision: Hold, origin: str, recipient: str, content_type: str, body: bytes
    ) -> Sent:
        if self._messages is None:
            return Sent(480, "Temporarily Unavailable")
        try:
            await self._messages.hold(
                decision.account_id, decision.aor, origin, recipient, content_type, body
            )
        except HoldRefusedError as exc:
            return Sent(exc.status, exc.reason)
        if self._waker is not None:
            self._waker.message_waiting(decision.aor, decision.sleepers)
        return Sent(202, "Accepted")

    def _keep(self, request: Request, parties: Parties) -> None:
        """Keep a routed MESSAGE in the sender's and the recipient's histories."""
        assert self._history is not None
        headers = request.headers
        self._history.keep(
            parties,
            _uri_of(headers.get("From")),
            _uri_of(headers.get("To")),
            headers.get("Content-Type") or "text/plain",
            request.body,
        )

    async def _hold(self, incoming: Incoming, request: Request, decision: Hold) -> bool:
        """Hold a MESSAGE for sleeping devices; whether it was (202) or refused."""
        headers = request.headers
        outcome = await self._hold_message(
            decision,
            headers.get("From") or "",
            headers.get("To") or "",
            headers.get("Content-Type") or "text/plain",
            request.body,
        )
        # RFC 3428 §7: 202, the message was accepted for delivery later.
        self._engine.reply(incoming.key, outcome.status, outcome.reason, now=self._now())
        return 200 <= outcome.status < 300

    async def _deliver(self, aor: str, targets: list[Target]) -> None:
        """Send `aor`'s held messages, in order, to its registered devices."""
        assert self._messages is not None
        for held in await self._messages.claim(aor):
            statuses = await asyncio.gather(*(self._send_held(held, target) for target in targets))
            if any(200 <= status < 300 for status in statuses):
                await self._messages.delivered(held.id)
            else:
                logger.info("a held message was not taken (%s); kept", sorted(set(statuses)))
                await self._messages.failed(held.id)
                return  # the rest stays in order behind it

    async def _send_held(self, held: HeldMessage, target: Target) -> int:
        message = held.message
        request = _message(
            message.sender,
            message.recipient,
            message.content_type,
            message.body,
            # RFC 3261 §20.17: when it was sent, which the app shows.
            date=message.received_at,
        )
        return await self._originate(request, target)

    async def _originate(self, request: Request, target: Target) -> int:
        """Send a request of the service's own to `target`; its final status."""
        request = replace(
            request, uri=target.uri, headers=request.headers.replace("Call-ID", random_hex(16))
        )
        status, _ = await self.request(request, target)
        return status

    async def request(self, request: Request, target: Target) -> tuple[int, Response | None]:
        """Send a request of the service's own (an upstream REGISTER) as it is, to `target`.

        Returns:
            The final status, and the response (None: a timeout, 408, or a transport
            failure, 503).
        """
        future: asyncio.Future[tuple[int, Response | None]] = (
            asyncio.get_running_loop().create_future()
        )
        key = self._engine.originate(request, target, now=self._now())
        self._outcomes[key] = future
        self._process()
        return await future

    def _ending(self, parked: ParkedRequest) -> None:
        """No longer parked, but not answered yet: its trace ends with its answer."""
        self._unsettled[parked.key] = parked
        while len(self._unsettled) > UNSETTLED_KEPT:
            self._unsettled.pop(next(iter(self._unsettled)))

    def _settled(self, key: str, status: int) -> None:
        keep = self._keeping.pop(key, None)
        if keep is not None and 200 <= status < 300:
            self._keep(*keep)
        parked = self._parking.remove(key)
        ending = self._unsettled.pop(key, None)
        if parked is None and ending is not None:
            self._trace(ending, status)
            return  # its devices were told already, if need be
        if parked is None:
            return
        self._trace(parked, status)
        if self._waker is None:
            return
        # Devices woken for nothing must stop ringing: an alert, never a second VoIP push.
        if status == 487:
            reason = EndReason.CANCELLED
        elif 200 <= status < 300:
            reason = EndReason.ANSWERED_ELSEWHERE
        else:
            reason = EndReason.FAILED
        if parked.waiting():
            self._waker.ended(parked, parked.waiting(), reason)

    def _parking_expired(self, now: float) -> None:
        for parked in self._parking.expired(now):
            parked.note(now, "wait over", f"{len(parked.waiting())} device(s) never came back")
            if parked.waiting() and self._waker is not None:
                self._waker.ended(parked, parked.waiting(), EndReason.NO_ANSWER)
            self._ending(parked)
            # Overlay mode: the PBX learns why (Acrobits' SIPIS reason header).
            headers = (
                (("X-Sipis-Reason", NO_RESPONSE_FROM_DEVICE),)
                if parked.on_progress is not None
                else ()
            )
            self._engine.release(parked.key, now=now, headers=headers)

    def _trace(self, parked: ParkedRequest, status: int) -> None:
        """Keep the call's push trace ("why did I miss this call"), if it is traced."""
        if self._traces is None or parked.account_id is None:
            return
        if 200 <= status < 300:
            outcome = "answered"
        elif status == 487:
            outcome = "cancelled by the caller"
        elif status == 480 and parked.waiting():
            outcome = "no device came back in time"
        else:
            outcome = f"not answered ({status})"
        now = self._now()
        steps = [
            TraceStep(max(0, round((at - parked.started) * 1000)), step, detail)
            for at, step, detail in parked.trace
        ]
        steps.append(TraceStep(round((now - parked.started) * 1000), "ended", str(status)))
        traces, account_id = self._traces, parked.account_id
        traces.record(account_id, now - parked.started, outcome, steps)

    def _spawn(self, job: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await job
            except Exception:
                logger.exception("SIP request handling failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide(self, incoming: Incoming) -> None:
        request = incoming.request
        if request.method == "REGISTER" and not incoming.in_dialog:
            await self._handle_register(incoming)
            return
        decision = await self._router.decide(incoming, self._now())
        now = self._now()
        keep = decision.history if isinstance(decision, (Forward, Hold)) else None
        if not self._history:
            keep = None
        if isinstance(decision, Forward):
            if decision.consumed_realm is not None:
                request = _consume_credentials(request, decision.consumed_realm)
            # Without a push service the sleeping devices cannot be reached: not held.
            hold = decision.wake is not None and self._waker is not None
            self._engine.forward(
                incoming.key,
                request,
                list(decision.targets),
                now=now,
                record_route=decision.record_route,
                hold=hold,
                # A MESSAGE is kept in the histories once a device took it (its 2xx).
                report=bool(keep),
            )
            if keep:
                self._keeping[incoming.key] = (request, keep)
                while len(self._keeping) > UNSETTLED_KEPT:
                    self._keeping.pop(next(iter(self._keeping)))
            if hold:
                self._park(incoming, request, decision, now)
        elif isinstance(decision, Hold):
            if await self._hold(incoming, request, decision) and keep:
                self._keep(request, keep)
        else:
            self._engine.reply(
                incoming.key, decision.status, decision.reason, decision.headers, now=now
            )
        self._process()

    async def _handle_register(self, incoming: Incoming) -> None:
        try:
            uri = parse_uri(incoming.request.uri)
        except URIError:
            uri = None
        if not isinstance(uri, SipURI) or not (
            await self._is_local_domain(uri.host) or self._engine.identity.is_us(uri)
        ):
            self._engine.reply(incoming.key, 403, "Not a domain served here", now=self._now())
            self._process()
            return
        response = await self._register(incoming.request, incoming.source, self._now())
        if isinstance(response, Request):  # pragma: no cover - the registrar answers
            return
        self._engine.respond(incoming.key, response, now=self._now())
        self._process()

    # -- output and time --------------------------------------------------------------------

    def _flush(self) -> None:
        for destination, message in self._engine.data_to_send():
            if not self._send(destination, message):
                logger.debug("could not send to a %s flow", destination.transport)
        for uri, request in self._engine.to_resolve():
            self._spawn(self._send_by_name(uri, request))
        self._arm()

    async def _send_by_name(self, uri: SipURI, request: Request) -> None:
        """Send a stateless request to the host `uri` names, once DNS says where (RFC 3263)."""
        hop = await self._router.stateless_hop(uri)
        if hop is None:
            logger.debug("a stateless %s has no hop outside this service: dropped", request.method)
            return
        if not self._send(hop, request):
            logger.debug("could not send to a %s flow", hop.transport)

    def _arm(self) -> None:
        deadline = self._engine.next_deadline()
        for other in (
            self._parking.next_deadline(),
            self._refreshes.next_deadline() if self._refreshes is not None else None,
        ):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        if deadline is None or deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._now()
        self._engine.handle_timer(now)
        self._parking_expired(now)
        if self._refreshes is not None and self._waker is not None:
            for aor, sleeper in self._refreshes.due(now):
                self._waker.refresh(aor, sleeper, PNSREG_S)
        self._process()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _message(
    sender: str, recipient: str, content_type: str, body: bytes, *, date: datetime | None = None
) -> Request:
    """A MESSAGE (RFC 3428) of the service's own; its Request-URI and Call-ID come per target."""
    headers = [
        ("Max-Forwards", "70"),
        ("From", sender),
        ("To", recipient),
        ("Call-ID", ""),
        ("CSeq", "1 MESSAGE"),
    ]
    if date is not None:
        headers.append(("Date", format_datetime(date, usegmt=True)))
    headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    return Request("MESSAGE", recipient.strip("<>"), Headers(headers), body)


def _uri_of(value: str | None) -> str:
    """The URI of a From or To header field value, as the history shows the party."""
    try:
        return str(parse_name_addr(value or "").uri)
    except URIError:
        return value or ""


def _consume_credentials(request: Request, realm: str) -> Request:
    """The request without the Proxy-Authorization values we verified (RFC 3261 §22.3)."""
    values = request.headers.get_all("Proxy-Authorization")
    kept = without_credentials_for(values, realm)
    if len(kept) == len(values):
        return request
    headers = request.headers.remove("Proxy-Authorization")
    for value in kept:
        headers = headers.add("Proxy-Authorization", value)
    return replace(request, headers=headers, raw=None)
