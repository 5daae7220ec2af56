"""The file service over HTTP: envelopes only (P9), resumable, for the recipients, expiring."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from ringfence.files.envelope import decrypt, encrypt
from ringfence.files.service import envelope_limit
from ringfence.provisioning.models import AccountChange
from ringfence.runtime import Runtime
from tests.conftest import Demo
from tests.support.clock import FakeClock

BOB = ("bob@acme", "bob's long secret")
CAROL = ("carol@acme", "carol's long secret")


@pytest.fixture
async def people(runtime: Runtime, demo: Demo) -> None:
    await runtime.provisioning.create_account(demo.tenant, "bob", BOB[1])
    await runtime.provisioning.create_account(demo.tenant, "carol", CAROL[1])


def blobs(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


async def _upload(
    client: httpx.AsyncClient, demo: Demo, envelope: bytes, recipients: list[str] | None = None
) -> dict[str, object]:
    auth = (demo.login, demo.password)
    opened = await client.post(
        "/v1/files", json={"size": len(envelope), "recipients": recipients or ["bob"]}, auth=auth
    )
    assert opened.status_code == 201, opened.text
    slot = opened.json()
    assert slot["received"] == 0
    done = await client.put(f"/v1/files/{slot['id']}/content", content=envelope, auth=auth)
    assert done.status_code == 200, done.text
    assert done.json()["complete"]
    result: dict[str, object] = done.json()
    return result


@pytest.mark.promise("P9")
@pytest.mark.usefixtures("people")
async def test_the_service_keeps_ciphertext_and_serves_it_to_the_recipients(
    client: httpx.AsyncClient, demo: Demo, tmp_path: Path
) -> None:
    plaintext = b"holiday photo " * 20_000
    envelope, key, sha256 = encrypt(plaintext)
    done = await _upload(client, demo, envelope)
    [stored] = blobs(tmp_path)
    assert stored.read_bytes() == envelope
    assert b"holiday photo" not in stored.read_bytes()
    url = str(done["url"])
    got = await client.get(url, auth=BOB)
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/vnd.ringfence.envelope"
    assert decrypt(got.content, key, sha256) == plaintext
    # The sender may fetch it again; nobody else, even with the URL; nobody with a guess.
    assert (await client.get(url, auth=(demo.login, demo.password))).status_code == 200
    assert (await client.get(url, auth=CAROL)).status_code == 404
    forged = url[:-22] + "A" * 22
    assert (await client.get(forged, auth=BOB)).status_code == 404
    assert (await client.get(url)).status_code == 401
    # A resumed download: the rest from byte 1000.
    part = await client.get(url, auth=BOB, headers={"Range": "bytes=1000-"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-{len(envelope) - 1}/{len(envelope)}"
    assert part.content == envelope[1000:]


@pytest.mark.promise("P9")
@pytest.mark.usefixtures("people")
async def test_a_plaintext_upload_is_refused_and_nothing_kept(
    client: httpx.AsyncClient, demo: Demo, tmp_path: Path
) -> None:
    auth = (demo.login, demo.password)
    plaintext = b"%PDF-1.7\n" + os.urandom(4000)
    slot = (
        await client.post(
            "/v1/files", json={"size": len(plaintext), "recipients": ["bob"]}, auth=auth
        )
    ).json()
    refused = await client.put(f"/v1/files/{slot['id']}/content", content=plaintext, auth=auth)
    assert refused.status_code == 415
    assert refused.json()["error"]["code"] == "not_an_envelope"
    assert blobs(tmp_path) == []
    state = await client.get(f"/v1/files/{slot['id']}", auth=auth)
    assert state.json()["received"] == 0
    assert not state.json()["complete"]
    # A real envelope header, then a length no envelope has (a last chunk shorter than its
    # tag): refused when it ends.
    envelope, _, _ = encrypt(os.urandom(200_000))
    odd = envelope[: 16 + (65_536 + 16) + 5]
    slot = (
        await client.post("/v1/files", json={"size": len(odd), "recipients": ["bob"]}, auth=auth)
    ).json()
    refused = await client.put(f"/v1/files/{slot['id']}/content", content=odd, auth=auth)
    assert refused.status_code == 415
    assert blobs(tmp_path) == []


@pytest.mark.usefixtures("people")
async def test_an_interrupted_upload_resumes_where_the_service_says(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    auth = (demo.login, demo.password)
    plaintext = os.urandom(300_000)
    envelope, key, sha256 = encrypt(plaintext)
    size = len(envelope)
    slot = (
        await client.post("/v1/files", json={"size": size, "recipients": ["bob"]}, auth=auth)
    ).json()
    half = size // 2
    first = await client.put(
        slot["upload_url"],
        content=envelope[:half],
        headers={"Content-Range": f"bytes 0-{half - 1}/{size}"},
        auth=auth,
    )
    assert first.status_code == 200
    assert first.json()["received"] == half
    assert not first.json()["complete"]
    assert (await client.get(f"/v1/files/{slot['id']}", auth=auth)).json()["received"] == half
    # Not where the service's copy ends: refused, naming where it does.
    wrong = await client.put(
        slot["upload_url"],
        content=envelope[half + 5 :],
        headers={"Content-Range": f"bytes {half + 5}-{size - 1}/{size}"},
        auth=auth,
    )
    assert wrong.status_code == 409
    assert wrong.json()["error"]["expected_offset"] == half
    assert wrong.headers["upload-offset"] == str(half)
    rest = await client.put(
        slot["upload_url"],
        content=envelope[half:],
        headers={"Content-Range": f"bytes {half}-{size - 1}/{size}"},
        auth=auth,
    )
    assert rest.json()["complete"]
    got = await client.get(rest.json()["url"], auth=BOB)
    assert decrypt(got.content, key, sha256) == plaintext
    bad = await client.put(
        slot["upload_url"], content=b"x", headers={"Content-Range": "0-1"}, auth=auth
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "Content-Range"


@pytest.mark.usefixtures("people")
async def test_the_size_limit_is_the_accounts_and_named(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo
) -> None:
    await runtime.provisioning.update_account(
        demo.tenant,
        demo.username,
        AccountChange(overrides={"attachments": {"max_size_bytes": 100_000}}),
    )
    auth = (demo.login, demo.password)
    provisioned = (await client.get("/v1/provisioning", auth=auth)).json()
    assert provisioned["features"]["attachments"]["max_size_bytes"] == 100_000
    # The limit is the file's: its envelope may be larger by the envelope's overhead.
    most = envelope_limit(100_000)
    assert 100_000 < most < 100_000 * 1.005
    fits = await client.post("/v1/files", json={"size": most, "recipients": ["bob"]}, auth=auth)
    assert fits.status_code == 201
    too_big = await client.post(
        "/v1/files", json={"size": most + 1, "recipients": ["bob"]}, auth=auth
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["limit"] == 100_000
    assert "100000" in too_big.json()["error"]["message"]
    # More bytes than the upload was opened with: refused too.
    envelope, _, _ = encrypt(os.urandom(50_000))
    slot = (
        await client.post(
            "/v1/files", json={"size": len(envelope) - 100, "recipients": ["bob"]}, auth=auth
        )
    ).json()
    over = await client.put(slot["upload_url"], content=envelope, auth=auth)
    assert over.status_code == 413


@pytest.mark.usefixtures("people")
async def test_bad_requests_name_the_field(client: httpx.AsyncClient, demo: Demo) -> None:
    auth = (demo.login, demo.password)
    for body, field in (
        ({"size": 1000, "recipients": ["nobody"]}, "recipients[0]"),
        ({"size": 1000, "recipients": ["bob", "sip:bob;x@sip.acme.example:5060"]}, "recipients[1]"),
        ({"size": 1000, "recipients": ["bob@elsewhere"]}, "recipients[0]"),
        ({"size": 1000, "recipients": []}, "body.recipients"),
        ({"size": 0, "recipients": ["bob"]}, "body.size"),
        ({"size": 10, "recipients": ["bob"]}, "size"),
        ({"size": 1000, "recipients": ["alice"]}, "recipients"),
    ):
        response = await client.post("/v1/files", json=body, auth=auth)
        assert response.status_code == 422, body
        assert response.json()["error"]["field"] == field
    missing = await client.get("/v1/files/" + "0" * 32, auth=auth)
    assert missing.status_code == 404


@pytest.mark.usefixtures("people")
async def test_deleted_by_every_recipient_or_the_sender_then_gone(
    client: httpx.AsyncClient, demo: Demo, tmp_path: Path
) -> None:
    envelope, _, _ = encrypt(os.urandom(10_000))
    done = await _upload(client, demo, envelope, ["bob", "carol"])
    file_id = done["id"]
    assert (await client.delete(f"/v1/files/{file_id}", auth=BOB)).status_code == 204
    assert (await client.get(str(done["url"]), auth=BOB)).status_code == 404
    assert (await client.get(str(done["url"]), auth=CAROL)).status_code == 200
    assert (await client.delete(f"/v1/files/{file_id}", auth=CAROL)).status_code == 204
    assert blobs(tmp_path) == []
    again = await _upload(client, demo, envelope)
    auth = (demo.login, demo.password)
    assert (await client.delete(f"/v1/files/{again['id']}", auth=CAROL)).status_code == 404
    assert (await client.delete(f"/v1/files/{again['id']}", auth=auth)).status_code == 204
    assert blobs(tmp_path) == []


@pytest.mark.promise("P15")
@pytest.mark.promise("P19")
@pytest.mark.usefixtures("people")
async def test_files_expire_and_go_with_their_senders_account(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo, clock: FakeClock, tmp_path: Path
) -> None:
    envelope, _, _ = encrypt(os.urandom(10_000))
    done = await _upload(client, demo, envelope)
    clock.advance(30 * 86_400 - 60)
    await runtime.housekeeping()
    assert len(blobs(tmp_path)) == 1
    clock.advance(61)
    assert (await client.get(str(done["url"]), auth=BOB)).status_code == 404
    await runtime.housekeeping()
    assert blobs(tmp_path) == []
    # An upload never finished is dropped after a day.
    auth = (demo.login, demo.password)
    slot = (
        await client.post(
            "/v1/files", json={"size": len(envelope), "recipients": ["bob"]}, auth=auth
        )
    ).json()
    await client.put(
        slot["upload_url"],
        content=envelope[:5000],
        headers={"Content-Range": f"bytes 0-4999/{len(envelope)}"},
        auth=auth,
    )
    assert len(blobs(tmp_path)) == 1
    clock.advance(86_400)
    await runtime.housekeeping()
    assert blobs(tmp_path) == []
    # Erasing the sender erases their files at once.
    await _upload(client, demo, envelope)
    await runtime.provisioning.delete_account(demo.tenant, demo.username)
    assert blobs(tmp_path) == []


@pytest.mark.promise("P1")
@pytest.mark.usefixtures("people")
async def test_with_attachments_off_nothing_is_uploaded(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo, tmp_path: Path
) -> None:
    await runtime.provisioning.update_account(
        demo.tenant, demo.username, AccountChange(overrides={"attachments": {"enabled": False}})
    )
    response = await client.post(
        "/v1/files", json={"size": 1000, "recipients": ["bob"]}, auth=(demo.login, demo.password)
    )
    assert response.status_code == 403
    assert response.json()["error"]["feature"] == "attachments"
    assert blobs(tmp_path) == []
