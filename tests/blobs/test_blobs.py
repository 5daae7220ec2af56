"""Blob stores: the same behaviour on local files and on S3 (moto's server on loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import traceback
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]  # only to create the test bucket
import pytest
from moto.server import ThreadedMotoServer

from ringfence.blobs import (
    BlobError,
    BlobNotFoundError,
    BlobSettings,
    BlobStore,
    OffsetMismatchError,
    open_store,
)
from ringfence.blobs.local import LocalBlobStore
from ringfence.blobs.s3 import S3BlobStore
from tests.support.net import free_port

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest non-last part, which moto enforces too
BUCKET = "ringfence-blobs"
ACCESS_KEY = "AKIATESTTESTTEST"
SECRET = "s3cr3t-that-must-never-show-up"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    )
    client.create_bucket(Bucket=BUCKET)
    client.close()
    yield url
    server.stop()


def s3_settings(endpoint: str) -> BlobSettings:
    return BlobSettings(
        backend="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=BUCKET,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET,
        s3_part_bytes=PART,
    )


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest) -> BlobSettings:
    if request.param == "local":
        return BlobSettings()
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return s3_settings(endpoint)


@pytest.fixture
async def store(settings: BlobSettings, tmp_path: Path) -> AsyncIterator[BlobStore]:
    opened = open_store(settings, tmp_path)
    yield opened
    await opened.aclose()


def new_id() -> str:
    return os.urandom(16).hex()


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` in chunks whose sizes cycle through `sizes`."""
    chunks, position, i = [], 0, 0
    while position < len(data):
        size = sizes[i % len(sizes)]
        chunks.append(data[position : position + size])
        position += size
        i += 1
    return chunks


async def read_all(store: BlobStore, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
    chunks = [chunk async for chunk in store.read(blob_id, start, end)]
    assert all(0 < len(chunk) <= MiB for chunk in chunks)
    return b"".join(chunks)


async def upload(store: BlobStore, blob_id: str, data: bytes) -> None:
    assert await store.append(blob_id, 0, stream(*cut(data, [MiB]))) == len(data)
    assert await store.complete(blob_id) == len(data)


class ClientWentAwayError(Exception):
    pass


async def test_appends_in_odd_chunks_read_back_identical(store: BlobStore) -> None:
    blob_id = new_id()
    data = os.urandom(7 * MiB + 3)
    chunks = cut(data, [1, MiB, 1, 12_345, MiB, 7, 3 * MiB // 2])
    calls = [chunks[:5], chunks[5:9], chunks[9:]]
    offset = 0
    for call in calls:
        offset_after = offset + sum(map(len, call))
        assert await store.append(blob_id, offset, stream(*call)) == offset_after
        assert await store.staged_size(blob_id) == offset_after
        assert await store.size(blob_id) is None
        offset = offset_after
    assert offset == len(data)

    assert await store.complete(blob_id) == len(data)
    assert await store.size(blob_id) == len(data)
    assert await store.staged_size(blob_id) is None
    whole = await read_all(store, blob_id)
    assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()

    size = len(data)
    for start, end in [
        (0, 1),
        (1, 100),
        (MiB - 1, MiB + 1),
        (PART - 3, PART + 3),
        (12_345, 3 * MiB + 17),
        (size - 10, None),
        (size - 10, size),
        (3, size + 100),
    ]:
        assert await read_all(store, blob_id, start, end) == data[start:end], (start, end)
    for start, end in [(size, None), (size, size + 5), (size + 10, None), (5, 5)]:
        assert await read_all(store, blob_id, start, end) == b"", (start, end)


@pytest.mark.parametrize("length", [1, PART - 1, PART, PART + 1, 2 * PART])
async def test_lengths_around_the_part_size(store: BlobStore, length: int) -> None:
    blob_id = new_id()
    data = os.urandom(length)
    await upload(store, blob_id, data)
    assert await store.size(blob_id) == length
    assert await read_all(store, blob_id) == data
    assert await read_all(store, blob_id, length - 1) == data[-1:]


async def test_empty_blob(store: BlobStore) -> None:
    blob_id = new_id()
    assert await store.append(blob_id, 0, stream()) == 0
    assert await store.staged_size(blob_id) == 0
    assert await store.complete(blob_id) == 0
    assert await store.size(blob_id) == 0
    assert await read_all(store, blob_id) == b""
    assert await read_all(store, blob_id, 0, 10) == b""


async def test_resumes_after_the_client_went_away(store: BlobStore) -> None:
    blob_id = new_id()
    data = os.urandom(6 * MiB + 12_345)
    sent = 0

    async def broken() -> AsyncIterator[bytes]:
        nonlocal sent
        for chunk in cut(data[: 5 * MiB + MiB // 2], [MiB // 3 + 1]):
            sent += len(chunk)
            yield chunk
        raise ClientWentAwayError

    with pytest.raises(ClientWentAwayError):
        await store.append(blob_id, 0, broken())
    staged = await store.staged_size(blob_id)
    assert staged is not None
    assert 0 < staged <= sent
    if isinstance(store, LocalBlobStore):
        assert staged == sent  # every byte received is written before the error propagates
    else:
        assert staged == PART  # S3 keeps whole parts only

    rest = data[staged:]
    assert await store.append(blob_id, staged, stream(*cut(rest, [MiB - 1]))) == len(data)
    assert await store.complete(blob_id) == len(data)
    assert await read_all(store, blob_id) == data


async def test_a_cancelled_append_resumes(store: BlobStore) -> None:
    blob_id = new_id()
    data = os.urandom(3 * MiB)
    sent = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield data[: 2 * MiB]
        sent.set()
        await asyncio.sleep(3600)  # the request handler is cancelled while it waits here
        yield data[2 * MiB :]

    task = asyncio.create_task(store.append(blob_id, 0, stalled()))
    await sent.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    staged = await store.staged_size(blob_id)
    assert staged == (2 * MiB if isinstance(store, LocalBlobStore) else 0)
    assert await store.append(blob_id, staged, stream(data[staged:])) == len(data)
    assert await store.complete(blob_id) == len(data)
    assert await read_all(store, blob_id) == data


async def test_another_store_instance_resumes(
    store: BlobStore, settings: BlobSettings, tmp_path: Path
) -> None:
    """A restart: the new process finds the upload; S3 lost the tail it kept in memory."""
    blob_id = new_id()
    data = os.urandom(6 * MiB + 5)
    assert await store.append(blob_id, 0, stream(data[: 6 * MiB])) == 6 * MiB
    assert await store.staged_size(blob_id) == 6 * MiB

    restarted = open_store(settings, tmp_path)
    try:
        staged = await restarted.staged_size(blob_id)
        assert staged == (6 * MiB if isinstance(store, LocalBlobStore) else PART)
        if isinstance(store, S3BlobStore):
            with pytest.raises(OffsetMismatchError) as mismatch:
                await restarted.append(blob_id, 6 * MiB, stream(data[6 * MiB :]))
            assert mismatch.value.expected == PART
        assert await restarted.append(blob_id, staged, stream(data[staged:])) == len(data)
        assert await restarted.complete(blob_id) == len(data)
        assert await read_all(restarted, blob_id) == data
    finally:
        await restarted.aclose()
    assert await store.staged_size(blob_id) is None
    assert await read_all(store, blob_id) == data


async def test_append_at_a_wrong_offset_changes_nothing(store: BlobStore) -> None:
    blob_id = new_id()
    assert await store.append(blob_id, 0, stream(b"x" * 1000)) == 1000
    consumed = False

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal consumed
        consumed = True
        yield b"y"

    for offset in (999, 1001, 0):
        with pytest.raises(OffsetMismatchError) as mismatch:
            await store.append(blob_id, offset, chunks())
        assert mismatch.value.expected == 1000
        assert isinstance(mismatch.value, BlobError)
    assert not consumed
    assert await store.staged_size(blob_id) == 1000

    unknown = new_id()
    with pytest.raises(OffsetMismatchError) as mismatch:
        await store.append(unknown, 5, chunks())
    assert mismatch.value.expected == 0
    assert await store.staged_size(unknown) is None
    with pytest.raises(ValueError, match="offset"):
        await store.append(unknown, -1, chunks())
    assert not consumed

    assert await store.complete(blob_id) == 1000
    assert await read_all(store, blob_id) == b"x" * 1000


async def test_concurrent_appends_at_one_offset_one_wins(store: BlobStore) -> None:
    blob_id = new_id()
    results = await asyncio.gather(
        store.append(blob_id, 0, stream(b"a" * 700)),
        store.append(blob_id, 0, stream(b"b" * 300)),
        return_exceptions=True,
    )
    assert results[0] == 700
    assert isinstance(results[1], OffsetMismatchError)
    assert results[1].expected == 700
    assert await store.complete(blob_id) == 700
    assert await read_all(store, blob_id) == b"a" * 700


async def test_unknown_and_incomplete_blobs_are_not_found(store: BlobStore) -> None:
    unknown = new_id()
    assert await store.size(unknown) is None
    assert await store.staged_size(unknown) is None
    for start, end in [(0, None), (5, None), (0, 0), (2, 10)]:
        with pytest.raises(BlobNotFoundError):
            await read_all(store, unknown, start, end)
    with pytest.raises(BlobNotFoundError):
        await store.complete(unknown)

    staged = new_id()
    await store.append(staged, 0, stream(b"z" * 100))
    assert await store.size(staged) is None
    with pytest.raises(BlobNotFoundError):
        await read_all(store, staged)


async def test_delete_completed_and_staged(store: BlobStore) -> None:
    completed, staged = new_id(), new_id()
    await upload(store, completed, b"c" * 4321)
    await store.append(staged, 0, stream(os.urandom(PART + 10)))
    for blob_id in (completed, staged):
        await store.delete(blob_id)
        assert await store.size(blob_id) is None
        assert await store.staged_size(blob_id) is None
        with pytest.raises(BlobNotFoundError):
            await read_all(store, blob_id)
        await store.delete(blob_id)  # again: no error
    await store.delete(new_id())

    with pytest.raises(OffsetMismatchError) as mismatch:
        await store.append(staged, PART + 10, stream(b"more"))
    assert mismatch.value.expected == 0
    assert await store.append(staged, 0, stream(b"anew")) == 4
    assert await store.complete(staged) == 4
    assert await read_all(store, staged) == b"anew"


@pytest.mark.parametrize(
    "bad",
    [
        "../etc/passwd",
        "../" + "0" * 29,
        "A" * 32,
        "0" * 31,
        "0" * 33,
        "g" * 32,
        "0" * 32 + "\n",
        "",
    ],
)
async def test_bad_ids_are_refused(store: BlobStore, bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blob id"):
        await store.staged_size(bad)
    with pytest.raises(ValueError, match="blob id"):
        await store.append(bad, 0, stream(b"evil"))
    with pytest.raises(ValueError, match="blob id"):
        await store.complete(bad)
    with pytest.raises(ValueError, match="blob id"):
        await store.size(bad)
    with pytest.raises(ValueError, match="blob id"):
        store.read(bad)
    with pytest.raises(ValueError, match="blob id"):
        await store.delete(bad)
    assert os.listdir(tmp_path) == []


async def test_bad_ranges_are_refused(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="range"):
        store.read(new_id(), -1)
    with pytest.raises(ValueError, match="range"):
        store.read(new_id(), 5, 4)


# -- local files only -------------------------------------------------------------------------


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    opened = open_store(BlobSettings(), tmp_path)
    assert isinstance(opened, LocalBlobStore)
    yield opened
    await opened.aclose()


async def test_local_modes_and_bytes_on_disk(local: LocalBlobStore, tmp_path: Path) -> None:
    blob_id = new_id()
    data = os.urandom(3 * MiB + 1)
    root = tmp_path / "blobs"
    part = root / blob_id[:2] / f"{blob_id}.part"
    final = root / blob_id[:2] / blob_id
    old_umask = os.umask(0)  # modes must come from the store, not from a strict umask
    try:
        await local.append(blob_id, 0, stream(*cut(data[:MiB], [1000])))
        assert part.read_bytes() == data[:MiB]
        await local.append(blob_id, MiB, stream(data[MiB:]))
        assert await local.complete(blob_id) == len(data)
    finally:
        os.umask(old_umask)
    assert not part.exists()
    assert final.read_bytes() == data
    for directory in (root, final.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(final.stat().st_mode) == 0o600


async def test_local_settings_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    store = open_store(BlobSettings(directory=elsewhere), tmp_path / "data")
    blob_id = new_id()
    await upload(store, blob_id, b"hello")
    assert (elsewhere / blob_id[:2] / blob_id).read_bytes() == b"hello"
    assert not (tmp_path / "data").exists()


async def test_local_memory_is_bounded(local: LocalBlobStore) -> None:
    blob_id = new_id()
    total = 64 * MiB
    chunk_bytes = MiB // 3 + 7  # odd sizes: the store coalesces them
    expected = hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:
        left = total
        while left:
            chunk = os.urandom(min(chunk_bytes, left))
            expected.update(chunk)
            left -= len(chunk)
            yield chunk

    tracemalloc.start()
    try:
        assert await local.append(blob_id, 0, generated()) == total
        assert await local.complete(blob_id) == total
        got = hashlib.sha256()
        async for chunk in local.read(blob_id):
            got.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.digest() == expected.digest()
    assert peak < 16 * MiB, peak


# -- S3 only ------------------------------------------------------------------------------------


async def test_s3_unreachable_endpoint_is_a_blob_error_without_the_secret() -> None:
    store = S3BlobStore(s3_settings(f"http://127.0.0.1:{free_port()}"))
    try:
        # Connection refused at once; botocore's three attempts (standard retry mode) with
        # backoff take a few seconds.
        async with asyncio.timeout(20):
            with pytest.raises(BlobError) as size_failure:
                await store.size(new_id())
            with pytest.raises(BlobError) as append_failure:
                await store.append(new_id(), 0, stream(b"x"))
    finally:
        await store.aclose()
    for failure in (size_failure, append_failure):
        assert "S3" in str(failure.value)
        assert "EndpointConnectionError" in str(failure.value)
        assert SECRET not in "".join(traceback.format_exception(failure.value))
        assert SECRET not in repr(failure.value)


async def test_s3_error_names_operation_and_code(s3_endpoint: str) -> None:
    settings = BlobSettings(
        backend="s3",
        s3_endpoint_url=s3_endpoint,
        s3_bucket="no-such-bucket",
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET,
    )
    store = open_store(settings, Path("unused"))
    try:
        with pytest.raises(BlobError) as failure:
            await store.append(new_id(), 0, stream(b"x"))
    finally:
        await store.aclose()
    assert str(failure.value) == "S3 ListMultipartUploads failed: NoSuchBucket"


def test_settings_are_checked_and_hide_the_secret() -> None:
    with pytest.raises(ValueError, match="5 MiB"):
        BlobSettings(backend="s3", s3_bucket="b", s3_part_bytes=PART - 1)
    with pytest.raises(ValueError, match="s3_bucket"):
        BlobSettings(backend="s3")
    with pytest.raises(ValueError, match="both"):
        BlobSettings(backend="s3", s3_bucket="b", s3_access_key_id=ACCESS_KEY)
    settings = s3_settings("http://127.0.0.1:9")
    assert SECRET not in repr(settings)
    assert isinstance(open_store(settings, Path("unused")), S3BlobStore)
