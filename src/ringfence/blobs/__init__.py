"""Blobs: where the encrypted attachment files are kept, on local disk or in S3.

The file service streams uploads of already-encrypted files (up to 1 GiB) into a `BlobStore`,
resumes an interrupted upload at the byte offset the store has (`staged_size`), and streams
downloads with an optional byte range. The store never sees plaintext: it keeps opaque bytes.

Blob ids are made by the caller: 32 lowercase hex characters (128 random bits). Every method
checks the id before anything else and raises ValueError for any other string, so an id can
never become a path (`../`) or an S3 key outside `blobs/`.

An upload is staged, then completed: `append` writes bytes at the staged size (and only
there: `OffsetMismatchError` names the size the store has), `complete` turns the staged bytes
into a readable blob. Appends to one blob are serialised within one process; the caller
checks `staged_size` against the length the client declared before it calls `complete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

__all__ = [
    "MIN_S3_PART_BYTES",
    "READ_CHUNK_BYTES",
    "BlobError",
    "BlobNotFoundError",
    "BlobSettings",
    "BlobStore",
    "OffsetMismatchError",
    "check_blob_id",
    "open_store",
]

#: `read()` yields chunks of at most this many bytes.
READ_CHUNK_BYTES = 1024 * 1024
#: S3's smallest part for every part but the last of a multipart upload (5 MiB), see
#: https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
MIN_S3_PART_BYTES = 5 * 1024 * 1024
#: S3's largest part (5 GiB), same page.
MAX_S3_PART_BYTES = 5 * 1024 * 1024 * 1024

_BLOB_ID = re.compile(r"[0-9a-f]{32}")
_T = TypeVar("_T")


class BlobError(Exception):
    """A store failure (I/O, S3 error); the message is safe to log (no credentials, no data)."""


class OffsetMismatchError(BlobError):
    """An append at an offset other than the staged size; `expected` is the size the store has.

    Args:
        expected: the staged size the store has (0 when no upload is in progress).
    """

    def __init__(self, expected: int) -> None:
        super().__init__(f"append at the wrong offset: the store has {expected} bytes")
        self.expected = expected


class BlobNotFoundError(BlobError):
    """No completed blob (or, for `complete`, no upload in progress) with that id."""


class BlobStore(Protocol):
    """Staged, resumable uploads and ranged, streamed reads of opaque blobs."""

    async def staged_size(self, blob_id: str) -> int | None:
        """Bytes kept of an upload in progress, where it resumes (None: no such upload)."""
        ...

    async def append(self, blob_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Write `chunks` at `offset` of the upload; returns the new staged size.

        The upload is created when `offset` is 0 and none exists. If `chunks` raises midway
        (the client went away) what was kept stays staged, and the upload resumes at
        `staged_size` (S3: whole parts only).

        Raises:
            OffsetMismatchError: `offset` is not the staged size; nothing was written.
            BlobError: the store failed.
        """
        ...

    async def complete(self, blob_id: str) -> int:
        """Make the staged upload a readable blob (replacing any of that id); returns its size.

        Raises:
            BlobNotFoundError: no upload in progress.
        """
        ...

    async def size(self, blob_id: str) -> int | None:
        """A completed blob's size, None when there is none."""
        ...

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [start, end) of a completed blob, in chunks of at most 1 MiB.

        `end` past the blob's size reads to its end; `start` at or past it reads nothing.
        A bad id or range raises ValueError at once; an unknown blob raises
        BlobNotFoundError at the first iteration.
        """
        ...

    async def delete(self, blob_id: str) -> None:
        """Remove the completed blob and any upload in progress; no error when absent."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


@dataclass(frozen=True)
class BlobSettings:
    """Where blobs are kept.

    Attributes:
        backend: "local" (files, the default) or "s3" (any S3-compatible object storage).
        directory: local backend's directory; default `<data_dir>/blobs`.
        s3_endpoint_url: S3-compatible service's URL (None: AWS S3 in `s3_region`).
        s3_bucket: the bucket; required for "s3". Blobs are kept under the `blobs/` prefix.
        s3_region: the region signed for.
        s3_access_key_id: access key; None with the secret: botocore's default chain.
        s3_secret_access_key: secret key; never shown by repr.
        s3_part_bytes: multipart part size, 5 MiB to 5 GiB (S3's limits). An upload keeps up
            to one part in memory until it is sent.
    """

    backend: Literal["local", "s3"] = "local"
    directory: Path | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_part_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.backend not in ("local", "s3"):
            raise ValueError(f"unknown blob backend {self.backend!r}: 'local' or 's3'")
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("the s3 blob backend needs s3_bucket")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("give both s3_access_key_id and s3_secret_access_key, or neither")
        # Every part but the last must be at least 5 MiB, and none may exceed 5 GiB:
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
        if not MIN_S3_PART_BYTES <= self.s3_part_bytes <= MAX_S3_PART_BYTES:
            raise ValueError("s3_part_bytes must be between 5 MiB and 5 GiB")


def open_store(settings: BlobSettings, data_dir: Path) -> BlobStore:
    """The store that `settings` name; it does no I/O until first used.

    Args:
        settings: the blob settings.
        data_dir: the data directory, under which the local backend keeps `blobs/` by default.
    """
    if settings.backend == "s3":
        # Imported here so that the local default never loads aioboto3.
        from ringfence.blobs.s3 import S3BlobStore

        return S3BlobStore(settings)
    from ringfence.blobs.local import LocalBlobStore

    return LocalBlobStore(settings.directory or data_dir / "blobs")


def check_blob_id(blob_id: object) -> str:
    """Return `blob_id` when it is 32 lowercase hex characters; ValueError otherwise."""
    if not isinstance(blob_id, str) or _BLOB_ID.fullmatch(blob_id) is None:
        raise ValueError("a blob id is 32 lowercase hex characters")
    return blob_id


def check_range(start: int, end: int | None) -> None:
    """ValueError unless 0 <= start and (end is None or start <= end)."""
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range [{start}, {end})")


def check_offset(offset: int) -> None:
    """ValueError for a negative offset."""
    if offset < 0:
        raise ValueError(f"bad offset {offset}")


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of `key` for the body of the `async with`."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def run_in_thread(fn: Callable[[], _T], discard: Callable[[_T], object] | None = None) -> _T:
    """Run `fn` in the default executor; if cancelled, wait for it before re-raising.

    A thread cannot be stopped: returning while it still writes would let the next append
    of the same upload race with it. The wait is short (one buffer's write).

    Args:
        fn: the blocking call.
        discard: called with `fn`'s result when cancellation throws it away (close an fd).
    """
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if discard is not None and not future.cancelled() and future.exception() is None:
            discard(future.result())
        raise
