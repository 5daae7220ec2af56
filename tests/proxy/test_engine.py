"""The proxy's mechanics without I/O: forking, best response, CANCEL, loops, dialogs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ringfence.proxy import flow_token
from ringfence.proxy.engine import (
    CANCEL_GRACE_S,
    Identity,
    Incoming,
    Listener,
    ProxyEngine,
    Target,
    loop_hash,
)
from ringfence.sip.message import Headers, Message, Request, Response, make_response
from ringfence.sip.transaction import Address, build_ack
from ringfence.sip.uri import parse_name_addr

KEY = b"k" * 32
US = Identity((Listener("UDP", "192.0.2.1", 5060), Listener("TCP", "192.0.2.1", 5060)))
CALLER = Address("UDP", "198.51.100.7", 5070)
BOB_1 = Address("UDP", "203.0.113.5", 5060)
BOB_2 = Address("TCP", "203.0.113.6", 40000, flow="flow-2")


def invite(method: str = "INVITE", max_forwards: str = "70") -> Request:
    return Request(
        method,
        "sip:bob@sip.acme.example",
        Headers(
            [
                ("Via", "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-caller-1;rport"),
                ("Max-Forwards", max_forwards),
                ("From", "<sip:alice@sip.acme.example>;tag=a1"),
                ("To", "<sip:bob@sip.acme.example>"),
                ("Call-ID", "call-1"),
                ("CSeq", f"1 {method}"),
                ("Contact", "<sip:alice@198.51.100.7:5070>"),
                ("Content-Length", "0"),
            ]
        ),
    )


def start(engine: ProxyEngine, request: Request, now: float = 0.0) -> Incoming:
    engine.receive(request, CALLER, now)
    [incoming] = engine.pending()
    return incoming


def sent(engine: ProxyEngine) -> list[tuple[Address, Message]]:
    return engine.data_to_send()


def requests_to(out: list[tuple[Address, Message]], method: str) -> dict[Address, Request]:
    return {a: m for a, m in out if isinstance(m, Request) and m.method == method}


def responses(out: list[tuple[Address, Message]]) -> list[int]:
    return [m.status for _, m in out if isinstance(m, Response)]


TARGETS = [
    Target("sip:bob@203.0.113.5:5060", BOB_1),
    Target("sip:bob@203.0.113.6;transport=tcp", BOB_2),
]


def test_forks_in_parallel_with_via_record_route_and_max_forwards() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    assert responses(sent(engine)) == [100]
    engine.forward(incoming.key, incoming.request, TARGETS, now=0.0)
    out = requests_to(sent(engine), "INVITE")
    assert set(out) == {BOB_1, BOB_2}
    to_tcp = out[BOB_2]
    assert to_tcp.uri == "sip:bob@203.0.113.6;transport=tcp"
    assert to_tcp.headers.values("Via")[0].startswith("SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK")
    assert to_tcp.headers.get("Max-Forwards") == "69"
    # Caller on UDP, callee on TCP: two Record-Route entries (callee's transport on top).
    record_routes = to_tcp.headers.values("Record-Route")
    assert len(record_routes) == 2
    assert "transport=tcp" in record_routes[0]
    assert "transport=udp" in record_routes[1]
    token = parse_name_addr(record_routes[0]).uri
    assert flow_token.decode(KEY, str(getattr(token, "user", ""))) == (CALLER, BOB_2)
    assert len(out[BOB_1].headers.values("Record-Route")) == 1
    branches = {m.headers.values("Via")[0] for m in out.values()}
    assert len(branches) == 2


def test_best_response_when_every_branch_fails() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    engine.forward(incoming.key, incoming.request, TARGETS, now=0.0)
    out = requests_to(sent(engine), "INVITE")
    engine.receive(make_response(out[BOB_1], 486, to_tag="b1"), BOB_1, 0.1)
    assert responses(sent(engine)) == []
    engine.receive(make_response(out[BOB_2], 503, to_tag="b2"), BOB_2, 0.2)
    upstream = [m for a, m in sent(engine) if isinstance(m, Response) and a == CALLER]
    assert [r.status for r in upstream] == [486]
    assert upstream[0].headers.values("Via") == incoming.request.headers.values("Via")


def test_only_503_becomes_500() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    engine.forward(incoming.key, incoming.request, TARGETS[:1], now=0.0)
    out = requests_to(sent(engine), "INVITE")
    engine.receive(make_response(out[BOB_1], 503, to_tag="b1"), BOB_1, 0.1)
    assert 500 in responses(sent(engine))


def test_provisional_and_2xx_pass_at_once_and_cancel_the_rest() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    engine.forward(incoming.key, incoming.request, TARGETS, now=0.0)
    out = requests_to(sent(engine), "INVITE")
    engine.receive(make_response(out[BOB_1], 180, to_tag="b1"), BOB_1, 0.1)
    engine.receive(make_response(out[BOB_2], 180, to_tag="b2"), BOB_2, 0.1)
    assert responses(sent(engine)) == [180, 180]
    engine.receive(make_response(out[BOB_1], 200, to_tag="b1"), BOB_1, 0.2)
    after = sent(engine)
    assert 200 in responses(after)
    cancels = requests_to(after, "CANCEL")
    assert set(cancels) == {BOB_2}
    cancel = cancels[BOB_2]
    assert cancel.headers.values("Via") == [out[BOB_2].headers.values("Via")[0]]
    assert cancel.headers.get("CSeq") == "1 CANCEL"


def test_cancel_from_the_caller() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    engine.forward(incoming.key, incoming.request, TARGETS, now=0.0)
    out = requests_to(sent(engine), "INVITE")
    engine.receive(make_response(out[BOB_1], 180, to_tag="b1"), BOB_1, 0.1)
    sent(engine)
    cancel = replace(invite("CANCEL"), uri=incoming.request.uri)
    engine.receive(cancel, CALLER, 0.2)
    after = sent(engine)
    assert responses(after) == [200]  # for the CANCEL
    assert set(requests_to(after, "CANCEL")) == {BOB_1}  # BOB_2 has not answered yet
    engine.receive(make_response(out[BOB_2], 100), BOB_2, 0.3)
    assert set(requests_to(sent(engine), "CANCEL")) == {BOB_2}  # sent once it answered
    engine.receive(make_response(out[BOB_1], 487, to_tag="b1"), BOB_1, 0.4)
    engine.receive(make_response(out[BOB_2], 487, to_tag="b2"), BOB_2, 0.4)
    assert responses(sent(engine)) == [487]


def test_cancel_before_the_decision_and_unknown_cancel() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    sent(engine)
    engine.receive(invite("CANCEL"), CALLER, 0.1)
    assert sorted(responses(sent(engine))) == [200, 487]
    engine.forward(incoming.key, incoming.request, TARGETS, now=0.2)
    assert requests_to(sent(engine), "INVITE") == {}
    other = ProxyEngine(US, KEY)
    other.receive(invite("CANCEL"), CALLER, 0.0)
    assert responses(other.data_to_send()) == [481]


def test_loop_is_detected_and_max_forwards_zero_refused() -> None:
    engine = ProxyEngine(US, KEY)
    request = invite()
    looped = replace(
        request,
        headers=request.headers.prepend(
            "Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{loop_hash(request)}.0"
        ),
    )
    engine.receive(looped, CALLER, 0.0)
    assert engine.pending() == []
    assert responses(sent(engine)) == [100, 482]
    incoming = start(engine, invite(max_forwards="0"))
    engine.forward(incoming.key, incoming.request, TARGETS, now=0.0)
    assert 483 in responses(sent(engine))


def test_in_dialog_requests_follow_the_flow_token() -> None:
    engine = ProxyEngine(US, KEY)
    token = flow_token.encode(KEY, CALLER, BOB_2)
    bye = Request(
        "BYE",
        "sip:alice@198.51.100.7:5070",
        Headers(
            [
                ("Via", "SIP/2.0/TCP 203.0.113.6:40000;branch=z9hG4bK-bye"),
                ("Route", f"<sip:{token}@192.0.2.1:5060;transport=tcp;lr>"),
                ("Route", f"<sip:{token}@192.0.2.1:5060;transport=udp;lr>"),
                ("Max-Forwards", "70"),
                ("From", "<sip:bob@sip.acme.example>;tag=b2"),
                ("To", "<sip:alice@sip.acme.example>;tag=a1"),
                ("Call-ID", "call-1"),
                ("CSeq", "2 BYE"),
                ("Content-Length", "0"),
            ]
        ),
    )
    engine.receive(bye, BOB_2, 0.0)
    [incoming] = engine.pending()
    assert incoming.in_dialog
    assert incoming.hop == CALLER
    assert incoming.request.headers.get("Route") is None
    forged = flow_token.encode(b"x" * 32, CALLER, BOB_2)
    assert flow_token.decode(KEY, forged) is None


def test_ack_for_2xx_is_forwarded_statelessly() -> None:
    engine = ProxyEngine(US, KEY)
    token = flow_token.encode(KEY, CALLER, BOB_2)
    ok = make_response(invite(), 200, to_tag="b2")
    ack = build_ack(invite(), ok)
    ack = replace(
        ack,
        uri="sip:bob@203.0.113.6;transport=tcp",
        headers=ack.headers.add("Route", f"<sip:{token}@192.0.2.1:5060;transport=udp;lr>"),
    )
    engine.receive(ack, CALLER, 0.0)
    [(destination, forwarded)] = sent(engine)
    assert destination == BOB_2
    assert isinstance(forwarded, Request)
    assert forwarded.method == "ACK"
    assert forwarded.headers.get("Route") is None
    assert len(forwarded.headers.values("Via")) == 2


def test_an_ack_whose_next_hop_is_a_host_name_waits_for_dns() -> None:
    # §16.11 with no Route of ours: the Request-URI names a host. DNS (RFC 3263) is I/O, so
    # the engine hands the ACK over with its URI instead of sending it to a name.
    engine = ProxyEngine(US, KEY)
    ok = make_response(invite(), 200, to_tag="b2")
    ack = replace(build_ack(invite(), ok), uri="sip:bob@phone.example.net;transport=tcp")
    engine.receive(ack, CALLER, 0.0)
    assert sent(engine) == []
    [(uri, forwarded)] = engine.to_resolve()
    assert (uri.host, uri.param("transport")) == ("phone.example.net", "tcp")
    assert forwarded.method == "ACK"
    assert len(forwarded.headers.values("Via")) == 2
    assert engine.to_resolve() == []
    # A Route left after ours names the hop: that URI is the one to resolve (§16.12).
    routed = replace(
        ack,
        uri="sip:bob@203.0.113.6",
        headers=ack.headers.add("Route", "<sip:192.0.2.1:5060;transport=udp;lr>").add(
            "Route", "<sip:edge.example.org;lr>"
        ),
    )
    engine.receive(routed, CALLER, 0.0)
    assert sent(engine) == []
    [(uri, forwarded)] = engine.to_resolve()
    assert uri.host == "edge.example.org"
    assert forwarded.headers.values("Route") == ["<sip:edge.example.org;lr>"]


def test_a_branch_that_times_out_gives_408() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite("MESSAGE"))
    engine.forward(incoming.key, incoming.request, TARGETS[:1], now=0.0)
    sent(engine)
    while (deadline := engine.next_deadline()) is not None and deadline < 40:
        engine.handle_timer(deadline)
    assert 408 in responses(sent(engine))


@pytest.mark.parametrize("status", [480, 404])
def test_reply_gives_a_to_tag(status: int) -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite("MESSAGE"))
    engine.reply(incoming.key, status, now=0.0)
    [(_, response)] = sent(engine)
    assert isinstance(response, Response)
    assert response.status == status
    assert parse_name_addr(response.headers.get("To") or "").tag


def test_tls_side_of_a_double_record_route_is_a_sip_uri_with_transport_tls() -> None:
    # RFC 5630 §3.1.3: sips: would claim TLS on the UDP side of the dialog too.
    us = Identity((Listener("UDP", "192.0.2.1", 5060), Listener("TLS", "192.0.2.1", 5061)))
    engine = ProxyEngine(us, KEY)
    incoming = start(engine, invite())
    callee = Address("TLS", "203.0.113.7", 40001, flow="flow-tls")
    engine.forward(
        incoming.key, incoming.request, [Target("sip:bob@203.0.113.7;transport=tls", callee)], now=0
    )
    [to_tls] = requests_to(sent(engine), "INVITE").values()
    tls_side, udp_side = to_tls.headers.values("Record-Route")
    assert tls_side.startswith("<sip:")
    assert ";transport=tls;lr>" in tls_side
    assert "@192.0.2.1:5061;" in tls_side
    assert udp_side.startswith("<sip:")
    assert ";transport=udp;lr>" in udp_side


def test_challenges_of_every_branch_go_upstream_together() -> None:
    # §16.7 step 6: within 4xx a challenge is preferred (it tells how to retry); step 7: a
    # chosen 401/407 carries every challenge the branches sent.
    engine = ProxyEngine(US, KEY)
    third = Address("UDP", "203.0.113.8", 5060)
    incoming = start(engine, invite())
    targets = [*TARGETS, Target("sip:bob@203.0.113.8", third)]
    engine.forward(incoming.key, incoming.request, targets, now=0.0)
    out = requests_to(sent(engine), "INVITE")
    engine.receive(make_response(out[BOB_1], 486, to_tag="b1"), BOB_1, 0.1)
    proxy_challenge = ("Proxy-Authenticate", 'Digest realm="pbx.example", nonce="n1"')
    engine.receive(
        make_response(out[BOB_2], 407, to_tag="b2", headers=[proxy_challenge]), BOB_2, 0.2
    )
    www_challenge = ("WWW-Authenticate", 'Digest realm="bob.example", nonce="n2"')
    engine.receive(make_response(out[third], 401, to_tag="b3", headers=[www_challenge]), third, 0.3)
    [upstream] = [m for a, m in sent(engine) if isinstance(m, Response) and a == CALLER]
    assert upstream.status == 407
    assert upstream.headers.get_all("Proxy-Authenticate") == [proxy_challenge[1]]
    assert upstream.headers.get_all("WWW-Authenticate") == [www_challenge[1]]


def _upstream(engine: ProxyEngine) -> list[int]:
    return [m.status for a, m in sent(engine) if isinstance(m, Response) and a == CALLER]


def test_timer_c_cancels_a_branch_that_rings_too_long() -> None:
    # §16.6 step 11, §16.7 step 2, §16.8: each provisional restarts Timer C; when it fires
    # after one, the branch is CANCELled, and a callee that ignores the CANCEL is a 408.
    engine = ProxyEngine(US, KEY, timer_c_s=200.0)
    incoming = start(engine, invite())
    engine.forward(incoming.key, incoming.request, TARGETS[:1], now=0.0)
    [forwarded] = requests_to(sent(engine), "INVITE").values()
    assert _upstream(engine) == []
    engine.receive(make_response(forwarded, 180, to_tag="b1"), BOB_1, 50.0)
    assert _upstream(engine) == [180]
    deadline = engine.next_deadline()
    assert deadline is not None
    assert deadline <= 250.0
    engine.handle_timer(200.0)  # the first Timer C, restarted at 50 s, has not fired
    assert requests_to(sent(engine), "CANCEL") == {}
    engine.handle_timer(250.0)
    out = sent(engine)
    assert set(requests_to(out, "CANCEL")) == {BOB_1}
    assert [m for _, m in out if isinstance(m, Response)] == []
    engine.handle_timer(250.0 + CANCEL_GRACE_S)
    assert _upstream(engine) == [408]
    # The branch's transaction has ended with it: nothing is left to time.
    engine.handle_timer(400.0)
    sent(engine)
    assert engine.next_deadline() is None


def test_timer_c_makes_a_silent_branch_a_408() -> None:
    engine = ProxyEngine(US, KEY, timer_c_s=10.0)
    incoming = start(engine, invite())
    engine.forward(incoming.key, incoming.request, TARGETS[:1], now=0.0)
    sent(engine)
    assert engine.next_deadline() is not None
    engine.handle_timer(10.0)
    assert _upstream(engine) == [408]
    assert requests_to(sent(engine), "CANCEL") == {}  # §9.1: none before a provisional


def test_non_invite_branches_have_no_timer_c() -> None:
    engine = ProxyEngine(US, KEY, timer_c_s=1.0)
    incoming = start(engine, invite("MESSAGE"))
    engine.forward(incoming.key, incoming.request, TARGETS[:1], now=0.0)
    [forwarded] = requests_to(sent(engine), "MESSAGE").values()
    engine.handle_timer(2.0)
    assert _upstream(engine) == []
    engine.receive(make_response(forwarded, 200, to_tag="m"), BOB_1, 3.0)
    assert _upstream(engine) == [200]


def test_a_failed_next_hop_fails_over_to_the_next_dns_target() -> None:
    # RFC 3263 §4.3: a 503, or no answer at all, from one server sends the request to the
    # next; the last one's answer is the branch's.
    first, second, third = (Address("UDP", f"198.51.100.{n}", 5060) for n in (1, 2, 3))
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite("MESSAGE"))
    target = Target("sip:+15550100@pstn.example", first, alternates=(second, third))
    engine.forward(incoming.key, incoming.request, [target], now=0.0)
    [to_first] = requests_to(sent(engine), "MESSAGE").values()
    engine.receive(make_response(to_first, 503, to_tag="x"), first, 0.1)
    out = requests_to(sent(engine), "MESSAGE")
    assert set(out) == {second}
    assert _upstream(engine) == []
    to_second = out[second]
    assert to_second.headers.values("Via")[0] != to_first.headers.values("Via")[0]
    engine.handle_timer(40.0)  # Timer F: the second never answers (after retransmissions)
    out = requests_to(sent(engine), "MESSAGE")
    assert third in out
    assert _upstream(engine) == []
    engine.receive(make_response(out[third], 200, to_tag="y"), third, 40.1)
    assert _upstream(engine) == [200]


def test_no_failover_once_the_next_hop_has_answered_or_without_alternates() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    spare = Address("UDP", "198.51.100.9", 5060)
    engine.forward(
        incoming.key, incoming.request, [Target("sip:bob@x", BOB_1, alternates=(spare,))], now=0
    )
    [forwarded] = requests_to(sent(engine), "INVITE").values()
    engine.receive(make_response(forwarded, 180, to_tag="b"), BOB_1, 0.1)
    engine.receive(make_response(forwarded, 503, to_tag="b"), BOB_1, 0.2)
    out = sent(engine)
    assert requests_to(out, "INVITE") == {}
    assert [m.status for a, m in out if isinstance(m, Response) and a == CALLER] == [180, 500]


# -- requests held for devices woken by push (RFC 8599) ------------------------------------


def test_a_held_request_waits_then_480_when_released_with_no_branch() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    sent(engine)
    engine.forward(incoming.key, incoming.request, [], now=0.0, hold=True)
    engine.reply(incoming.key, 180, "Ringing", now=0.0)
    assert responses(sent(engine)) == [180]  # no 480 while devices may still wake
    engine.release(incoming.key, now=30.0)
    assert responses(sent(engine)) == [480]
    assert engine.settled() == [(incoming.key, 480)]


def test_a_woken_device_is_a_branch_added_later_and_its_answer_settles_the_request() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    sent(engine)
    engine.forward(incoming.key, incoming.request, [TARGETS[0]], now=0.0, hold=True)
    first = requests_to(sent(engine), "INVITE")[BOB_1]
    engine.receive(make_response(first, 486, to_tag="b1"), BOB_1, 0.1)
    assert 486 not in responses(sent(engine))  # held: the woken device may still take it
    engine.forward(incoming.key, incoming.request, [TARGETS[1]], now=1.0)
    second = requests_to(sent(engine), "INVITE")[BOB_2]
    assert second.headers.values("Via")[0] != first.headers.values("Via")[0]  # own branch
    engine.release(incoming.key, now=1.0)
    engine.receive(make_response(second, 200, to_tag="b2"), BOB_2, 1.5)
    assert 200 in responses(sent(engine))
    assert engine.settled() == [(incoming.key, 200)]


def test_a_held_request_cancelled_is_answered_487_and_settled() -> None:
    engine = ProxyEngine(US, KEY)
    incoming = start(engine, invite())
    engine.forward(incoming.key, incoming.request, [], now=0.0, hold=True)
    sent(engine)
    engine.receive(invite("CANCEL"), CALLER, 0.1)
    assert sorted(responses(sent(engine))) == [200, 487]
    assert engine.settled() == [(incoming.key, 487)]
    assert engine.is_answered(incoming.key)


def _held_message() -> Request:
    return Request(
        "MESSAGE",
        "sip:placeholder",
        Headers(
            [
                ("Max-Forwards", "70"),
                ("From", "<sip:alice@sip.acme.example>;tag=a1"),
                ("To", "<sip:bob@sip.acme.example>"),
                ("Call-ID", "held-1"),
                ("CSeq", "1 MESSAGE"),
                ("Content-Type", "text/plain"),
                ("Content-Length", "2"),
            ]
        ),
        b"hi",
    )


def test_an_originated_request_goes_out_with_our_via_and_ends_in_an_outcome() -> None:
    engine = ProxyEngine(US, KEY)
    target = Target("sip:bob@203.0.113.6;transport=tcp", BOB_2, ("<sip:edge.example;lr>",))
    key = engine.originate(_held_message(), target, now=0.0)
    [(address, message)] = sent(engine)
    assert address == BOB_2
    assert isinstance(message, Request)
    assert message.uri == "sip:bob@203.0.113.6;transport=tcp"
    assert message.headers.get_all("Via")[0].startswith("SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK")
    assert message.headers.get_all("Route") == ["<sip:edge.example;lr>"]
    assert message.body == b"hi"
    assert engine.outcomes() == []
    engine.receive(make_response(message, 100), BOB_2, 0.1)
    assert engine.outcomes() == []  # provisional: not the end
    engine.receive(make_response(message, 200, to_tag="b"), BOB_2, 0.2)
    assert [(k, status) for k, status, _ in engine.outcomes()] == [(key, 200)]
    assert responses(sent(engine)) == []  # nothing goes upstream: there is no upstream


def test_an_originated_request_that_gets_no_answer_ends_in_408() -> None:
    engine = ProxyEngine(US, KEY)
    key = engine.originate(_held_message(), Target("sip:bob@203.0.113.5", BOB_1), now=0.0)
    while (deadline := engine.next_deadline()) is not None and deadline < 40:
        engine.handle_timer(deadline)
    assert engine.outcomes() == [(key, 408, None)]
