"""Blobs as local files: `<directory>/<id[:2]>/<id>`, an upload in progress as `<id>.part`.

File I/O runs in the default executor, never on the event loop, and in ~1 MiB batches:
incoming chunks are coalesced into one buffer before each write, so a stream of small chunks
costs one thread hop per MiB, and memory stays at about two buffers whatever the blob's size.

Durability: `complete` fsyncs the file, renames it into place (atomic), then fsyncs the
directory. `append` does not fsync (a 1 GiB fsync would halve the upload's speed on common
disks); after a crash `staged_size` is the `.part` file's size, which journaling file systems
(ext4 data=ordered, XFS) only grow once the data is on disk, and the client resumes there.
When the client goes away midway, the bytes received so far are written too, so it resumes
exactly where its stream broke off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from functools import partial
from pathlib import Path

from ringfence.blobs import (
    READ_CHUNK_BYTES,
    BlobError,
    BlobNotFoundError,
    KeyedLocks,
    OffsetMismatchError,
    check_blob_id,
    check_offset,
    check_range,
    run_in_thread,
)

#: Incoming chunks are coalesced up to this many bytes before each write.
WRITE_BUFFER_BYTES = 1024 * 1024
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data: bytes | bytearray, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        position += written
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is (rename(2) and fsync(2) notes).
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """A `BlobStore` over files in one directory (created with mode 0700, files 0600).

    Args:
        directory: where the blobs are kept; created on first write.
    """

    def __init__(self, directory: Path) -> None:
        self._root = directory
        self._locks = KeyedLocks()

    def _blob_path(self, blob_id: str) -> Path:
        check_blob_id(blob_id)
        return self._root / blob_id[:2] / blob_id

    def _part_path(self, blob_id: str) -> Path:
        check_blob_id(blob_id)
        return self._root / blob_id[:2] / f"{blob_id}.part"

    async def staged_size(self, blob_id: str) -> int | None:
        """Bytes of the `.part` file (None: no upload in progress)."""
        part = self._part_path(blob_id)
        return await run_in_thread(lambda: _size_or_none(part))

    async def size(self, blob_id: str) -> int | None:
        """The completed blob's size (None: there is none)."""
        path = self._blob_path(blob_id)
        return await run_in_thread(lambda: _size_or_none(path))

    async def append(self, blob_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Write `chunks` at `offset` of the upload; returns the new staged size.

        If `chunks` raises midway, every byte received before is written (the upload then
        resumes exactly there) and the exception propagates.
        """
        part = self._part_path(blob_id)
        check_offset(offset)
        async with self._locks.hold(blob_id):
            fd = await run_in_thread(lambda: self._open_part(part, offset), os.close)
            try:
                return await self._write_chunks(fd, offset, chunks)
            finally:
                os.close(fd)

    def _open_part(self, part: Path, offset: int) -> int:
        """Open the `.part` file for writing at `offset` (creating it when offset is 0)."""
        flags = os.O_WRONLY | _O_CLOEXEC
        try:
            if offset == 0:
                self._make_dirs(part.parent)
                fd = os.open(part, flags | os.O_CREAT, _FILE_MODE)
            else:
                fd = os.open(part, flags)
        except FileNotFoundError:
            raise OffsetMismatchError(0) from None
        except OSError as exc:
            raise BlobError(f"cannot open the upload's file: {exc.strerror}") from exc
        have = os.fstat(fd).st_size
        if have != offset:
            os.close(fd)
            raise OffsetMismatchError(have)
        return fd

    def _make_dirs(self, directory: Path) -> None:
        for path in (self._root, directory):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=_DIR_MODE, parents=True)

    async def _write_chunks(self, fd: int, offset: int, chunks: AsyncIterable[bytes]) -> int:
        position = offset
        buffer = bytearray()

        async def flush(data: bytes | bytearray) -> None:
            nonlocal position
            at = position
            try:
                await run_in_thread(lambda: _write_all(fd, data, at))
            except OSError as exc:
                raise BlobError(f"cannot write the upload's file: {exc.strerror}") from exc
            position += len(data)

        iterator = aiter(chunks)
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception:
                # The client went away: keep what it sent, so it resumes where it broke off.
                if buffer:
                    await flush(buffer)
                raise
            if not buffer and len(chunk) >= WRITE_BUFFER_BYTES:
                await flush(chunk)  # already big enough: write it without a copy
                continue
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER_BYTES:
                await flush(buffer)
                buffer = bytearray()
        if buffer:
            await flush(buffer)
        return position

    async def complete(self, blob_id: str) -> int:
        """Fsync the `.part` file, rename it to the blob (atomic), fsync the directory."""
        part = self._part_path(blob_id)
        path = self._blob_path(blob_id)
        async with self._locks.hold(blob_id):
            return await run_in_thread(lambda: _complete(part, path))

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [start, end) of the blob, read in a thread 1 MiB at a time."""
        path = self._blob_path(blob_id)
        check_range(start, end)
        return self._read(path, start, end)

    async def _read(self, path: Path, start: int, end: int | None) -> AsyncIterator[bytes]:
        try:
            fd = await run_in_thread(lambda: os.open(path, os.O_RDONLY | _O_CLOEXEC), os.close)
        except FileNotFoundError:
            raise BlobNotFoundError("no such blob") from None
        except OSError as exc:
            raise BlobError(f"cannot open the blob: {exc.strerror}") from exc
        try:
            size = os.fstat(fd).st_size
            stop = size if end is None else min(end, size)
            position = start
            while position < stop:
                at, want = position, min(READ_CHUNK_BYTES, stop - position)
                try:
                    chunk = await run_in_thread(partial(os.pread, fd, want, at))
                except OSError as exc:
                    raise BlobError(f"cannot read the blob: {exc.strerror}") from exc
                if not chunk:
                    raise BlobError("the blob is shorter than its size")
                position += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def delete(self, blob_id: str) -> None:
        """Remove the blob and its `.part` file; either may be absent."""
        paths = (self._blob_path(blob_id), self._part_path(blob_id))
        async with self._locks.hold(blob_id):
            await run_in_thread(lambda: _unlink(paths))

    async def aclose(self) -> None:
        """Nothing to release: files are opened per call."""


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BlobError(f"cannot stat a blob file: {exc.strerror}") from exc


def _complete(part: Path, path: Path) -> int:
    try:
        fd = os.open(part, os.O_RDONLY | _O_CLOEXEC)
    except FileNotFoundError:
        raise BlobNotFoundError("no upload in progress") from None
    except OSError as exc:
        raise BlobError(f"cannot open the upload's file: {exc.strerror}") from exc
    try:
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        os.replace(part, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise BlobError(f"cannot complete the upload: {exc.strerror}") from exc
    return size


def _unlink(paths: tuple[Path, ...]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise BlobError(f"cannot delete a blob file: {exc.strerror}") from exc
