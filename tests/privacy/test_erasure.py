"""Legal holds stop erasure; each destruction is recorded without the data (P15)."""

from __future__ import annotations

import httpx
import pytest

from ringfence.privacy.erasure import LegalHoldError
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from ringfence.runtime import Runtime
from tests.conftest import Demo
from tests.support.clock import FakeClock

pytestmark = pytest.mark.promise("P15")

HOLD = {"reason": "Production order pending", "reference": "ST.2026.0412", "placed_by": "DPO"}


@pytest.mark.usefixtures("backend")  # SQLite and PostgreSQL
async def test_a_held_account_is_not_erased_until_the_hold_is_released(
    runtime: Runtime, demo: Demo, clock: FakeClock
) -> None:
    alice = await runtime.provisioning.account_id("acme", "alice")
    hold = await runtime.erasure.place_hold("acme", "alice", **HOLD)
    assert (hold.subject, hold.active, hold.placed_at) == (alice, True, clock.now())
    with pytest.raises(LegalHoldError, match=r"under legal hold \(ST.2026.0412\)"):
        await runtime.erasure.erase_account("acme", "alice", reason="test")
    # Nothing changed: the account opens, its key is there, nothing is recorded destroyed.
    assert (await runtime.provisioning.account("acme", "alice")).display_name == "Alice Liddell"
    assert await runtime.erasure.destructions() == []
    clock.advance(86_400)
    released = await runtime.erasure.release_hold(hold.id, released_by="court decided")
    assert (released.active, released.released_at) == (False, clock.now())
    with pytest.raises(ConflictError, match="released already"):
        await runtime.erasure.release_hold(hold.id, released_by="again")
    # The release is on record, and now erasure goes ahead.
    assert await runtime.erasure.holds("acme", "alice") == [released]
    await runtime.erasure.erase_account("acme", "alice", reason="closed by the customer")
    with pytest.raises(NotFoundError):
        await runtime.provisioning.account("acme", "alice")
    [destroyed] = await runtime.erasure.destructions()
    assert (destroyed.subject, destroyed.at, destroyed.reason) == (
        alice,
        clock.now(),
        "closed by the customer",
    )
    assert {"account identity", "SIP credentials", "sessions", "subject keys"} <= set(
        destroyed.categories
    )


async def test_a_tenant_with_a_held_account_is_not_deleted(runtime: Runtime, demo: Demo) -> None:
    await runtime.provisioning.create_account("acme", "bob", "bob's password")
    await runtime.erasure.place_hold("acme", "bob", **HOLD)
    with pytest.raises(LegalHoldError):
        await runtime.erasure.erase_tenant("acme", reason="provider leaves")
    assert {a.username for a in await runtime.provisioning.accounts("acme")} == {"alice", "bob"}
    [hold] = await runtime.erasure.holds("acme", "bob")
    await runtime.erasure.release_hold(hold.id, released_by="DPO")
    await runtime.erasure.erase_tenant("acme", reason="provider leaves")
    destroyed = await runtime.erasure.destructions()
    assert len(destroyed) == 2
    assert {d.reason for d in destroyed} == {"provider leaves"}


@pytest.mark.parametrize("field", ["reason", "reference", "placed_by"])
async def test_a_hold_needs_its_reason_reference_and_author(
    runtime: Runtime, demo: Demo, field: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}: required"):
        await runtime.erasure.place_hold("acme", "alice", **{**HOLD, field: ""})
    assert await runtime.erasure.holds("acme", "alice") == []


async def test_the_record_holds_no_personal_data(runtime: Runtime, demo: Demo) -> None:
    await runtime.erasure.erase_account("acme", "alice", reason="test")
    [destroyed] = await runtime.erasure.destructions()
    text = repr(destroyed)
    for personal in ("alice", "Alice", "+41445551234", "correct horse"):
        assert personal not in text


async def test_the_admin_api_holds_and_releases(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    account = "/admin/v1/tenants/acme/accounts/alice"
    placed = await client.post(f"{account}/holds", json=HOLD, headers=admin_headers)
    assert placed.status_code == 201, placed.text
    refused = await client.delete(account, headers=admin_headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["field"] == "account"
    assert refused.json()["error"]["code"] == "legal_hold"
    assert "ST.2026.0412" in refused.json()["error"]["message"]
    tenant = await client.delete("/admin/v1/tenants/acme", headers=admin_headers)
    assert tenant.status_code == 409
    assert (await client.get(account, headers=admin_headers)).status_code == 200
    hold_id = placed.json()["id"]
    released = await client.post(
        f"/admin/v1/holds/{hold_id}/release", json={"released_by": "DPO"}, headers=admin_headers
    )
    assert released.status_code == 200
    assert released.json()["released_by"] == "DPO"
    listed = await client.get(f"{account}/holds", headers=admin_headers)
    assert [h["id"] for h in listed.json()] == [hold_id]
    assert (await client.delete(account, headers=admin_headers)).status_code == 204
    record = await client.get("/admin/v1/destructions", headers=admin_headers)
    [entry] = record.json()
    assert entry["reason"] == "account deleted by an admin"
    assert "account identity" in entry["categories"]


async def test_holds_on_unknown_accounts_are_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    answer = await client.post(
        "/admin/v1/tenants/acme/accounts/mallory/holds", json=HOLD, headers=admin_headers
    )
    assert answer.status_code == 404
    missing = await client.post(
        "/admin/v1/holds/00000000-0000-4000-8000-000000000000/release",
        json={"released_by": "x"},
        headers=admin_headers,
    )
    assert missing.status_code == 404
