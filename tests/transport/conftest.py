"""Managers on loopback with ephemeral ports, and small clients that speak to them.

Every async test here runs twice: on the asyncio event loop and on uvloop, which the server
installs when it can (`install_uvloop`), since their transports differ in the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import uvloop

from ringfence.sip.message import Message, Request
from ringfence.sip.parser import KeepAlivePing, StreamParser, parse_datagram
from ringfence.sip.transaction import Address
from ringfence.transport import TransportConfig, TransportManager
from ringfence.transport.tls import CERT_FILE_NAME

#: Long enough for loopback on a loaded CI machine, short enough to fail fast.
WAIT_S = 2.0


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def options(n: int = 1, body: bytes = b"", transport: str = "UDP") -> bytes:
    """An OPTIONS request (RFC 3261 §11) whose Call-ID and CSeq carry `n`."""
    head = (
        f"OPTIONS sip:ringfence@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bK-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=a{n}\r\n"
        "To: <sip:ringfence@127.0.0.1>\r\n"
        f"Call-ID: call-{n}\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def request(n: int = 1) -> Request:
    message = parse_datagram(options(n))
    assert isinstance(message, Request)
    return message


def call_id(message: Message) -> str | None:
    return message.headers.get("Call-ID")


def trusting(cert_file: Path) -> ssl.SSLContext:
    """A client context that trusts `cert_file`, and only it (no system trust anchors)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cert_file)
    return context


@dataclass
class Harness:
    """A started manager and what its callbacks saw."""

    manager: TransportManager
    messages: asyncio.Queue[tuple[Message, Address]] = field(default_factory=asyncio.Queue)
    closed_flows: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    failed: asyncio.Queue[tuple[Message, Address]] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self.manager.on_message = lambda m, a: self.messages.put_nowait((m, a))
        self.manager.on_flow_closed = self.closed_flows.put_nowait
        self.manager.on_send_failed = lambda m, a: self.failed.put_nowait((m, a))

    async def message(self) -> tuple[Message, Address]:
        async with asyncio.timeout(WAIT_S):
            return await self.messages.get()

    async def request(self) -> tuple[Request, Address]:
        message, address = await self.message()
        assert isinstance(message, Request)
        return message, address

    async def closed_flow(self) -> str:
        async with asyncio.timeout(WAIT_S):
            return await self.closed_flows.get()

    def port(self, transport: str) -> int:
        return self.manager.local(transport)[1]

    @property
    def cert_file(self) -> Path:
        assert self.manager.config.tls_cert_dir is not None
        return self.manager.config.tls_cert_dir / CERT_FILE_NAME

    def client_tls(self) -> ssl.SSLContext:
        return trusting(self.cert_file)


class Start(Protocol):
    def __call__(self, **overrides: Any) -> Awaitable[Harness]: ...


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a manager on 127.0.0.1, every transport on an ephemeral port unless overridden."""
    harnesses: list[Harness] = []

    async def _start(**overrides: Any) -> Harness:
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "udp_port": 0,
            "tcp_port": 0,
            "tls_port": 0,
            "ws_port": 0,
            "wss_port": 0,
            "tls_cert_dir": tmp_path / "tls",
            "tls_hostnames": ("sip.test",),
        }
        settings.update(overrides)
        harness = Harness(TransportManager(TransportConfig(**settings)))
        await harness.manager.start()
        harnesses.append(harness)
        return harness

    yield _start
    for harness in harnesses:
        await harness.manager.aclose()


@pytest.fixture
async def server(start: Start) -> Harness:
    return await start()


class StreamClient:
    """A TCP or TLS client that reads SIP messages and pongs with the core's parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._parser = StreamParser()

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> StreamClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None
        )
        return cls(reader, writer)

    @property
    def port(self) -> int:
        port: int = self.writer.get_extra_info("sockname")[1]
        return port

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def event(self) -> Message | KeepAlivePing:
        async with asyncio.timeout(WAIT_S):
            while (event := self._parser.next_event()) is None:
                data = await self.reader.read(65536)
                assert data, "connection closed"
                self._parser.receive_data(data)
        return event

    async def message(self) -> Message:
        event = await self.event()
        assert not isinstance(event, KeepAlivePing)
        return event

    async def read_exactly(self, n: int) -> bytes:
        async with asyncio.timeout(WAIT_S):
            return await self.reader.readexactly(n)

    async def closed_by_peer(self) -> bool:
        """True once the server has closed (EOF or reset), having sent nothing."""
        try:
            async with asyncio.timeout(WAIT_S):
                data = await self.reader.read(65536)
        except (ConnectionResetError, ssl.SSLError):
            return True
        return data == b""

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@pytest.fixture
async def clients() -> AsyncIterator[list[StreamClient]]:
    """Stream clients a test opens; closed at the end."""
    opened: list[StreamClient] = []
    yield opened
    for client in opened:
        await client.aclose()


class DatagramClient(asyncio.DatagramProtocol):
    """A plain asyncio UDP socket that collects what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def message(self) -> Message:
        async with asyncio.timeout(WAIT_S):
            return parse_datagram(await self.received.get())


@pytest.fixture
async def udp_client(server: Harness) -> AsyncIterator[DatagramClient]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        DatagramClient, remote_addr=("127.0.0.1", server.port("UDP"))
    )
    yield client
    transport.close()
