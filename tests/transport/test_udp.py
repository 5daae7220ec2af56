from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from ringfence.sip.message import make_response
from ringfence.sip.transaction import Address
from tests.transport.conftest import DatagramClient, Harness, Start, call_id, options, request


async def test_round_trip(server: Harness, udp_client: DatagramClient) -> None:
    udp_client.send(options(1))

    request, source = await server.request()

    assert request.method == "OPTIONS"
    assert call_id(request) == "call-1"
    assert source == Address("UDP", "127.0.0.1", udp_client.port)
    assert server.manager.send(source, make_response(request, 200))
    response = await udp_client.message()
    assert call_id(response) == "call-1"
    assert getattr(response, "status", None) == 200


async def test_unparseable_datagram_is_dropped_and_its_contents_not_logged(
    server: Harness, udp_client: DatagramClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ringfence.transport")
    udp_client.send(b"HELLO alice@example.com\r\n\r\n")
    udp_client.send(options(2))

    request, _ = await server.request()

    assert call_id(request) == "call-2"
    assert server.messages.empty()
    assert "not SIP" in caplog.text
    assert "alice" not in caplog.text
    assert "127.0.0.1" not in caplog.text


async def test_oversize_datagram_is_dropped(start: Start) -> None:
    server = await start(max_datagram_bytes=1000)
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        DatagramClient, remote_addr=("127.0.0.1", server.port("UDP"))
    )
    try:
        client.send(options(1, body=b"x" * 1000))
        client.send(options(2))

        request, _ = await server.request()

        assert call_id(request) == "call-2"
        assert server.messages.empty()
    finally:
        transport.close()


async def test_keep_alives_and_stun_are_ignored_quietly(
    server: Harness, udp_client: DatagramClient
) -> None:
    udp_client.send(b"\r\n\r\n")
    # A STUN Binding request header (RFC 5389 §6): 0x0001, length 0, magic cookie, id.
    udp_client.send(bytes.fromhex("00010000 2112a442 000102030405060708090a0b"))
    udp_client.send(options(3))

    request, _ = await server.request()

    assert call_id(request) == "call-3"
    assert udp_client.received.empty()


async def test_send_refuses_a_host_name(server: Harness) -> None:
    """Names are resolved above the transport (RFC 3263); sendto would block on one."""
    response = make_response(request(1), 200)

    assert not server.manager.send(Address("UDP", "localhost", 5060), response)


async def test_flooding_source_does_not_starve_others(start: Start) -> None:
    """RFC 3261 §26.3.2.4 asks for DoS protection: one address may not use up the rest."""
    rate = 100
    server = await start(rate_per_ip=rate)
    target = ("127.0.0.1", server.port("UDP"))
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    normal = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.bind(("127.0.0.2", 0))
    normal.bind(("127.0.0.3", 0))
    loop = asyncio.get_running_loop()
    began = loop.time()
    flood_received = 0
    try:
        for round_ in range(20):
            for n in range(50):
                flooder.sendto(options(1000 + round_ * 50 + n), target)
            normal.sendto(options(round_), target)
            # Datagrams to one socket are queued in order: once the normal source's message
            # is in, the flood sent before it has been read (and mostly dropped).
            while True:
                message, source = await server.message()
                if source.host == "127.0.0.3":
                    assert call_id(message) == f"call-{round_}"
                    break
                flood_received += 1
    finally:
        flooder.close()
        normal.close()
    elapsed = loop.time() - began

    assert flood_received <= 2 * rate + rate * elapsed + 1
    assert flood_received < 1000


async def test_receive_buffer_is_sized_for_bursts(start: Start) -> None:
    server = await start(udp_receive_buffer_bytes=1024 * 1024)
    udp = server.manager._udp
    assert udp is not None
    assert udp._transport is not None
    sock = udp._transport.get_extra_info("socket")
    # Linux reports twice what was asked (bookkeeping), capped by net.core.rmem_max.
    ceiling = int(Path("/proc/sys/net/core/rmem_max").read_text())  # noqa: ASYNC240
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert granted >= min(1024 * 1024, ceiling)
