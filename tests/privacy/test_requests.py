"""Data-subject requests from the app: confirmation, access, erasure (P19), verified and due
within 30 days (P21)."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ringfence.auth.service import DeviceInfo
from ringfence.config import KeySettings, Settings, StorageSettings
from ringfence.crypto.errors import KeyDestroyedError
from ringfence.privacy.requests import (
    RequestKind,
    RequestState,
    SubjectRequest,
    Verification,
)
from ringfence.provisioning.models import Platform
from ringfence.provisioning.service import account_subject
from ringfence.runtime import Runtime
from ringfence.storage.repos import SqlPrivacyStore
from tests.conftest import Demo
from tests.support.clock import FakeClock

LOGIN_DEVICE = {"install_id": "install-0001", "platform": "ios", "app_id": "com.example.phone"}


async def session(client: httpx.AsyncClient, demo: Demo) -> dict[str, str]:
    answer = await client.post(
        "/v1/auth/login",
        json={"login": demo.login, "password": demo.password, "device": LOGIN_DEVICE},
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def submit(client: httpx.AsyncClient, auth: dict[str, str], kind: str) -> httpx.Response:
    return await client.post("/v1/privacy/requests", json={"kind": kind}, headers=auth)


@pytest.mark.promise("P19")
@pytest.mark.promise("P21")
async def test_confirmation_is_verified_by_the_session_and_due_in_thirty_days(
    client: httpx.AsyncClient, demo: Demo, clock: FakeClock
) -> None:
    auth = await session(client, demo)
    answer = await submit(client, auth, "confirmation")
    assert answer.status_code == 201, answer.text
    request = answer.json()
    assert request["state"] == "completed"
    assert request["verified_by"] == "logged-in session"
    received = clock.now()
    assert request["received_at"].startswith(received.isoformat()[:19])
    assert request["due_at"].startswith((received + timedelta(days=30)).isoformat()[:19])
    for category in ("account identity", "devices", "sessions", "subject keys"):
        assert category in request["outcome"]
    listed = await client.get("/v1/privacy/requests", headers=auth)
    assert [r["id"] for r in listed.json()] == [request["id"]]


@pytest.mark.promise("P19")
async def test_access_gives_a_bundle_per_category_without_secrets(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    auth = await session(client, demo)
    request = (await submit(client, auth, "access")).json()
    assert request["state"] == "completed"
    export = await client.get(f"/v1/privacy/requests/{request['id']}/export", headers=auth)
    assert export.status_code == 200, export.text
    bundle = export.json()["categories"]
    assert bundle["account identity"]["display_name"] == "Alice Liddell"
    assert bundle["account identity"]["e164"] == "+41445551234"
    assert bundle["devices"][0]["app_id"] == "com.example.phone"
    assert "install-0001" not in export.text  # kept only as a keyed hash
    assert len(bundle["sessions"]) == 1
    assert bundle["SIP credentials"]["exported"] is False
    text = export.text
    account = await runtime.provisioning.account("acme", "alice")
    assert account.id in text
    assert "hash" not in text  # no token hash, no HA1


async def test_an_export_is_only_for_its_own_subject(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    auth = await session(client, demo)
    request = (await submit(client, auth, "access")).json()
    await runtime.provisioning.create_account("acme", "bob", "bob's password")
    bob = await client.post(
        "/v1/auth/login", json={"login": "bob@acme", "password": "bob's password"}
    )
    bob_auth = {"Authorization": f"Bearer {bob.json()['access_token']}"}
    stolen = await client.get(f"/v1/privacy/requests/{request['id']}/export", headers=bob_auth)
    assert stolen.status_code == 404
    confirm = (await submit(client, auth, "confirmation")).json()
    not_access = await client.get(f"/v1/privacy/requests/{confirm['id']}/export", headers=auth)
    assert not_access.status_code == 404
    assert (await client.get("/v1/privacy/requests")).status_code == 401
    assert (await client.post("/v1/privacy/requests", json={"kind": "erasure"})).status_code == 401
    bad = await submit(client, auth, "rectification-of-everything")
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "body.kind"


@pytest.mark.promise("P19")
async def test_erasure_destroys_the_key_so_an_old_copy_cannot_be_read(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = Settings(storage=StorageSettings(data_dir=tmp_path / "var"), keys=KeySettings())
    runtime = Runtime(settings, clock)
    await runtime.migrate()
    try:
        await runtime.provisioning.create_tenant("acme", "Acme", "sip.acme.example")
        await runtime.provisioning.create_account(
            "acme",
            "alice",
            "correct horse",
            display_name="Alice Liddell",
            e164="+41445551234",
            email="alice@example.org",
        )
        await runtime.auth.login(
            "alice@acme",
            "correct horse",
            "127.0.0.1",
            DeviceInfo("install-0001", Platform.IOS, "com.example.phone"),
        )
        alice = await runtime.provisioning.account_id("acme", "alice")
        await runtime.engine.dispose()
        await runtime.key_engine.dispose()
        # A backup of both databases, taken before the erasure.
        shutil.copytree(tmp_path / "var", tmp_path / "backup")
        request, new = await runtime.subject_rights.submit(
            alice, RequestKind.ERASURE, Verification.SESSION
        )
        assert (new, request.state, request.outcome) == (
            True,
            RequestState.COMPLETED,
            "erased: key destroyed",
        )
    finally:
        await runtime.aclose()
    # Not one of her values is in the backup's bytes: user name, display name, number,
    # email, install id (sealed with her key, or kept as a keyed hash).
    personal = (b"alice", b"Alice", b"41445551234", b"example.org", b"install-0001")
    for file in (tmp_path / "backup").iterdir():
        content = file.read_bytes()
        assert [value for value in personal if value in content] == [], file.name
    # The backup's main database still has the sealed row, but with today's key store (the
    # key destroyed) nothing of it opens.
    shutil.copy(tmp_path / "var" / "keys.db", tmp_path / "backup" / "keys.db")
    shutil.copy(tmp_path / "var" / "kek.key", tmp_path / "backup" / "kek.key")
    restored = Runtime(
        Settings(storage=StorageSettings(data_dir=tmp_path / "backup"), keys=KeySettings()), clock
    )
    try:
        stored = await restored.store.get_account_by_id(alice)
        assert stored is not None
        assert stored.display_name_sealed is not None
        assert b"Alice" not in stored.display_name_sealed
        with pytest.raises(KeyDestroyedError):
            await restored.provisioning.account("acme", "alice")
    finally:
        await restored.aclose()


@pytest.mark.promise("P15")
async def test_erasure_under_legal_hold_is_rejected_and_changes_nothing(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    await runtime.erasure.place_hold(
        "acme", "alice", reason="court order", reference="ORD-7", placed_by="DPO"
    )
    auth = await session(client, demo)
    answer = await submit(client, auth, "erasure")
    assert answer.status_code == 201
    assert answer.json()["state"] == "rejected"
    assert "ORD-7" in answer.json()["outcome"]
    assert (await runtime.provisioning.account("acme", "alice")).e164 == "+41445551234"
    assert await runtime.erasure.destructions() == []


@pytest.mark.promise("P21")
async def test_an_open_request_is_recognised_and_overdue_after_thirty_days(
    runtime: Runtime, demo: Demo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await runtime.provisioning.account_id("acme", "alice")
    # A request still waiting for verification (from a channel without a session).
    waiting = SubjectRequest(
        id="00000000-0000-4000-8000-000000000001",
        subject=alice,
        kind=RequestKind.ERASURE,
        state=RequestState.VERIFYING,
        received_at=clock.now(),
        due_at=clock.now() + timedelta(days=30),
    )
    await SqlPrivacyStore(runtime.engine).add_request(waiting)
    again, new = await runtime.subject_rights.submit(
        alice, RequestKind.ERASURE, Verification.SESSION
    )
    assert (again, new) == (waiting, False)
    assert (await runtime.provisioning.account("acme", "alice")).username == "alice"
    clock.advance(30 * 86_400)
    assert await runtime.subject_rights.overdue() == []
    clock.advance(1)
    assert await runtime.subject_rights.overdue() == [waiting]
    with caplog.at_level(logging.WARNING):
        await runtime.housekeeping()
    [alert] = [r for r in caplog.records if "overdue" in r.getMessage()]
    assert alert.getMessage() == "1 data-subject request(s) overdue"
    _, admin_token = await runtime.auth.create_admin_token("dpo")
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        listed = await http.get(
            "/admin/v1/privacy/requests/overdue",
            headers={"Authorization": f"Bearer {admin_token}"},
        )
    assert [r["id"] for r in listed.json()] == [waiting.id]


@pytest.mark.promise("P19")
async def test_rectification_sets_and_clears_fields_named_in_the_outcome(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    auth = await session(client, demo)
    body = {
        "kind": "rectification",
        "changes": {"display_name": "Alice P. Liddell", "e164": None, "email": "a@l.example"},
    }
    answer = await client.post("/v1/privacy/requests", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["state"] == "completed"
    assert answer.json()["outcome"] == "corrected: display_name, e164, email"
    account = await runtime.provisioning.account("acme", "alice")
    assert (account.display_name, account.e164, account.email) == (
        "Alice P. Liddell",
        None,
        "a@l.example",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "rectification"}, "changes"),
        ({"kind": "rectification", "changes": {}}, "changes"),
        ({"kind": "rectification", "changes": {"email": "not an address"}}, "changes.email"),
        ({"kind": "rectification", "changes": {"username": "bob"}}, "body.changes.username"),
        ({"kind": "access", "changes": {"email": "a@l.example"}}, "changes"),
    ],
)
async def test_a_bad_rectification_is_refused_and_records_nothing(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, body: dict[str, Any], field: str
) -> None:
    auth = await session(client, demo)
    answer = await client.post("/v1/privacy/requests", json=body, headers=auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert (await client.get("/v1/privacy/requests", headers=auth)).json() == []
    assert (await runtime.provisioning.account("acme", "alice")).display_name == "Alice Liddell"


@pytest.mark.promise("P21")
async def test_an_operator_takes_a_request_with_the_identity_evidence(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    url = "/admin/v1/tenants/acme/accounts/alice/privacy/requests"
    unverified = await client.post(url, json={"kind": "access"}, headers=admin_headers)
    assert unverified.status_code == 422
    assert (
        await client.get("/admin/v1/privacy/requests/overdue", headers=admin_headers)
    ).json() == []
    body = {"kind": "access", "verified_by": "support", "evidence": "call-back to +41445551234"}
    taken = await client.post(url, json=body, headers=admin_headers)
    assert taken.status_code == 201, taken.text
    assert taken.json()["verified_by"] == "verified by an operator"
    export = await client.get(
        f"/admin/v1/privacy/requests/{taken.json()['id']}/export", headers=admin_headers
    )
    assert export.json()["categories"]["account identity"]["username"] == "alice"
    unknown = await client.post(
        "/admin/v1/tenants/acme/accounts/mallory/privacy/requests", json=body, headers=admin_headers
    )
    assert unknown.status_code == 404


@pytest.mark.promise("P19")
async def test_a_destroyed_key_is_in_no_file_of_a_running_node(runtime: Runtime) -> None:
    """A copy of the data directory taken right after an erasure, the node still running."""
    await runtime.provisioning.create_tenant("acme", "Acme", "sip.acme.example")
    account = await runtime.provisioning.create_account("acme", "alice", "correct horse")
    wrapped = await runtime.key_store.get_wrapped_key(account_subject(account.id))
    assert wrapped is not None
    await runtime.erasure.erase_account("acme", "alice", reason="test")
    files = [path for path in runtime.settings.storage.data_dir.rglob("*") if path.is_file()]
    assert any(path.name.endswith("-wal") for path in files)  # the log is there, emptied
    assert [path.name for path in files if wrapped in path.read_bytes()] == []
    async with runtime.key_engine.connect() as connection:
        assert (await connection.exec_driver_sql("PRAGMA secure_delete")).scalar() == 1
