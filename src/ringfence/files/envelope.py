"""The envelope of an encrypted attachment, format version 1.

Attachments are encrypted end to end: the sending client encrypts the file under a fresh
random key, uploads only the envelope, and sends the key to the recipient inside the message
(`ringfence.files.transfer`). The server never holds the key, yet it must refuse anything that
is not an envelope (promise P9): `Validator` checks the header and the length without the key.

Construction: the STREAM online authenticated encryption of Hoang, Reyhanitabar, Rogaway and
Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015,
as used by age (age-encryption.org/v1 payload) and by Tink's streaming AEAD. The plaintext is
cut into chunks, and each chunk is sealed with AES-256-GCM under a nonce that holds the
chunk's position and whether it is the last one. Every chunk is authenticated on its own, so a
file is decrypted in constant memory, and reordering, dropping, truncating or extending the
chunk sequence makes a tag fail or leaves the final chunk missing.

Layout of version 1 (lengths in bytes)::

    envelope  = header (16) | chunk 0 | chunk 1 | ... | chunk n-1         1 <= n <= 2**24
    header    = "RFE" (3) | version 0x01 (1) | e (1) | 0x000000 (3) | nonce prefix (8)
    chunk i   = AES-256-GCM(key, nonce i, plaintext i, aad=header)        ciphertext | tag (16)
    nonce i   = nonce prefix (8) | i, big-endian (3) | 0x01 if i == n-1 else 0x00 (1)

- The plaintext chunk size is ``2**e`` bytes, 12 <= e <= 22 (4 KiB to 4 MiB, default 64 KiB).
  Every chunk but the last holds exactly ``2**e`` plaintext bytes; the last holds 0 to ``2**e``
  bytes. `Encryptor` leaves the last chunk empty only for an empty file (one empty final
  chunk), but an empty final chunk after full ones is valid too.
- The reserved bytes must be zero; a reader refuses anything else.
- The associated data of every chunk is the whole header, so a chunk cannot be grafted onto
  the header of another file, nor read with another chunk size.
- The key is 32 random bytes, fresh for every file and never reused. The SHA-256 of the
  plaintext travels in the message, next to the key, and is checked after decryption.

Limits, after NIST SP 800-38D: nonces are built deterministically (§8.2.1: a fixed field, the
random prefix, and an invocation field, the counter and final flag), so within one key no
nonce repeats as long as the counter does not wrap: a file has at most 2**24 chunks, and
`Encryptor` refuses a longer one (`TooLargeError`). A chunk is at most 4 MiB, far below the
2**39 - 256 bits that one GCM invocation may encrypt (§5.2.1.1). The key being per file, the
random prefix is defence in depth against a client that reuses a key by mistake.

What a reader reports, in order of detection:

- `FormatError`: not an envelope of this version (magic, version, chunk size, reserved bytes,
  or, for `Validator`, a length no envelope can have).
- `TamperedError`: a chunk fails authentication: wrong key, altered bytes, chunks reordered or
  taken from another file, bytes after the final chunk, or a stream cut inside a chunk. A cut
  inside a chunk cannot be told apart from an alteration, since both make that chunk's tag
  fail, so it is reported as tampering.
- `TruncatedError`: the stream ends on a chunk boundary, after whole chunks none of which is
  the final one (including an envelope that is only a header).
- `HashMismatchError`: every chunk is authentic but the plaintext's SHA-256 is not the one the
  sender announced.

`Decryptor.update` returns plaintext of chunks already authenticated, but the file is complete
and authentic only once `Decryptor.finalize` has returned.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"RFE\x01"
HEADER_BYTES = 16
TAG_BYTES = 16
KEY_BYTES = 32
NONCE_PREFIX_BYTES = 8
MIN_CHUNK_EXP = 12
MAX_CHUNK_EXP = 22
DEFAULT_CHUNK_EXP = 16
# The counter field of the nonce is 3 bytes; it must never wrap (NIST SP 800-38D §8.2.1).
MAX_CHUNKS = 2**24
SHA256_BYTES = 32

_RESERVED = b"\x00\x00\x00"
_COUNTER_BYTES = 3
_NOT_FINAL = b"\x00"
_FINAL = b"\x01"

_TAMPERED = (
    "the file could not be decrypted: it was altered or damaged on the way, "
    "or the key is not the one it was encrypted with"
)
_TRUNCATED = "the file was cut short: its last part is missing"
_HASH_MISMATCH = (
    "the file decrypted correctly but is not the file that was announced: "
    "its SHA-256 checksum differs"
)
_TOO_LONG = "the file is longer than any encrypted attachment can be"


class EnvelopeError(Exception):
    """Base of every error of the attachment envelope."""


class FormatError(EnvelopeError):
    """The bytes are not an envelope of this format: magic, version, header or length."""


class TamperedError(EnvelopeError):
    """A chunk failed authentication: wrong key, altered, reordered, cut, or extended."""


class TruncatedError(EnvelopeError):
    """The stream ended before its final chunk."""


class HashMismatchError(EnvelopeError):
    """The file decrypted, but its SHA-256 is not the expected one."""


class TooLargeError(EnvelopeError):
    """The plaintext needs more chunks than the nonce counter can number."""


def _check_exp(chunk_exp: int) -> None:
    if not MIN_CHUNK_EXP <= chunk_exp <= MAX_CHUNK_EXP:
        raise ValueError(
            f"the chunk size exponent must be from {MIN_CHUNK_EXP} to {MAX_CHUNK_EXP}, "
            f"not {chunk_exp}"
        )


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"an attachment key is {KEY_BYTES} bytes, not {len(key)}")


def _chunk_count(plaintext_size: int, chunk_size: int) -> int:
    # An empty file is one empty final chunk; otherwise ceil(size / chunk_size).
    return max(1, -(-plaintext_size // chunk_size))


def _too_large(chunk_size: int) -> TooLargeError:
    return TooLargeError(
        f"the file is too large to encrypt with {chunk_size}-byte chunks: "
        f"at most {MAX_CHUNKS * chunk_size} bytes fit"
    )


def _max_envelope_size(header: Header) -> int:
    return HEADER_BYTES + MAX_CHUNKS * (header.chunk_size + TAG_BYTES)


@dataclass(frozen=True)
class Header:
    """The 16-byte header of an envelope.

    Attributes:
        chunk_size: plaintext bytes per chunk, a power of two from 4 KiB to 4 MiB.
        nonce_prefix: the 8 random bytes that start the nonce of every chunk.
    """

    chunk_size: int
    nonce_prefix: bytes

    def __post_init__(self) -> None:
        exp = self.chunk_size.bit_length() - 1
        if self.chunk_size != 1 << exp or not MIN_CHUNK_EXP <= exp <= MAX_CHUNK_EXP:
            raise ValueError(
                f"the chunk size must be a power of two from 2**{MIN_CHUNK_EXP} to "
                f"2**{MAX_CHUNK_EXP}, not {self.chunk_size}"
            )
        if len(self.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError(f"the nonce prefix is {NONCE_PREFIX_BYTES} bytes")

    @classmethod
    def generate(cls, chunk_exp: int = DEFAULT_CHUNK_EXP) -> Header:
        """A header for a new file, with a random nonce prefix."""
        _check_exp(chunk_exp)
        return cls(1 << chunk_exp, os.urandom(NONCE_PREFIX_BYTES))

    @property
    def chunk_exp(self) -> int:
        """The exponent `e` of the chunk size ``2**e``."""
        return self.chunk_size.bit_length() - 1

    def to_bytes(self) -> bytes:
        """The header as it starts the envelope, also the associated data of every chunk."""
        return MAGIC + bytes([self.chunk_exp]) + _RESERVED + self.nonce_prefix

    @classmethod
    def parse(cls, data: bytes) -> Header:
        """Read the header from the first `HEADER_BYTES` of `data`.

        Raises:
            FormatError: `data` is too short, or does not start with a version 1 header.
        """
        if len(data) < HEADER_BYTES:
            raise FormatError("this is not an encrypted attachment: it is too short")
        if data[:3] != MAGIC[:3]:
            raise FormatError("this is not an encrypted attachment: its header is missing")
        if data[3] != MAGIC[3]:
            raise FormatError(
                f"this encrypted attachment uses format version {data[3]}, "
                f"but only version {MAGIC[3]} is supported"
            )
        exp = data[4]
        if not MIN_CHUNK_EXP <= exp <= MAX_CHUNK_EXP:
            raise FormatError(
                f"this encrypted attachment is malformed: its chunk size 2**{exp} is not "
                f"between 2**{MIN_CHUNK_EXP} and 2**{MAX_CHUNK_EXP} bytes"
            )
        if data[5:8] != _RESERVED:
            raise FormatError(
                "this encrypted attachment is malformed: its reserved header bytes are not zero"
            )
        return cls(1 << exp, bytes(data[8:HEADER_BYTES]))


def encrypted_size(plaintext_size: int, chunk_exp: int = DEFAULT_CHUNK_EXP) -> int:
    """The size of the envelope of a `plaintext_size`-byte file, header included.

    Raises:
        ValueError: a negative size or an exponent out of range.
        TooLargeError: the file would need more than `MAX_CHUNKS` chunks.
    """
    _check_exp(chunk_exp)
    if plaintext_size < 0:
        raise ValueError(f"a file size cannot be negative: {plaintext_size}")
    chunks = _chunk_count(plaintext_size, 1 << chunk_exp)
    if chunks > MAX_CHUNKS:
        raise _too_large(1 << chunk_exp)
    return HEADER_BYTES + plaintext_size + chunks * TAG_BYTES


def plausible_size(total: int, header: Header) -> bool:
    """Whether `total` bytes can be a whole envelope that starts with `header`.

    True when the body after the header splits into 1 to `MAX_CHUNKS` chunks, all of
    ``chunk_size + TAG_BYTES`` bytes but the last, which has ``TAG_BYTES`` to
    ``chunk_size + TAG_BYTES`` bytes.
    """
    body = total - HEADER_BYTES
    if body < TAG_BYTES:
        return False
    full, rest = divmod(body, header.chunk_size + TAG_BYTES)
    if 0 < rest < TAG_BYTES:
        return False
    return full + (1 if rest else 0) <= MAX_CHUNKS


class Encryptor:
    """Encrypts one file into an envelope, a piece at a time.

    Write `header` first, then what every `update` returns, then what `finalize` returns.
    The last full chunk stays buffered until more data arrives or `finalize` is called,
    because only then is it known whether it is the final chunk.
    """

    __slots__ = (
        "_aad",
        "_aead",
        "_buf",
        "_chunk_size",
        "_counter",
        "_digest",
        "_done",
        "_hash",
        "_key",
        "_prefix",
        "_size",
    )

    def __init__(self, key: bytes | None = None, chunk_exp: int = DEFAULT_CHUNK_EXP) -> None:
        """Start a file; `key` defaults to a fresh random key (never reuse one).

        Raises:
            ValueError: the key is not 32 bytes, or the exponent is out of range.
        """
        _check_exp(chunk_exp)
        key = os.urandom(KEY_BYTES) if key is None else bytes(key)
        _check_key(key)
        header = Header.generate(chunk_exp)
        self._key = key
        self._aead = AESGCM(key)
        self._aad = header.to_bytes()
        self._prefix = header.nonce_prefix
        self._chunk_size = header.chunk_size
        self._buf = bytearray()
        self._counter = 0
        self._size = 0
        self._hash = hashlib.sha256()
        self._digest: bytes | None = None
        self._done = False

    @property
    def key(self) -> bytes:
        """The file's key, to send to the recipient and to nobody else."""
        return self._key

    @property
    def header(self) -> bytes:
        """The 16 header bytes that start the envelope."""
        return self._aad

    @property
    def sha256(self) -> bytes:
        """The SHA-256 of the whole plaintext.

        Raises:
            RuntimeError: `finalize` has not been called yet.
        """
        if self._digest is None:
            raise RuntimeError("the SHA-256 is known only after finalize()")
        return self._digest

    def update(self, data: bytes) -> bytes:
        """Add plaintext; return the ciphertext of the chunks now known not to be the last.

        Raises:
            TooLargeError: the file would exceed `MAX_CHUNKS` chunks; nothing was consumed.
            RuntimeError: `finalize` was already called.
        """
        return b"".join(self._update(data))

    def _update(self, data: bytes) -> list[bytes]:
        # Returns the sealed chunks unjoined, so that `encrypt` copies a large file once.
        if self._done:
            raise RuntimeError("finalize() was already called")
        cs = self._chunk_size
        if _chunk_count(self._size + len(data), cs) > MAX_CHUNKS:
            raise _too_large(cs)
        self._size += len(data)
        self._hash.update(data)
        view = memoryview(data)
        buf = self._buf
        out: list[bytes] = []
        if len(buf) + len(view) <= cs:
            buf += view
            return out
        start = 0
        if buf:
            # Complete the buffered chunk; bytes remain after it, so it is not the last.
            start = cs - len(buf)
            buf += view[:start]
            out.append(self._seal(buf, final=False))
            buf.clear()
        # Seal full chunks straight from the caller's buffer, always keeping at least one
        # byte back: a chunk is sealed as non-final only when data exists after it.
        end = len(view)
        while end - start > cs:
            out.append(self._seal(view[start : start + cs], final=False))
            start += cs
        buf += view[start:]
        return out

    def finalize(self) -> bytes:
        """Seal the buffered rest as the final chunk and return it.

        Raises:
            RuntimeError: `finalize` was already called.
        """
        if self._done:
            raise RuntimeError("finalize() was already called")
        self._done = True
        sealed = self._seal(self._buf, final=True)
        self._buf.clear()
        self._digest = self._hash.digest()
        return sealed

    def _seal(self, chunk: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        # update() refuses data before the counter could reach MAX_CHUNKS.
        assert self._counter < MAX_CHUNKS
        nonce = (
            self._prefix
            + self._counter.to_bytes(_COUNTER_BYTES, "big")
            + (_FINAL if final else _NOT_FINAL)
        )
        self._counter += 1
        return self._aead.encrypt(nonce, chunk, self._aad)


class Decryptor:
    """Decrypts one envelope with its key, a piece at a time.

    `update` accepts any split of the envelope, even inside the header. A full-size chunk may
    be the final one, so the last complete chunk is held back until more bytes arrive or
    `finalize` is called. After any error the decryptor refuses further use.
    """

    __slots__ = (
        "_aad",
        "_aead",
        "_buf",
        "_chunk_bytes",
        "_counter",
        "_digest",
        "_hash",
        "_head",
        "_header",
        "_prefix",
        "_state",
    )

    def __init__(self, key: bytes) -> None:
        """Prepare to decrypt with `key`.

        Raises:
            ValueError: the key is not 32 bytes.
        """
        _check_key(key)
        self._aead = AESGCM(bytes(key))
        self._head = bytearray()
        self._header: Header | None = None
        self._aad = b""
        self._prefix = b""
        self._chunk_bytes = 0
        self._buf = bytearray()
        self._counter = 0
        self._hash = hashlib.sha256()
        self._digest: bytes | None = None
        self._state = "open"

    @property
    def header(self) -> Header | None:
        """The envelope's header, once its 16 bytes have been read."""
        return self._header

    @property
    def sha256(self) -> bytes:
        """The SHA-256 of the decrypted plaintext.

        Raises:
            RuntimeError: `finalize` has not reached the end of the file.
        """
        if self._digest is None:
            raise RuntimeError("the SHA-256 is known only after finalize()")
        return self._digest

    def update(self, data: bytes) -> bytes:
        """Add envelope bytes; return the plaintext of chunks known not to be the last.

        Raises:
            FormatError: the header is not a version 1 header, or the file is too long.
            TamperedError: a chunk failed authentication.
            RuntimeError: the decryptor was finalized or failed before.
        """
        return b"".join(self._update_checked(data))

    def _update_checked(self, data: bytes) -> list[bytes]:
        self._check_open()
        try:
            return self._update(memoryview(data))
        except EnvelopeError:
            self._state = "failed"
            raise

    def finalize(self, expected_sha256: bytes | None = None) -> bytes:
        """Decrypt the final chunk and return its plaintext; check the hash if one is given.

        Raises:
            FormatError: the stream is shorter than a header and is not the start of one.
            TruncatedError: the stream ended on a chunk boundary before its final chunk.
            TamperedError: the last chunk failed authentication, or was cut short.
            HashMismatchError: the plaintext's SHA-256 is not `expected_sha256`.
            ValueError: `expected_sha256` is not 32 bytes.
            RuntimeError: the decryptor was finalized or failed before.
        """
        if expected_sha256 is not None and len(expected_sha256) != SHA256_BYTES:
            raise ValueError(f"a SHA-256 is {SHA256_BYTES} bytes, not {len(expected_sha256)}")
        self._check_open()
        try:
            plaintext = self._finalize()
            if expected_sha256 is not None and not hmac.compare_digest(
                self.sha256, expected_sha256
            ):
                raise HashMismatchError(_HASH_MISMATCH)
        except EnvelopeError:
            self._state = "failed"
            raise
        self._state = "done"
        return plaintext

    def _check_open(self) -> None:
        if self._state == "done":
            raise RuntimeError("finalize() was already called")
        if self._state == "failed":
            raise RuntimeError("this decryptor already failed; its output must be discarded")

    def _update(self, view: memoryview) -> list[bytes]:
        out: list[bytes] = []
        if self._header is None:
            need = HEADER_BYTES - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) < HEADER_BYTES:
                return out
            header = Header.parse(bytes(self._head))
            self._header = header
            self._aad = header.to_bytes()
            self._prefix = header.nonce_prefix
            self._chunk_bytes = header.chunk_size + TAG_BYTES
        n = self._chunk_bytes
        buf = self._buf
        if len(buf) + len(view) <= n:
            buf += view
            return out
        start = 0
        if buf:
            start = n - len(buf)
            buf += view[:start]
            out.append(self._open(buf, final=False))
            buf.clear()
        end = len(view)
        while end - start > n:
            out.append(self._open(view[start : start + n], final=False))
            start += n
        buf += view[start:]
        return out

    def _finalize(self) -> bytes:
        if self._header is None:
            seen = bytes(self._head[: len(MAGIC)])
            if MAGIC.startswith(seen):
                raise TruncatedError(_TRUNCATED)
            raise FormatError("this is not an encrypted attachment: its header is missing")
        buf = self._buf
        if not buf:
            # Only possible right after the header: update() always keeps bytes back.
            raise TruncatedError(_TRUNCATED)
        if len(buf) < TAG_BYTES:
            # Shorter than a tag: the stream was cut inside a chunk (see module docstring).
            raise TamperedError(_TAMPERED)
        try:
            plaintext = self._open(buf, final=True)
        except TamperedError:
            # A full chunk that is authentic as a non-final one means the stream stopped on
            # a chunk boundary: the final chunk, and maybe more, is missing.
            if len(buf) == self._chunk_bytes and self._authentic(buf, final=False):
                raise TruncatedError(_TRUNCATED) from None
            raise
        buf.clear()
        self._digest = self._hash.digest()
        return plaintext

    def _nonce(self, *, final: bool) -> bytes:
        return (
            self._prefix
            + self._counter.to_bytes(_COUNTER_BYTES, "big")
            + (_FINAL if final else _NOT_FINAL)
        )

    def _open(self, chunk: bytearray | memoryview, *, final: bool) -> bytes:
        if self._counter >= MAX_CHUNKS:
            raise FormatError(_TOO_LONG)
        try:
            plaintext = self._aead.decrypt(self._nonce(final=final), chunk, self._aad)
        except InvalidTag:
            raise TamperedError(_TAMPERED) from None
        self._counter += 1
        self._hash.update(plaintext)
        return plaintext

    def _authentic(self, chunk: bytearray, *, final: bool) -> bool:
        try:
            self._aead.decrypt(self._nonce(final=final), chunk, self._aad)
        except InvalidTag:
            return False
        return True


class Validator:
    """Checks, without the key, that an upload can be an envelope; for the server.

    It reads the header as soon as 16 bytes have arrived and refuses anything that is not a
    version 1 header, refuses a body longer than `MAX_CHUNKS` chunks as soon as it grows past
    that, and at the end refuses a length that no envelope with that header can have. It
    cannot tell a genuine envelope from random bytes behind a valid header: only the key
    holder can (`Decryptor`).
    """

    __slots__ = ("_done", "_head", "_header", "_size")

    def __init__(self) -> None:
        """Start checking one upload."""
        self._head = bytearray()
        self._header: Header | None = None
        self._size = 0
        self._done = False

    @property
    def header(self) -> Header | None:
        """The upload's header, once its 16 bytes have arrived."""
        return self._header

    @property
    def size(self) -> int:
        """The number of bytes seen so far."""
        return self._size

    def update(self, data: bytes) -> None:
        """Account for the next bytes of the upload.

        Raises:
            FormatError: the header is invalid, or the upload is longer than any envelope.
            RuntimeError: `finalize` was already called.
        """
        if self._done:
            raise RuntimeError("finalize() was already called")
        self._size += len(data)
        if self._header is None:
            self._head += data[: HEADER_BYTES - len(self._head)]
            if len(self._head) < HEADER_BYTES:
                return
            self._header = Header.parse(bytes(self._head))
        if self._size > _max_envelope_size(self._header):
            raise FormatError(_TOO_LONG)

    def finalize(self) -> Header:
        """Check the total length and return the header.

        Raises:
            FormatError: the upload is shorter than a header, or its length is impossible.
            RuntimeError: `finalize` was already called.
        """
        if self._done:
            raise RuntimeError("finalize() was already called")
        self._done = True
        if self._header is None:
            raise FormatError("this is not an encrypted attachment: it is too short")
        if not plausible_size(self._size, self._header):
            raise FormatError(
                f"this encrypted attachment is incomplete or malformed: "
                f"{self._size} bytes cannot hold a whole envelope"
            )
        return self._header


def encrypt(
    plaintext: bytes, key: bytes | None = None, chunk_exp: int = DEFAULT_CHUNK_EXP
) -> tuple[bytes, bytes, bytes]:
    """Encrypt a whole file in memory.

    Returns:
        The envelope (header included), the key, and the SHA-256 of the plaintext.

    Raises:
        ValueError: a bad key length or exponent.
        TooLargeError: the file needs more than `MAX_CHUNKS` chunks.
    """
    encryptor = Encryptor(key, chunk_exp)
    parts = [encryptor.header, *encryptor._update(plaintext), encryptor.finalize()]
    envelope = b"".join(parts)
    return envelope, encryptor.key, encryptor.sha256


def decrypt(envelope: bytes, key: bytes, expected_sha256: bytes | None = None) -> bytes:
    """Decrypt a whole envelope in memory, checking the SHA-256 if one is given.

    Raises:
        FormatError, TamperedError, TruncatedError, HashMismatchError: see `Decryptor`.
    """
    decryptor = Decryptor(key)
    parts = decryptor._update_checked(envelope)
    parts.append(decryptor.finalize(expected_sha256))
    return b"".join(parts)
