"""The four transaction state machines of RFC 3261 §17, with RFC 6026's Accepted state.

Theory of operation
-------------------
A transaction is a request and the responses to it. Four machines run them: INVITE client
(§17.1.1), non-INVITE client (§17.1.2), INVITE server (§17.2.1), non-INVITE server (§17.2.2).
RFC 6026 adds an "Accepted" state to both INVITE machines, so that 2xx retransmissions and
their ACKs reach the transaction user (TU) instead of creating new transactions.

Each machine is a table: `(state, input) -> Transition(actions, next state)`, with the RFC's
figure beside it. Every pair of every table is listed, "ignore" included, so the tests can
walk all of them. Inputs are what happens to a transaction (a response of a class, a request
retransmission, a response from the TU, a timer firing, a transport error); actions are what
it does about it (send, retransmit, deliver upward, time out).

Rules:
1. Time is an argument. A transaction never reads a clock; it keeps deadlines and reports the
   earliest (`next_deadline`); the caller calls `handle_timer(now)` at or after it.
2. Nothing is sent or delivered directly: outgoing messages queue in `data_to_send()`,
   events for the TU in `events()`. The transport and the TU drain them.
3. Entering a state clears every timer and starts that state's timers (`_ENTRY_TIMERS`);
   retransmission timers then double on each firing, capped as the RFC says.
"""

from __future__ import annotations

import collections
import enum
import heapq
from dataclasses import dataclass, field
from typing import TypeAlias

from ringfence.sip.errors import LocalProtocolError
from ringfence.sip.fields import MAGIC_COOKIE, parse_cseq, parse_via
from ringfence.sip.message import Headers, Message, Request, Response, make_response
from ringfence.sip.uri import URIError, parse_name_addr


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 / table 4: T1 (RTT estimate), T2 (cap), T4 (network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


@dataclass(frozen=True, slots=True)
class Address:
    """Where a message came from or goes to.

    `flow` names a connection on stream transports (RFC 5626 flows), so that responses go
    back over the connection the request came on.
    """

    transport: str
    host: str
    port: int
    flow: str | None = None

    @property
    def reliable(self) -> bool:
        return self.transport.upper() not in ("UDP", "DTLS")


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    # Client transactions: responses by class, and timers.
    PROVISIONAL = "1xx received"
    SUCCESS = "2xx received"
    FAILURE = "300-699 received"
    # Server transactions: the request again, an ACK, and the TU's responses.
    REQUEST = "request retransmitted"
    ACK = "ACK received"
    SEND_PROVISIONAL = "TU sends 1xx"
    SEND_SUCCESS = "TU sends 2xx"
    SEND_FAILURE = "TU sends 300-699"
    # Timers (named as in RFC 3261 table 4 and RFC 6026).
    RETRANSMIT_TIMER = "Timer A / E / G"
    TIMEOUT_TIMER = "Timer B / F / H"
    LINGER_TIMER = "Timer D / K / I / J"
    ACCEPTED_TIMER = "Timer M / L"
    TRANSPORT_ERROR = "transport error"


class Action(enum.Enum):
    SEND = "send the TU's response and keep it for retransmission"
    RETRANSMIT = "send the last message again"
    DELIVER = "pass the response up to the TU"
    DELIVER_ACK = "pass the ACK up to the TU (RFC 6026: ACK for a 2xx)"
    SEND_ACK = "send ACK for a non-2xx final response (§17.1.1.3)"
    TIMED_OUT = "tell the TU the transaction timed out"
    TRANSPORT_FAILED = "tell the TU the transport failed"


class Timer(enum.Enum):
    RETRANSMIT = "A/E/G"
    TIMEOUT = "B/F/H"
    LINGER = "D/K/I/J"
    ACCEPTED = "M/L"


@dataclass(frozen=True, slots=True)
class Transition:
    actions: tuple[Action, ...]
    next: State


Table: TypeAlias = dict[tuple[State, Input], Transition]


def _table(states: tuple[State, ...], inputs: tuple[Input, ...], rules: Table) -> Table:
    """Complete `rules` over states x inputs: an unlisted pair is ignored (stays put).

    Terminated ignores everything: a transaction that ended keeps no obligations.
    """
    table: Table = {}
    for state in states:
        for inp in inputs:
            table[(state, inp)] = rules.get((state, inp), Transition((), state))
    return table


T = Transition
A = Action
S = State
I = Input  # noqa: E741 - the RFC's own shorthand for inputs, local to the tables

_CLIENT_INPUTS = (
    I.PROVISIONAL,
    I.SUCCESS,
    I.FAILURE,
    I.RETRANSMIT_TIMER,
    I.TIMEOUT_TIMER,
    I.LINGER_TIMER,
    I.ACCEPTED_TIMER,
    I.TRANSPORT_ERROR,
)
_SERVER_INPUTS = (
    I.REQUEST,
    I.ACK,
    I.SEND_PROVISIONAL,
    I.SEND_SUCCESS,
    I.SEND_FAILURE,
    I.RETRANSMIT_TIMER,
    I.TIMEOUT_TIMER,
    I.LINGER_TIMER,
    I.ACCEPTED_TIMER,
    I.TRANSPORT_ERROR,
)

#: INVITE client transaction: RFC 3261 figure 5, with RFC 6026 §8.4 (Accepted, Timer M).
INVITE_CLIENT = _table(
    (S.CALLING, S.PROCEEDING, S.COMPLETED, S.ACCEPTED, S.TERMINATED),
    _CLIENT_INPUTS,
    {
        (S.CALLING, I.RETRANSMIT_TIMER): T((A.RETRANSMIT,), S.CALLING),  # Timer A
        (S.CALLING, I.TIMEOUT_TIMER): T((A.TIMED_OUT,), S.TERMINATED),  # Timer B
        (S.CALLING, I.PROVISIONAL): T((A.DELIVER,), S.PROCEEDING),
        (S.CALLING, I.SUCCESS): T((A.DELIVER,), S.ACCEPTED),
        (S.CALLING, I.FAILURE): T((A.DELIVER, A.SEND_ACK), S.COMPLETED),
        (S.CALLING, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        (S.PROCEEDING, I.PROVISIONAL): T((A.DELIVER,), S.PROCEEDING),
        (S.PROCEEDING, I.SUCCESS): T((A.DELIVER,), S.ACCEPTED),
        (S.PROCEEDING, I.FAILURE): T((A.DELIVER, A.SEND_ACK), S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        # §17.1.1.2: a retransmitted final response is answered with the ACK again.
        (S.COMPLETED, I.FAILURE): T((A.SEND_ACK,), S.COMPLETED),
        (S.COMPLETED, I.LINGER_TIMER): T((), S.TERMINATED),  # Timer D
        (S.COMPLETED, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        # RFC 6026 §8.4: every 2xx (retransmission or another fork's) goes to the TU.
        (S.ACCEPTED, I.SUCCESS): T((A.DELIVER,), S.ACCEPTED),
        (S.ACCEPTED, I.ACCEPTED_TIMER): T((), S.TERMINATED),  # Timer M
    },
)

#: Non-INVITE client transaction: RFC 3261 figure 6.
NON_INVITE_CLIENT = _table(
    (S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED),
    _CLIENT_INPUTS,
    {
        (S.TRYING, I.RETRANSMIT_TIMER): T((A.RETRANSMIT,), S.TRYING),  # Timer E
        (S.TRYING, I.TIMEOUT_TIMER): T((A.TIMED_OUT,), S.TERMINATED),  # Timer F
        (S.TRYING, I.PROVISIONAL): T((A.DELIVER,), S.PROCEEDING),
        (S.TRYING, I.SUCCESS): T((A.DELIVER,), S.COMPLETED),
        (S.TRYING, I.FAILURE): T((A.DELIVER,), S.COMPLETED),
        (S.TRYING, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        (S.PROCEEDING, I.RETRANSMIT_TIMER): T((A.RETRANSMIT,), S.PROCEEDING),  # Timer E at T2
        (S.PROCEEDING, I.TIMEOUT_TIMER): T((A.TIMED_OUT,), S.TERMINATED),
        (S.PROCEEDING, I.PROVISIONAL): T((A.DELIVER,), S.PROCEEDING),
        (S.PROCEEDING, I.SUCCESS): T((A.DELIVER,), S.COMPLETED),
        (S.PROCEEDING, I.FAILURE): T((A.DELIVER,), S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        (S.COMPLETED, I.LINGER_TIMER): T((), S.TERMINATED),  # Timer K
    },
)

#: INVITE server transaction: RFC 3261 figure 7, with RFC 6026 §7.1 (Accepted, Timer L).
INVITE_SERVER = _table(
    (S.PROCEEDING, S.COMPLETED, S.CONFIRMED, S.ACCEPTED, S.TERMINATED),
    _SERVER_INPUTS,
    {
        (S.PROCEEDING, I.REQUEST): T((A.RETRANSMIT,), S.PROCEEDING),
        (S.PROCEEDING, I.SEND_PROVISIONAL): T((A.SEND,), S.PROCEEDING),
        (S.PROCEEDING, I.SEND_SUCCESS): T((A.SEND,), S.ACCEPTED),
        (S.PROCEEDING, I.SEND_FAILURE): T((A.SEND,), S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        (S.COMPLETED, I.REQUEST): T((A.RETRANSMIT,), S.COMPLETED),
        (S.COMPLETED, I.RETRANSMIT_TIMER): T((A.RETRANSMIT,), S.COMPLETED),  # Timer G
        (S.COMPLETED, I.TIMEOUT_TIMER): T((A.TIMED_OUT,), S.TERMINATED),  # Timer H
        (S.COMPLETED, I.ACK): T((), S.CONFIRMED),
        (S.COMPLETED, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        (S.CONFIRMED, I.LINGER_TIMER): T((), S.TERMINATED),  # Timer I
        # RFC 6026 §7.1: the TU retransmits its 2xx itself; ACKs for it go to the TU.
        (S.ACCEPTED, I.SEND_SUCCESS): T((A.SEND,), S.ACCEPTED),
        (S.ACCEPTED, I.ACK): T((A.DELIVER_ACK,), S.ACCEPTED),
        (S.ACCEPTED, I.ACCEPTED_TIMER): T((), S.TERMINATED),  # Timer L
    },
)

#: Non-INVITE server transaction: RFC 3261 figure 8.
NON_INVITE_SERVER = _table(
    (S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED),
    _SERVER_INPUTS,
    {
        (S.TRYING, I.SEND_PROVISIONAL): T((A.SEND,), S.PROCEEDING),
        (S.TRYING, I.SEND_SUCCESS): T((A.SEND,), S.COMPLETED),
        (S.TRYING, I.SEND_FAILURE): T((A.SEND,), S.COMPLETED),
        (S.TRYING, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        (S.PROCEEDING, I.REQUEST): T((A.RETRANSMIT,), S.PROCEEDING),
        (S.PROCEEDING, I.SEND_PROVISIONAL): T((A.SEND,), S.PROCEEDING),
        (S.PROCEEDING, I.SEND_SUCCESS): T((A.SEND,), S.COMPLETED),
        (S.PROCEEDING, I.SEND_FAILURE): T((A.SEND,), S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
        (S.COMPLETED, I.REQUEST): T((A.RETRANSMIT,), S.COMPLETED),
        (S.COMPLETED, I.LINGER_TIMER): T((), S.TERMINATED),  # Timer J
        (S.COMPLETED, I.TRANSPORT_ERROR): T((A.TRANSPORT_FAILED,), S.TERMINATED),
    },
)

del T, A, S, I


class Kind(enum.Enum):
    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"

    @property
    def table(self) -> Table:
        return _TABLES[self]

    @property
    def initial(self) -> State:
        return _INITIAL[self]


_TABLES = {
    Kind.INVITE_CLIENT: INVITE_CLIENT,
    Kind.NON_INVITE_CLIENT: NON_INVITE_CLIENT,
    Kind.INVITE_SERVER: INVITE_SERVER,
    Kind.NON_INVITE_SERVER: NON_INVITE_SERVER,
}
_INITIAL = {
    Kind.INVITE_CLIENT: State.CALLING,
    Kind.NON_INVITE_CLIENT: State.TRYING,
    Kind.INVITE_SERVER: State.PROCEEDING,
    Kind.NON_INVITE_SERVER: State.TRYING,
}

#: Timers each state starts on entry, per machine (RFC 3261 §17, RFC 6026).
_ENTRY_TIMERS: dict[tuple[Kind, State], tuple[Timer, ...]] = {
    (Kind.INVITE_CLIENT, State.CALLING): (Timer.RETRANSMIT, Timer.TIMEOUT),  # A, B
    (Kind.INVITE_CLIENT, State.COMPLETED): (Timer.LINGER,),  # D
    (Kind.INVITE_CLIENT, State.ACCEPTED): (Timer.ACCEPTED,),  # M
    (Kind.NON_INVITE_CLIENT, State.TRYING): (Timer.RETRANSMIT, Timer.TIMEOUT),  # E, F
    # §17.1.2.2: in Proceeding, E keeps firing (at T2) and F keeps running.
    (Kind.NON_INVITE_CLIENT, State.PROCEEDING): (Timer.RETRANSMIT, Timer.TIMEOUT),
    (Kind.NON_INVITE_CLIENT, State.COMPLETED): (Timer.LINGER,),  # K
    (Kind.INVITE_SERVER, State.COMPLETED): (Timer.RETRANSMIT, Timer.TIMEOUT),  # G, H
    (Kind.INVITE_SERVER, State.CONFIRMED): (Timer.LINGER,),  # I
    (Kind.INVITE_SERVER, State.ACCEPTED): (Timer.ACCEPTED,),  # L
    (Kind.NON_INVITE_SERVER, State.COMPLETED): (Timer.LINGER,),  # J
}

_TIMER_INPUT = {
    Timer.RETRANSMIT: Input.RETRANSMIT_TIMER,
    Timer.TIMEOUT: Input.TIMEOUT_TIMER,
    Timer.LINGER: Input.LINGER_TIMER,
    Timer.ACCEPTED: Input.ACCEPTED_TIMER,
}


# -- events for the transaction user -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request, and the key of the server transaction made for it.

    The key is None for an ACK to a 2xx, which has no transaction of its own (§17.2.3).
    """

    key: str | None
    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    key: str
    response: Response


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx that this transaction sent (RFC 6026 §7.1)."""

    key: str
    request: Request


@dataclass(frozen=True, slots=True)
class StrayResponseReceived:
    """A response no client transaction matches.

    A 2xx retransmission or another fork's 2xx after Timer M, which a proxy forwards
    statelessly (RFC 3261 §16.7 step 1).
    """

    response: Response
    source: Address


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    key: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    key: str


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    key: str


Event: TypeAlias = (
    RequestReceived
    | ResponseReceived
    | AckReceived
    | StrayResponseReceived
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
)


# -- one transaction -----------------------------------------------------------------------


def response_input(status: int) -> Input:
    if status < 200:
        return Input.PROVISIONAL
    return Input.SUCCESS if status < 300 else Input.FAILURE


def send_input(status: int) -> Input:
    if status < 200:
        return Input.SEND_PROVISIONAL
    return Input.SEND_SUCCESS if status < 300 else Input.SEND_FAILURE


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE; the To of the response;
    only the INVITE's top Via; its Route set.
    """
    top_via = invite.headers.values("Via")[0]
    cseq = parse_cseq(invite.headers.get("CSeq") or "")
    items: list[tuple[str, str]] = [("Via", top_via)]
    for name in ("Route",):
        items.extend((name, value) for value in invite.headers.get_all(name))
    items += [
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", invite.headers.get("Call-ID") or ""),
        ("CSeq", f"{cseq.number} ACK"),
        ("Content-Length", "0"),
    ]
    return Request("ACK", invite.uri, Headers(items))


@dataclass(slots=True)
class Transaction:
    """One transaction of any kind: its table, state, timers and the message it repeats."""

    key: str
    kind: Kind
    request: Request
    peer: Address
    timers: TimerConfig
    state: State = State.TERMINATED
    last: Message | None = None
    # Keyed by the timer's value (a str), not the Timer member: a dict holding only strings
    # and floats is not tracked by the garbage collector, and many transactions wait out
    # Timer J or K at any moment.
    deadlines: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)
    outbox: list[tuple[Address, Message]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def start(self, now: float) -> None:
        self._enter(self.kind.initial, now)
        if self.kind in (Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT):
            self.last = self.request
            self.outbox.append((self.peer, self.request))

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)

    def handle_timer(self, now: float) -> None:
        for timer, deadline in sorted(self.deadlines.items(), key=lambda item: item[1]):
            if deadline <= now and self.deadlines.get(timer) == deadline:
                del self.deadlines[timer]
                self.apply(_TIMER_INPUT[Timer(timer)], now)

    def apply(self, inp: Input, now: float, message: Message | None = None) -> None:
        """Feed one input; run the table's actions; move to the next state."""
        transition = self.kind.table[(self.state, inp)]
        for action in transition.actions:
            self._act(action, inp, now, message)
        if transition.next is not self.state:
            self._enter(transition.next, now)
        elif inp is Input.RETRANSMIT_TIMER and transition.actions:
            self._rearm_retransmit(now)

    def _act(self, action: Action, inp: Input, now: float, message: Message | None) -> None:
        if action is Action.SEND:
            assert message is not None
            self.last = message
            self.outbox.append((self.peer, message))
        elif action is Action.RETRANSMIT:
            if self.last is not None:
                self.outbox.append((self.peer, self.last))
        elif action is Action.DELIVER:
            assert isinstance(message, Response)
            self.events.append(ResponseReceived(self.key, message))
        elif action is Action.DELIVER_ACK:
            assert isinstance(message, Request)
            self.events.append(AckReceived(self.key, message))
        elif action is Action.SEND_ACK:
            assert isinstance(message, Response)
            self.outbox.append((self.peer, build_ack(self.request, message)))
        elif action is Action.TIMED_OUT:
            self.events.append(TransactionTimedOut(self.key))
        elif action is Action.TRANSPORT_FAILED:
            self.events.append(TransportFailed(self.key))

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        self.deadlines.clear()
        self.intervals.clear()
        if state is State.TERMINATED:
            self.events.append(TransactionTerminated(self.key))
            return
        for timer in _ENTRY_TIMERS.get((self.kind, state), ()):
            interval = self._initial_interval(timer, state)
            if interval is None:
                continue
            self.intervals[timer.value] = interval
            self.deadlines[timer.value] = now + interval

    def _initial_interval(self, timer: Timer, state: State) -> float | None:
        """The first interval of `timer` in `state`, or None when it does not run.

        Reliable transports need no retransmissions (§17.1.1.2, §17.1.2.2, §17.2.1).
        """
        t1, t2, t4 = self.timers.t1, self.timers.t2, self.timers.t4
        reliable = self.peer.reliable
        if timer is Timer.RETRANSMIT:
            if reliable:
                return None
            # §17.1.2.2: in Proceeding, E fires every T2.
            if self.kind is Kind.NON_INVITE_CLIENT and state is State.PROCEEDING:
                return t2
            return t1
        if timer is Timer.TIMEOUT:
            return 64 * t1  # B, F, H
        if timer is Timer.ACCEPTED:
            return 64 * t1  # M, L
        # LINGER: D (≥32 s unreliable), K and I (T4), J (64*T1); all zero when reliable.
        if reliable:
            return 0.0
        if self.kind is Kind.INVITE_CLIENT:
            return max(32.0, 64 * t1)
        if self.kind is Kind.NON_INVITE_SERVER:
            return 64 * t1
        return t4

    def _rearm_retransmit(self, now: float) -> None:
        interval = self.intervals.get(Timer.RETRANSMIT.value)
        if interval is None:
            return
        # A doubles without cap (§17.1.1.2); E and G double up to T2 (§17.1.2.2, §17.2.1).
        doubled = interval * 2
        if self.kind is not Kind.INVITE_CLIENT:
            doubled = min(doubled, self.timers.t2)
        self.intervals[Timer.RETRANSMIT.value] = doubled
        self.deadlines[Timer.RETRANSMIT.value] = now + doubled


# -- matching (RFC 3261 §17.1.3, §17.2.3) ----------------------------------------------------


def _top_via(message: Message) -> str:
    values = message.headers.values("Via")
    if not values:
        raise LocalProtocolError("message without Via")
    return values[0]


def client_key(message: Message) -> str:
    """§17.1.3: the top Via branch and the CSeq method (ACK/CANCEL have their own)."""
    via = parse_via(_top_via(message))
    method = parse_cseq(message.headers.get("CSeq") or "").method
    return f"c|{via.branch}|{method}"


def _tag(value: str | None) -> str:
    if value is None:
        return ""
    try:
        return parse_name_addr(value).tag or ""
    except URIError:
        return ""


def server_key(request: Request, *, to_tag: str | None = None) -> str:
    """The server transaction a request belongs to (RFC 3261 §17.2.3).

    The branch, sent-by and method when the branch has the magic cookie; else the RFC 2543
    fallback over Request-URI, tags, Call-ID, CSeq and top Via. An ACK matches the INVITE's
    transaction; a CANCEL has its own.
    """
    via = parse_via(_top_via(request))
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return f"s|{branch}|{via.host}:{via.port}|{method}"
    cseq = parse_cseq(request.headers.get("CSeq") or "")
    to = _tag(request.headers.get("To")) if to_tag is None else to_tag
    return "|".join(
        (
            "s2543",
            request.uri,
            to,
            _tag(request.headers.get("From")),
            request.headers.get("Call-ID") or "",
            str(cseq.number),
            method,
            str(via),
        )
    )


# -- the layer: all transactions of one element ---------------------------------------------


@dataclass(slots=True)
class _Lingering:
    """A non-INVITE server transaction in Completed, reduced to what that state still needs.

    RFC 3261 §17.2.2: in Completed it only answers retransmissions of the request with its
    final response, until Timer J (64*T1 on UDP) ends it or the transport fails. A registrar
    or proxy holds one for every request of the last 32 s: without the request, the timer
    tables and the state machine, each costs a fraction of a `Transaction`.
    """

    peer: Address
    response: Message
    deadline: float


class TransactionLayer:
    """Creates, matches and times the transactions of one SIP element.

    Feed it what arrives (`receive`) and what the TU decides (`send_request`,
    `send_response`); drain `data_to_send()` to the transport and `events()` to the TU; call
    `handle_timer(now)` when `next_deadline()` comes.
    """

    def __init__(self, timers: TimerConfig | None = None, *, auto_trying: bool = True) -> None:
        self._timers = timers or TimerConfig()
        # §17.2.1: an INVITE server transaction answers 100 Trying at once unless the TU
        # answers first; doing it at once stops the client's Timer A retransmissions.
        self._auto_trying = auto_trying
        self._transactions: dict[str, Transaction] = {}
        # Completed non-INVITE server transactions (see `_Lingering`), queued by Timer J's
        # interval (64*T1 on UDP, 0 on reliable transports) in the order they completed:
        # within one queue that is also the order they end in.
        self._lingering: dict[str, _Lingering] = {}
        self._linger_queues: dict[float, collections.deque[tuple[float, str]]] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._sequence = 0
        self._outbox: list[tuple[Address, Message]] = []
        self._events: list[Event] = []

    def __len__(self) -> int:
        return len(self._transactions) + len(self._lingering)

    def state(self, key: str) -> State | None:
        transaction = self._transactions.get(key)
        if transaction is None:
            return State.COMPLETED if key in self._lingering else None
        return transaction.state

    def request(self, key: str) -> Request | None:
        """The request of a transaction that can still act on it (None once completed)."""
        transaction = self._transactions.get(key)
        return None if transaction is None else transaction.request

    # -- input ------------------------------------------------------------------------------

    def receive(self, message: Message, source: Address, now: float) -> None:
        """A message from the transport, already parsed and validated enough to match."""
        if isinstance(message, Response):
            key = client_key(message)
            transaction = self._transactions.get(key)
            if transaction is None:
                self._events.append(StrayResponseReceived(message, source))
                return
            transaction.apply(response_input(message.status), now, message)
            self._collect(transaction)
            return
        if message.method == "ACK":
            self._receive_ack(message, source, now)
            return
        key = server_key(message)
        lingering = self._lingering.get(key)
        if lingering is not None:
            # §17.2.2: "any retransmissions of the request received while in the
            # 'Completed' state MUST cause the server to pass the final response to the
            # transport layer for retransmission".
            self._outbox.append((lingering.peer, lingering.response))
            return
        existing = self._transactions.get(key)
        if existing is not None:
            existing.apply(Input.REQUEST, now, message)
            self._collect(existing)
            return
        kind = Kind.INVITE_SERVER if message.method == "INVITE" else Kind.NON_INVITE_SERVER
        transaction = self._new(key, kind, message, source)
        self._transactions[key] = transaction
        transaction.start(now)
        self._events.append(RequestReceived(key, message, source))
        if kind is Kind.INVITE_SERVER and self._auto_trying:
            transaction.apply(Input.SEND_PROVISIONAL, now, make_response(message, 100))
        self._collect(transaction)

    def _receive_ack(self, ack: Request, source: Address, now: float) -> None:
        transaction = self._transactions.get(server_key(ack))
        if transaction is None and not _has_cookie(ack):
            # RFC 2543 matching: the ACK carries the To tag of our response, the INVITE did not.
            transaction = self._transactions.get(server_key(ack, to_tag=""))
        if transaction is None or transaction.kind is not Kind.INVITE_SERVER:
            # An ACK for a 2xx: a request of its own, end to end (§17.1.1.3, §13.2.2.4).
            self._events.append(RequestReceived(None, ack, source))
            return
        transaction.apply(Input.ACK, now, ack)
        self._collect(transaction)

    def send_request(self, request: Request, destination: Address, now: float) -> str:
        """Start a client transaction for `request`; returns its key.

        Raises:
            LocalProtocolError: an ACK (sent with `send_stateless`), or a branch in use.
        """
        if request.method == "ACK":
            raise LocalProtocolError("ACK has no client transaction; use send_stateless")
        key = client_key(request)
        if key in self._transactions:
            raise LocalProtocolError(f"a transaction with key {key} exists")
        kind = Kind.INVITE_CLIENT if request.method == "INVITE" else Kind.NON_INVITE_CLIENT
        transaction = self._new(key, kind, request, destination)
        self._transactions[key] = transaction
        transaction.start(now)
        self._collect(transaction)
        return key

    def send_response(self, key: str, response: Response, now: float) -> None:
        """The TU's response on server transaction `key`.

        Raises:
            LocalProtocolError: no such server transaction.
        """
        if key in self._lingering:
            return  # Completed: a second final response is not sent (figure 8)
        transaction = self._transactions.get(key)
        if transaction is None or transaction.kind not in (
            Kind.INVITE_SERVER,
            Kind.NON_INVITE_SERVER,
        ):
            raise LocalProtocolError(f"no server transaction {key}")
        transaction.apply(send_input(response.status), now, response)
        self._collect(transaction)

    def send_stateless(self, message: Message, destination: Address) -> None:
        """Send outside any transaction: an ACK for a 2xx, a forwarded stray 2xx."""
        self._outbox.append((destination, message))

    def transport_error(self, key: str, now: float) -> None:
        if self._lingering.pop(key, None) is not None:
            # Completed + transport error: Terminated (RFC 3261 figure 8).
            self._events.append(TransportFailed(key))
            self._events.append(TransactionTerminated(key))
            return
        transaction = self._transactions.get(key)
        if transaction is not None:
            transaction.apply(Input.TRANSPORT_ERROR, now)
            self._collect(transaction)

    def handle_timer(self, now: float) -> None:
        for queue in self._linger_queues.values():
            while queue and queue[0][0] <= now:
                deadline, key = queue.popleft()
                lingering = self._lingering.get(key)
                if lingering is not None and lingering.deadline == deadline:
                    del self._lingering[key]  # Timer J: Terminated
                    self._events.append(TransactionTerminated(key))
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, key = heapq.heappop(self._deadlines)
            transaction = self._transactions.get(key)
            # Entries are lazy: skip one whose transaction moved its deadline since.
            if transaction is None or transaction.next_deadline() != deadline:
                continue
            transaction.handle_timer(now)
            self._collect(transaction)

    # -- output -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        linger = min((queue[0][0] for queue in self._linger_queues.values() if queue), default=None)
        while self._deadlines:
            deadline, _, key = self._deadlines[0]
            transaction = self._transactions.get(key)
            if transaction is not None and transaction.next_deadline() == deadline:
                return deadline if linger is None else min(deadline, linger)
            heapq.heappop(self._deadlines)
        return linger

    def data_to_send(self) -> list[tuple[Address, Message]]:
        # Copied and cleared, not swapped: every transaction appends to these very lists.
        out = self._outbox[:]
        self._outbox.clear()
        return out

    def events(self) -> list[Event]:
        out = self._events[:]
        self._events.clear()
        return out

    def _new(self, key: str, kind: Kind, request: Request, peer: Address) -> Transaction:
        # The layer's outbox and event list are the transaction's own: nothing to move after
        # each input, and two lists fewer for each of the many transactions that wait out
        # Timer J or K (fewer objects for the garbage collector to walk).
        return Transaction(
            key, kind, request, peer, self._timers, outbox=self._outbox, events=self._events
        )

    def _collect(self, transaction: Transaction) -> None:
        if transaction.state is State.TERMINATED:
            self._transactions.pop(transaction.key, None)
            return
        if transaction.kind is Kind.NON_INVITE_SERVER and transaction.state is State.COMPLETED:
            self._linger(transaction)
            return
        deadline = transaction.next_deadline()
        if deadline is not None:
            self._sequence += 1
            heapq.heappush(self._deadlines, (deadline, self._sequence, transaction.key))

    def _linger(self, transaction: Transaction) -> None:
        """Keep a completed non-INVITE server transaction as a `_Lingering` record."""
        key = transaction.key
        deadline = transaction.deadlines[Timer.LINGER.value]
        interval = transaction.intervals[Timer.LINGER.value]
        assert transaction.last is not None  # Completed is entered by sending the response
        del self._transactions[key]
        self._lingering[key] = _Lingering(transaction.peer, transaction.last, deadline)
        queue = self._linger_queues.get(interval)
        if queue is None:
            queue = self._linger_queues[interval] = collections.deque()
        queue.append((deadline, key))


def _has_cookie(request: Request) -> bool:
    branch = parse_via(_top_via(request)).branch
    return branch is not None and branch.startswith(MAGIC_COOKIE)
