"""Post-mortem directives (P20), carried out on a verified notice of death (P21)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from ringfence.privacy.postmortem import DirectiveAction
from ringfence.provisioning.errors import InvalidInputError, NotFoundError
from ringfence.runtime import Runtime
from ringfence.storage.tables import postmortem_directives
from tests.conftest import Demo
from tests.support.clock import FakeClock

pytestmark = pytest.mark.promise("P20")

NOTICE = {"evidence": "death certificate ZH-2026-0099", "verified_by": "support, R. Keller"}
ACCOUNT = "/admin/v1/tenants/acme/accounts/alice"


async def session(client: httpx.AsyncClient, demo: Demo) -> dict[str, str]:
    answer = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": demo.password}
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def directives(runtime: Runtime) -> int:
    async with runtime.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(postmortem_directives))
    return int(count or 0)


async def test_a_hand_over_gives_the_bundle_to_the_trustee_once_then_erases(
    client: httpx.AsyncClient,
    demo: Demo,
    admin_headers: dict[str, str],
    runtime: Runtime,
    clock: FakeClock,
) -> None:
    auth = await session(client, demo)
    trustee = "Bob Liddell, +41445559876"
    put = await client.put(
        "/v1/privacy/directive", json={"action": "hand over", "trustee": trustee}, headers=auth
    )
    assert put.status_code == 200, put.text
    assert (await client.get("/v1/privacy/directive", headers=auth)).json()["trustee"] == trustee
    # The trustee is personal data: sealed with the account's key, not stored in the clear.
    async with runtime.engine.connect() as connection:
        sealed = await connection.scalar(select(postmortem_directives.c.trustee_sealed))
    assert sealed is not None
    assert b"Bob" not in sealed
    clock.advance(365 * 86_400)
    carried = await client.post(f"{ACCOUNT}/death-notice", json=NOTICE, headers=admin_headers)
    assert carried.status_code == 200, carried.text
    body = carried.json()
    assert body["trustee"] == trustee
    assert body["bundle"]["categories"]["account identity"]["display_name"] == "Alice Liddell"
    assert body["request"]["kind"] == "post-mortem"
    assert body["request"]["verified_by"] == "verified notice of death"
    assert body["request"]["state"] == "completed"
    assert "ZH-2026-0099" in body["request"]["outcome"]
    # Then erased: the account, its key and its directive row.
    assert (await client.get(ACCOUNT, headers=admin_headers)).status_code == 404
    assert await directives(runtime) == 0
    [destroyed] = await runtime.erasure.destructions()
    assert destroyed.reason == "post-mortem directive"


async def test_without_a_directive_the_account_is_erased(runtime: Runtime, demo: Demo) -> None:
    carried = await runtime.postmortem.notice_of_death("acme", "alice", **NOTICE)
    assert (carried.request.state.value, carried.trustee, carried.bundle) == (
        "completed",
        None,
        None,
    )
    with pytest.raises(NotFoundError):
        await runtime.provisioning.account("acme", "alice")


@pytest.mark.promise("P21")
@pytest.mark.parametrize("missing", ["evidence", "verified_by"])
async def test_an_unverified_notice_changes_nothing(
    runtime: Runtime, demo: Demo, missing: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{missing}: required"):
        await runtime.postmortem.notice_of_death("acme", "alice", **{**NOTICE, missing: " "})
    assert (await runtime.provisioning.account("acme", "alice")).username == "alice"
    alice = await runtime.provisioning.account_id("acme", "alice")
    assert await runtime.subject_rights.of(alice) == []


@pytest.mark.promise("P15")
async def test_under_legal_hold_nothing_is_handed_over_or_erased(
    runtime: Runtime, demo: Demo
) -> None:
    alice = await runtime.provisioning.account_id("acme", "alice")
    await runtime.postmortem.set_directive(alice, DirectiveAction.HAND_OVER, "Bob")
    await runtime.erasure.place_hold(
        "acme", "alice", reason="estate dispute", reference="ORD-9", placed_by="DPO"
    )
    carried = await runtime.postmortem.notice_of_death("acme", "alice", **NOTICE)
    assert carried.request.state.value == "rejected"
    assert "ORD-9" in (carried.request.outcome or "")
    assert (carried.trustee, carried.bundle) == (None, None)
    assert (await runtime.provisioning.account("acme", "alice")).username == "alice"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "hand over"}, "trustee"),
        ({"action": "erase", "trustee": "Bob"}, "trustee"),
        ({"action": "sell"}, "body.action"),
    ],
)
async def test_a_bad_directive_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, body: dict[str, str], field: str
) -> None:
    auth = await session(client, demo)
    answer = await client.put("/v1/privacy/directive", json=body, headers=auth)
    assert 400 <= answer.status_code < 500
    assert answer.json()["error"]["field"] == field
    assert await directives(runtime) == 0


async def test_a_directive_can_be_replaced_and_withdrawn(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    auth = await session(client, demo)
    url = "/v1/privacy/directive"
    assert (await client.get(url, headers=auth)).status_code == 404
    await client.put(url, json={"action": "hand over", "trustee": "Bob"}, headers=auth)
    replaced = await client.put(url, json={"action": "erase"}, headers=auth)
    assert replaced.json()["trustee"] is None
    assert (await client.get(url, headers=auth)).json()["action"] == "erase"
    assert (await client.delete(url, headers=auth)).status_code == 204
    assert (await client.delete(url, headers=auth)).status_code == 404
    assert (await client.put(url, json={"action": "erase"})).status_code == 401
