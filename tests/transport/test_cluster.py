"""Several SIP workers: who owns a message, the frames between workers, and the links."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from ringfence.sip.errors import ParseError
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import Address
from ringfence.transport import flow
from ringfence.transport.cluster import (
    MAX_FRAME_BYTES,
    Cluster,
    Frame,
    FrameReader,
    decode_message,
    decode_send,
    encode_frame,
    encode_message,
    encode_send,
    flow_worker,
    raw_shard_key,
    shard_key,
    shard_of,
)

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "{to}\r\n"
    "From: <sip:alice@example.com>;tag=456248\r\n"
    "Call-ID: 843817637684230@998sdasdh09\r\n"
    "CSeq: 1826 REGISTER\r\n"
    "Contact: <sip:alice@192.0.2.4>\r\n"
    "Content-Length: 0\r\n\r\n"
)

INVITE = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:bob@example.com>\r\n"
    "From: <sip:alice@example.com>;tag=456248\r\n"
    "{call_id}\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 4\r\n\r\n"
    "{body}"
)


KEYS = [f"call-id:{n}@host" for n in range(40)] + ["aor:sip:alice@example.com"]


@pytest.mark.parametrize("seed", ["1", "2"])
def test_every_process_agrees_on_the_owner(seed: str) -> None:
    # Not hash(): str hashes differ between processes (PYTHONHASHSEED).
    code = (
        "import sys; from ringfence.transport.cluster import shard_of; "
        "print([shard_of(k, 3) for k in sys.argv[1:]])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *KEYS],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == str([shard_of(key, 3) for key in KEYS])


def test_keys_spread_over_the_workers() -> None:
    assert {shard_of(key, 1) for key in KEYS} == {0}
    assert {shard_of(key, 3) for key in KEYS} == {0, 1, 2}


@pytest.mark.parametrize(
    ("to", "key"),
    [
        ("To: <sip:alice@example.com>", "aor:sip:alice@example.com"),
        ("To: sip:alice@EXAMPLE.com;tag=1", "aor:sip:alice@example.com"),
        ('t: "Alice A." <sips:alice@Example.COM;transport=tcp>', "aor:sip:alice@example.com"),
        ("TO :  Alice <sip:alice@example.com>", "aor:sip:alice@example.com"),
    ],
)
def test_register_is_owned_by_its_address_of_record(to: str, key: str) -> None:
    data = REGISTER.format(to=to).encode()
    assert raw_shard_key(data) == key
    assert shard_key(parse_datagram(data)) == key


@pytest.mark.parametrize(
    "to",
    [
        "To: <sip:alice@example.com:5070>",  # a port: the parser drops it
        "To: <sip:al%69ce@example.com>",  # an escape: the parser decodes it
        "To:\r\n <sip:alice@example.com>",  # folded
    ],
)
def test_other_register_forms_are_left_to_the_parser(to: str) -> None:
    data = REGISTER.format(to=to).encode()
    assert raw_shard_key(data) is None
    assert shard_key(parse_datagram(data)) == "aor:sip:alice@example.com"


def test_a_register_without_a_usable_to_belongs_to_no_one() -> None:
    data = REGISTER.format(to="To: <tel:+15550100>").encode()
    assert raw_shard_key(data) is None
    assert shard_key(parse_datagram(data)) is None


@pytest.mark.parametrize(
    ("call_id", "key"),
    [
        ("Call-ID: a84b4c76e66710@pc33", "call-id:a84b4c76e66710@pc33"),
        ("i:a84b4c76e66710  ", "call-id:a84b4c76e66710"),
        ("CALL-id :\t x y ", "call-id:x y"),
    ],
)
def test_other_messages_are_owned_by_their_call_id(call_id: str, key: str) -> None:
    data = INVITE.format(call_id=call_id, body="\r\ni:x").encode()
    assert raw_shard_key(data) == key
    assert shard_key(parse_datagram(data)) == key


def test_a_call_id_in_the_body_is_not_read() -> None:
    data = INVITE.format(call_id="Subject: none", body="\r\ni:x").encode()
    assert raw_shard_key(data) is None
    assert shard_key(parse_datagram(data)) is None


_TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~!*+'()%",
    min_size=1,
    max_size=12,
)
_HOST = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9.-]{0,14}", fullmatch=True)
_SPACE = st.sampled_from(["", " ", "\t", "  "])


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(["To", "to", "t", "T"]),
    before=_SPACE,
    after=_SPACE,
    display=st.sampled_from(["", '"Alice" ', "Alice ", '"A \\"q\\"" ', "A.b-c "]),
    angle=st.booleans(),
    scheme=st.sampled_from(["sip", "sips", "SIP"]),
    user=_TOKEN,
    host=_HOST,
    tail=st.sampled_from(["", ";transport=tcp", ":5080", "?x=y", ";lr"]),
    header_params=st.sampled_from(["", ";tag=9f", ";x"]),
)
def test_raw_register_key_agrees_with_the_parser(
    name: str,
    before: str,
    after: str,
    display: str,
    angle: bool,
    scheme: str,
    user: str,
    host: str,
    tail: str,
    header_params: str,
) -> None:
    uri = f"{scheme}:{user}@{host}{tail}"
    value = f"{display}<{uri}>{header_params}" if angle else f"{uri}{header_params}"
    assert_keys_agree(REGISTER.format(to=f"{name}{before}:{after}{value}").encode())


def assert_keys_agree(data: bytes) -> None:
    raw = raw_shard_key(data)
    try:
        parsed = shard_key(parse_datagram(data))
    except ParseError:
        parsed = None
    # Whatever the bytes tell must be what the parser tells: else two workers could both
    # write one AOR's bindings. (A message the parser refuses may go anywhere: it gets a 400.)
    assert raw is None or parsed is None or raw == parsed


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["Call-ID", "call-id", "i", "I", "CALL-ID"]),
    before=_SPACE,
    after=_SPACE,
    value=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126) | st.sampled_from(" \t"),
        min_size=1,
        max_size=30,
    ),
    trailing=_SPACE,
)
def test_raw_call_id_key_agrees_with_the_parser(
    name: str, before: str, after: str, value: str, trailing: str
) -> None:
    assert_keys_agree(
        INVITE.format(call_id=f"{name}{before}:{after}{value}{trailing}", body="abcd").encode()
    )


def test_flow_ids_name_their_worker() -> None:
    assert flow_worker(flow.new_flow_id("TCP")) == 0
    flow.set_worker(3)
    try:
        made = flow.new_flow_id("WSS")
    finally:
        flow.set_worker(0)
    assert made.startswith("wss-w3-")
    assert flow_worker(made) == 3
    assert flow_worker("tcp-1") is None  # an id from before workers: this worker's


def test_message_frame_round_trip() -> None:
    source = Address("TCP", "2001:db8::1", 5061, "tcp-w1-00ff")
    data = INVITE.format(call_id="i: x", body="abcd").encode()
    frame = encode_message(source, data)
    [(kind, body)] = FrameReader().feed(frame)
    assert kind is Frame.MESSAGE
    assert decode_message(body) == (source, data)


def test_send_frame_round_trip() -> None:
    [(kind, body)] = FrameReader().feed(encode_send("ws-w0-abc", b"SIP/2.0 200 OK\r\n\r\n"))
    assert kind is Frame.SEND
    assert decode_send(body) == ("ws-w0-abc", b"SIP/2.0 200 OK\r\n\r\n")


@pytest.mark.parametrize(
    "body", [b"", b"\x00", b"\x00\x05[1]", b'\x00\x0e["UDP","h","p",null]', b"\x00\x02{}"]
)
def test_bad_message_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a message frame"):
        decode_message(body)


@pytest.mark.parametrize("body", [b"", b"\x05abc", b"\x02\xff\xfe"])
def test_bad_send_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a send frame"):
        decode_send(body)


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frames_survive_any_chunking(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(Frame.BINDINGS, body) for body in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = FrameReader()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += reader.feed(stream[start:end])
    assert got == [(Frame.BINDINGS, body) for body in bodies]


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"\x00\x00\x00\x00", "out of bounds"),
        ((MAX_FRAME_BYTES + 1).to_bytes(4, "big"), "out of bounds"),
        (b"\x00\x00\x00\x01\x63", "unknown frame kind 99"),
    ],
)
def test_bad_frames_are_refused(stream: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        FrameReader().feed(stream)


async def test_workers_exchange_frames_over_their_links() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    e, f = socket.socketpair()
    # Three workers, a link between each pair.
    workers = [
        Cluster(0, 3, {1: a, 2: c}),
        Cluster(1, 3, {0: b, 2: e}),
        Cluster(2, 3, {0: d, 1: f}),
    ]
    received: list[tuple[int, int, Frame, bytes]] = []
    done = asyncio.Event()
    for worker in workers:

        def record(peer: int, kind: Frame, body: bytes, me: int = worker.index) -> None:
            received.append((me, peer, kind, body))
            if len(received) == 4:
                done.set()

        worker.on_frame = record
        await worker.start()
    workers[0].broadcast(encode_frame(Frame.FLOW_CLOSED, b"tcp-w0-1"))
    assert workers[2].send(1, encode_frame(Frame.BINDINGS, b"x" * 100_000))
    assert workers[1].send(0, encode_frame(Frame.BINDINGS, b""))
    await asyncio.wait_for(done.wait(), 5)
    assert sorted(received) == [
        (0, 1, Frame.BINDINGS, b""),
        (1, 0, Frame.FLOW_CLOSED, b"tcp-w0-1"),
        (1, 2, Frame.BINDINGS, b"x" * 100_000),
        (2, 0, Frame.FLOW_CLOSED, b"tcp-w0-1"),
    ]
    for worker in workers:
        await worker.aclose()
    assert not workers[0].send(1, encode_frame(Frame.BINDINGS, b""))


def test_a_worker_needs_a_link_to_each_other() -> None:
    a, b = socket.socketpair()
    with a, b, pytest.raises(ValueError, match="one link to each other worker"):
        Cluster(0, 3, {1: a})
