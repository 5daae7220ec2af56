from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from ringfence.sip.message import Message, Response, make_response
from ringfence.sip.transaction import Address
from tests.transport.conftest import (
    WAIT_S,
    Harness,
    Start,
    StreamClient,
    call_id,
    options,
    request,
)

TRANSPORTS = ["TCP", "TLS"]


async def connect(server: Harness, transport: str, clients: list[StreamClient]) -> StreamClient:
    tls = server.client_tls() if transport == "TLS" else None
    client = await StreamClient.connect(server.port(transport), tls)
    clients.append(client)
    return client


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_round_trip(server: Harness, clients: list[StreamClient], transport: str) -> None:
    client = await connect(server, transport, clients)
    await client.write(options(1, transport=transport))

    request, source = await server.request()

    assert call_id(request) == "call-1"
    assert (source.transport, source.host, source.port) == (transport, "127.0.0.1", client.port)
    assert source.flow is not None
    assert source.flow.startswith(transport.lower())
    assert server.manager.send(source, make_response(request, 200))
    response = await client.message()
    assert isinstance(response, Response)
    assert (response.status, call_id(response)) == (200, "call-1")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_messages_in_one_write(
    server: Harness, clients: list[StreamClient], transport: str
) -> None:
    client = await connect(server, transport, clients)
    await client.write(options(1) + options(2, body=b"v=0\r\n"))

    first, source1 = await server.request()
    second, source2 = await server.request()

    assert (call_id(first), call_id(second)) == ("call-1", "call-2")
    assert second.body == b"v=0\r\n"
    assert source1 == source2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_one_message_over_many_writes(
    server: Harness, clients: list[StreamClient], transport: str
) -> None:
    client = await connect(server, transport, clients)
    data = options(7, body=b"hello")
    for i in range(0, len(data), 9):
        await client.write(data[i : i + 9])
        await asyncio.sleep(0)

    message, _ = await server.request()

    assert call_id(message) == "call-7"
    assert message.body == b"hello"
    assert server.messages.empty()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_crlf_ping_gets_a_pong(
    server: Harness, clients: list[StreamClient], transport: str
) -> None:
    """RFC 5626 §4.4.1: a double CRLF is answered with one CRLF."""
    client = await connect(server, transport, clients)
    await client.write(b"\r\n\r\n")

    assert await client.read_exactly(2) == b"\r\n"
    await client.write(options(1))
    message, _ = await server.request()
    assert call_id(message) == "call-1"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_flows_are_distinct_and_reported_closed(
    server: Harness, clients: list[StreamClient], transport: str
) -> None:
    first = await connect(server, transport, clients)
    second = await connect(server, transport, clients)
    await first.write(options(1))
    _, source1 = await server.request()
    await second.write(options(2))
    _, source2 = await server.request()
    assert source1.flow != source2.flow

    await first.aclose()

    assert await server.closed_flow() == source1.flow
    assert not server.manager.send(source1, make_response(request(1), 200))
    assert server.manager.send(source2, make_response(request(2), 200))
    assert call_id(await second.message()) == "call-2"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_header_block_over_the_limit_closes(
    start: Start, clients: list[StreamClient], transport: str
) -> None:
    server = await start(max_header_bytes=1024)
    client = await connect(server, transport, clients)
    await client.write(b"OPTIONS sip:x SIP/2.0\r\nX-Pad: " + b"a" * 2000)

    assert await client.closed_by_peer()
    assert server.messages.empty()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_parse_error_closes(
    server: Harness, clients: list[StreamClient], transport: str
) -> None:
    client = await connect(server, transport, clients)
    await client.write(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")

    assert await client.closed_by_peer()
    assert server.messages.empty()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_partial_message_times_out(
    start: Start, clients: list[StreamClient], transport: str
) -> None:
    server = await start(message_timeout_s=0.2)
    client = await connect(server, transport, clients)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await client.write(options(1)[:40])
    await asyncio.sleep(0.1)
    await client.write(options(1)[40:60])  # still trickling: the message's clock runs on

    assert await client.closed_by_peer()
    assert 0.19 <= loop.time() - began < 1.0  # uvloop's clock ticks in milliseconds
    assert server.messages.empty()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_message_completed_in_time_is_delivered(
    start: Start, clients: list[StreamClient], transport: str
) -> None:
    server = await start(message_timeout_s=0.2)
    client = await connect(server, transport, clients)
    data = options(1)
    await client.write(data[:40])
    await asyncio.sleep(0.1)
    await client.write(data[40:] + options(2)[:30])
    await asyncio.sleep(0.15)  # the second message's clock started with its first bytes
    await client.write(options(2)[30:])

    assert call_id((await server.request())[0]) == "call-1"
    assert call_id((await server.request())[0]) == "call-2"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_idle_connection_closes_unless_kept_alive(
    start: Start, clients: list[StreamClient], transport: str
) -> None:
    server = await start(idle_timeout_s=0.2)
    client = await connect(server, transport, clients)
    loop = asyncio.get_running_loop()
    for _ in range(3):  # 0.3 s of keep-alives, longer than the idle timeout
        await client.write(b"\r\n\r\n")
        assert await client.read_exactly(2) == b"\r\n"
        await asyncio.sleep(0.1)
    began = loop.time()

    assert await client.closed_by_peer()
    assert loop.time() - began < 0.5
    await server.closed_flow()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connections_per_ip_are_limited(
    start: Start, clients: list[StreamClient], transport: str
) -> None:
    server = await start(max_connections_per_ip=2)
    first = await connect(server, transport, clients)
    second = await connect(server, transport, clients)
    await first.write(options(1))
    await server.request()  # both accepted, and counted, by now
    await second.write(options(2))
    await server.request()

    try:
        third = await connect(server, transport, clients)
    except (ConnectionError, ssl.SSLError):
        pass  # TLS: refused before the handshake could finish
    else:
        assert await third.closed_by_peer()

    await first.aclose()
    await server.closed_flow()
    fourth = await connect(server, transport, clients)
    await fourth.write(options(4))
    assert call_id((await server.request())[0]) == "call-4"


async def test_a_failing_callback_does_not_close_the_connection(
    server: Harness, clients: list[StreamClient]
) -> None:
    seen: list[str | None] = []

    def on_message(message: Message, source: Address) -> None:
        seen.append(source.flow)
        raise RuntimeError("bug above the transport")

    server.manager.on_message = on_message
    client = await connect(server, "TCP", clients)
    await client.write(options(1) + b"\r\n\r\n")

    assert await client.read_exactly(2) == b"\r\n"
    assert len(seen) == 1


async def test_outbound_connection_is_reused(start: Start) -> None:
    trunk = await start()
    node = await start(udp_port=None, tcp_port=None, tls_port=None, ws_port=None, wss_port=None)
    target = Address("TCP", "127.0.0.1", trunk.port("TCP"))

    # Two sends before the connection is open, one after: all over one connection.
    assert node.manager.send(target, request(1))
    assert node.manager.send(target, request(2))
    first, source = await trunk.request()
    second, source2 = await trunk.request()
    assert node.manager.send(target, request(3))
    third, source3 = await trunk.request()

    assert [call_id(m) for m in (first, second, third)] == ["call-1", "call-2", "call-3"]
    assert source.flow == source2.flow == source3.flow
    # The trunk answers over the flow; the node sees it on its outbound flow.
    assert trunk.manager.send(source, make_response(first, 200))
    response, back = await node.message()
    assert isinstance(response, Response)
    assert back.flow is not None
    assert (back.transport, back.port) == ("TCP", trunk.port("TCP"))


async def test_outbound_tls_verifies_the_server(start: Start) -> None:
    trunk = await start()
    trusting = await start(
        udp_port=None,
        tcp_port=None,
        tls_port=None,
        ws_port=None,
        wss_port=None,
        tls_ca_file=trunk.cert_file,
    )
    target = Address("TLS", "127.0.0.1", trunk.port("TLS"))

    assert trusting.manager.send(target, request(1))

    message, source = await trunk.request()
    assert call_id(message) == "call-1"
    assert source.transport == "TLS"


async def test_outbound_tls_to_an_untrusted_server_fails(start: Start) -> None:
    trunk = await start()
    node = await start(udp_port=None, tcp_port=None, tls_port=None, ws_port=None, wss_port=None)
    target = Address("TLS", "127.0.0.1", trunk.port("TLS"))

    assert node.manager.send(target, request(1))

    message, address = await _failure(node)
    assert call_id(message) == "call-1"
    assert address == target
    assert trunk.messages.empty()


async def test_outbound_connection_refused_reports_the_messages(start: Start) -> None:
    node = await start(udp_port=None, tls_port=None, ws_port=None, wss_port=None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = Address("TCP", "127.0.0.1", port)

    assert node.manager.send(target, request(1))
    assert node.manager.send(target, request(2))

    assert [call_id((await _failure(node))[0]) for _ in range(2)] == ["call-1", "call-2"]
    # The failed attempt is forgotten: the next send tries again.
    assert node.manager.send(target, request(3))
    assert call_id((await _failure(node))[0]) == "call-3"


async def _failure(harness: Harness) -> tuple[Message, Address]:
    async with asyncio.timeout(WAIT_S):
        return await harness.failed.get()


async def test_no_outbound_websocket(server: Harness) -> None:
    assert not server.manager.send(Address("WS", "127.0.0.1", 80), request(1))


async def test_messages_over_the_rate_are_dropped(
    start: Start, clients: list[StreamClient]
) -> None:
    server = await start(rate_per_ip=5)  # a burst of 10
    client = await connect(server, "TCP", clients)
    await client.write(b"".join(options(n) for n in range(30)))
    await client.write(b"\r\n\r\n")  # over the rate too: no pong
    await client.write(options(99))

    delivered = [call_id((await server.request())[0]) for _ in range(10)]

    assert delivered == [f"call-{n}" for n in range(10)]
    await asyncio.sleep(0.05)
    assert server.messages.empty()
    assert client.reader.at_eof() is False
