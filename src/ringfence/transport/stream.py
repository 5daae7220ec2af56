"""SIP over TCP and TLS (RFC 3261 §18): messages framed by Content-Length on a byte stream.

One class serves both: with an `ssl.SSLContext` a listener speaks TLS, without one TCP.
The listener runs its own accept loop (`sock_accept`, then `connect_accepted_socket`), so the
per-IP connection limit applies as the TCP accept returns, before a peer can make us spend a
TLS handshake; `loop.start_tls` would do the same, but uvloop hands the ClientHello to the
plain protocol before the upgrade.

Each connection keeps one timer, at the earlier of two deadlines: the idle deadline (nothing
received for `idle_timeout_s`; RFC 5626 keep-alives count) and the message deadline (part of
a message held for `message_timeout_s`, which stops senders that trickle a message forever).
The timer is lazy: receiving data moves the deadlines, and the timer, when it fires, either
closes the connection or sleeps until the deadline that is now current.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from ringfence.sip.errors import ParseError
from ringfence.sip.parser import KeepAlivePing, StreamParser
from ringfence.sip.transaction import Address
from ringfence.transport.errors import ListenError
from ringfence.transport.flow import Sink, new_flow_id

logger = logging.getLogger(__name__)

#: RFC 5626 §3.5.1: the answer to a double-CRLF ping.
PONG = b"\r\n"
#: A peer that leaves this much of our output unread is not reading; it is closed.
MAX_WRITE_BUFFER_BYTES = 8 * 1024 * 1024
#: Connections the kernel queues for accept.
BACKLOG = 1024
#: After accept fails for want of resources (EMFILE), wait this long before the next try.
ACCEPT_BACKOFF_S = 0.1


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection: frames messages out of it, writes messages into it.

    Inbound connections are made by `StreamListener`; outbound ones by the manager, which
    may `send` before the connection is open (the bytes wait for it).

    Args:
        sink: where messages and the connection's life are reported.
        transport: "TCP" or "TLS", as it appears in `Address.transport`.
        key: for an outbound connection, the (transport, host, port) it is opened to; an
            inbound one is keyed by its peer's address.
        admitted_host: for an inbound connection, the address the listener counted it
            against; released when the connection ends.
    """

    def __init__(
        self,
        sink: Sink,
        transport: str,
        *,
        key: tuple[str, str, int] | None = None,
        admitted_host: str | None = None,
    ) -> None:
        self._sink = sink
        self._name = transport
        self._admitted_host = admitted_host
        self._loop = asyncio.get_running_loop()
        self._flow_id = new_flow_id(transport)
        self._key = key or (transport, "", 0)
        self._address: Address | None = None
        self._transport: asyncio.Transport | None = None
        self._open = False
        self._gone = False
        self._pending: list[bytes] = []
        self._closed = self._loop.create_future()
        config = sink.config
        self._parser = StreamParser(
            max_header_bytes=config.max_header_bytes,
            max_headers=config.max_headers,
            max_body_bytes=config.max_body_bytes,
        )
        self._last_received = self._loop.time()
        self._partial_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def flow_id(self) -> str:
        return self._flow_id

    @property
    def key(self) -> tuple[str, str, int]:
        return self._key

    @property
    def address(self) -> Address | None:
        """The peer, with this flow's id; None until the connection is made."""
        return self._address

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def add_closed_callback(self, callback: Callable[[], None]) -> None:
        self._closed.add_done_callback(lambda _: callback())

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Write one serialized message, or keep it until an outbound connection opens."""
        if self._gone:
            return False
        if not self._open:
            self._pending.append(data)
            return True
        transport = self._transport
        assert transport is not None
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            logger.info("%s flow %s: peer does not read; closing", self._name, self.flow_id)
            transport.abort()
            return False
        transport.write(data)
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self.connection_failed()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        else:
            self.connection_failed()

    def connection_failed(self) -> None:
        """The connection never opened: a failed connect or TLS handshake, or cancelled."""
        self._finish()

    def _finish(self) -> None:
        self._gone = True
        self._pending.clear()
        if self._admitted_host is not None:
            self._sink.release(self._admitted_host)
            self._admitted_host = None
        if not self._closed.done():
            self._closed.set_result(None)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's types are not subclasses
        self._transport = transport
        peer = transport.get_extra_info("peername")
        host: str = peer[0]
        port: int = peer[1]
        self._address = Address(self._name, host, port, flow=self.flow_id)
        if self._admitted_host is not None:
            self._key = (self._name, host, port)
        self._open = True
        self._sink.opened(self)
        self._last_received = self._loop.time()
        self._schedule(self._last_received + self._sink.config.idle_timeout_s)
        pending, self._pending = self._pending, []
        for data in pending:
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        was_open, self._open = self._open, False
        self._finish()
        if was_open:
            self._sink.closed(self)

    def data_received(self, data: bytes) -> None:
        if not self._open:
            return
        assert self._transport is not None
        assert self._address is not None
        now = self._loop.time()
        self._last_received = now
        self._parser.receive_data(data)
        framed = False
        while self._open:
            try:
                event = self._parser.next_event()
            except ParseError as exc:
                # RFC 3261 §18.3: framing is lost, and with it the connection. Logs give
                # sizes and the port only, never contents.
                logger.debug(
                    "%s flow %s from port %d: not SIP (%d) with %d bytes buffered; closing",
                    self._name,
                    self.flow_id,
                    self._address.port,
                    exc.status_hint,
                    self._parser.buffered,
                )
                self._transport.abort()
                return
            if event is None:
                break
            framed = True
            if not self._sink.allow(self._address.host):
                continue
            if isinstance(event, KeepAlivePing):
                # RFC 5626 §3.5.1: answer a CRLFCRLF ping with a CRLF pong, at once.
                self._transport.write(PONG)
                continue
            self._sink.received(event, self._address)
        if self._parser.buffered == 0:
            self._partial_since = None
        elif framed or self._partial_since is None:
            # A new message has begun in this chunk: its clock starts now.
            self._partial_since = now
            self._schedule(now + self._sink.config.message_timeout_s)

    def eof_received(self) -> bool | None:
        return None  # close our side too: SIP has no use for a half-open connection

    # -- timeouts --------------------------------------------------------------------------

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return  # it fires first and finds the later deadline itself
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        if not self._open or self._transport is None:
            return
        config = self._sink.config
        now = self._loop.time()
        port = self._address.port if self._address else 0
        if self._partial_since is not None:
            message_deadline = self._partial_since + config.message_timeout_s
            if now >= message_deadline:
                logger.debug(
                    "%s flow %s from port %d: %d bytes of a message for %.1f s; closing",
                    self._name,
                    self.flow_id,
                    port,
                    self._parser.buffered,
                    now - self._partial_since,
                )
                self._transport.abort()
                return
        idle_deadline = self._last_received + config.idle_timeout_s
        if now >= idle_deadline:
            logger.debug("%s flow %s from port %d: idle; closing", self._name, self.flow_id, port)
            self._transport.close()
            return
        if self._partial_since is not None:
            idle_deadline = min(idle_deadline, self._partial_since + config.message_timeout_s)
        self._schedule(idle_deadline)


def listen_socket(name: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port`.

    Raises:
        ListenError: it cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise ListenError(f"{name} {host}:{port}: {exc.strerror or exc}") from exc


class StreamListener:
    """A TCP or TLS listening socket and the connections it accepted.

    Args:
        sink: where connections and messages are reported.
        transport: "TCP" or "TLS".
        tls: the server context for TLS; None for TCP.
    """

    def __init__(self, sink: Sink, transport: str, tls: ssl.SSLContext | None = None) -> None:
        self._sink = sink
        self._name = transport
        self._tls = tls
        self._socket: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._opening: set[asyncio.Task[None]] = set()
        self._connections: set[StreamConnection] = set()

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        """Listen on `host`:`port`, or on `sock`, a listening socket made already."""
        if sock is None:
            sock = listen_socket(self._name, host, port)
        sock.setblocking(False)
        self._socket = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    def local(self) -> tuple[str, int]:
        assert self._socket is not None
        sockname: Any = self._socket.getsockname()
        return sockname[0], sockname[1]

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as exc:
                # EMFILE, ENOBUFS, a connection reset while queued: keep serving the rest.
                logger.warning("%s: accept failed: %s", self._name, exc.strerror or exc)
                await asyncio.sleep(ACCEPT_BACKOFF_S)
                continue
            host: str = peer[0]
            if not self._sink.admit(host):
                logger.debug(
                    "%s: refused a connection from port %d: too many from its address",
                    self._name,
                    peer[1],
                )
                conn.close()
                continue
            task = loop.create_task(self._open(conn, host))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, conn: socket.socket, host: str) -> None:
        connection = StreamConnection(self._sink, self._name, admitted_host=host)
        self._connections.add(connection)
        connection.add_closed_callback(lambda: self._connections.discard(connection))
        loop = asyncio.get_running_loop()
        try:
            if self._tls is None:
                await loop.connect_accepted_socket(lambda: connection, conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: connection,
                    conn,
                    ssl=self._tls,
                    ssl_handshake_timeout=self._sink.config.message_timeout_s,
                )
        except (OSError, TimeoutError) as exc:
            # A failed TLS handshake (a scanner, a client that distrusts our certificate):
            # the loop has closed the socket.
            logger.debug("%s: handshake failed: %s", self._name, type(exc).__name__)
            connection.connection_failed()
        except BaseException:
            conn.close()
            connection.connection_failed()
            raise

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Stop accepting, close every connection, abort those that don't close in time."""
        tasks = [*self._opening, *([self._accepting] if self._accepting else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        await close_all(self._connections, timeout_s)


async def close_all(connections: set[StreamConnection], timeout_s: float) -> None:
    """Close `connections` gracefully, then abort those still open after `timeout_s`."""
    connections = set(connections)
    for connection in connections:
        connection.close()
    if not connections:
        return
    waiters = [asyncio.ensure_future(c.wait_closed()) for c in connections]
    _, pending = await asyncio.wait(waiters, timeout=timeout_s)
    for connection in connections:
        connection.abort()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
    for waiter in pending:
        waiter.cancel()
