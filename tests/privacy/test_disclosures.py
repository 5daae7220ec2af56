"""The disclosure register (P17): disclosure only under legal process, and on the record."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from ringfence.privacy.disclosures import DisclosureStatus
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from ringfence.runtime import Runtime
from tests.conftest import Demo
from tests.support.clock import FakeClock

pytestmark = pytest.mark.promise("P17")

REQUEST: dict[str, Any] = {
    "authority": "Zurich public prosecutor",
    "reference": "ST.2026.0412",
    "legal_basis": "Art. 273 Swiss Criminal Procedure Code: production order of 2026-01-04",
    "requested": "subscriber data and registrations of alice@acme, 2025-12-01..31",
}


@pytest.mark.usefixtures("backend")  # SQLite and PostgreSQL
async def test_a_request_is_recorded_then_decided_once(
    runtime: Runtime, demo: Demo, clock: FakeClock
) -> None:
    register = runtime.disclosures
    received = await register.record(**REQUEST, subject=("acme", "alice"))
    alice = await runtime.provisioning.account_id("acme", "alice")
    assert (received.status, received.subject, received.received_at) == (
        DisclosureStatus.RECEIVED,
        alice,
        clock.now(),
    )
    clock.advance(3 * 24 * 3600)
    decided = await register.decide(
        received.id,
        disclosed=True,
        given="name and number of the account; no registrations (none are stored)",
        approved_by="DPO, J. Muster",
    )
    assert decided.status is DisclosureStatus.DISCLOSED
    assert decided.decided_at == received.received_at + timedelta(days=3)
    assert await register.get(received.id) == decided
    # Decisions are final: a second one, even the same, changes nothing.
    with pytest.raises(ConflictError, match="decided already"):
        await register.decide(received.id, disclosed=False, given="x", approved_by="y")
    assert await register.entries() == [decided]


async def test_a_refusal_is_on_the_record_too(runtime: Runtime, clock: FakeClock) -> None:
    received = await runtime.disclosures.record(**{**REQUEST, "legal_basis": "an e-mail"})
    refused = await runtime.disclosures.decide(
        received.id,
        disclosed=False,
        given="no court order: a request by e-mail is not legal process",
        approved_by="legal team",
    )
    assert refused.status is DisclosureStatus.REFUSED
    assert refused.subject is None


@pytest.mark.parametrize("field", ["authority", "reference", "legal_basis", "requested"])
async def test_nothing_is_recorded_without_its_legal_process(runtime: Runtime, field: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}: required") as caught:
        await runtime.disclosures.record(**{**REQUEST, field: "  "})
    assert caught.value.field == field
    assert await runtime.disclosures.entries() == []


async def test_bad_text_and_unknown_subjects_are_refused(runtime: Runtime, demo: Demo) -> None:
    with pytest.raises(InvalidInputError, match="authority: at most 200"):
        await runtime.disclosures.record(**{**REQUEST, "authority": "x" * 201})
    with pytest.raises(InvalidInputError, match="requested: at most"):
        await runtime.disclosures.record(**{**REQUEST, "requested": "a\x00b"})
    with pytest.raises(NotFoundError):
        await runtime.disclosures.record(**REQUEST, subject=("acme", "mallory"))
    with pytest.raises(NotFoundError):
        await runtime.disclosures.decide(
            "00000000-0000-4000-8000-000000000000", disclosed=True, given="x", approved_by="y"
        )
    assert await runtime.disclosures.entries() == []
    # Several lines are fine: an order's wording is often quoted.
    entry = await runtime.disclosures.record(**{**REQUEST, "legal_basis": "Order\n\tpoint 2"})
    assert entry.legal_basis == "Order\n\tpoint 2"


async def test_an_entry_outlives_the_erasure_of_its_subject(runtime: Runtime, demo: Demo) -> None:
    entry = await runtime.disclosures.record(**REQUEST, subject=("acme", "alice"))
    await runtime.provisioning.delete_account("acme", "alice")
    assert (await runtime.disclosures.get(entry.id)).subject == entry.subject


async def test_the_admin_api_keeps_the_register(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = {**REQUEST, "subject": {"tenant": "acme", "username": "alice"}}
    created = await client.post("/admin/v1/disclosures", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["status"] == "received"
    assert entry["legal_basis"] == REQUEST["legal_basis"]
    decision = {"disclosed": True, "given": "name and number", "approved_by": "DPO"}
    url = f"/admin/v1/disclosures/{entry['id']}"
    decided = await client.post(f"{url}/decision", json=decision, headers=admin_headers)
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "disclosed"
    again = await client.post(f"{url}/decision", json=decision, headers=admin_headers)
    assert again.status_code == 409
    assert again.json()["error"]["field"] == "status"
    listed = await client.get("/admin/v1/disclosures", headers=admin_headers)
    assert [e["id"] for e in listed.json()] == [entry["id"]]
    assert (await client.get(url, headers=admin_headers)).json() == decided.json()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"legal_basis": ""}, "legal_basis"),
        ({"authority": None}, "authority"),
        ({"subject": {"tenant": "acme", "username": "mallory"}}, "username"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_the_admin_api_names_the_bad_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str], change: dict[str, object], field: str
) -> None:
    body = {**REQUEST, **change}
    answer = await client.post("/admin/v1/disclosures", json=body, headers=admin_headers)
    assert 400 <= answer.status_code < 500
    assert field in answer.json()["error"]["field"]
    listed = await client.get("/admin/v1/disclosures", headers=admin_headers)
    assert listed.json() == []


async def test_the_register_needs_an_admin(client: httpx.AsyncClient, demo: Demo) -> None:
    assert (await client.get("/admin/v1/disclosures")).status_code == 401
    answer = await client.post("/admin/v1/disclosures", json=REQUEST)
    assert answer.status_code == 401
