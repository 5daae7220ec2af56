"""SIP over WebSocket (RFC 7118): one SIP message per WebSocket message.

The handshake must offer the "sip" subprotocol (RFC 7118 §4.1); websockets refuses it with
400 otherwise. Each text or binary message carries exactly one SIP message (§4.2), so it is
parsed whole like a datagram, and a malformed one is dropped without losing the framing. A
message of nothing but CRLFs is a keep-alive (RFC 5626 §3.5.1, as SIP.js sends it) and gets a
CRLF back.

websockets' own ping frames are off: liveness is the idle timeout, as on TCP, so a phone
that sends SIP keep-alives is not woken by pings as well.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Subprotocol

from ringfence.sip.errors import ParseError
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import Address
from ringfence.transport.errors import ListenError
from ringfence.transport.flow import Sink, new_flow_id

logger = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol("sip")
#: Messages waiting for a peer that reads slowly; more, and the connection is closed.
MAX_QUEUED_MESSAGES = 1000


class WebSocketFlow:
    """One WebSocket connection: a queue of outgoing messages and the task that writes them."""

    def __init__(self, connection: ServerConnection, transport: str) -> None:
        self._connection = connection
        self._flow_id = new_flow_id(transport)
        peer: Any = connection.remote_address
        self.address = Address(transport, peer[0], peer[1], flow=self._flow_id)
        self._key = (transport, self.address.host, self.address.port)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED_MESSAGES)
        self._writer = asyncio.get_running_loop().create_task(self._write())
        self._closing = False

    @property
    def flow_id(self) -> str:
        return self._flow_id

    @property
    def key(self) -> tuple[str, str, int]:
        return self._key

    def send(self, data: bytes) -> bool:
        if self._closing or self._connection.state is not State.OPEN:
            return False
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            logger.info(
                "%s flow %s: peer does not read; closing", self.address.transport, self.flow_id
            )
            self.close()
            return False
        return True

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._connection.transport.close()

    async def _write(self) -> None:
        while True:
            data = await self._queue.get()
            try:
                # RFC 7118 §4.2: text frames when the message is UTF-8, binary otherwise.
                data.decode("utf-8")
                text = True
            except UnicodeDecodeError:
                text = False
            try:
                await self._connection.send(data, text=text)
            except ConnectionClosed:
                return

    async def aclose(self) -> None:
        self._closing = True
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)


def _admitting_connection(sink: Sink) -> type[ServerConnection]:
    """A ServerConnection that applies the per-IP connection limit as the TCP accept ends."""

    class AdmittedConnection(ServerConnection):
        admitted_host: str | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            transport = cast(asyncio.Transport, transport)  # uvloop's types are not subclasses
            peer: Any = transport.get_extra_info("peername")
            if sink.admit(peer[0]):
                self.admitted_host = peer[0]
            else:
                logger.debug(
                    "WS: connection from port %d refused: too many from its address", peer[1]
                )
                transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if self.admitted_host is not None:
                sink.release(self.admitted_host)
                self.admitted_host = None

    return AdmittedConnection


class WebSocketListener:
    """A WS or WSS listening socket (RFC 7118).

    Args:
        sink: where connections and messages are reported.
        transport: "WS", or "WSS" with `tls` set.
        tls: the server context for WSS; None for WS.
    """

    def __init__(self, sink: Sink, transport: str, tls: ssl.SSLContext | None = None) -> None:
        self._sink = sink
        self._name = transport
        self._tls = tls
        self._server: Server | None = None

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        """Listen on `host`:`port`, or on `sock`, a listening socket made already."""
        config = self._sink.config
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
        try:
            self._server = await serve(
                self._handle,
                **where,
                subprotocols=[SUBPROTOCOL],
                compression=None,  # a deflate context per connection costs memory; SIP is small
                open_timeout=config.message_timeout_s,
                ping_interval=None,
                max_size=config.max_datagram_bytes,
                server_header=None,
                create_connection=_admitting_connection(self._sink),
                ssl=self._tls,
            )
        except OSError as exc:
            raise ListenError(f"{self._name} {host}:{port}: {exc.strerror or exc}") from exc

    def local(self) -> tuple[str, int]:
        assert self._server is not None
        sockname: Any = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def _handle(self, connection: ServerConnection) -> None:
        flow = WebSocketFlow(connection, self._name)
        self._sink.opened(flow)
        try:
            await self._receive(connection, flow)
        finally:
            self._sink.closed(flow)
            await flow.aclose()

    async def _receive(self, connection: ServerConnection, flow: WebSocketFlow) -> None:
        config = self._sink.config
        address = flow.address
        while True:
            try:
                async with asyncio.timeout(config.idle_timeout_s):
                    data = await connection.recv(decode=False)
            except TimeoutError:
                logger.debug(
                    "%s flow %s from port %d: idle; closing", self._name, flow.flow_id, address.port
                )
                return
            except ConnectionClosed:
                return
            if not self._sink.allow(address.host):
                continue
            if not data.strip(b"\r\n"):
                flow.send(b"\r\n")  # RFC 5626 §3.5.1 pong
                continue
            try:
                message = parse_datagram(
                    data, max_header_bytes=config.max_header_bytes, max_headers=config.max_headers
                )
            except ParseError as exc:
                logger.debug(
                    "%s flow %s from port %d: dropped a %d-byte message: not SIP (%d)",
                    self._name,
                    flow.flow_id,
                    address.port,
                    len(data),
                    exc.status_hint,
                )
                continue
            self._sink.received(message, address)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
