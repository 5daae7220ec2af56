"""Random bytes for SIP identifiers: tags, nonce salts, flow ids.

RFC 3261 §19.3 wants tags (and §8.1.1.7 branches) to be globally unique and
cryptographically random; nonces need unpredictable salts (RFC 7616 §3.3). Every response
a registrar sends needs some, and one `os.urandom` system call per identifier was a
measurable share of a REGISTER's cost. So the bytes come from the same source, the
operating system's CSPRNG, read 4 KiB at a time. A forked child starts with an empty pool,
so parent and child never hand out the same bytes.
"""

from __future__ import annotations

import os

_POOL_BYTES = 4096


class _Pool:
    __slots__ = ("_buffer", "_position")

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0

    def take(self, count: int) -> bytes:
        if count > _POOL_BYTES:
            return os.urandom(count)
        end = self._position + count
        if end > len(self._buffer):
            self._buffer = os.urandom(_POOL_BYTES)
            self._position, end = 0, count
        chunk = self._buffer[self._position : end]
        self._position = end
        return chunk

    def reset(self) -> None:
        self._buffer = b""
        self._position = 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


def random_bytes(count: int) -> bytes:
    """`count` bytes from the operating system's CSPRNG (never handed out twice)."""
    return _pool.take(count)


def random_hex(count: int) -> str:
    """`count` random bytes as lowercase hex (2 * count characters)."""
    return _pool.take(count).hex()
