"""Several SIP worker processes on one node (`sip.workers`), the way Kamailio scales.

CPython runs one thread of Python at a time, so a node uses more than one core only with more
than one process. The workers share the node's listening sockets (the parent binds them and
hands them down): any worker may read any datagram or accept any connection. What must stay
in one place is owned by one worker, chosen by hashing a shard key (`shard_of`):

- every message of a Call-ID (RFC 3261 §8.1.1.4): the transactions and dialogs it belongs to,
  their timers, the proxy's forks and the nonce-counts of its 407 challenges;
- every REGISTER of an address-of-record (§10.3 step 5): so each AOR's bindings have one
  writer, and the nonce its 401 carried is checked where it was issued.

A worker that reads a message owned by another hands the bytes over (`Frame.MESSAGE`), with
the source address, before it spends time parsing them when the key can be read off the
bytes (`raw_shard_key`), after otherwise. Bindings are replicated: the AOR's owner
publishes each new set to the others (`Frame.BINDINGS`), so any worker can route a call. A
connection (RFC 5626 flow) lives in the worker that accepted it; its id names that worker
(`flow_worker`), and others ask it to write on it (`Frame.SEND`) and learn when it closes
(`Frame.FLOW_CLOSED`).

Workers talk over stream socketpairs the parent made (no names in the file system, nothing
another local user can connect to), in frames of a 4-byte length, a 1-byte kind and a body.
Nothing is pickled: the bodies are SIP bytes, UTF-8 ids and the JSON of `encode_bindings`.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import socket
import struct
import zlib
from collections.abc import Callable, Mapping
from typing import cast

from ringfence.registrar.rules import RegistrarError, address_of_record
from ringfence.sip.message import Message, Request
from ringfence.sip.transaction import Address

logger = logging.getLogger(__name__)

#: A frame larger than this is a bug or corruption: the link is closed.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class Frame(enum.IntEnum):
    #: A SIP message for its owner: JSON of the source address, then the message's bytes.
    MESSAGE = 1
    #: Bytes to write on a flow of the receiver: the flow id (1-byte length), the bytes.
    SEND = 2
    #: An AOR's complete new binding set, as `state.location.encode_bindings` wrote it.
    BINDINGS = 3
    #: A flow of the sender closed: its id.
    FLOW_CLOSED = 4
    #: The sender serves now (sent once, to worker 0, which waits for every worker).
    READY = 5


# -- who owns what ---------------------------------------------------------------------------


def shard_of(key: str, workers: int) -> int:
    """The worker (0 .. workers-1) that owns a shard key; the same in every process."""
    # crc32, not hash(): str hashes are salted per process (PYTHONHASHSEED).
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % workers


def shard_key(message: Message) -> str | None:
    """The shard key of a parsed message; None: any worker may answer it (it is malformed)."""
    if isinstance(message, Request) and message.method == "REGISTER":
        try:
            return f"aor:{address_of_record(message)}"
        except RegistrarError:
            return None  # refused with a 400 or 404 by whoever reads it, statelessly
    call_id = message.headers.get("Call-ID")
    return None if call_id is None else f"call-id:{call_id}"


# The plain forms, read off the bytes without parsing; anything else (folded lines, escapes,
# a port in the To URI) returns None and the message is parsed first. tests/transport
# property-test that whatever these find equals `shard_key` of the parsed message.
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r\n(?![ \t])", re.I)
_TO_AOR = re.compile(
    rb"\r\n(?:to|t)[ \t]*:[ \t]*"
    rb"(?:\"[^\"\\\r\n]*\"[ \t]*<|[A-Za-z0-9.!%*_+`'~ \t-]*<)?"
    rb"sips?:([A-Za-z0-9._~!$*+'()-]+)@([A-Za-z0-9.-]+)(?=[>;\r])",
    re.I,
)


def raw_shard_key(data: bytes) -> str | None:
    """The shard key of a message in `data`, if its plain form can be read without parsing."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]
    if head.startswith(b"REGISTER "):
        to = _TO_AOR.search(head)
        if to is None:
            return None
        user, host = to.group(1).decode(), to.group(2).decode().lower()
        return f"aor:sip:{user}@{host}"
    call_id = _CALL_ID.search(head)
    if call_id is None:
        return None
    try:
        return f"call-id:{call_id.group(1).decode()}"
    except UnicodeDecodeError:
        return None


_FLOW_WORKER = re.compile(r"[a-z]+-w([0-9]+)-")


def flow_worker(flow_id: str) -> int | None:
    """The worker whose connection a flow id names (`transport.flow.new_flow_id`)."""
    match = _FLOW_WORKER.match(flow_id)
    return int(match.group(1)) if match else None


# -- frames ----------------------------------------------------------------------------------


def encode_frame(kind: Frame, body: bytes) -> bytes:
    return _LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


def encode_message(source: Address, data: bytes) -> bytes:
    address = json.dumps([source.transport, source.host, source.port, source.flow]).encode()
    return encode_frame(Frame.MESSAGE, struct.pack(">H", len(address)) + address + data)


def decode_message(body: bytes) -> tuple[Address, bytes]:
    """The source and bytes of a MESSAGE body.

    Raises:
        ValueError: the body is not one.
    """
    try:
        (length,) = struct.unpack_from(">H", body)
        transport, host, port, flow = json.loads(body[2 : 2 + length])
    except (struct.error, TypeError, ValueError) as exc:
        raise ValueError(f"not a message frame: {exc}") from exc
    if not (
        isinstance(transport, str)
        and isinstance(host, str)
        and isinstance(port, int)
        and (flow is None or isinstance(flow, str))
    ):
        raise ValueError("not a message frame: bad source address")
    return Address(transport, host, port, flow), body[2 + length :]


def encode_send(flow_id: str, data: bytes) -> bytes:
    flow = flow_id.encode()
    return encode_frame(Frame.SEND, bytes((len(flow),)) + flow + data)


def decode_send(body: bytes) -> tuple[str, bytes]:
    """The flow id and bytes of a SEND body.

    Raises:
        ValueError: the body is not one.
    """
    if not body or len(body) < 1 + body[0]:
        raise ValueError("not a send frame")
    try:
        return body[1 : 1 + body[0]].decode(), body[1 + body[0] :]
    except UnicodeDecodeError as exc:
        raise ValueError("not a send frame: flow id is not UTF-8") from exc


class FrameReader:
    """Splits a byte stream into (kind, body) frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Frame, bytes]]:
        """The frames `data` completed, in order.

        Raises:
            ValueError: a frame is empty, larger than `MAX_FRAME_BYTES` or of an unknown kind.
        """
        buffer = self._buffer
        buffer += data
        frames = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if not 1 <= length <= MAX_FRAME_BYTES:
                raise ValueError(f"frame length {length} out of bounds")
            end = start + _LENGTH.size + length
            if end > len(buffer):
                break
            kind = buffer[start + _LENGTH.size]
            try:
                frame = Frame(kind)
            except ValueError as exc:
                raise ValueError(f"unknown frame kind {kind}") from exc
            frames.append((frame, bytes(buffer[start + _LENGTH.size + 1 : end])))
            start = end
        del buffer[:start]
        return frames


# -- the links -------------------------------------------------------------------------------

FrameHandler = Callable[[int, Frame, bytes], None]


class _Link(asyncio.Protocol):
    def __init__(self, peer: int, handle: FrameHandler) -> None:
        self._peer = peer
        self._handle = handle
        self._reader = FrameReader()
        self.transport: asyncio.WriteTransport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except ValueError as exc:
            logger.error("worker %d sent a bad frame (%s); closing the link", self._peer, exc)
            assert self.transport is not None
            self.transport.close()
            return
        for kind, body in frames:
            try:
                self._handle(self._peer, kind, body)
            except Exception:
                logger.exception("handling a frame from worker %d failed", self._peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class Cluster:
    """This worker's links to the node's other workers.

    Args:
        index: This worker's number, 0 .. size-1.
        size: How many workers the node runs.
        peers: A connected stream socket to each other worker, by its number.
    """

    def __init__(self, index: int, size: int, peers: Mapping[int, socket.socket]) -> None:
        if not 0 <= index < size or set(peers) != set(range(size)) - {index}:
            raise ValueError("a worker needs one link to each other worker")
        self.index = index
        self.size = size
        self._sockets = dict(peers)
        self._links: dict[int, _Link] = {}
        self.on_frame: FrameHandler = _drop

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for peer, sock in self._sockets.items():
            sock.setblocking(False)
            link = _Link(peer, lambda *args: self.on_frame(*args))
            await loop.connect_accepted_socket(lambda link=link: link, sock)  # type: ignore[misc]
            self._links[peer] = link

    def owner(self, key: str | None) -> int:
        """The worker that owns a shard key; this one for None."""
        return self.index if key is None else shard_of(key, self.size)

    def send(self, peer: int, frame: bytes) -> bool:
        """Queue a frame for worker `peer`; False if that link is gone."""
        link = self._links.get(peer)
        if link is None or link.transport is None or link.transport.is_closing():
            logger.warning("no link to worker %d; a frame was dropped", peer)
            return False
        link.transport.write(frame)
        return True

    def broadcast(self, frame: bytes) -> None:
        for peer in self._links:
            self.send(peer, frame)

    async def aclose(self) -> None:
        for link in self._links.values():
            if link.transport is not None:
                link.transport.close()
        await asyncio.gather(*(link.lost for link in self._links.values()))
        self._links.clear()


def _drop(peer: int, kind: Frame, body: bytes) -> None:
    logger.debug("no frame handler; dropped a frame from worker %d", peer)
