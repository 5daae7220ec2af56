"""SIP over UDP (RFC 3261 §18): one message per datagram."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, cast

from ringfence.sip.errors import ParseError
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import Address
from ringfence.sip.uri import is_ip_address
from ringfence.transport.errors import ListenError
from ringfence.transport.flow import Sink

logger = logging.getLogger(__name__)


class UDPListener(asyncio.DatagramProtocol):
    """The UDP socket: parses datagrams to the sink, sends serialized messages."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = asyncio.get_running_loop().create_future()

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        """Bind `host`:`port`, or serve `sock`, a UDP socket bound already."""
        loop = asyncio.get_running_loop()
        try:
            if sock is not None:
                await loop.create_datagram_endpoint(lambda: self, sock=sock)
            else:
                await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        except OSError as exc:
            raise ListenError(f"UDP {host}:{port}: {exc.strerror or exc}") from exc

    def local(self) -> tuple[str, int]:
        assert self._transport is not None
        sockname = self._transport.get_extra_info("sockname")
        return sockname[0], sockname[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.DatagramTransport, transport)  # uvloop's types are not subclasses
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, self._sink.config.udp_receive_buffer_bytes
                )
            except OSError as exc:
                logger.warning("UDP: could not size the receive buffer: %s", exc.strerror)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if not self._closed.done():
            self._closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host: str = addr[0]
        port: int = addr[1]
        config = self._sink.config
        # Logs name the size and the source port, never the address or the contents: both
        # are personal data.
        if len(data) > config.max_datagram_bytes:
            logger.debug("UDP: dropped a %d-byte datagram from port %d: too large", len(data), port)
            return
        if not self._sink.allow(host):
            return
        if not data.strip(b"\r\n\0 "):
            # A CRLF (or NUL) keep-alive some clients send over UDP; RFC 5626 §4.4.2 uses
            # STUN on UDP instead, which lands in ParseError below and is dropped too.
            return
        source = Address("UDP", host, port)
        if self._sink.steer(data, source):
            return  # another worker's (transport.cluster)
        try:
            message = parse_datagram(
                data, max_header_bytes=config.max_header_bytes, max_headers=config.max_headers
            )
        except ParseError as exc:
            # A datagram that does not parse cannot be answered: there is no Via to answer to.
            logger.debug(
                "UDP: dropped a %d-byte datagram from port %d: not SIP (%d)",
                len(data),
                port,
                exc.status_hint,
            )
            return
        self._sink.received(message, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like, from an earlier sendto; nothing to do here:
        # the transaction layer times out (RFC 3261 §17.1.1.2, §17.1.2.2).
        logger.debug("UDP: error from the network: %s", type(exc).__name__)

    def send(self, data: bytes, host: str, port: int) -> bool:
        """Send one datagram; False if the socket is closed or `host` is not an IP address.

        Names are resolved above the transport (RFC 3263): a name here would block the
        loop in the socket's own resolver.
        """
        if self._transport is None or self._transport.is_closing():
            return False
        if not is_ip_address(host):
            logger.warning("UDP: refusing to send to a host name; resolve it first")
            return False
        try:
            self._transport.sendto(data, (host, port))
        except OSError as exc:
            logger.debug("UDP: send to port %d failed: %s", port, type(exc).__name__)
            return False
        return True

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
            await self._closed
