from __future__ import annotations

import asyncio
import ssl
from contextlib import AbstractAsyncContextManager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.typing import Subprotocol

from ringfence.sip.message import Response, make_response
from ringfence.sip.parser import parse_datagram
from tests.transport.conftest import WAIT_S, Harness, Start, call_id, options

SIP = [Subprotocol("sip")]


def ws_connect(
    server: Harness, scheme: str = "ws", subprotocols: list[Subprotocol] | None = SIP
) -> AbstractAsyncContextManager[ClientConnection]:
    transport = scheme.upper()
    tls: ssl.SSLContext | None = server.client_tls() if scheme == "wss" else None
    url = f"{scheme}://127.0.0.1:{server.port(transport)}/"
    return connect(url, subprotocols=subprotocols, ssl=tls, open_timeout=WAIT_S)


async def recv(client: ClientConnection) -> bytes:
    async with asyncio.timeout(WAIT_S):
        return await client.recv(decode=False)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_round_trip(server: Harness, scheme: str) -> None:
    async with ws_connect(server, scheme) as client:
        assert client.subprotocol == "sip"
        await client.send(options(1, transport=scheme.upper()).decode())

        request, source = await server.request()

        assert call_id(request) == "call-1"
        assert source.transport == scheme.upper()
        assert (source.host, source.port) == client.local_address[:2]
        assert source.flow is not None
        assert server.manager.send(source, make_response(request, 200))
        response = parse_datagram(await recv(client))
        assert isinstance(response, Response)
        assert (response.status, call_id(response)) == (200, "call-1")


async def test_binary_messages_are_accepted(server: Harness) -> None:
    """RFC 7118 §4.2: a SIP message may come in a binary WebSocket message."""
    async with ws_connect(server) as client:
        await client.send(options(2))

        request, _ = await server.request()

        assert call_id(request) == "call-2"


async def test_handshake_without_the_sip_subprotocol_is_refused(server: Harness) -> None:
    """RFC 7118 §4.1: the client must offer "sip"."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(server, subprotocols=None):
            pass
    assert info.value.response.status_code == 400


async def test_crlf_keep_alive_gets_a_pong(server: Harness) -> None:
    async with ws_connect(server) as client:
        await client.send("\r\n\r\n")

        assert await recv(client) == b"\r\n"


async def test_unparseable_message_is_dropped_and_the_connection_kept(server: Harness) -> None:
    async with ws_connect(server) as client:
        await client.send("hello bob@example.com")
        await client.send(options(3).decode())

        request, _ = await server.request()

        assert call_id(request) == "call-3"
        assert server.messages.empty()


async def test_oversize_message_closes(start: Start) -> None:
    server = await start(max_datagram_bytes=1000)
    async with ws_connect(server) as client:
        await client.send(options(1, body=b"x" * 1000).decode())

        with pytest.raises(ConnectionClosed) as info:
            await recv(client)

    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1009  # RFC 6455 §7.4.1: message too big
    assert server.messages.empty()


async def test_closing_reports_the_flow_and_ends_sending(server: Harness) -> None:
    async with ws_connect(server) as client:
        await client.send(options(1).decode())
        request, source = await server.request()

    assert await server.closed_flow() == source.flow
    assert not server.manager.send(source, make_response(request, 200))


async def test_idle_connection_closes(start: Start) -> None:
    server = await start(idle_timeout_s=0.2)
    async with ws_connect(server) as client:
        await asyncio.wait_for(client.wait_closed(), WAIT_S)

    await server.closed_flow()


async def test_connections_per_ip_are_limited(start: Start) -> None:
    server = await start(max_connections_per_ip=1)
    async with ws_connect(server) as first:
        with pytest.raises((InvalidMessage, OSError)):  # closed at accept, before HTTP
            async with ws_connect(server):
                pass
        await first.send(options(1).decode())
        assert call_id((await server.request())[0]) == "call-1"

    await server.closed_flow()
    async with ws_connect(server) as again:
        await again.send(options(2).decode())
        assert call_id((await server.request())[0]) == "call-2"
