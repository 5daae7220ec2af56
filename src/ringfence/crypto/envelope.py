"""The versioned envelope that holds one sealed value of one subject.

Layout of version 1 (all lengths in bytes)::

    version (1) = 0x01 | nonce (12) | AES-256-GCM ciphertext (n) | tag (16)

The associated data binds the envelope to its subject and to the field it was sealed for
(``context``, e.g. ``"account.display_name"``), so a ciphertext copied into another row or
another column fails authentication instead of decrypting to someone else's data (P7).
Nonces are random: 96-bit random nonces stay far below the collision bound of NIST SP 800-38D
§8.3 for the number of values one subject ever stores.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ringfence.crypto.errors import TamperedError, UnsupportedVersionError

ENVELOPE_V1 = 0x01
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32


def _aad(subject: str, context: str) -> bytes:
    return b"ringfence:v1:" + subject.encode() + b"\x00" + context.encode()


class SubjectCipher:
    """Seals and opens the values of one subject with its unwrapped data key."""

    __slots__ = ("_aead", "subject")

    def __init__(self, subject: str, data_key: bytes) -> None:
        if len(data_key) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes")
        self.subject = subject
        self._aead = AESGCM(data_key)

    def seal(self, context: str, plaintext: bytes, *, nonce: bytes | None = None) -> bytes:
        """Encrypt `plaintext` for field `context`; `nonce` is for known-answer tests only."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        if len(nonce) != NONCE_BYTES:
            raise ValueError("a nonce is 12 bytes")
        sealed = self._aead.encrypt(nonce, plaintext, _aad(self.subject, context))
        return bytes([ENVELOPE_V1]) + nonce + sealed

    def open(self, context: str, envelope: bytes) -> bytes:
        """Decrypt an envelope sealed by `seal` for the same subject and context.

        Raises:
            UnsupportedVersionError: the envelope is not of version 1.
            TamperedError: the envelope is truncated, altered, or belongs elsewhere.
        """
        if not envelope:
            raise TamperedError("empty envelope")
        if envelope[0] != ENVELOPE_V1:
            raise UnsupportedVersionError(f"envelope version {envelope[0]}")
        if len(envelope) < 1 + NONCE_BYTES + TAG_BYTES:
            raise TamperedError("truncated envelope")
        nonce = envelope[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(
                nonce, envelope[1 + NONCE_BYTES :], _aad(self.subject, context)
            )
        except InvalidTag as exc:
            raise TamperedError(f"envelope of {context!r} failed authentication") from exc

    def seal_text(self, context: str, text: str) -> bytes:
        return self.seal(context, text.encode())

    def open_text(self, context: str, envelope: bytes) -> str:
        return self.open(context, envelope).decode()
