from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cryptography import x509

from ringfence.sip.transaction import Address
from ringfence.transport import (
    CertificateError,
    ListenError,
    TransportConfig,
    TransportManager,
)
from ringfence.transport.tls import ensure_self_signed
from tests.support.clock import FakeClock
from tests.transport.conftest import Harness, Start, StreamClient, options, request, trusting

ONLY_TCP = {"udp_port": None, "tls_port": None, "ws_port": None, "wss_port": None}


async def test_local_reports_the_bound_ports(server: Harness) -> None:
    ports = {name: server.manager.local(name) for name in ("UDP", "TCP", "TLS", "WS", "WSS")}

    assert all(host == "127.0.0.1" and port > 0 for host, port in ports.values())
    assert server.manager.local("tcp") == ports["TCP"]


async def test_local_of_a_disabled_transport_is_a_key_error(start: Start) -> None:
    server = await start(**ONLY_TCP)

    with pytest.raises(KeyError):
        server.manager.local("UDP")


async def test_a_port_in_use_is_a_listen_error(start: Start) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError):
            await start(**(ONLY_TCP | {"tcp_port": port}))


async def test_a_configured_certificate_is_used(tmp_path: Path) -> None:
    files = ensure_self_signed(tmp_path / "configured", ["sip.test"], FakeClock().now())
    config = TransportConfig(
        host="127.0.0.1",
        udp_port=None,
        tcp_port=None,
        tls_port=0,
        tls_cert_file=files.cert_file,
        tls_key_file=files.key_file,
    )
    async with TransportManager(config) as manager:
        client = await StreamClient.connect(manager.local("TLS")[1], trusting(files.cert_file))
        await client.aclose()


async def test_a_broken_certificate_fails_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate")
    config = TransportConfig(
        host="127.0.0.1", udp_port=None, tcp_port=0, tls_port=0, tls_cert_file=bad, tls_key_file=bad
    )
    manager = TransportManager(config)

    with pytest.raises(CertificateError):
        await manager.start()
    await manager.aclose()


async def test_the_self_signed_certificate_is_dated_by_the_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    config = TransportConfig(
        host="127.0.0.1", udp_port=None, tcp_port=None, tls_port=0, tls_cert_dir=tmp_path
    )
    async with TransportManager(config, clock=clock):
        pass

    cert = x509.load_pem_x509_certificate((tmp_path / "sip-cert.pem").read_bytes())
    assert cert.not_valid_before_utc < clock.now() < cert.not_valid_after_utc


async def test_aclose_closes_every_flow(start: Start) -> None:
    server = await start(**ONLY_TCP)
    client = await StreamClient.connect(server.port("TCP"))
    await client.write(options(1))
    _, source = await server.request()

    await server.manager.aclose()

    assert await client.closed_by_peer()
    assert await server.closed_flow() == source.flow
    assert not server.manager.send(source, request(1))
    assert not server.manager.send(Address("UDP", "127.0.0.1", 9), request(1))
    await client.aclose()


async def test_is_open_follows_the_flow(start: Start) -> None:
    server = await start(**ONLY_TCP)
    client = await StreamClient.connect(server.port("TCP"))
    await client.write(options(1))
    _, source = await server.request()
    assert source.flow is not None

    assert server.manager.is_open(source.flow)
    await client.aclose()
    await server.closed_flow()
    assert not server.manager.is_open(source.flow)
