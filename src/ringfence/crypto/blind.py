"""Blind indexes: find a sealed value by equality without storing it in the clear.

A column that lookups need (the SIP user name a REGISTER names) cannot be sealed with its
subject's key alone: the database could not find the row. Beside the sealed value we store a
keyed hash of it, HMAC-SHA-256 under a key derived from the KEK for that one purpose
(RFC 2104; the derivation is `KeyEncryptionKey.derive`). Without the KEK the hash says
nothing about the value, not even which short names are likely; with it, one can only test a
guess, never read a value. The hash is the same on every node holding the KEK, so any node
finds the row. After an erasure the row is gone and the sealed value's key destroyed: a copy
of the database from before keeps only a hash that opens nothing (P19).
"""

from __future__ import annotations

import hashlib
import hmac


class BlindIndex:
    """The keyed hash of one purpose (one column): `of(value)` is what the column holds."""

    __slots__ = ("_key", "purpose")

    def __init__(self, key: bytes, purpose: str) -> None:
        if len(key) < 32:
            raise ValueError("a blind index key is at least 32 bytes")
        self._key = key
        self.purpose = purpose

    def __repr__(self) -> str:
        return f"BlindIndex(purpose={self.purpose!r})"

    def of(self, value: str) -> str:
        """64 hex digits, equal for equal values.

        Case counts: SIP user names are case-sensitive (RFC 3261 §19.1.4).
        """
        return hmac.digest(self._key, value.encode(), hashlib.sha256).hex()
