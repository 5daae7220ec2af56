"""Blobs in S3-compatible object storage (aioboto3), under the key `blobs/<id>`.

An upload is an S3 multipart upload. Incoming bytes are buffered up to `s3_part_bytes` and
each full part is sent with UploadPart; `staged_size` is the total of the parts that
ListParts shows, so an upload resumes across restarts and across processes.

S3 wants every part but the last to be at least 5 MiB
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html), so the bytes past the
last full part cannot be sent when an `append` ends: they stay in memory, one tail per
upload, until the next `append` or `complete` (which sends the tail as the last part).
While this process holds it, `staged_size` counts the tail too; once it is lost (restart,
another process, a tail evicted when too many are held, or an `append` whose client went
away, which keeps whole parts only) `staged_size` drops to the parts' total and the client
resumes there. The caller compares `staged_size` with the length the client declared before
calling `complete`, which would otherwise make a blob of what S3 has.

A blob of 0 bytes, or one that fits in the tail, is written with one PutObject: a multipart
upload needs at least one part.

Uploads that are never completed keep their parts (and cost storage) until deleted: give the
bucket a lifecycle rule with AbortIncompleteMultipartUpload (e.g. after 7 days), see
https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpu-abort-incomplete-mpu-lifecycle-config.html
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from ringfence.blobs import (
    READ_CHUNK_BYTES,
    BlobError,
    BlobNotFoundError,
    BlobSettings,
    KeyedLocks,
    OffsetMismatchError,
    check_blob_id,
    check_offset,
    check_range,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

KEY_PREFIX = "blobs/"
#: Tails held in memory, all uploads together, are kept under this many bytes (oldest dropped).
HELD_TAIL_BYTES = 64 * 1024 * 1024
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


class _S3Error(BlobError):
    """A failed S3 call; the message names the operation and S3's error code only."""

    def __init__(self, operation: str, code: str) -> None:
        super().__init__(f"S3 {operation} failed: {code}")
        self.code = code


@asynccontextmanager
async def _call(operation: str) -> AsyncIterator[None]:
    """Turn botocore's errors into `_S3Error` (ClientError's code, or the exception's type).

    Neither carries the credentials: botocore never puts the secret key in a message.
    """
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        raise _S3Error(operation, code) from exc
    except BotoCoreError as exc:
        raise _S3Error(operation, type(exc).__name__) from exc


@dataclass
class _Part:
    number: int
    etag: str
    size: int


@dataclass
class _Tail:
    """Bytes past the last sent part of `upload_id`, valid while S3 has `parts_bytes` in parts."""

    upload_id: str
    parts_bytes: int
    data: bytearray


class S3BlobStore:
    """A `BlobStore` over an S3 bucket; one client, created on first use, closed by `aclose`.

    Args:
        settings: the blob settings (`s3_bucket` required).
    """

    def __init__(self, settings: BlobSettings) -> None:
        if not settings.s3_bucket:
            raise ValueError("the s3 blob backend needs s3_bucket")
        self._settings = settings
        self._bucket = settings.s3_bucket
        self._part_bytes = settings.s3_part_bytes
        self._max_tails = max(1, HELD_TAIL_BYTES // settings.s3_part_bytes)
        self._stack = AsyncExitStack()
        self._client_lock = asyncio.Lock()
        self._s3: S3Client | None = None
        self._locks = KeyedLocks()
        #: blob id -> upload id, a cache; ListMultipartUploads is the truth.
        self._uploads: dict[str, str] = {}
        #: blob id -> the unsent tail, oldest first.
        self._tails: dict[str, _Tail] = {}

    async def _client(self) -> S3Client:
        if self._s3 is None:
            async with self._client_lock:
                if self._s3 is None:
                    self._s3 = await self._stack.enter_async_context(self._new_client())
        return self._s3

    def _new_client(self) -> contextlib.AbstractAsyncContextManager[S3Client]:
        settings = self._settings
        session = aioboto3.Session(
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            region_name=settings.s3_region,
        )
        config = AioConfig(
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            # S3-compatible services (MinIO, Ceph, Garage...) serve buckets as paths.
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            # botocore >= 1.36 adds CRC checksums to every upload by default, which several
            # S3-compatible services reject; only send them when an operation requires them.
            # The blobs are AEAD-encrypted by the clients, which detect any corruption.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)

    async def aclose(self) -> None:
        """Close the client (its connection pool)."""
        self._s3 = None
        await self._stack.aclose()

    @staticmethod
    def _key(blob_id: str) -> str:
        return KEY_PREFIX + check_blob_id(blob_id)

    # -- uploads -----------------------------------------------------------------------------

    async def _uploads_of(self, client: S3Client, key: str) -> list[str]:
        """The multipart uploads in progress for `key`, oldest first (ListMultipartUploads)."""
        found: list[tuple[str, str]] = []  # (initiated, upload id)
        async with _call("ListMultipartUploads"):
            pages = client.get_paginator("list_multipart_uploads")
            async for page in pages.paginate(Bucket=self._bucket, Prefix=key):
                for upload in page.get("Uploads", []):
                    if upload.get("Key") == key and "UploadId" in upload:
                        initiated = upload["Initiated"].isoformat() if "Initiated" in upload else ""
                        found.append((initiated, upload["UploadId"]))
        return [upload_id for _, upload_id in sorted(found)]

    async def _list_parts(self, client: S3Client, key: str, upload_id: str) -> list[_Part]:
        """The parts numbered 1, 2, ... without a gap (a later part is overwritten or dropped)."""
        found: dict[int, _Part] = {}
        async with _call("ListParts"):
            pages = client.get_paginator("list_parts")
            async for page in pages.paginate(Bucket=self._bucket, Key=key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    number = part.get("PartNumber", 0)
                    found[number] = _Part(number, part.get("ETag", ""), part.get("Size", 0))
        parts: list[_Part] = []
        while (next_part := found.get(len(parts) + 1)) is not None:
            parts.append(next_part)
        return parts

    async def _upload(self, client: S3Client, blob_id: str) -> tuple[str, list[_Part]] | None:
        """The upload in progress (the newest, should there be several) and its parts, or None."""
        key = self._key(blob_id)
        cached = self._uploads.pop(blob_id, None)
        if cached is not None:
            candidates = [cached]
        else:
            candidates = (await self._uploads_of(client, key))[-1:]
            if not candidates:
                return None
        try:
            parts = await self._list_parts(client, key, candidates[0])
        except _S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise
            # Completed or aborted by another process since: S3 is the truth, ask it again.
            if cached is None:
                return None
            return await self._upload(client, blob_id)
        self._uploads[blob_id] = candidates[0]
        return candidates[0], parts

    def _held_tail(self, blob_id: str, upload_id: str, parts_bytes: int) -> bytearray | None:
        tail = self._tails.get(blob_id)
        if tail is None or tail.upload_id != upload_id or tail.parts_bytes != parts_bytes:
            return None
        return tail.data

    def _hold_tail(self, blob_id: str, tail: _Tail) -> None:
        self._tails.pop(blob_id, None)
        if not tail.data:
            return
        self._tails[blob_id] = tail
        while len(self._tails) > self._max_tails:
            # Dropping the oldest tail costs its client a re-send from the last part, no more.
            del self._tails[next(iter(self._tails))]

    async def staged_size(self, blob_id: str) -> int | None:
        """The parts' total in S3, plus the tail while this process holds it."""
        check_blob_id(blob_id)
        client = await self._client()
        upload = await self._upload(client, blob_id)
        if upload is None:
            return None
        upload_id, parts = upload
        parts_bytes = sum(part.size for part in parts)
        tail = self._held_tail(blob_id, upload_id, parts_bytes)
        return parts_bytes + (len(tail) if tail is not None else 0)

    async def append(self, blob_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Send `chunks` as whole parts; keep the rest as the upload's tail in memory.

        If `chunks` raises midway, the tail is dropped: what stays staged is the parts sent.
        """
        key = self._key(blob_id)
        check_offset(offset)
        async with self._locks.hold(blob_id):
            client = await self._client()
            upload = await self._upload(client, blob_id)
            if upload is None:
                if offset != 0:
                    raise OffsetMismatchError(0)
                async with _call("CreateMultipartUpload"):
                    created = await client.create_multipart_upload(Bucket=self._bucket, Key=key)
                upload_id, parts = created["UploadId"], list[_Part]()
                self._uploads[blob_id] = upload_id
            else:
                upload_id, parts = upload
            parts_bytes = sum(part.size for part in parts)
            held = self._held_tail(blob_id, upload_id, parts_bytes)
            buffer = held if held is not None else bytearray()
            if offset != parts_bytes + len(buffer):
                raise OffsetMismatchError(parts_bytes + len(buffer))
            # The tail is this call's now; it goes back only if the stream ends well.
            self._tails.pop(blob_id, None)
            next_part = len(parts) + 1
            async for chunk in chunks:
                buffer += chunk
                while len(buffer) >= self._part_bytes:
                    with memoryview(buffer) as view:
                        body = bytes(view[: self._part_bytes])
                    del buffer[: self._part_bytes]
                    await self._upload_part(client, key, upload_id, next_part, body)
                    parts_bytes += len(body)
                    next_part += 1
            self._hold_tail(blob_id, _Tail(upload_id, parts_bytes, buffer))
            return parts_bytes + len(buffer)

    async def _upload_part(
        self, client: S3Client, key: str, upload_id: str, number: int, body: bytes
    ) -> str:
        async with _call("UploadPart"):
            sent = await client.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        return sent["ETag"]

    async def complete(self, blob_id: str) -> int:
        """Send the tail as the last part and CompleteMultipartUpload (small blobs: PutObject)."""
        key = self._key(blob_id)
        async with self._locks.hold(blob_id):
            client = await self._client()
            upload = await self._upload(client, blob_id)
            if upload is None:
                raise BlobNotFoundError("no upload in progress")
            upload_id, parts = upload
            parts_bytes = sum(part.size for part in parts)
            held = self._held_tail(blob_id, upload_id, parts_bytes)
            tail = bytes(held) if held is not None else b""
            if not parts:
                async with _call("PutObject"):
                    await client.put_object(Bucket=self._bucket, Key=key, Body=tail)
                await self._abort(client, key, upload_id)
            else:
                if tail:
                    number = len(parts) + 1
                    etag = await self._upload_part(client, key, upload_id, number, tail)
                    parts.append(_Part(number, etag, len(tail)))
                async with _call("CompleteMultipartUpload"):
                    await client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={
                            "Parts": [{"ETag": p.etag, "PartNumber": p.number} for p in parts]
                        },
                    )
            self._tails.pop(blob_id, None)
            self._uploads.pop(blob_id, None)
            return parts_bytes + len(tail)

    async def _abort(self, client: S3Client, key: str, upload_id: str) -> None:
        try:
            async with _call("AbortMultipartUpload"):
                await client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
        except _S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise

    async def delete(self, blob_id: str) -> None:
        """DeleteObject, and AbortMultipartUpload of every upload in progress for the blob."""
        key = self._key(blob_id)
        async with self._locks.hold(blob_id):
            self._tails.pop(blob_id, None)
            self._uploads.pop(blob_id, None)
            client = await self._client()
            async with _call("DeleteObject"):
                await client.delete_object(Bucket=self._bucket, Key=key)
            for upload_id in await self._uploads_of(client, key):
                await self._abort(client, key, upload_id)

    # -- completed blobs ---------------------------------------------------------------------

    async def size(self, blob_id: str) -> int | None:
        """HeadObject's ContentLength; None when there is no such blob."""
        key = self._key(blob_id)
        client = await self._client()
        try:
            async with _call("HeadObject"):
                head = await client.head_object(Bucket=self._bucket, Key=key)
        except _S3Error as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise
        return head["ContentLength"]

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """GetObject with a Range header, the body streamed in chunks of at most 1 MiB."""
        key = self._key(blob_id)
        check_range(start, end)
        return self._read(blob_id, key, start, end)

    async def _read(
        self, blob_id: str, key: str, start: int, end: int | None
    ) -> AsyncIterator[bytes]:
        client = await self._client()
        if end is not None and end <= start:
            if await self.size(blob_id) is None:
                raise BlobNotFoundError("no such blob")
            return
        # RFC 9110 14.1.2: the last byte position is inclusive.
        byte_range = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            async with _call("GetObject"):
                if start == 0 and end is None:
                    got = await client.get_object(Bucket=self._bucket, Key=key)
                else:
                    got = await client.get_object(Bucket=self._bucket, Key=key, Range=byte_range)
        except _S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise BlobNotFoundError("no such blob") from None
            if exc.code != "InvalidRange":
                raise
            # 416: `start` is at or past the end (or the blob is empty): nothing to read.
            if await self.size(blob_id) is None:
                raise BlobNotFoundError("no such blob") from None
            return
        body = got["Body"]
        async with body:  # releases the connection, also when the reader stops early
            while True:
                async with _call("GetObject"):
                    chunk = await body.read(READ_CHUNK_BYTES)
                if not chunk:
                    return
                yield chunk
