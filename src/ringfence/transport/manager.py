"""The transports as one object: listeners, flows, limits and the owner's callbacks.

Theory of operation
-------------------
The manager starts a listener per configured port. Listeners frame bytes into messages and
report to the manager's hub (the `Sink`), which applies the per-IP limits, keeps the table of
open flows, and calls the owner:

- `on_message(message, source)` for every message, source being `Address("UDP", ip, port)`
  or, for a connection, `Address(transport, ip, port, flow=<flow id>)`;
- `on_flow_closed(flow_id)` when a connection closes (RFC 5626: a binding registered over
  a flow is reachable only through it, so the registrar drops it);
- `on_send_failed(message, address)` when a message `send` accepted for a new outbound
  connection could not be delivered because the connection could not be opened (RFC 3261
  §17.1.4: the transaction layer treats it as a transport error).

`send` picks the way out by the address: the UDP socket; the named flow, if any (False if it
has closed: RFC 5626 has the proxy answer 430 Flow Failed rather than open another
connection); or, for TCP/TLS without a flow, an open connection to that transport, host and
port (RFC 3261 §18.2.2 for responses), opening one when there is none.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Mapping
from types import TracebackType

from ringfence.clock import Clock, SystemClock
from ringfence.sip.message import Message, serialize
from ringfence.sip.transaction import Address
from ringfence.transport import tls
from ringfence.transport.config import TransportConfig
from ringfence.transport.errors import ListenError
from ringfence.transport.flow import Flow
from ringfence.transport.limits import ConnectionCounter, TokenBuckets
from ringfence.transport.stream import (
    StreamConnection,
    StreamListener,
    close_all,
    listen_socket,
)
from ringfence.transport.udp import UDPListener
from ringfence.transport.ws import WebSocketListener

logger = logging.getLogger(__name__)

STREAM_TRANSPORTS = ("TCP", "TLS")
#: How long `aclose` waits for connections to close gracefully before aborting them.
CLOSE_TIMEOUT_S = 2.0


def _ignore_message(message: Message, address: Address) -> None:
    logger.debug("no on_message set; dropped a message from a %s port", address.transport)


def _ignore_flow(flow_id: str) -> None:
    pass


def _ignore_failure(message: Message, address: Address) -> None:
    pass


def _keep(data: bytes, address: Address) -> bool:
    return False


def bind_sockets(config: TransportConfig) -> dict[str, socket.socket]:
    """The listening sockets of `config`, bound, by transport name ("UDP", "TCP", ...).

    For a node of several worker processes: the parent binds, every worker serves them
    (`TransportManager.start(sockets=...)`).

    Raises:
        ListenError: a port cannot be bound (those bound already are closed).
    """
    sockets: dict[str, socket.socket] = {}
    try:
        if config.udp_port is not None:
            family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
            udp = sockets["UDP"] = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.bind((config.host, config.udp_port))
            except OSError as exc:
                raise ListenError(
                    f"UDP {config.host}:{config.udp_port}: {exc.strerror or exc}"
                ) from exc
        for name, port in (
            ("TCP", config.tcp_port),
            ("TLS", config.tls_port),
            ("WS", config.ws_port),
            ("WSS", config.wss_port),
        ):
            if port is not None:
                sockets[name] = listen_socket(name, config.host, port)
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


class _Hub:
    """The manager's side of `Sink`: limits, the flow table, and the owner's callbacks."""

    def __init__(self, manager: TransportManager, config: TransportConfig) -> None:
        self._manager = manager
        self._config = config
        self._loop = asyncio.get_running_loop()
        self._buckets = TokenBuckets(config.rate_per_ip, config.burst_per_ip)
        self._connections = ConnectionCounter(config.max_connections_per_ip)
        self.flows: dict[str, Flow] = {}
        self.by_key: dict[tuple[str, str, int], Flow] = {}

    @property
    def config(self) -> TransportConfig:
        return self._config

    def admit(self, host: str) -> bool:
        return self._connections.admit(host)

    def release(self, host: str) -> None:
        self._connections.release(host)

    def allow(self, host: str) -> bool:
        return self._buckets.take(host, self._loop.time())

    def opened(self, flow: Flow) -> None:
        self.flows[flow.flow_id] = flow
        self.by_key.setdefault(flow.key, flow)

    def closed(self, flow: Flow) -> None:
        self.flows.pop(flow.flow_id, None)
        self.forget(flow)
        try:
            self._manager.on_flow_closed(flow.flow_id)
        except Exception:
            logger.exception("on_flow_closed failed")

    def forget(self, flow: Flow) -> None:
        if self.by_key.get(flow.key) is flow:
            del self.by_key[flow.key]

    def steer(self, data: bytes, source: Address) -> bool:
        return self._manager.on_datagram(data, source)

    def received(self, message: Message, source: Address) -> None:
        try:
            self._manager.on_message(message, source)
        except Exception:
            # The root of every inbound message: a bug above must not close the connection.
            logger.exception("on_message failed for a message from a %s port", source.transport)


class TransportManager:
    """Every SIP listener of the node, the flows they carry, and outbound connections.

    Set the callbacks, then `await start()`; `await aclose()` closes everything. It is also
    an async context manager that does both.

    Args:
        config: where to listen and which limits to apply.
        clock: the wall clock, read only to date a self-signed certificate.

    Attributes:
        on_message: called with every parsed message and its source address.
        on_flow_closed: called with the id of every flow (connection) that closed.
        on_send_failed: called with a message `send` accepted but could not deliver,
            because the outbound connection it waited for failed to open.
        on_datagram: called with every datagram before it is parsed; True means the owner
            took it (handed it to another worker) and it is not parsed here.
    """

    def __init__(self, config: TransportConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.on_message: Callable[[Message, Address], None] = _ignore_message
        self.on_flow_closed: Callable[[str], None] = _ignore_flow
        self.on_send_failed: Callable[[Message, Address], None] = _ignore_failure
        self.on_datagram: Callable[[bytes, Address], bool] = _keep
        self._clock = clock or SystemClock()
        self._hub: _Hub | None = None
        self._udp: UDPListener | None = None
        self._streams: dict[str, StreamListener] = {}
        self._websockets: dict[str, WebSocketListener] = {}
        self._client_tls: ssl.SSLContext | None = None
        self._outbound: set[StreamConnection] = set()
        self._connecting: dict[StreamConnection, tuple[asyncio.Task[None], list[Message]]] = {}

    async def __aenter__(self) -> TransportManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self, sockets: Mapping[str, socket.socket] | None = None) -> None:
        """Bind every configured listener, or serve `sockets` from `bind_sockets`.

        Raises:
            ListenError: a port cannot be bound (the listeners already started are closed).
            CertificateError: TLS is configured but its certificate cannot be had.
        """
        config = self.config
        hub = self._hub = _Hub(self, config)
        if config.tls_ca_file is not None:
            self._client_context()  # a bad trust anchor file fails the start, not a call
        server_tls = self._server_tls() if config.needs_certificate else None
        given = sockets or {}
        try:
            if config.udp_port is not None:
                self._udp = UDPListener(hub)
                await self._udp.start(config.host, config.udp_port, given.get("UDP"))
            for name, port, context in (
                ("TCP", config.tcp_port, None),
                ("TLS", config.tls_port, server_tls),
            ):
                if port is not None:
                    self._streams[name] = StreamListener(hub, name, context)
                    await self._streams[name].start(config.host, port, given.get(name))
            for name, port, context in (
                ("WS", config.ws_port, None),
                ("WSS", config.wss_port, server_tls),
            ):
                if port is not None:
                    self._websockets[name] = WebSocketListener(hub, name, context)
                    await self._websockets[name].start(config.host, port, given.get(name))
        except BaseException:
            await self.aclose()
            raise
        names = ["UDP"] if self._udp is not None else []
        for name in (*names, *self._streams, *self._websockets):
            host, port = self.local(name)
            logger.info("SIP %s listening on %s port %d", name, host, port)

    def _server_tls(self) -> ssl.SSLContext:
        config = self.config
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            files = tls.CertificateFiles(config.tls_cert_file, config.tls_key_file)
        else:
            assert config.tls_cert_dir is not None  # TransportConfig checked it
            files = tls.ensure_self_signed(
                config.tls_cert_dir, config.tls_hostnames, self._clock.now()
            )
        return tls.server_context(files)

    def _client_context(self) -> ssl.SSLContext:
        # Made on first use: loading the system's trust anchors takes tens of milliseconds.
        if self._client_tls is None:
            self._client_tls = tls.client_context(self.config.tls_ca_file)
        return self._client_tls

    def local(self, transport: str) -> tuple[str, int]:
        """The host and port the listener of `transport` ("UDP", "TCP", ...) is bound to.

        Raises:
            KeyError: that transport is not listening.
        """
        name = transport.upper()
        if name == "UDP" and self._udp is not None:
            return self._udp.local()
        if name in self._streams:
            return self._streams[name].local()
        if name in self._websockets:
            return self._websockets[name].local()
        raise KeyError(f"no {name} listener")

    def is_open(self, flow_id: str) -> bool:
        """Whether the flow is still open.

        For a registrar that stores a binding after an await: if the flow closed meanwhile,
        `on_flow_closed` has already been called, and the binding must be dropped now.
        """
        return self._hub is not None and flow_id in self._hub.flows

    def send_on_flow(self, flow_id: str, data: bytes) -> bool:
        """Write serialized bytes on one of our flows; False if it is not open here."""
        flow = self._hub.flows.get(flow_id) if self._hub is not None else None
        return flow is not None and flow.send(data)

    def send_datagram(self, data: bytes, address: Address) -> bool:
        """Send serialized bytes over UDP to `address`; False if UDP is not running."""
        return self._udp is not None and self._udp.send(data, address.host, address.port)

    def send(self, address: Address, message: Message) -> bool:
        """Serialize `message` and send it to `address`.

        Returns:
            True if the message was written, or queued for an outbound connection being
            opened (if that fails, `on_send_failed` is called). False if it cannot be sent:
            the flow is gone, the transport is not running, or (UDP) the host is a name.
        """
        hub = self._hub
        if hub is None:
            return False
        data = serialize(message)
        name = address.transport.upper()
        if address.flow is not None:
            flow = hub.flows.get(address.flow)
            return flow is not None and flow.send(data)
        if name == "UDP":
            return self._udp is not None and self._udp.send(data, address.host, address.port)
        if name not in STREAM_TRANSPORTS:
            logger.debug("cannot open a %s connection; only TCP and TLS go out", name)
            return False
        key = (name, address.host, address.port)
        existing = hub.by_key.get(key)
        if existing is not None and existing.send(data):
            if isinstance(existing, StreamConnection) and existing in self._connecting:
                self._connecting[existing][1].append(message)
            return True
        return self._connect(key, data, message)

    def _connect(self, key: tuple[str, str, int], data: bytes, message: Message) -> bool:
        hub = self._hub
        assert hub is not None
        connection = StreamConnection(hub, key[0], key=key)
        connection.send(data)
        hub.by_key[key] = connection
        self._outbound.add(connection)
        connection.add_closed_callback(lambda: self._outbound.discard(connection))
        task = asyncio.get_running_loop().create_task(self._open(connection))
        self._connecting[connection] = (task, [message])
        return True

    async def _open(self, connection: StreamConnection) -> None:
        name, host, port = connection.key
        loop = asyncio.get_running_loop()
        context = self._client_context() if name == "TLS" else None
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                # RFC 5922 §7.3: the certificate is checked against the name we were given;
                # the caller passes the SIP domain as the host, not a resolved address.
                await loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            logger.info("%s connection to port %d failed: %s", name, port, type(exc).__name__)
            _, messages = self._connecting.pop(connection, (None, []))
            assert self._hub is not None
            self._hub.forget(connection)
            connection.connection_failed()
            for message in messages:
                try:
                    self.on_send_failed(message, Address(name, host, port))
                except Exception:
                    logger.exception("on_send_failed failed")
            return
        self._connecting.pop(connection, None)

    async def aclose(self) -> None:
        """Stop listening and close every connection; pending outbound messages are dropped."""
        for task, _ in list(self._connecting.values()):
            task.cancel()
        await asyncio.gather(
            *(task for task, _ in self._connecting.values()), return_exceptions=True
        )
        self._connecting.clear()
        await close_all(self._outbound, CLOSE_TIMEOUT_S)
        for stream in self._streams.values():
            await stream.aclose(CLOSE_TIMEOUT_S)
        for websocket in self._websockets.values():
            await websocket.aclose()
        if self._udp is not None:
            await self._udp.aclose()
        self._streams.clear()
        self._websockets.clear()
        self._udp = None
        self._hub = None
