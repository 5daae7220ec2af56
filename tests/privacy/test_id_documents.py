"""An ID document as the last resort of verification (P21): kept until the decision only."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from ringfence.crypto.errors import KeyDestroyedError
from ringfence.privacy.requests import document_subject
from ringfence.runtime import Runtime
from ringfence.storage.tables import identity_documents, subject_keys
from tests.conftest import Demo

pytestmark = pytest.mark.promise("P21")

SCAN = b"%PDF-1.7\n" + b"passport of Alice Liddell, no. X1234567\n" * 100
ACCOUNT = "/admin/v1/tenants/acme/accounts/alice/privacy/requests/awaiting-document"


async def rows(runtime: Runtime) -> tuple[int, int]:
    """(ID documents stored, data keys of ID documents in the key store)."""
    async with runtime.engine.connect() as main, runtime.key_engine.connect() as keys:
        documents = await main.scalar(select(func.count()).select_from(identity_documents))
        document_keys = await keys.scalar(
            select(func.count())
            .select_from(subject_keys)
            .where(subject_keys.c.subject.startswith("id-document:"))
        )
    return int(documents or 0), int(document_keys or 0)


async def waiting(client: httpx.AsyncClient, headers: dict[str, str], kind: str) -> str:
    answer = await client.post(ACCOUNT, json={"kind": kind}, headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["state"] == "verifying"
    return str(answer.json()["id"])


async def upload(
    client: httpx.AsyncClient, headers: dict[str, str], request_id: str, data: bytes, media: str
) -> httpx.Response:
    return await client.put(
        f"/admin/v1/privacy/requests/{request_id}/document",
        content=data,
        headers={**headers, "Content-Type": media},
    )


async def test_an_accepted_document_is_destroyed_then_the_request_carried_out(
    client: httpx.AsyncClient, admin_headers: dict[str, str], runtime: Runtime
) -> None:
    request_id = await waiting(client, admin_headers, "access")
    assert (
        await upload(client, admin_headers, request_id, SCAN, "application/pdf")
    ).status_code == 204
    assert await rows(runtime) == (1, 1)
    async with runtime.engine.connect() as connection:
        sealed = await connection.scalar(select(identity_documents.c.sealed))
    assert isinstance(sealed, bytes)
    assert b"Liddell" not in sealed  # sealed with its own key
    decided = await client.post(
        f"/admin/v1/privacy/requests/{request_id}/identity",
        json={"accepted": True, "verified_by": "DPO"},
        headers=admin_headers,
    )
    assert decided.status_code == 200, decided.text
    assert (decided.json()["state"], decided.json()["verified_by"]) == ("completed", "ID document")
    assert await rows(runtime) == (0, 0)
    with pytest.raises(KeyDestroyedError):
        await runtime.keyring.cipher(document_subject(request_id))


async def test_a_refused_document_rejects_the_request_and_changes_nothing_else(
    client: httpx.AsyncClient, admin_headers: dict[str, str], runtime: Runtime, demo: Demo
) -> None:
    request_id = await waiting(client, admin_headers, "erasure")
    await upload(client, admin_headers, request_id, SCAN, "application/pdf")
    decided = await client.post(
        f"/admin/v1/privacy/requests/{request_id}/identity",
        json={"accepted": False, "verified_by": "DPO"},
        headers=admin_headers,
    )
    assert decided.json()["state"] == "rejected"
    assert "not verified" in decided.json()["outcome"]
    assert await rows(runtime) == (0, 0)
    assert (await runtime.provisioning.account("acme", "alice")).username == "alice"
    # Decided: no more documents, no second decision.
    again = await upload(client, admin_headers, request_id, SCAN, "application/pdf")
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("data", "media", "status", "field"),
    [
        (SCAN, "text/plain", 422, "content-type"),
        (b"", "image/png", 422, "document"),
        (b"x" * (10 * 1024 * 1024 + 1), "image/jpeg", 413, "document"),
    ],
)
async def test_what_is_not_an_id_document_is_refused(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    runtime: Runtime,
    data: bytes,
    media: str,
    status: int,
    field: str,
) -> None:
    request_id = await waiting(client, admin_headers, "confirmation")
    answer = await upload(client, admin_headers, request_id, data, media)
    assert answer.status_code == status
    assert answer.json()["error"]["field"] == field
    assert await rows(runtime) == (0, 0)


async def test_acceptance_needs_a_document(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    request_id = await waiting(client, admin_headers, "confirmation")
    answer = await client.post(
        f"/admin/v1/privacy/requests/{request_id}/identity",
        json={"accepted": True, "verified_by": "DPO"},
        headers=admin_headers,
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "document"
    # Still waiting: the same kind again is the same request.
    again = await client.post(ACCOUNT, json={"kind": "confirmation"}, headers=admin_headers)
    assert (again.status_code, again.json()["id"]) == (200, request_id)
