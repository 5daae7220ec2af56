"""The file service: it stores and serves attachments it cannot read (P9).

A sender's app encrypts the file (`files.envelope`: a fresh key, chunked AES-256-GCM), asks
for an upload slot naming the size and the recipients, streams the ciphertext (resuming at
the byte offset the service has, after a dropped connection), and sends the recipients a
MESSAGE whose body holds the download URL, the key and the hash (`files.transfer`). The key
never reaches the service.

- Only envelopes are accepted: the first 16 bytes must be an envelope header, and the total
  length one an envelope can have; anything else (a plaintext upload) is refused and not
  kept.
- The size is the account's `attachments.max_size_bytes` at most, advertised in its
  provisioned configuration; more is refused naming the limit.
- Downloads go through a capability URL: the file's random id and a MAC over it, unguessable
  and useless without the credentials of the sender or of one of the recipients it was sent
  to. Byte ranges let a download resume.
- A file is deleted when its sender deletes it, when every recipient has, when its sender's
  `attachments.retention_days` (30 by default) have passed, or with its sender's account; an
  upload not finished within a day is dropped.

Nothing here does I/O: metadata goes to a `FileStore`, bytes to a `Blobs` store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.files.envelope import (
    HEADER_BYTES,
    MIN_CHUNK_EXP,
    FormatError,
    Header,
    encrypted_size,
    plausible_size,
)

#: An upload not finished within this long is dropped with what it staged.
UPLOAD_HOURS = 24
#: Recipients of one file, at most (a group message names each member).
MAX_RECIPIENTS = 100
SWEEP_BATCH = 200


def envelope_limit(max_file_bytes: int) -> int:
    """The largest envelope a file of `max_file_bytes` can make, at any chunk size."""
    return encrypted_size(max_file_bytes, MIN_CHUNK_EXP)


class FileError(Exception):
    """A request the file service refuses; `field` names what was wrong, when one thing was."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NoSuchFileError(FileError):
    """No such file for this caller (whether it exists for someone else is not said)."""


class TooLargeError(FileError):
    """More bytes than the account may upload; `limit` is that limit."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message, "size")
        self.limit = limit


class NotAnEnvelopeError(FileError):
    """The bytes are not an encrypted attachment (P9: plaintext is never kept)."""


class OffsetError(FileError):
    """An upload chunk that does not start where the service's copy ends; `expected` does."""

    def __init__(self, expected: int) -> None:
        super().__init__(f"the upload continues at byte {expected}", "Content-Range")
        self.expected = expected


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    owner_id: str
    size: int
    complete: bool
    #: The envelope's chunk size exponent, known once its header came (None before).
    chunk_exp: int | None
    created_at: datetime
    expires_at: datetime
    recipients: tuple[str, ...]


class FileStore(Protocol):
    async def add_file(self, file: StoredFile) -> None: ...

    async def get_file(self, file_id: str) -> StoredFile | None: ...

    async def set_header(self, file_id: str, chunk_exp: int) -> None: ...

    async def set_complete(self, file_id: str, expires_at: datetime) -> None: ...

    async def remove_recipient(self, file_id: str, account_id: str) -> int:
        """Take the account off the file's recipients; how many remain."""
        ...

    async def delete_file(self, file_id: str) -> None: ...

    async def files_of(self, account_id: str) -> list[str]:
        """The ids of the files the account sent."""
        ...

    async def files_to(self, account_id: str) -> list[str]:
        """The ids of the files sent to the account."""
        ...

    async def expired_files(self, now: datetime, limit: int) -> list[str]: ...


class Blobs(Protocol):
    """What the service needs of a blob store (`ringfence.blobs.BlobStore`)."""

    async def staged_size(self, blob_id: str) -> int | None: ...

    async def append(self, blob_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int: ...

    async def complete(self, blob_id: str) -> int: ...

    def read(
        self, blob_id: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]: ...

    async def delete(self, blob_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file as its sender or a recipient sees it."""

    id: str
    size: int
    received: int
    complete: bool
    expires_at: datetime
    #: The path of the capability URL (`/v1/files/{id}/{token}`).
    url_path: str


@dataclass(frozen=True, slots=True)
class Download:
    size: int
    start: int
    end: int
    chunks: AsyncIterator[bytes]


class FileService:
    def __init__(self, store: FileStore, blobs: Blobs, clock: Clock, url_key: bytes) -> None:
        if len(url_key) < 32:
            raise ValueError("the capability key is at least 32 bytes")
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._url_key = url_key

    def token(self, file_id: str) -> str:
        """The MAC that makes `file_id` a capability (128 bits, base64url)."""
        mac = hmac.digest(self._url_key, b"file-url:" + file_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")

    def _info(self, file: StoredFile, received: int) -> FileInfo:
        return FileInfo(
            file.id,
            file.size,
            received,
            file.complete,
            file.expires_at,
            f"/v1/files/{file.id}/{self.token(file.id)}",
        )

    async def create(
        self, owner_id: str, size: int, recipients: Sequence[str], max_size: int
    ) -> FileInfo:
        """An upload slot for `size` envelope bytes, to be read by `recipients`.

        Raises:
            TooLargeError: over the account's `max_size`.
            FileError: a size no envelope has, or too many recipients.
        """
        # The limit is the file's; its envelope is larger by a tag per chunk (0.4% at the
        # smallest chunk size) and the header.
        if size > envelope_limit(max_size):
            raise TooLargeError(
                f"size: the file is over this account's limit of {max_size} bytes "
                "(attachments.max_size_bytes)",
                max_size,
            )
        if size < HEADER_BYTES + 16:
            raise FileError("size: smaller than any encrypted attachment", "size")
        unique = tuple(dict.fromkeys(r for r in recipients if r != owner_id))
        if not unique:
            raise FileError("recipients: name at least one other user", "recipients")
        if len(unique) > MAX_RECIPIENTS:
            raise FileError(f"recipients: at most {MAX_RECIPIENTS}", "recipients")
        now = self._clock.now()
        file = StoredFile(
            os.urandom(16).hex(),
            owner_id,
            size,
            False,
            None,
            now,
            now + timedelta(hours=UPLOAD_HOURS),
            unique,
        )
        await self._store.add_file(file)
        return self._info(file, 0)

    async def _own(self, account_id: str, file_id: str) -> StoredFile:
        file = await self._store.get_file(file_id)
        if file is None or file.owner_id != account_id or file.expires_at <= self._clock.now():
            raise NoSuchFileError("no such file", "file_id")
        return file

    async def info(self, account_id: str, file_id: str) -> FileInfo:
        """The file as its sender sees it: how much of it the service has (to resume)."""
        file = await self._own(account_id, file_id)
        received = file.size if file.complete else await self._blobs.staged_size(file_id) or 0
        return self._info(file, received)

    async def upload(
        self,
        account_id: str,
        file_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        retention_days: int,
    ) -> FileInfo:
        """Append `chunks` at `offset` of the sender's upload; completes it at its size.

        Raises:
            OffsetError: `offset` is not where the service's copy ends.
            NotAnEnvelopeError: the bytes are not an envelope (nothing of them is kept).
            TooLargeError: more bytes than the size the upload was opened with.
        """
        file = await self._own(account_id, file_id)
        if file.complete:
            raise FileError("the upload is complete already", "file_id")
        staged = await self._blobs.staged_size(file_id) or 0
        if offset != staged:
            raise OffsetError(staged)
        checked = _Checked(chunks, file.size, offset, need_header=offset == 0)
        try:
            received = await self._blobs.append(file_id, offset, checked)
        except FormatError as exc:
            await self._blobs.delete(file_id)
            raise NotAnEnvelopeError(str(exc), "body") from None
        finally:
            # Kept even when the upload broke off (the client went away): the header is
            # staged, and the resumed upload, which starts after it, completes on it.
            if checked.header is not None:
                await self._store.set_header(file_id, checked.header.chunk_exp)
        if checked.header is not None:
            file = await self._own(account_id, file_id)
        if received < file.size:
            return self._info(file, received)
        header = Header(2**file.chunk_exp, b"\x00" * 8) if file.chunk_exp is not None else None
        if header is None or not plausible_size(received, header):
            await self._blobs.delete(file_id)
            raise NotAnEnvelopeError(
                "not an encrypted attachment: no envelope has this length", "body"
            )
        await self._blobs.complete(file_id)
        expires = self._clock.now() + timedelta(days=retention_days)
        await self._store.set_complete(file_id, expires)
        return FileInfo(
            file.id, file.size, received, True, expires, self._info(file, received).url_path
        )

    async def download(
        self, account_id: str, file_id: str, token: str, start: int = 0, end: int | None = None
    ) -> Download:
        """The file's bytes [start, end) for its sender or one of its recipients.

        Raises:
            NoSuchFileError: no such file for this caller, a wrong token, not complete.
            FileError: a range outside the file.
        """
        if not hmac.compare_digest(token.encode(), self.token(file_id).encode()):
            raise NoSuchFileError("no such file", "file_id")
        file = await self._store.get_file(file_id)
        if (
            file is None
            or not file.complete
            or file.expires_at <= self._clock.now()
            or (account_id != file.owner_id and account_id not in file.recipients)
        ):
            raise NoSuchFileError("no such file", "file_id")
        stop = file.size if end is None else min(end, file.size)
        if not 0 <= start < stop:
            raise FileError(f"Range: outside the file's {file.size} bytes", "Range")
        return Download(file.size, start, stop, self._blobs.read(file_id, start, stop))

    async def export(self, account_id: str) -> dict[str, object]:
        """What is kept of the account's files, for its access request (P19).

        The bytes are ciphertext whose keys are in the account's messages (the history's
        part of the bundle); they are named here, not copied.
        """
        sent = []
        for file_id in await self._store.files_of(account_id):
            file = await self._store.get_file(file_id)
            if file is not None:
                sent.append(
                    {
                        "id": file.id,
                        "size": file.size,
                        "complete": file.complete,
                        "recipients": len(file.recipients),
                        "created_at": file.created_at.isoformat(),
                        "expires_at": file.expires_at.isoformat(),
                    }
                )
        return {"sent": sent, "received": await self._store.files_to(account_id)}

    async def delete(self, account_id: str, file_id: str) -> None:
        """The sender deletes the file; a recipient deletes their copy (the last one, the file).

        Raises:
            NoSuchFileError: no such file for this caller.
        """
        file = await self._store.get_file(file_id)
        if file is None:
            raise NoSuchFileError("no such file", "file_id")
        if file.owner_id == account_id:
            await self._erase(file_id)
            return
        if account_id not in file.recipients:
            raise NoSuchFileError("no such file", "file_id")
        if await self._store.remove_recipient(file_id, account_id) == 0:
            await self._erase(file_id)

    async def _erase(self, file_id: str) -> None:
        # The bytes first: a row without its blob is harmless, a blob without its row is
        # data nobody can delete any more.
        await self._blobs.delete(file_id)
        await self._store.delete_file(file_id)

    async def sweep(self) -> int:
        """Delete expired files and abandoned uploads; returns how many."""
        deleted = 0
        while ids := await self._store.expired_files(self._clock.now(), SWEEP_BATCH):
            for file_id in ids:
                await self._erase(file_id)
            deleted += len(ids)
            if len(ids) < SWEEP_BATCH:
                break
        return deleted

    # -- provisioning.AccountListener ------------------------------------------------------

    async def account_erased(self, account_id: str) -> None:
        """Its files go with it; it is taken off the files sent to it."""
        for file_id in await self._store.files_of(account_id):
            await self._erase(file_id)
        for file_id in await self._store.files_to(account_id):
            if await self._store.remove_recipient(file_id, account_id) == 0:
                await self._erase(file_id)

    async def accounts_reconfigured(self, configs: Sequence[tuple[str, object]]) -> None:
        """Switching attachments off stops new uploads; files sent already stay theirs."""


class _Checked:
    """The upload's chunks, checked as they pass: the envelope header first, the size."""

    def __init__(
        self, chunks: AsyncIterable[bytes], size: int, offset: int, *, need_header: bool
    ) -> None:
        self._chunks = chunks
        self._size = size
        self._room = size - offset
        self._need_header = need_header
        self._head = b""
        self.header: Header | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._run()

    async def _run(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if not chunk:
                continue
            if len(chunk) > self._room:
                raise TooLargeError(
                    f"more bytes than the {self._size} the upload was opened with", self._size
                )
            self._room -= len(chunk)
            if self._need_header:
                # Nothing is written before the header is known to be an envelope's.
                self._head += chunk
                if len(self._head) < HEADER_BYTES:
                    continue
                self.header = Header.parse(self._head[:HEADER_BYTES])
                self._need_header = False
                chunk, self._head = self._head, b""
            yield chunk
        if self._need_header and self._head:
            raise FormatError("this is not an encrypted attachment: it is too short")
