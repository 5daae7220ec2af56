"""The admin API: tenants, accounts and their configuration, behind an admin token.

Every refused request (401, 404, 409, 422) is also checked to have left the database as it
was: the admin listings and each account are read before and after, with the clock moved on
in between so that a stray write would show in `updated_at`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ringfence.provisioning.features import FeatureConfig
from ringfence.runtime import Runtime
from ringfence.storage.tables import accounts
from tests.api.shared import error_of
from tests.conftest import Demo
from tests.support.clock import FakeClock

A = "/admin/v1"
ACME = f"{A}/tenants/acme"
ALICE = f"{ACME}/accounts/alice"
DEFAULTS: dict[str, Any] = FeatureConfig().model_dump(mode="json")
#: Marks a test to run on SQLite and on PostgreSQL.
BOTH_BACKENDS = pytest.mark.usefixtures("backend")
GLOBEX = {"code": "globex", "name": "Globex Corp", "sip_domain": "sip.globex.example"}


@dataclass
class Admin:
    """The test client with the admin token on every request."""

    http: httpx.AsyncClient
    headers: dict[str, str]

    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        if body is None:
            return await self.http.request(method, path, headers=self.headers)
        return await self.http.request(method, path, headers=self.headers, json=body)

    async def get(self, path: str) -> httpx.Response:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.request("POST", path, body)

    async def put(self, path: str, body: Any) -> httpx.Response:
        return await self.request("PUT", path, body)

    async def patch(self, path: str, body: Any) -> httpx.Response:
        return await self.request("PATCH", path, body)

    async def delete(self, path: str) -> httpx.Response:
        return await self.request("DELETE", path)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.request(method, path, body)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    async def snapshot(self) -> dict[str, Any]:
        """Everything the admin API shows: tenants, and each tenant's accounts and configs."""
        tenants = await self.ok("GET", f"{A}/tenants")
        state: dict[str, Any] = {"tenants": tenants}
        for tenant in tenants:
            base = f"{A}/tenants/{tenant['code']}"
            state[tenant["code"]] = {
                "config": await self.ok("GET", f"{base}/config"),
                "accounts": await self.ok("GET", f"{base}/accounts?limit=500"),
            }
            for account in state[tenant["code"]]["accounts"]:
                path = f"{base}/accounts/{account['username']}"
                state[f"{tenant['code']}/{account['username']}"] = {
                    "account": await self.ok("GET", path),
                    "config": await self.ok("GET", f"{path}/config"),
                }
        return state


@pytest.fixture
def admin(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> Admin:
    return Admin(client, admin_headers)


async def test_the_snapshot_sees_any_write(admin: Admin, clock: FakeClock) -> None:
    """The "changes nothing" checks below are only as good as this."""
    before = await admin.snapshot()
    clock.advance(60)
    await admin.ok("PATCH", ALICE, {"status": "active"})  # the same status: only a write
    assert await admin.snapshot() != before


async def _login(client: httpx.AsyncClient, login: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"login": login, "password": password})


async def _access_token(client: httpx.AsyncClient, demo: Demo) -> str:
    response = await _login(client, demo.login, demo.password)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- tenants ------------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_create_a_tenant_then_list_and_get_it(admin: Admin, clock: FakeClock) -> None:
    response = await admin.post(f"{A}/tenants", GLOBEX)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created == {
        **GLOBEX,
        "upstream": None,
        "defaults": DEFAULTS,
        "created_at": clock.now().isoformat().replace("+00:00", "Z"),
    }
    listed = await admin.ok("GET", f"{A}/tenants")
    assert [t["code"] for t in listed] == ["acme", "globex"]
    assert listed[1] == created
    assert await admin.ok("GET", f"{A}/tenants/globex") == created
    assert await admin.ok("GET", f"{A}/tenants/globex/accounts") == []


async def test_create_a_tenant_with_its_own_defaults(admin: Admin) -> None:
    defaults = {**DEFAULTS, "push": {"mode": "keepalive", "instance_max_age_days": 3}}
    created = await admin.ok("POST", f"{A}/tenants", {**GLOBEX, "defaults": defaults}, 201)
    assert created["defaults"] == defaults
    assert await admin.ok("GET", f"{A}/tenants/globex/config") == defaults


async def test_patch_a_tenant_name_keeps_its_defaults(admin: Admin) -> None:
    before = await admin.ok("GET", ACME)
    after = await admin.ok("PATCH", ACME, {"name": "Acme Telephone Co."})
    assert after == {**before, "name": "Acme Telephone Co."}
    assert await admin.ok("GET", ACME) == after


async def test_patch_a_tenant_defaults_keeps_its_name(admin: Admin) -> None:
    defaults = {**DEFAULTS, "blf": {"enabled": True}}
    after = await admin.ok("PATCH", ACME, {"defaults": defaults})
    assert after["name"] == "Acme Telecom"
    assert after["defaults"] == defaults
    assert await admin.ok("GET", f"{ACME}/config") == defaults


@BOTH_BACKENDS
@pytest.mark.promise("P19")
async def test_delete_a_tenant_erases_its_accounts_and_their_keys(
    admin: Admin, runtime: Runtime
) -> None:
    await admin.ok("POST", f"{A}/tenants", GLOBEX, 201)
    alice = await admin.ok("GET", ALICE)
    subject = "account:" + alice["id"]
    assert await runtime.key_store.get_wrapped_key(subject) is not None

    response = await admin.delete(ACME)
    assert response.status_code == 204
    assert response.content == b""
    error_of(await admin.get(ACME), 404, "not_found")
    assert [t["code"] for t in await admin.ok("GET", f"{A}/tenants")] == ["globex"]
    assert await runtime.key_store.get_wrapped_key(subject) is None
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(select(accounts.c.id))).all()
    assert rows == []


async def test_tenant_config_get_and_put(admin: Admin) -> None:
    assert await admin.ok("GET", f"{ACME}/config") == DEFAULTS
    new = {
        **DEFAULTS,
        "push": {"mode": "keepalive", "instance_max_age_days": 6},
        "location": {"mode": "emergency", "country": "CH"},
        "analytics": {"enabled": True},
    }
    assert await admin.ok("PUT", f"{ACME}/config", new) == new
    assert await admin.ok("GET", f"{ACME}/config") == new
    assert (await admin.ok("GET", ACME))["defaults"] == new
    # An account without overrides follows its tenant's defaults.
    assert await admin.ok("GET", f"{ALICE}/config") == {"overrides": {}, "effective": new}


async def test_put_tenant_config_fills_in_omitted_switches_with_their_defaults(
    admin: Admin,
) -> None:
    assert await admin.ok("PUT", f"{ACME}/config", {"blf": {"enabled": True}}) == {
        **DEFAULTS,
        "blf": {"enabled": True},
    }


async def test_put_tenant_config_that_would_break_an_account_is_a_conflict(
    admin: Admin, clock: FakeClock
) -> None:
    # Alice relies on the tenant for the country her emergency location needs.
    with_country = {**DEFAULTS, "location": {"mode": "off", "country": "CH"}}
    await admin.ok("PUT", f"{ACME}/config", with_country)
    await admin.ok("PATCH", f"{ALICE}/config", {"location": {"mode": "emergency"}})
    before = await admin.snapshot()
    clock.advance(60)

    response = await admin.put(f"{ACME}/config", DEFAULTS)
    error = error_of(response, 409, "conflict")
    assert error["field"] == "config"
    assert "alice" in error["message"]
    assert await admin.snapshot() == before


# -- accounts -----------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_create_an_account_then_list_and_get_it(admin: Admin, clock: FakeClock) -> None:
    clock.advance(5)
    body = {
        "username": "bob",
        "password": "a long secret",
        "display_name": "Bob Builder",
        "e164": "+41445550000",
        "email": "bob@builder.example",
    }
    created = await admin.ok("POST", f"{ACME}/accounts", body, 201)
    now = clock.now().isoformat().replace("+00:00", "Z")
    assert created == {
        "id": created["id"],
        "tenant": "acme",
        "username": "bob",
        "aor": "sip:bob@sip.acme.example",
        "status": "active",
        "display_name": "Bob Builder",
        "e164": "+41445550000",
        "email": "bob@builder.example",
        "overrides": {},
        "config": DEFAULTS,
        "created_at": now,
        "updated_at": now,
    }
    assert "password" not in json.dumps(created)
    listed = await admin.ok("GET", f"{ACME}/accounts")
    assert [a["username"] for a in listed] == ["alice", "bob"]
    assert listed[1] == created
    assert await admin.ok("GET", f"{ACME}/accounts/bob") == created
    # The new account can log in with its password.
    assert (await _login(admin.http, "bob@acme", "a long secret")).status_code == 200


async def test_create_an_account_with_only_the_required_fields(admin: Admin) -> None:
    created = await admin.ok(
        "POST", f"{ACME}/accounts", {"username": "b.o-b_~+1", "password": "12345678"}, 201
    )
    assert created["username"] == "b.o-b_~+1"
    assert created["display_name"] is None
    assert created["e164"] is None


async def test_create_an_account_with_overrides(admin: Admin) -> None:
    overrides = {"push": {"mode": "none"}, "debug_logs": {"enabled": True}}
    body = {"username": "bob", "password": "a long secret", "config": overrides}
    created = await admin.ok("POST", f"{ACME}/accounts", body, 201)
    assert created["overrides"] == overrides
    assert created["config"] == {
        **DEFAULTS,
        "push": {"mode": "none", "instance_max_age_days": 3},
        "debug_logs": {"enabled": True},
    }
    config = await admin.ok("GET", f"{ACME}/accounts/bob/config")
    assert config == {"overrides": overrides, "effective": created["config"]}


async def test_list_accounts_pages_in_the_order_they_were_created(
    admin: Admin, clock: FakeClock
) -> None:
    # "dave" before "carol": the listing follows creation, not the (sealed) names.
    for name in ("bob", "dave", "carol"):
        clock.advance(1)
        await admin.ok(
            "POST", f"{ACME}/accounts", {"username": name, "password": "a long secret"}, 201
        )

    async def page(query: str) -> list[str]:
        return [a["username"] for a in await admin.ok("GET", f"{ACME}/accounts?{query}")]

    assert await page("") == ["alice", "bob", "dave", "carol"]
    assert await page("limit=2") == ["alice", "bob"]
    assert await page("offset=2&limit=2") == ["dave", "carol"]
    assert await page("offset=3") == ["carol"]
    assert await page("offset=4") == []


async def test_patch_an_account(admin: Admin, clock: FakeClock) -> None:
    before = await admin.ok("GET", ALICE)
    clock.advance(60)
    after = await admin.ok("PATCH", ALICE, {"display_name": "Alice L.", "e164": "+15550100002"})
    assert after == {
        **before,
        "display_name": "Alice L.",
        "e164": "+15550100002",
        "updated_at": clock.now().isoformat().replace("+00:00", "Z"),
    }
    assert await admin.ok("GET", ALICE) == after


async def test_patch_an_account_with_null_clears_and_omitted_keeps(admin: Admin) -> None:
    after = await admin.ok("PATCH", ALICE, {"display_name": None})
    assert after["display_name"] is None
    assert after["e164"] == "+41445551234"
    after = await admin.ok("PATCH", ALICE, {"e164": None})
    assert after["display_name"] is None
    assert after["e164"] is None
    assert await admin.ok("GET", ALICE) == after


async def test_patch_an_account_status(admin: Admin, demo: Demo) -> None:
    assert (await admin.ok("PATCH", ALICE, {"status": "suspended"}))["status"] == "suspended"
    error_of(await _login(admin.http, demo.login, demo.password), 403, "account_suspended")
    assert (await admin.ok("PATCH", ALICE, {"status": "active"}))["status"] == "active"
    assert (await _login(admin.http, demo.login, demo.password)).status_code == 200


@BOTH_BACKENDS
@pytest.mark.promise("P19")
async def test_delete_an_account_destroys_its_key(admin: Admin, runtime: Runtime) -> None:
    alice = await admin.ok("GET", ALICE)
    subject = "account:" + alice["id"]
    assert await runtime.key_store.get_wrapped_key(subject) is not None

    response = await admin.delete(ALICE)
    assert response.status_code == 204
    assert response.content == b""
    assert await runtime.key_store.get_wrapped_key(subject) is None
    error_of(await admin.get(ALICE), 404, "not_found")
    assert await admin.ok("GET", f"{ACME}/accounts") == []
    # The username is free again, for a new account with a new key.
    again = await admin.ok(
        "POST", f"{ACME}/accounts", {"username": "alice", "password": "a long secret"}, 201
    )
    assert again["id"] != alice["id"]
    assert await runtime.key_store.get_wrapped_key(subject) is None


# -- account configuration ----------------------------------------------------------------


@BOTH_BACKENDS
async def test_account_config_overrides_merge_over_tenant_defaults(admin: Admin) -> None:
    assert await admin.ok("GET", f"{ALICE}/config") == {"overrides": {}, "effective": DEFAULTS}

    config = await admin.ok("PATCH", f"{ALICE}/config", {"blf": {"enabled": True}})
    assert config["overrides"] == {"blf": {"enabled": True}}
    assert config["effective"] == {**DEFAULTS, "blf": {"enabled": True}}

    # A second change is laid over the first, not instead of it.
    config = await admin.ok("PATCH", f"{ALICE}/config", {"push": {"mode": "keepalive"}})
    assert config["overrides"] == {"blf": {"enabled": True}, "push": {"mode": "keepalive"}}
    assert config["effective"] == {
        **DEFAULTS,
        "blf": {"enabled": True},
        "push": {"mode": "keepalive", "instance_max_age_days": 3},
    }
    config = await admin.ok("PATCH", f"{ALICE}/config", {"push": {"instance_max_age_days": 5}})
    assert config["overrides"]["push"] == {"mode": "keepalive", "instance_max_age_days": 5}

    assert await admin.ok("GET", f"{ALICE}/config") == config
    account = await admin.ok("GET", ALICE)
    assert account["overrides"] == config["overrides"]
    assert account["config"] == config["effective"]

    # Where there is no override, a change of the tenant's defaults shows through.
    tenant = {**DEFAULTS, "calendar": {"enabled": True}, "blf": {"enabled": False}}
    await admin.ok("PUT", f"{ACME}/config", tenant)
    config = await admin.ok("GET", f"{ALICE}/config")
    assert config["effective"]["calendar"] == {"enabled": True}
    assert config["effective"]["blf"] == {"enabled": True}


@BOTH_BACKENDS
async def test_account_config_null_removes_an_override(admin: Admin) -> None:
    await admin.ok(
        "PATCH",
        f"{ALICE}/config",
        {"blf": {"enabled": True}, "push": {"mode": "none", "instance_max_age_days": 4}},
    )

    config = await admin.ok("PATCH", f"{ALICE}/config", {"blf": None})
    assert config["overrides"] == {"push": {"mode": "none", "instance_max_age_days": 4}}
    assert config["effective"]["blf"] == DEFAULTS["blf"]

    config = await admin.ok("PATCH", f"{ALICE}/config", {"push": {"mode": None}})
    assert config["overrides"] == {"push": {"instance_max_age_days": 4}}
    assert config["effective"]["push"] == {"mode": "push", "instance_max_age_days": 4}

    config = await admin.ok("PATCH", f"{ALICE}/config", {"push": {"instance_max_age_days": None}})
    assert config == {"overrides": {}, "effective": DEFAULTS}
    assert await admin.ok("GET", f"{ALICE}/config") == config


async def test_account_config_patch_with_nothing_changes_nothing(admin: Admin) -> None:
    await admin.ok("PATCH", f"{ALICE}/config", {"blf": {"enabled": True}})
    config = await admin.ok("PATCH", f"{ALICE}/config", {})
    assert config["overrides"] == {"blf": {"enabled": True}}


async def test_account_patch_config_is_merged_like_the_config_endpoint(admin: Admin) -> None:
    await admin.ok("PATCH", f"{ALICE}/config", {"blf": {"enabled": True}})
    account = await admin.ok("PATCH", ALICE, {"config": {"calendar": {"enabled": True}}})
    assert account["overrides"] == {"blf": {"enabled": True}, "calendar": {"enabled": True}}
    account = await admin.ok("PATCH", ALICE, {"config": {"blf": None}})
    assert account["overrides"] == {"calendar": {"enabled": True}}


# -- tokens -------------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_a_new_password_revokes_the_accounts_tokens(
    admin: Admin, client: httpx.AsyncClient, demo: Demo
) -> None:
    login = await _login(client, demo.login, demo.password)
    assert login.status_code == 200, login.text
    tokens = login.json()
    old = _bearer(tokens["access_token"])
    assert (await client.get("/v1/provisioning", headers=old)).status_code == 200

    await admin.ok("PATCH", ALICE, {"password": "battery staple"})

    error_of(await client.get("/v1/provisioning", headers=old), 401, "unauthorized")
    refresh = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    error_of(refresh, 401, "unauthorized")
    error_of(await _login(client, demo.login, demo.password), 401, "unauthorized")
    assert (await _login(client, demo.login, "battery staple")).status_code == 200


async def test_a_suspension_revokes_the_accounts_tokens(
    admin: Admin, client: httpx.AsyncClient, demo: Demo
) -> None:
    old = _bearer(await _access_token(client, demo))
    await admin.ok("PATCH", ALICE, {"status": "suspended"})
    error_of(await client.get("/v1/provisioning", headers=old), 401, "unauthorized")


async def test_other_changes_keep_the_accounts_tokens(
    admin: Admin, client: httpx.AsyncClient, demo: Demo
) -> None:
    old = _bearer(await _access_token(client, demo))
    await admin.ok("PATCH", ALICE, {"display_name": "Alice", "config": {"blf": {"enabled": True}}})
    response = await client.get("/v1/provisioning", headers=old)
    assert response.status_code == 200
    assert response.json()["account"]["display_name"] == "Alice"


# -- personal data at rest ----------------------------------------------------------------


def _in_the_clear(value: object, needles: list[str]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str):
        raw = value.encode()
    else:
        raw = json.dumps(value, default=str).encode()
    return [n for n in needles if n.encode() in raw]


@BOTH_BACKENDS
@pytest.mark.promise("P16")
async def test_personal_data_is_not_stored_in_the_clear(admin: Admin, runtime: Runtime) -> None:
    body = {
        "username": "carol",
        "password": "a long secret",
        "display_name": "Carol Wonderland",
        "e164": "+41445559876",
    }
    created = await admin.ok("POST", f"{ACME}/accounts", body, 201)
    await admin.ok("PATCH", f"{ACME}/accounts/carol", {"display_name": "Carol W. Second"})
    # Stored it is: the API opens it again.
    carol = await admin.ok("GET", f"{ACME}/accounts/carol")
    assert (carol["display_name"], carol["e164"]) == ("Carol W. Second", "+41445559876")
    needles = [
        "Carol Wonderland",
        "Carol W. Second",
        "Wonderland",
        "+41445559876",
        "41445559876",
        "a long secret",
        # The demo account, made through the service.
        "Alice Liddell",
        "41445551234",
    ]

    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(select(accounts))).mappings().all()
    assert {row["id"] for row in rows} == {created["id"], (await admin.ok("GET", ALICE))["id"]}
    for row in rows:
        assert row["display_name_sealed"] is not None
        assert row["e164_sealed"] is not None
        for column, value in row.items():
            assert _in_the_clear(value, needles) == [], f"{column} holds personal data"


# -- authentication -----------------------------------------------------------------------

ADMIN_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", f"{A}/tenants", None),
    ("POST", f"{A}/tenants", GLOBEX),
    ("GET", ACME, None),
    ("PATCH", ACME, {"name": "Hijacked"}),
    ("DELETE", ACME, None),
    ("GET", f"{ACME}/config", None),
    ("PUT", f"{ACME}/config", {**DEFAULTS, "analytics": {"enabled": True}}),
    ("GET", f"{ACME}/accounts", None),
    ("POST", f"{ACME}/accounts", {"username": "mallory", "password": "a long secret"}),
    ("GET", ALICE, None),
    ("PATCH", ALICE, {"password": "mallory was here"}),
    ("DELETE", ALICE, None),
    ("GET", f"{ALICE}/config", None),
    ("PATCH", f"{ALICE}/config", {"analytics": {"enabled": True}}),
]
ENDPOINT_IDS = [f"{method} {path.removeprefix(A)}" for method, path, _ in ADMIN_ENDPOINTS]


#: Authorization headers that carry no admin token.
NOT_ADMIN: list[str | None] = [
    None,
    "Bearer rfk_not-a-token-we-issued",
    "Bearer ",
    "Basic YWxpY2VAYWNtZTpjb3JyZWN0IGhvcnNl",  # alice@acme:correct horse
    "Token whatever",
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ENDPOINTS, ids=ENDPOINT_IDS)
async def test_admin_api_refuses_without_an_admin_token(
    admin: Admin, clock: FakeClock, method: str, path: str, body: Any
) -> None:
    before = await admin.snapshot()
    clock.advance(60)
    for authorization in NOT_ADMIN:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await admin.http.request(method, path, headers=headers, json=body)
        error_of(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert await admin.snapshot() == before


async def test_a_device_access_token_is_not_an_admin_token(
    admin: Admin, client: httpx.AsyncClient, demo: Demo
) -> None:
    token = await _access_token(client, demo)
    error_of(await client.get(ALICE, headers=_bearer(token)), 401, "unauthorized")
    error_of(await client.delete(ALICE, headers=_bearer(token)), 401, "unauthorized")
    assert (await admin.ok("GET", ALICE))["username"] == "alice"


async def test_a_revoked_admin_token_is_refused(
    admin: Admin, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token, secret = await runtime.auth.create_admin_token("temporary")
    assert (await client.get(f"{A}/tenants", headers=_bearer(secret))).status_code == 200
    assert await runtime.auth.revoke_admin_token(token.id)
    error_of(await client.get(f"{A}/tenants", headers=_bearer(secret)), 401, "unauthorized")


# -- conflicts ----------------------------------------------------------------------------


@BOTH_BACKENDS
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (f"{A}/tenants", {**GLOBEX, "code": "acme"}, "code"),
        (f"{A}/tenants", {**GLOBEX, "sip_domain": "sip.acme.example"}, "sip_domain"),
        (f"{ACME}/accounts", {"username": "alice", "password": "another secret"}, "username"),
    ],
    ids=["tenant-code", "sip-domain", "username"],
)
async def test_duplicates_are_a_conflict(
    admin: Admin, clock: FakeClock, path: str, body: dict[str, Any], field: str
) -> None:
    before = await admin.snapshot()
    clock.advance(60)
    error = error_of(await admin.post(path, body), 409, "conflict")
    assert error["field"] == field
    assert await admin.snapshot() == before


async def test_the_same_username_in_another_tenant_is_no_conflict(admin: Admin) -> None:
    await admin.ok("POST", f"{A}/tenants", GLOBEX, 201)
    body = {"username": "alice", "password": "another secret"}
    created = await admin.ok("POST", f"{A}/tenants/globex/accounts", body, 201)
    assert created["aor"] == "sip:alice@sip.globex.example"
    assert created["id"] != (await admin.ok("GET", ALICE))["id"]


# -- not found ----------------------------------------------------------------------------

NOBODY = f"{ACME}/accounts/nobody"
GHOST = f"{A}/tenants/ghost"


NOT_FOUND: list[tuple[str, str, Any, str]] = [
    ("GET", GHOST, None, "tenant"),
    ("PATCH", GHOST, {"name": "Ghost"}, "tenant"),
    ("DELETE", GHOST, None, "tenant"),
    ("GET", f"{GHOST}/config", None, "tenant"),
    ("PUT", f"{GHOST}/config", DEFAULTS, "tenant"),
    ("GET", f"{GHOST}/accounts", None, "tenant"),
    ("POST", f"{GHOST}/accounts", {"username": "bob", "password": "a long secret"}, "tenant"),
    ("GET", f"{GHOST}/accounts/alice", None, "tenant"),
    ("GET", NOBODY, None, "username"),
    ("PATCH", NOBODY, {"display_name": "Nobody"}, "username"),
    ("DELETE", NOBODY, None, "username"),
    ("GET", f"{NOBODY}/config", None, "username"),
    ("PATCH", f"{NOBODY}/config", {"blf": {"enabled": True}}, "username"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    NOT_FOUND,
    ids=[f"{method} {path.removeprefix(A)}" for method, path, _, _ in NOT_FOUND],
)
async def test_unknown_tenant_or_account_is_not_found(
    admin: Admin, clock: FakeClock, method: str, path: str, body: Any, field: str
) -> None:
    before = await admin.snapshot()
    clock.advance(60)
    error = error_of(await admin.request(method, path, body), 404, "not_found")
    assert error["field"] == field
    assert await admin.snapshot() == before


async def test_a_tenant_is_not_addressed_by_another_tenants_sip_domain(admin: Admin) -> None:
    # A dotless SIP domain is a valid DNS name, and so also a valid tenant code in a path.
    await admin.ok("POST", f"{A}/tenants", {**GLOBEX, "sip_domain": "globex-pbx"}, 201)
    error_of(await admin.get(f"{A}/tenants/globex-pbx"), 404, "not_found")


# -- invalid input ------------------------------------------------------------------------

ACCOUNT = {"username": "bob", "password": "a long secret"}
NO_COUNTRY = {"location": {"mode": "emergency"}}
TOO_OLD = {"push": {"instance_max_age_days": 7}}

#: Per endpoint: the case's id, the request body, and the field the error must name.
NEW_ACCOUNT: list[tuple[str, dict[str, Any], str]] = [
    ("bad-username", {**ACCOUNT, "username": "b o b"}, "body.username"),
    ("username-with-at", {**ACCOUNT, "username": "bob@x"}, "body.username"),
    ("long-username", {**ACCOUNT, "username": "b" * 65}, "body.username"),
    ("no-password", {"username": "bob"}, "body.password"),
    ("short-password", {**ACCOUNT, "password": "1234567"}, "body.password"),
    ("bad-e164", {**ACCOUNT, "e164": "0041445551234"}, "body.e164"),
    ("e164-too-long", {**ACCOUNT, "e164": "+1234567890123456"}, "body.e164"),
    ("e164-newline", {**ACCOUNT, "e164": "+41445551234\n"}, "body.e164"),
    ("empty-display-name", {**ACCOUNT, "display_name": ""}, "body.display_name"),
    ("control-display-name", {**ACCOUNT, "display_name": "Bob\nBob"}, "display_name"),
    ("unknown-key", {**ACCOUNT, "admin": True}, "body.admin"),
    ("unknown-config-key", {**ACCOUNT, "config": {"teleport": {}}}, "body.config.teleport"),
    ("max-age-7", {**ACCOUNT, "config": TOO_OLD}, "body.config.push.instance_max_age_days"),
    ("no-country", {**ACCOUNT, "config": NO_COUNTRY}, "config.location"),
]
ACCOUNT_PATCH: list[tuple[str, dict[str, Any], str]] = [
    ("short-password", {"password": "short"}, "body.password"),
    ("bad-e164", {"e164": "+0445551234"}, "body.e164"),
    ("bad-status", {"status": "deleted"}, "body.status"),
    ("control-display-name", {"display_name": "\x1b[2J"}, "display_name"),
    ("username", {"username": "alicia"}, "body.username"),
    ("unknown-config-key", {"config": {"blf": {"on": True}}}, "body.config.blf.on"),
    ("max-age-7", {"config": TOO_OLD}, "body.config.push.instance_max_age_days"),
    ("no-country", {"config": NO_COUNTRY}, "config.location"),
]
ACCOUNT_CONFIG: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-key", {"teleport": {"enabled": True}}, "body.teleport"),
    ("max-age-7", TOO_OLD, "body.push.instance_max_age_days"),
    ("max-age-2", {"push": {"instance_max_age_days": 2}}, "body.push.instance_max_age_days"),
    ("no-country", NO_COUNTRY, "config.location"),
    ("bad-country", {"location": {"country": "ch"}}, "body.location.country"),
    ("bad-push-mode", {"push": {"mode": "always"}}, "body.push.mode"),
]
NEW_TENANT: list[tuple[str, dict[str, Any], str]] = [
    ("bad-code", {**GLOBEX, "code": "Globex!"}, "body.code"),
    ("no-name", {"code": "globex", "sip_domain": "sip.globex.example"}, "body.name"),
    ("bad-domain", {**GLOBEX, "sip_domain": "sip_globex"}, "body.sip_domain"),
    ("upper-domain", {**GLOBEX, "sip_domain": "SIP.globex.example"}, "body.sip_domain"),
    ("domain-newline", {**GLOBEX, "sip_domain": "sip.globex.example\n"}, "body.sip_domain"),
    ("control-name", {**GLOBEX, "name": "Globex\tCorp"}, "name"),
    ("max-age-7", {**GLOBEX, "defaults": TOO_OLD}, "body.defaults.push.instance_max_age_days"),
    ("no-country", {**GLOBEX, "defaults": NO_COUNTRY}, "body.defaults.location"),
]
TENANT_PATCH: list[tuple[str, dict[str, Any], str]] = [
    ("empty-name", {"name": ""}, "body.name"),
    ("code", {"code": "acme2"}, "body.code"),
    ("no-country", {"defaults": NO_COUNTRY}, "body.defaults.location"),
]
TENANT_CONFIG: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-key", {"teleport": {"enabled": True}}, "body.teleport"),
    ("max-age-7", TOO_OLD, "body.push.instance_max_age_days"),
    ("no-country", NO_COUNTRY, "body.location"),
    ("too-big", {"attachments": {"max_size_bytes": 2**31}}, "body.attachments.max_size_bytes"),
]
URLS: list[tuple[str, str, str]] = [
    ("path-bad-code", f"{A}/tenants/Acme", "path.code"),
    ("path-bad-username", f"{ACME}/accounts/al%20ice", "path.username"),
    ("query-limit-0", f"{ACME}/accounts?limit=0", "query.limit"),
    ("query-limit-501", f"{ACME}/accounts?limit=501", "query.limit"),
    ("query-offset-negative", f"{ACME}/accounts?offset=-1", "query.offset"),
]
BAD_INPUT = [
    *(
        pytest.param(method, path, body, field, id=f"{name}-{case}")
        for name, method, path, cases in [
            ("new-account", "POST", f"{ACME}/accounts", NEW_ACCOUNT),
            ("account-patch", "PATCH", ALICE, ACCOUNT_PATCH),
            ("account-config", "PATCH", f"{ALICE}/config", ACCOUNT_CONFIG),
            ("new-tenant", "POST", f"{A}/tenants", NEW_TENANT),
            ("tenant-patch", "PATCH", ACME, TENANT_PATCH),
            ("tenant-config", "PUT", f"{ACME}/config", TENANT_CONFIG),
        ]
        for case, body, field in cases
    ),
    *(pytest.param("GET", path, None, field, id=case) for case, path, field in URLS),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_INPUT)
async def test_invalid_input_names_the_field_and_changes_nothing(
    admin: Admin, clock: FakeClock, method: str, path: str, body: Any, field: str
) -> None:
    await admin.ok("PATCH", f"{ALICE}/config", {"blf": {"enabled": True}})
    before = await admin.snapshot()
    clock.advance(60)
    error = error_of(await admin.request(method, path, body), 422, "invalid_input")
    assert error["field"] == field
    assert await admin.snapshot() == before


async def test_a_refused_password_change_keeps_the_old_password(
    admin: Admin, client: httpx.AsyncClient, demo: Demo
) -> None:
    old = _bearer(await _access_token(client, demo))
    error_of(await admin.patch(ALICE, {"password": "short"}), 422, "invalid_input")
    assert (await client.get("/v1/provisioning", headers=old)).status_code == 200
    assert (await _login(client, demo.login, demo.password)).status_code == 200


async def test_invalid_json_is_refused(admin: Admin) -> None:
    before = await admin.snapshot()
    response = await admin.http.post(
        f"{A}/tenants",
        content=b'{"code": "globex",',
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert await admin.snapshot() == before
