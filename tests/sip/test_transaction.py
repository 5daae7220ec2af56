"""RFC 3261 §17 transactions: every (state, input) pair, timers, and a client/server pair."""

from __future__ import annotations

import gc
import itertools

import pytest

from ringfence.sip.errors import LocalProtocolError
from ringfence.sip.message import Headers, Message, Request, Response, make_response, serialize
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import (
    AckReceived,
    Action,
    Address,
    Input,
    Kind,
    RequestReceived,
    ResponseReceived,
    State,
    StrayResponseReceived,
    TimerConfig,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    build_ack,
)

UDP = Address("UDP", "192.0.2.10", 5060)
TCP = Address("TCP", "192.0.2.10", 5060, flow="f1")
SERVER = Address("UDP", "192.0.2.1", 5060)


def request(
    method: str = "INVITE", branch: str = "z9hG4bK-1", to: str = "<sip:bob@b.example>"
) -> Request:
    return Request(
        method,
        "sip:bob@b.example",
        Headers(
            [
                ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={branch}"),
                ("Max-Forwards", "70"),
                ("From", "<sip:alice@a.example>;tag=a1"),
                ("To", to),
                ("Call-ID", "call-1"),
                ("CSeq", f"1 {method}"),
                ("Content-Length", "0"),
            ]
        ),
    )


def received_key(layer: TransactionLayer) -> str:
    """The key of the one new server transaction the layer just reported."""
    [event] = layer.events()
    assert isinstance(event, RequestReceived)
    assert event.key is not None
    return event.key


def response_to(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag=None if status == 100 else "b1")


# -- the tables ------------------------------------------------------------------------------

CLIENT_MESSAGES = {
    Input.PROVISIONAL: 180,
    Input.SUCCESS: 200,
    Input.FAILURE: 486,
}
SERVER_MESSAGES = {
    Input.SEND_PROVISIONAL: 180,
    Input.SEND_SUCCESS: 200,
    Input.SEND_FAILURE: 486,
}


def message_for(kind: Kind, inp: Input, req: Request) -> Message | None:
    if inp in CLIENT_MESSAGES:
        return response_to(req, CLIENT_MESSAGES[inp])
    if inp in SERVER_MESSAGES:
        return response_to(req, SERVER_MESSAGES[inp])
    if inp is Input.REQUEST:
        return req
    if inp is Input.ACK:
        return build_ack(req, response_to(req, 486))
    return None


PAIRS = [(kind, state, inp) for kind in Kind for (state, inp) in kind.table]


def test_tables_cover_every_pair() -> None:
    for kind in Kind:
        states = {state for state, _ in kind.table}
        inputs = {inp for _, inp in kind.table}
        assert len(kind.table) == len(states) * len(inputs)
        assert kind.initial in states
        assert State.TERMINATED in states
        for inp in inputs:
            assert kind.table[(State.TERMINATED, inp)].actions == ()
            assert kind.table[(State.TERMINATED, inp)].next is State.TERMINATED


@pytest.mark.parametrize(("kind", "state", "inp"), PAIRS, ids=lambda v: getattr(v, "name", v))
@pytest.mark.parametrize("peer", [UDP, TCP], ids=["udp", "tcp"])
def test_every_state_input_pair(kind: Kind, state: State, inp: Input, peer: Address) -> None:
    method = "INVITE" if kind in (Kind.INVITE_CLIENT, Kind.INVITE_SERVER) else "OPTIONS"
    req = request(method)
    transaction = Transaction("k", kind, req, peer, TimerConfig())
    transaction.start(0.0)
    transaction.outbox.clear()
    transaction.events.clear()
    transaction.state = state
    transaction.last = req if kind in (Kind.INVITE_CLIENT, Kind.NON_INVITE_CLIENT) else None
    message = message_for(kind, inp, req)
    expected = kind.table[(state, inp)]

    transaction.apply(inp, 1.0, message)

    assert transaction.state is expected.next
    sent = [m for _, m in transaction.outbox]
    delivered = [e for e in transaction.events if isinstance(e, ResponseReceived | AckReceived)]
    assert (Action.DELIVER in expected.actions or Action.DELIVER_ACK in expected.actions) == bool(
        delivered
    )
    if Action.SEND in expected.actions:
        assert message in sent
    if Action.SEND_ACK in expected.actions:
        assert [m.method for m in sent if isinstance(m, Request)] == ["ACK"]
    if Action.TIMED_OUT in expected.actions:
        assert TransactionTimedOut("k") in transaction.events
    if Action.TRANSPORT_FAILED in expected.actions:
        assert TransportFailed("k") in transaction.events
    if not expected.actions:
        assert sent == []
        assert delivered == []
    if expected.next is State.TERMINATED and state is not State.TERMINATED:
        assert transaction.events[-1] == TransactionTerminated("k")
        assert transaction.next_deadline() is None


# -- timers ------------------------------------------------------------------------------------


def run_until(layer: TransactionLayer, end: float) -> list[float]:
    """Fire every deadline up to `end`; return the times at which something was sent."""
    sent_at = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        layer.handle_timer(deadline)
        if layer.data_to_send():
            sent_at.append(deadline)
    return sent_at


def test_non_invite_client_retransmits_e_then_times_out_f() -> None:
    layer = TransactionLayer()
    key = layer.send_request(request("OPTIONS"), UDP, 0.0)
    assert len(layer.data_to_send()) == 1
    # Timer E: 0.5, 1, 2, 4, then every T2=4 s; Timer F at 64*T1 = 32 s.
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    layer.handle_timer(32.0)
    assert layer.events() == [TransactionTimedOut(key), TransactionTerminated(key)]
    assert len(layer) == 0


def test_invite_client_timer_a_doubles_until_a_provisional() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, UDP, 0.0)
    layer.data_to_send()
    assert run_until(layer, 4.0) == [0.5, 1.5, 3.5]
    layer.receive(response_to(req, 180), UDP, 4.0)
    assert layer.state(key) is State.PROCEEDING
    assert run_until(layer, 100.0) == []  # no retransmission, and no timeout, in Proceeding
    assert layer.state(key) is State.PROCEEDING


def test_invite_client_failure_is_acked_until_timer_d() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, UDP, 0.0)
    layer.data_to_send()
    busy = response_to(req, 486)
    layer.receive(busy, UDP, 0.1)
    [(_, ack)] = layer.data_to_send()
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.headers.get_all("Via") == [req.headers.get_all("Via")[0]]
    assert [type(e) for e in layer.events()] == [ResponseReceived]
    layer.receive(busy, UDP, 1.0)  # retransmitted 486: ACK again, not passed up
    assert [m.method for _, m in layer.data_to_send() if isinstance(m, Request)] == ["ACK"]
    assert layer.events() == []
    layer.handle_timer(32.0)
    assert layer.state(key) is State.COMPLETED
    layer.handle_timer(32.1)
    assert layer.state(key) is None


def test_invite_client_accepted_passes_every_2xx_up_until_timer_m() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, UDP, 0.0)
    ok = response_to(req, 200)
    layer.receive(ok, UDP, 0.1)
    layer.receive(ok, UDP, 0.6)
    assert [type(e) for e in layer.events()] == [ResponseReceived, ResponseReceived]
    layer.handle_timer(0.1 + 32.0)
    assert layer.state(key) is None


def test_invite_server_sends_trying_then_retransmits_final_with_g_until_ack() -> None:
    layer = TransactionLayer()
    req = request()
    layer.receive(req, UDP, 0.0)
    key = received_key(layer)
    [(to, trying)] = layer.data_to_send()
    assert to == UDP
    assert isinstance(trying, Response)
    assert trying.status == 100
    layer.receive(req, UDP, 0.2)  # retransmitted INVITE: 100 again
    assert [m.status for _, m in layer.data_to_send() if isinstance(m, Response)] == [100]
    busy = response_to(req, 486)
    layer.send_response(key, busy, 1.0)
    assert [m for _, m in layer.data_to_send()] == [busy]
    # Timer G: 0.5, 1, 2, 4, 4 ... after the final response.
    assert run_until(layer, 8.6) == [1.5, 2.5, 4.5, 8.5]
    layer.receive(build_ack(req, busy), UDP, 9.0)
    assert layer.state(key) is State.CONFIRMED
    assert run_until(layer, 100.0) == []
    assert layer.state(key) is None
    assert layer.events()[-1] == TransactionTerminated(key)


def test_invite_server_without_ack_times_out_with_h() -> None:
    layer = TransactionLayer()
    req = request()
    layer.receive(req, UDP, 0.0)
    key = received_key(layer)
    layer.send_response(key, response_to(req, 486), 0.0)
    run_until(layer, 40.0)
    assert TransactionTimedOut(key) in layer.events()


def test_invite_server_accepted_delivers_acks_to_the_tu() -> None:
    layer = TransactionLayer()
    req = request()
    layer.receive(req, UDP, 0.0)
    key = received_key(layer)
    ok = response_to(req, 200)
    layer.send_response(key, ok, 0.1)
    assert layer.state(key) is State.ACCEPTED
    ack = build_ack(req, ok)
    layer.receive(ack, UDP, 0.2)
    assert layer.events() == [AckReceived(key, ack)]
    layer.receive(req, UDP, 0.3)  # a retransmitted INVITE is absorbed
    assert [m.status for _, m in layer.data_to_send() if isinstance(m, Response)] == [100, 200]


def test_non_invite_server_repeats_its_final_response() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.receive(req, UDP, 0.0)
    key = received_key(layer)
    assert layer.data_to_send() == []  # no automatic 100 for non-INVITE
    layer.receive(req, UDP, 0.1)  # retransmission in Trying: absorbed
    assert layer.data_to_send() == []
    ok = response_to(req, 200)
    layer.send_response(key, ok, 0.2)
    layer.receive(req, UDP, 0.3)
    assert [m for _, m in layer.data_to_send()] == [ok, ok]
    layer.handle_timer(0.2 + 32.0)
    assert layer.state(key) is None


def test_reliable_transports_never_retransmit_and_linger_zero() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    key = layer.send_request(req, TCP, 0.0)
    layer.data_to_send()
    layer.receive(response_to(req, 200), TCP, 0.1)
    assert layer.next_deadline() == 0.1  # Timer K = 0
    layer.handle_timer(0.1)
    assert layer.state(key) is None
    assert layer.data_to_send() == []


def test_transport_error_ends_the_transaction() -> None:
    layer = TransactionLayer()
    key = layer.send_request(request("OPTIONS"), TCP, 0.0)
    layer.transport_error(key, 0.1)
    assert layer.events() == [TransportFailed(key), TransactionTerminated(key)]


def test_unmatched_response_is_stray_and_ack_for_2xx_is_a_request() -> None:
    layer = TransactionLayer()
    req = request()
    layer.receive(response_to(req, 200), UDP, 0.0)
    assert [type(e) for e in layer.events()] == [StrayResponseReceived]
    ack = build_ack(req, response_to(req, 200))
    layer.receive(ack, UDP, 0.0)
    assert layer.events() == [RequestReceived(None, ack, UDP)]


def test_rfc2543_matching_without_magic_cookie() -> None:
    layer = TransactionLayer()
    req = request(branch="old-style-1")
    layer.receive(req, UDP, 0.0)
    key = received_key(layer)
    busy = response_to(req, 486)
    layer.send_response(key, busy, 0.0)
    layer.receive(build_ack(req, busy), UDP, 0.1)  # the ACK carries our To tag
    assert layer.state(key) is State.CONFIRMED


def test_local_misuse_is_refused() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, UDP, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(req, UDP, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("ACK"), UDP, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_response("nope", response_to(req, 200), 0.0)


def test_client_and_server_over_a_lossy_wire() -> None:
    """A client and a server layer joined by a wire that drops the first two datagrams."""
    client, server = TransactionLayer(), TransactionLayer()
    req = request("OPTIONS")
    key = client.send_request(req, SERVER, 0.0)
    drops = itertools.count()
    now = 0.0
    answered = None
    for _ in range(50):
        for _, message in client.data_to_send():
            if next(drops) >= 2:
                server.receive(parse_datagram(serialize(message)), UDP, now)
        for event in server.events():
            if isinstance(event, RequestReceived) and event.key is not None:
                server.send_response(event.key, response_to(event.request, 200), now)
        for _, message in server.data_to_send():
            client.receive(parse_datagram(serialize(message)), SERVER, now)
        for event in client.events():
            if isinstance(event, ResponseReceived):
                answered = event.response.status
        deadline = client.next_deadline()
        if answered or deadline is None:
            break
        now = deadline
        client.handle_timer(now)
    assert answered == 200
    assert now == 1.5  # delivered by the third send: 0, 0.5, 1.5
    assert client.state(key) is State.COMPLETED


def test_a_completed_transaction_holds_no_collector_tracked_timer_tables() -> None:
    # Thousands wait out Timer D or K at once on a busy node: their timer tables hold only
    # strings and floats, which CPython's collector does not track.
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, UDP, 0.0)
    layer.receive(response_to(req, 486), UDP, 0.1)
    assert layer.state(key) is State.COMPLETED
    assert layer.next_deadline() == pytest.approx(32.1)  # Timer D, at least 32 s over UDP
    transaction = layer._transactions[key]
    assert not gc.is_tracked(transaction.deadlines)
    assert not gc.is_tracked(transaction.intervals)
    layer.handle_timer(32.1)
    assert layer.state(key) is None


# -- completed non-INVITE server transactions (RFC 3261 §17.2.2) -----------------------------


def completed_server(layer: TransactionLayer, peer: Address, now: float) -> tuple[str, Response]:
    """A non-INVITE server transaction from `peer`, answered 200 at `now`."""
    req = request("REGISTER", branch=f"z9hG4bK-{peer.transport}-{now}")
    layer.receive(req, peer, now)
    key = received_key(layer)
    ok = response_to(req, 200)
    layer.send_response(key, ok, now)
    assert layer.data_to_send() == [(peer, ok)]
    return key, ok


def test_a_completed_non_invite_server_transaction_keeps_only_its_response() -> None:
    layer = TransactionLayer()
    key, ok = completed_server(layer, UDP, 0.0)
    assert layer.state(key) is State.COMPLETED
    assert layer.request(key) is None  # nothing can act on the request any more
    assert len(layer) == 1
    # A retransmitted request gets the final response again, and is not passed up.
    layer.receive(request("REGISTER", branch="z9hG4bK-UDP-0.0"), UDP, 5.0)
    assert layer.data_to_send() == [(UDP, ok)]
    assert layer.events() == []
    # A second final response from the TU is not sent.
    layer.send_response(key, response_to(request("REGISTER"), 500), 6.0)
    assert layer.data_to_send() == []
    # Timer J: 64*T1 after the response.
    assert layer.next_deadline() == 32.0
    layer.handle_timer(31.9)
    assert layer.state(key) is State.COMPLETED
    layer.handle_timer(32.0)
    assert layer.events() == [TransactionTerminated(key)]
    assert layer.state(key) is None
    assert len(layer) == 0
    assert layer.next_deadline() is None
    # The same request now is a new transaction.
    layer.receive(request("REGISTER", branch="z9hG4bK-UDP-0.0"), UDP, 33.0)
    assert [type(event) for event in layer.events()] == [RequestReceived]


def test_timer_j_is_zero_on_reliable_transports_whatever_completed_before() -> None:
    layer = TransactionLayer()
    on_udp, _ = completed_server(layer, UDP, 0.0)
    on_tcp, _ = completed_server(layer, TCP, 1.0)
    assert layer.next_deadline() == 1.0  # the TCP one ends first, though it completed last
    layer.handle_timer(1.0)
    assert layer.events() == [TransactionTerminated(on_tcp)]
    assert layer.state(on_udp) is State.COMPLETED
    assert layer.next_deadline() == 32.0


def test_a_transport_error_ends_a_completed_server_transaction() -> None:
    layer = TransactionLayer()
    key, _ = completed_server(layer, UDP, 0.0)
    layer.transport_error(key, 1.0)
    assert layer.events() == [TransportFailed(key), TransactionTerminated(key)]
    assert layer.state(key) is None
    layer.handle_timer(32.0)  # the stale Timer J entry does nothing
    assert layer.events() == []
