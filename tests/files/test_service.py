"""The file service itself: an upload that broke off resumes and completes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from ringfence.files.envelope import decrypt, encrypt
from ringfence.runtime import Runtime
from tests.conftest import Demo


class GoneError(Exception):
    """The client went away mid-upload (starlette's ClientDisconnect, say)."""


async def chunks(
    data: bytes, size: int = 65_536, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        if fail_after is not None and at >= fail_after:
            raise GoneError
        yield data[at : at + size]


async def test_an_upload_that_broke_off_resumes_and_completes(runtime: Runtime, demo: Demo) -> None:
    await runtime.provisioning.create_account(demo.tenant, "bob", "bob's long secret")
    alice = await runtime.provisioning.account_id(demo.tenant, "alice")
    bob = await runtime.provisioning.account_id(demo.tenant, "bob")
    plaintext = os.urandom(1_000_000)
    envelope, key, sha256 = encrypt(plaintext)
    slot = await runtime.files.create(alice, len(envelope), [bob], 10_000_000)
    with pytest.raises(GoneError):
        await runtime.files.upload(alice, slot.id, 0, chunks(envelope, fail_after=300_000), 30)
    have = (await runtime.files.info(alice, slot.id)).received
    assert 0 < have <= 5 * 65_536  # what came before the client went away
    done = await runtime.files.upload(alice, slot.id, have, chunks(envelope[have:]), 30)
    assert done.complete
    token = done.url_path.rsplit("/", 1)[1]
    got = await runtime.files.download(bob, slot.id, token)
    data = b"".join([chunk async for chunk in got.chunks])
    assert decrypt(data, key, sha256) == plaintext
