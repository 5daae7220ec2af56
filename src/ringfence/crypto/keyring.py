"""The keyring: creates, unwraps and destroys subjects' data keys.

Layout of a wrapped data key, version 1 (all lengths in bytes)::

    version (1) = 0x01 | KEK id (8) | nonce (12) | AES-256-GCM(data key) (32) | tag (16)

The KEK id is the first 8 bytes of SHA-256 over the KEK, so a key wrapped under another KEK
is reported as such rather than as tampering. The subject is the associated data: a wrapped
key moved to another subject's row does not unwrap.

The keyring keeps no data key in memory beyond one call: services ask for a subject's cipher
when they need it, so destroying the wrapped key takes effect at once on every node.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ringfence.crypto.blind import BlindIndex
from ringfence.crypto.envelope import KEY_BYTES, NONCE_BYTES, TAG_BYTES, SubjectCipher
from ringfence.crypto.errors import (
    KeyDestroyedError,
    KeyMismatchError,
    TamperedError,
    UnsupportedVersionError,
)

WRAPPED_V1 = 0x01
KEK_ID_BYTES = 8
WRAPPED_V1_BYTES = 1 + KEK_ID_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES


class WrappedKeyStore(Protocol):
    """Where wrapped data keys live (a table of `ringfence.storage`)."""

    async def get_wrapped_key(self, subject: str) -> bytes | None: ...

    async def get_wrapped_keys(self, subjects: Sequence[str]) -> dict[str, bytes]:
        """The wrapped keys of those subjects that have one."""
        ...

    async def put_wrapped_key(self, subject: str, wrapped: bytes) -> None: ...

    async def put_wrapped_keys(self, wrapped: Mapping[str, bytes]) -> None:
        """Store many new keys in one transaction: all of them or none."""
        ...

    async def delete_wrapped_key(self, subject: str) -> bool: ...


class KeyEncryptionKey:
    """The service's key-encryption key: wraps and unwraps subjects' data keys."""

    __slots__ = ("_aead", "_key", "id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a key-encryption key is 32 bytes")
        self._key = key
        self.id = hashlib.sha256(key).digest()[:KEK_ID_BYTES]
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.id.hex()})"

    @classmethod
    def from_base64(cls, text: str) -> KeyEncryptionKey:
        """Decode a KEK written as base64 (the key file, or `RINGFENCE_KEYS__KEK`).

        Raises:
            ValueError: not base64 of exactly 32 bytes.
        """
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except binascii.Error as exc:
            raise ValueError("the key-encryption key is not valid base64") from exc
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> KeyEncryptionKey:
        """Read the key file at `path`, creating it (mode 0600) with a fresh key if missing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting at once never overwrite each other's new key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.from_base64(path.read_text(encoding="ascii"))
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
        return cls.from_base64(path.read_text(encoding="ascii"))

    def derive(self, purpose: str) -> bytes:
        """A 256-bit secret for one purpose (digest nonces, flow tokens).

        The same on every node that holds this KEK: HMAC-SHA-256 over the purpose, used as a
        PRF (RFC 5869 §3.3).
        """
        return hmac.new(self._key, b"ringfence:derive:" + purpose.encode(), hashlib.sha256).digest()

    def wrap(self, subject: str, data_key: bytes, *, nonce: bytes | None = None) -> bytes:
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        sealed = self._aead.encrypt(nonce, data_key, _wrap_aad(subject))
        return bytes([WRAPPED_V1]) + self.id + nonce + sealed

    def unwrap(self, subject: str, wrapped: bytes) -> bytes:
        """Recover the data key of `subject`.

        Raises:
            UnsupportedVersionError: not a version-1 wrapped key.
            KeyMismatchError: wrapped under another KEK.
            TamperedError: altered, truncated, or belonging to another subject.
        """
        if not wrapped or wrapped[0] != WRAPPED_V1:
            raise UnsupportedVersionError("wrapped key version")
        if len(wrapped) != WRAPPED_V1_BYTES:
            raise TamperedError("wrapped key has the wrong length")
        kek_id = wrapped[1 : 1 + KEK_ID_BYTES]
        if kek_id != self.id:
            raise KeyMismatchError(f"wrapped under KEK {kek_id.hex()}, loaded {self.id.hex()}")
        nonce = wrapped[1 + KEK_ID_BYTES : 1 + KEK_ID_BYTES + NONCE_BYTES]
        try:
            return self._aead.decrypt(
                nonce, wrapped[1 + KEK_ID_BYTES + NONCE_BYTES :], _wrap_aad(subject)
            )
        except InvalidTag as exc:
            raise TamperedError("wrapped key failed authentication") from exc


def _wrap_aad(subject: str) -> bytes:
    return b"ringfence:dek:v1:" + subject.encode()


class Keyring:
    """Gives out the cipher of a subject, and destroys it for good."""

    def __init__(self, kek: KeyEncryptionKey, store: WrappedKeyStore) -> None:
        self._kek = kek
        self._store = store

    def blind_index(self, purpose: str) -> BlindIndex:
        """The blind index of one looked-up column (see `ringfence.crypto.blind`)."""
        return BlindIndex(self._kek.derive(f"blind-index:{purpose}"), purpose)

    async def create(self, subject: str) -> SubjectCipher:
        """Make a fresh data key for a new subject and store it wrapped."""
        data_key = secrets.token_bytes(KEY_BYTES)
        await self._store.put_wrapped_key(subject, self._kek.wrap(subject, data_key))
        return SubjectCipher(subject, data_key)

    async def create_many(self, subjects: Sequence[str]) -> dict[str, SubjectCipher]:
        """Fresh data keys for many new subjects, stored in one transaction."""
        data_keys = {subject: secrets.token_bytes(KEY_BYTES) for subject in subjects}
        await self._store.put_wrapped_keys(
            {subject: self._kek.wrap(subject, key) for subject, key in data_keys.items()}
        )
        return {subject: SubjectCipher(subject, key) for subject, key in data_keys.items()}

    async def cipher(self, subject: str) -> SubjectCipher:
        """The cipher of an existing subject.

        Raises:
            KeyDestroyedError: the subject's key was destroyed (or never existed).
        """
        wrapped = await self._store.get_wrapped_key(subject)
        if wrapped is None:
            raise KeyDestroyedError(f"no data key for subject {subject}")
        return SubjectCipher(subject, self._kek.unwrap(subject, wrapped))

    async def ciphers(self, subjects: Sequence[str]) -> dict[str, SubjectCipher]:
        """The ciphers of many subjects in one round trip; destroyed ones are left out."""
        wrapped = await self._store.get_wrapped_keys(subjects)
        return {
            subject: SubjectCipher(subject, self._kek.unwrap(subject, key))
            for subject, key in wrapped.items()
        }

    async def destroy(self, subject: str) -> bool:
        """Destroy the subject's data key: none of its ciphertexts can be opened again.

        Returns whether a key existed.
        """
        return await self._store.delete_wrapped_key(subject)
