"""The file service on S3-compatible storage (moto's S3 server standing in for it)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from pydantic import SecretStr

from ringfence.config import FilesSettings
from ringfence.files.envelope import decrypt, encrypt
from ringfence.runtime import Runtime
from tests.blobs.test_blobs import ACCESS_KEY, BUCKET, SECRET, s3_endpoint
from tests.conftest import Demo, make_settings
from tests.support.clock import FakeClock

__all__ = ["s3_endpoint"]  # the module-scoped moto server fixture


@pytest.fixture
async def s3_runtime(
    tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest, s3_endpoint: str
) -> AsyncIterator[Runtime]:
    settings = make_settings(tmp_path, "sqlite", request).model_copy(
        update={
            "files": FilesSettings(
                backend="s3",
                s3_endpoint_url=s3_endpoint,
                s3_bucket=BUCKET,
                s3_access_key_id=ACCESS_KEY,
                s3_secret_access_key=SecretStr(SECRET),
                s3_part_bytes=5 * 1024 * 1024,
            )
        }
    )
    runtime = Runtime(settings, clock)
    await runtime.migrate()
    yield runtime
    await runtime.aclose()


@pytest.mark.promise("P9")
async def test_an_attachment_goes_through_s3_as_ciphertext(
    s3_runtime: Runtime, s3_endpoint: str, tmp_path: Path
) -> None:
    provisioning = s3_runtime.provisioning
    await provisioning.create_tenant("acme", "Acme Telecom", "sip.acme.example")
    await provisioning.create_account("acme", "alice", "correct horse")
    await provisioning.create_account("acme", "bob", "bob's long secret")
    demo = Demo("acme", "alice", "correct horse", "")
    plaintext = os.urandom(12 * 1024 * 1024)  # more than two 5 MiB parts
    envelope, key, sha256 = encrypt(plaintext)
    transport = httpx.ASGITransport(app=s3_runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        auth = (demo.login, demo.password)
        slot = (
            await client.post(
                "/v1/files", json={"size": len(envelope), "recipients": ["bob"]}, auth=auth
            )
        ).json()
        done = await client.put(slot["upload_url"], content=envelope, auth=auth)
        assert done.status_code == 200, done.text
        assert done.json()["complete"]
        got = await client.get(done.json()["url"], auth=("bob@acme", "bob's long secret"))
        assert got.status_code == 200
        assert decrypt(got.content, key, sha256) == plaintext
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    )
    stored = s3.get_object(Bucket=BUCKET, Key=f"blobs/{slot['id']}")["Body"].read()
    s3.close()
    assert stored == envelope
    assert plaintext[:4096] not in stored
    assert not (tmp_path / "blobs").exists()  # nothing on local disk
