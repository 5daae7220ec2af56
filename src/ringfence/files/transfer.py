"""The message body that carries attachments: Acrobits' file-transfer JSON, extended.

Acrobits clients send attachments as a message of content type
``application/x-acro-filetransfer+json`` (doc.acrobits.net, "File transfer format")::

    {"body": "Nice pics",
     "attachments": [{"content-type": "image/jpeg",
                      "content-url": "https://files.example/a/3f...",
                      "content-size": 20032,
                      "filename": "beach.jpg",
                      "description": "optional",
                      "encryption-key": "<hex>",
                      "hash": "<CRC32 of the plaintext, decimal>",
                      "preview": {"content-type": "image/jpeg", "content": "<base64>"},
                      "rf-envelope": 1,
                      "rf-sha256": "<hex SHA-256 of the plaintext>",
                      "rf-plain-size": 20000}]}

The ``rf-`` keys are ours. ``rf-envelope`` names the envelope format of
`ringfence.files.envelope` (so ``encryption-key`` is a 256-bit key of that format, not the
AES-CTR key of stock Acrobits clients), ``rf-sha256`` is checked after decryption, and
``content-size`` is the size of the envelope as uploaded. The message travels end to end, so
the server never sees the key (promise P9).

`FileTransfer.from_json` reads what a peer sent: it refuses anything malformed with a
`ValueError` whose message starts with the offending field, and ignores unknown keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ringfence.files.envelope import KEY_BYTES, SHA256_BYTES

CONTENT_TYPE = "application/x-acro-filetransfer+json"
ENVELOPE_VERSION = 1
MAX_ATTACHMENTS = 10
MAX_BODY_BYTES = 64 * 1024
MAX_CRC32 = 0xFFFFFFFF
# The Acrobits format says a missing content-type means a JPEG image.
DEFAULT_CONTENT_TYPE = "image/jpeg"

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def _check_text(name: str, value: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{name}: is not valid Unicode text") from None


def _check_url(name: str, url: str) -> None:
    # Lower-case scheme only, as our clients write it; no spaces or controls, which some
    # clients would cut the URL at.
    if (
        not url.startswith(("https://", "http://"))
        or _CONTROL.search(url)
        or not urlsplit(url).netloc
    ):
        raise ValueError(f"{name}: must be an https:// or http:// URL without spaces")


@dataclass(frozen=True)
class Attachment:
    """One encrypted attachment, as described in a file-transfer message.

    Attributes:
        url: where the envelope can be downloaded (``content-url``).
        size: the envelope's size in bytes, as uploaded (``content-size``).
        key: the envelope's 32-byte key (``encryption-key``).
        sha256: the SHA-256 of the plaintext (``rf-sha256``).
        plain_size: the plaintext's size in bytes (``rf-plain-size``).
        content_type: the plaintext's media type (``content-type``).
        filename: the original file name, None for e.g. a photo from the camera.
        crc32: the CRC32 of the plaintext (``hash``), for Acrobits clients.
        description: a text for this attachment.
        preview_type: the media type of `preview`.
        preview: a small, low-quality rendering shown until the file is downloaded.
    """

    url: str
    size: int
    key: bytes = field(repr=False)
    sha256: bytes
    plain_size: int
    content_type: str
    filename: str | None
    crc32: int
    description: str | None = None
    preview_type: str | None = None
    preview: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_url("content-url", self.url)
        if self.size < 0:
            raise ValueError(f"content-size: cannot be negative ({self.size})")
        if self.plain_size < 0:
            raise ValueError(f"rf-plain-size: cannot be negative ({self.plain_size})")
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"encryption-key: must be {KEY_BYTES} bytes")
        if len(self.sha256) != SHA256_BYTES:
            raise ValueError(f"rf-sha256: must be {SHA256_BYTES} bytes")
        if not 0 <= self.crc32 <= MAX_CRC32:
            raise ValueError(f"hash: a CRC32 is from 0 to {MAX_CRC32}")
        _check_text("content-type", self.content_type)
        for name, value in (
            ("filename", self.filename),
            ("description", self.description),
            ("preview.content-type", self.preview_type),
        ):
            if value is not None:
                _check_text(name, value)
        if (self.preview is None) != (self.preview_type is None):
            raise ValueError("preview: needs both its content-type and its content")

    def to_dict(self) -> dict[str, Any]:
        """The attachment as a JSON object, without the optional keys that are None."""
        obj: dict[str, Any] = {
            "content-type": self.content_type,
            "content-url": self.url,
            "content-size": self.size,
        }
        if self.filename is not None:
            obj["filename"] = self.filename
        if self.description is not None:
            obj["description"] = self.description
        obj["encryption-key"] = self.key.hex()
        obj["hash"] = str(self.crc32)
        if self.preview is not None:
            obj["preview"] = {
                "content-type": self.preview_type,
                "content": base64.b64encode(self.preview).decode("ascii"),
            }
        obj["rf-envelope"] = ENVELOPE_VERSION
        obj["rf-sha256"] = self.sha256.hex()
        obj["rf-plain-size"] = self.plain_size
        return obj

    @classmethod
    def from_dict(cls, obj: dict[str, Any], where: str = "attachment") -> Attachment:
        """Read one attachment object; `where` prefixes the field names in error messages.

        Raises:
            ValueError: a field is missing, of the wrong type, or out of range.
        """
        reader = _Reader(obj, where)
        version = reader.integer("rf-envelope")
        if version != ENVELOPE_VERSION:
            raise ValueError(
                f"{where}.rf-envelope: version {version} is not supported (only {ENVELOPE_VERSION})"
            )
        url = reader.string("content-url")
        size = reader.integer("content-size")
        key = reader.hex64("encryption-key")
        sha256 = reader.hex64("rf-sha256")
        plain_size = reader.integer("rf-plain-size")
        content_type = reader.optional_string("content-type")
        filename = reader.optional_string("filename")
        crc32 = reader.crc32("hash")
        description = reader.optional_string("description")
        preview_type, preview = reader.preview("preview")
        try:
            return cls(
                url=url,
                size=size,
                key=key,
                sha256=sha256,
                plain_size=plain_size,
                content_type=DEFAULT_CONTENT_TYPE if content_type is None else content_type,
                filename=filename,
                crc32=crc32,
                description=description,
                preview_type=preview_type,
                preview=preview,
            )
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None


@dataclass(frozen=True)
class FileTransfer:
    """A message body with 1 to 10 attachments and an optional text.

    Attributes:
        body: the text that goes with the attachments, at most 64 KiB of UTF-8.
        attachments: the attachments, in the order the sender gave them.
    """

    body: str
    attachments: tuple[Attachment, ...]

    def __post_init__(self) -> None:
        _check_text("body", self.body)
        if len(self.body.encode()) > MAX_BODY_BYTES:
            raise ValueError(f"body: is longer than {MAX_BODY_BYTES} bytes")
        if not 1 <= len(self.attachments) <= MAX_ATTACHMENTS:
            raise ValueError(
                f"attachments: must list 1 to {MAX_ATTACHMENTS} attachments, "
                f"not {len(self.attachments)}"
            )

    def to_json(self) -> bytes:
        """The body as UTF-8 JSON, for content type `CONTENT_TYPE`."""
        obj = {"body": self.body, "attachments": [a.to_dict() for a in self.attachments]}
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> FileTransfer:
        """Read a file-transfer message body; unknown keys are ignored.

        Raises:
            ValueError: the JSON is malformed; the message names the field and the reason.
        """
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"body: is not a JSON document ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError("body: the JSON document must be an object")
        reader = _Reader(obj, "")
        body = reader.optional_string("body") or ""
        raw = obj.get("attachments")
        if not isinstance(raw, list):
            reason = "is missing" if raw is None else "must be a list"
            raise ValueError(f"attachments: {reason}")
        if not 1 <= len(raw) <= MAX_ATTACHMENTS:
            raise ValueError(
                f"attachments: must list 1 to {MAX_ATTACHMENTS} attachments, not {len(raw)}"
            )
        attachments = []
        for i, item in enumerate(raw):
            where = f"attachments[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: must be an object")
            attachments.append(Attachment.from_dict(item, where))
        return cls(body=body, attachments=tuple(attachments))


class _Reader:
    """Typed access to the keys of one JSON object, with errors that name the field."""

    __slots__ = ("_obj", "_where")

    def __init__(self, obj: dict[str, Any], where: str) -> None:
        self._obj = obj
        self._where = where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> object:
        if key not in self._obj or self._obj[key] is None:
            raise ValueError(f"{self._name(key)}: is missing")
        value: object = self._obj[key]
        return value

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise ValueError(f"{self._name(key)}: must be a string")
        return value

    def optional_string(self, key: str) -> str | None:
        return self.string(key) if self._obj.get(key) is not None else None

    def integer(self, key: str) -> int:
        value = self._get(key)
        # JSON true/false arrive as bool, a subclass of int: not a number here.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{self._name(key)}: must be an integer")
        if value < 0:
            raise ValueError(f"{self._name(key)}: cannot be negative ({value})")
        return value

    def hex64(self, key: str) -> bytes:
        value = self.string(key)
        # Checked by pattern: bytes.fromhex alone would also accept spaces.
        if not _HEX64.fullmatch(value):
            raise ValueError(f"{self._name(key)}: must be 64 hexadecimal characters")
        return bytes.fromhex(value)

    def crc32(self, key: str) -> int:
        value = self.string(key)
        if not _DECIMAL.fullmatch(value) or int(value) > MAX_CRC32:
            raise ValueError(f"{self._name(key)}: must be a CRC32 as a decimal string")
        return int(value)

    def preview(self, key: str) -> tuple[str | None, bytes | None]:
        value = self._obj.get(key)
        if value is None:
            return None, None
        if not isinstance(value, dict):
            raise ValueError(f"{self._name(key)}: must be an object")
        inner = _Reader(value, self._name(key))
        content_type = inner.optional_string("content-type")
        encoded = inner.string("content")
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{self._name(key)}.content: must be base64") from None
        return DEFAULT_CONTENT_TYPE if content_type is None else content_type, content
