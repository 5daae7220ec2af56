"""Flows (RFC 5626 §3: a connection that carries SIP) and what listeners report to.

Each listener turns bytes into messages and hands them to a `Sink` (the manager), which owns
the per-IP limits, the table of open flows and the owner's callbacks. That keeps the
listeners free of bookkeeping and the manager free of framing.
"""

from __future__ import annotations

from typing import Protocol

from ringfence.sip.message import Message
from ringfence.sip.randomness import random_hex
from ringfence.sip.transaction import Address
from ringfence.transport.config import TransportConfig

_worker = 0


def set_worker(index: int) -> None:
    """Name this process's worker number in the flow ids it makes (`transport.cluster`)."""
    global _worker
    _worker = index


def new_flow_id(transport: str) -> str:
    """A flow id no other connection, before or after a restart, will carry.

    Random rather than a counter: ids may outlive the process in stored bindings, and a
    reused id would send one user's calls over another user's connection. It names the
    worker process holding the connection, so that the node's other workers can reach it.
    """
    return f"{transport.lower()}-w{_worker}-{random_hex(8)}"


class Flow(Protocol):
    """One connection, as the manager sees it."""

    @property
    def flow_id(self) -> str: ...

    @property
    def key(self) -> tuple[str, str, int]:
        """(transport, host, port) under which a send without a flow may reuse it."""
        ...

    def send(self, data: bytes) -> bool:
        """Queue one serialized message; False if the connection is closing or gone."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where listeners report connections and messages (the manager)."""

    @property
    def config(self) -> TransportConfig: ...

    def admit(self, host: str) -> bool:
        """Count an inbound connection from `host`; False: over the limit, close it."""
        ...

    def release(self, host: str) -> None:
        """An admitted connection from `host` is gone."""
        ...

    def allow(self, host: str) -> bool:
        """Spend one of `host`'s message tokens; False: drop the message."""
        ...

    def opened(self, flow: Flow) -> None: ...

    def closed(self, flow: Flow) -> None: ...

    def received(self, message: Message, source: Address) -> None: ...

    def steer(self, data: bytes, source: Address) -> bool:
        """Before parsing a datagram: True if it was handed to another worker."""
        ...
