"""Overlay mode over the HTTP API: a tenant's upstream PBX, and SIP accounts in push instances.

- The admin API keeps a tenant's `upstream` (create, get, list, patch: absent leaves it,
  null removes it, a new one replaces it) and refuses a bad one, changing nothing.
- A push instance may carry the device's `sip_account` only over a confidential channel
  (HTTPS; plain HTTP from loopback only with `[http] trust_loopback`): otherwise 403
  `https_required` and nothing stored (P2);
  only for a tenant with an upstream, and only a valid one (422 naming the field).
- The SIP account is sealed with the instance's own key: nothing of it shows in the main
  database, and DELETE destroys the key, so a copy of the blob cannot be opened (P3).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ringfence.config import HTTPSettings
from ringfence.pushgw.instances import PushInstance, subject_of
from ringfence.runtime import Runtime
from ringfence.storage.tables import metadata, push_instances, subject_keys
from tests.api.shared import error_of, open_with, sealed_rows
from tests.conftest import Demo
from tests.support.clock import FakeClock

A = "/admin/v1"
ACME = f"{A}/tenants/acme"
GLOBEX = {"code": "globex", "name": "Globex Corp", "sip_domain": "sip.globex.example"}
#: Marks a test to run on SQLite and on PostgreSQL.
BOTH_BACKENDS = pytest.mark.usefixtures("backend")
DAY = 86_400

#: The tenant's PBX; deliberately unlike the SIP account's domain (see the P3 test).
UPSTREAM = {"host": "pbx.acme-upstream.example", "transport": "tls", "expires_s": 600}
VOIP = "a1" * 32
APNS_BODY: dict[str, Any] = {
    "service": "apns",
    "app_id": "org.example.phone",
    "call_token": VOIP,
    "sip_instance": "<urn:uuid:00000000-0000-4000-8000-000000000001>",
}
SIP_USER = "ext-4711-carol"
SIP_AUTH_USER = "auth-4711-carol"
SIP_DOMAIN = "voice.carol-example.net"
SIP_PASSWORD = "s3cret-Pa55word-xyz"
SIP_ACCOUNT = {
    "username": SIP_USER,
    "domain": SIP_DOMAIN,
    "auth_username": SIP_AUTH_USER,
    "password": SIP_PASSWORD,
}
AOR = f"sip:{SIP_USER}@{SIP_DOMAIN}"
REMOTE_CLIENT = ("203.0.113.9", 4000)


# -- helpers ------------------------------------------------------------------------------


async def _admin(
    client: httpx.AsyncClient, headers: dict[str, str], method: str, path: str, body: Any = None
) -> httpx.Response:
    if body is None:
        return await client.request(method, path, headers=headers)
    return await client.request(method, path, headers=headers, json=body)


async def _ok(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    method: str,
    path: str,
    body: Any = None,
    status: int = 200,
) -> Any:
    response = await _admin(client, headers, method, path, body)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app over HTTPS, as an app reaches it (P2), from loopback."""
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        yield http


@asynccontextmanager
async def _client_from(
    runtime: Runtime, address: tuple[str, int], base_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app, as seen from `address`, over `base_url`'s scheme."""
    transport = httpx.ASGITransport(app=runtime.app(), client=address)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


async def _put(
    client: httpx.AsyncClient,
    demo: Demo,
    selector: str = "phone-1",
    sip_account: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {**APNS_BODY}
    if sip_account is not None:
        body["sip_account"] = sip_account
    return await client.put(
        f"/v1/push/instances/{selector}",
        json=body,
        auth=(demo.login, demo.password),
        headers=headers,
    )


async def _listed(client: httpx.AsyncClient, demo: Demo) -> list[dict[str, Any]]:
    response = await client.get("/v1/push/instances", auth=(demo.login, demo.password))
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


async def _rows(runtime: Runtime, table: Any = push_instances) -> int:
    engine = runtime.key_engine if table is subject_keys else runtime.engine
    async with engine.connect() as connection:
        query = select(func.count()).select_from(table)
        if table is subject_keys:
            query = query.where(subject_keys.c.subject.like("push-instance:%"))
        return int((await connection.execute(query)).scalar_one())


async def _nothing_stored(runtime: Runtime) -> None:
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0


async def _instances(runtime: Runtime) -> list[PushInstance]:
    account_id = (await runtime.provisioning.accounts("acme"))[0].id
    return await runtime.push_instances.of(account_id)


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


async def _main_database_text(runtime: Runtime) -> str:
    """Every value of every row of every table of the main database, as one text."""
    parts: list[str] = []
    async with runtime.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in await connection.execute(select(table)):
                parts.extend(_as_text(value) for value in row)
    return "\n".join(parts)


@pytest.fixture
async def overlay(client: httpx.AsyncClient, admin_headers: dict[str, str], demo: Demo) -> Demo:
    """The demo account, its tenant now in overlay mode (through the admin API)."""
    await _ok(client, admin_headers, "PATCH", ACME, {"upstream": UPSTREAM})
    return demo


# -- the tenant's upstream PBX ----------------------------------------------------------------


@BOTH_BACKENDS
async def test_tenant_upstream_is_kept_shown_patched_and_removed(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    given = {
        "host": "PBX.Globex.Example",
        "port": 5061,
        "transport": "tls",
        "outbound_proxy": "SBC.Globex.Example:5070",
        "expires_s": 600,
    }
    expected = {
        "host": "pbx.globex.example",
        "port": 5061,
        "transport": "tls",
        "outbound_proxy": "sbc.globex.example:5070",
        "expires_s": 600,
    }
    created = await _ok(
        client, admin_headers, "POST", f"{A}/tenants", {**GLOBEX, "upstream": given}, 201
    )
    assert created["upstream"] == expected
    path = f"{A}/tenants/globex"
    assert await _ok(client, admin_headers, "GET", path) == created
    listed = await _ok(client, admin_headers, "GET", f"{A}/tenants")
    assert {t["code"]: t["upstream"] for t in listed} == {"acme": None, "globex": expected}

    # `upstream` absent: kept, whatever else changes.
    renamed = await _ok(client, admin_headers, "PATCH", path, {"name": "Globex Ltd"})
    assert renamed["name"] == "Globex Ltd"
    assert renamed["upstream"] == expected
    defaults = await _ok(client, admin_headers, "GET", f"{path}/config")
    await _ok(client, admin_headers, "PUT", f"{path}/config", defaults)
    assert (await _ok(client, admin_headers, "GET", path))["upstream"] == expected

    # A new upstream replaces the old one as a whole: its defaults, not the old fields.
    replaced = await _ok(client, admin_headers, "PATCH", path, {"upstream": {"host": "192.0.2.7"}})
    fresh = {
        "host": "192.0.2.7",
        "port": None,
        "transport": "udp",
        "outbound_proxy": None,
        "expires_s": 3600,
    }
    assert replaced["upstream"] == fresh
    assert (await _ok(client, admin_headers, "GET", path))["upstream"] == fresh

    # null: standalone again; a later PATCH without it leaves it so.
    removed = await _ok(client, admin_headers, "PATCH", path, {"upstream": None})
    assert removed["upstream"] is None
    assert removed["name"] == "Globex Ltd"
    await _ok(client, admin_headers, "PATCH", path, {"name": "Globex"})
    assert (await _ok(client, admin_headers, "GET", path))["upstream"] is None


BAD_UPSTREAMS: list[Any] = [
    pytest.param({"host": "pbx example"}, "upstream.host", id="host-space"),
    pytest.param({"host": "sip:pbx.example.com"}, "upstream.host", id="host-scheme"),
    pytest.param({"host": "pbx.example.com:5060"}, "upstream.host", id="host-port"),
    pytest.param({"host": ""}, "body.upstream.host", id="host-empty"),
    pytest.param({"port": 5060}, "body.upstream.host", id="host-missing"),
    pytest.param({"host": "pbx.example.com", "port": 0}, "body.upstream.port", id="port-0"),
    pytest.param({"host": "pbx.example.com", "port": 70000}, "body.upstream.port", id="port-big"),
    pytest.param(
        {"host": "pbx.example.com", "transport": "sctp"}, "body.upstream.transport", id="sctp"
    ),
    pytest.param(
        {"host": "pbx.example.com", "expires_s": 10}, "body.upstream.expires_s", id="expires-10"
    ),
    pytest.param(
        {"host": "pbx.example.com", "expires_s": 86_401},
        "body.upstream.expires_s",
        id="expires-long",
    ),
    pytest.param(
        {"host": "pbx.example.com", "outbound_proxy": "bad host:99999"},
        "upstream.outbound_proxy",
        id="proxy-bad-host",
    ),
    pytest.param(
        {"host": "pbx.example.com", "outbound_proxy": "sbc.example.com:99999"},
        "upstream.outbound_proxy",
        id="proxy-port-big",
    ),
    pytest.param(
        {"host": "pbx.example.com", "outbound_proxy": "sbc.example.com:0"},
        "upstream.outbound_proxy",
        id="proxy-port-0",
    ),
    pytest.param(
        {"host": "pbx.example.com", "user": "x"}, "body.upstream.user", id="unknown-field"
    ),
]


@BOTH_BACKENDS
@pytest.mark.parametrize(("upstream", "field"), BAD_UPSTREAMS)
async def test_bad_upstream_on_create_is_refused_and_creates_nothing(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    upstream: dict[str, Any],
    field: str,
) -> None:
    before = await _ok(client, admin_headers, "GET", f"{A}/tenants")
    response = await _admin(
        client, admin_headers, "POST", f"{A}/tenants", {**GLOBEX, "upstream": upstream}
    )
    assert error_of(response, 422, "invalid_input")["field"] == field
    error_of(await _admin(client, admin_headers, "GET", f"{A}/tenants/globex"), 404, "not_found")
    assert await _ok(client, admin_headers, "GET", f"{A}/tenants") == before


@pytest.mark.parametrize(("upstream", "field"), BAD_UPSTREAMS)
async def test_bad_upstream_on_patch_leaves_the_tenant_as_it_was(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    clock: FakeClock,
    upstream: dict[str, Any],
    field: str,
) -> None:
    await _ok(client, admin_headers, "PATCH", ACME, {"upstream": UPSTREAM})
    before = await _ok(client, admin_headers, "GET", ACME)
    clock.advance(60)
    response = await _admin(
        client, admin_headers, "PATCH", ACME, {"name": "Renamed", "upstream": upstream}
    )
    assert error_of(response, 422, "invalid_input")["field"] == field
    assert await _ok(client, admin_headers, "GET", ACME) == before


# -- a SIP account in a push instance: HTTPS only (P2) -----------------------------------------


@pytest.mark.promise("P2")
async def test_sip_account_over_plain_http_from_afar_is_refused_and_not_stored(
    client: httpx.AsyncClient, overlay: Demo, runtime: Runtime
) -> None:
    async with _client_from(runtime, REMOTE_CLIENT, "http://testserver") as remote:
        refused = await _put(remote, overlay, sip_account=SIP_ACCOUNT)
        error = error_of(refused, 403, "https_required")
        assert error["field"] == "sip_account"
        assert SIP_PASSWORD not in refused.text
        # A forged header changes nothing: the app trusts the connection, not the request.
        forged = await _put(
            remote,
            overlay,
            sip_account=SIP_ACCOUNT,
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"},
        )
        assert error_of(forged, 403, "https_required")["field"] == "sip_account"
        assert await _listed(client, overlay) == []
        await _nothing_stored(runtime)
        # It is the SIP account that needs a confidential channel, not the push tokens.
        plain = await _put(remote, overlay)
        assert plain.status_code == 201, plain.text
        assert plain.json()["sip_aor"] is None


@pytest.mark.promise("P2")
async def test_refused_renewal_leaves_the_instance_as_it_was(
    client: httpx.AsyncClient, overlay: Demo, runtime: Runtime
) -> None:
    assert (await _put(client, overlay, sip_account=SIP_ACCOUNT)).status_code == 201
    [before] = await _instances(runtime)
    changed = {**SIP_ACCOUNT, "password": "another-Pa55word", "username": "someone-else"}
    async with _client_from(runtime, REMOTE_CLIENT, "http://testserver") as remote:
        error_of(await _put(remote, overlay, sip_account=changed), 403, "https_required")
    [after] = await _instances(runtime)
    assert after == before
    assert after.report.sip_account is not None
    assert after.report.sip_account.password == SIP_PASSWORD


@pytest.mark.promise("P2")
@pytest.mark.parametrize(
    ("address", "base_url"),
    [
        pytest.param(REMOTE_CLIENT, "https://testserver", id="https-from-afar"),
        pytest.param(("127.0.0.1", 4000), "https://testserver", id="https-loopback"),
    ],
)
async def test_sip_account_over_a_confidential_channel_is_accepted(
    client: httpx.AsyncClient,
    overlay: Demo,
    runtime: Runtime,
    address: tuple[str, int],
    base_url: str,
) -> None:
    async with _client_from(runtime, address, base_url) as http:
        response = await _put(http, overlay, sip_account=SIP_ACCOUNT)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sip_aor"] == AOR
    assert SIP_PASSWORD not in response.text
    [listed] = await _listed(client, overlay)
    assert listed["sip_aor"] == AOR
    assert await _rows(runtime) == 1
    assert await _rows(runtime, subject_keys) == 1


@pytest.mark.promise("P2")
@pytest.mark.parametrize("address", [("127.0.0.1", 4000), ("::1", 4000)], ids=["v4", "v6"])
async def test_plain_http_from_loopback_counts_only_when_trusted(
    overlay: Demo, runtime: Runtime, address: tuple[str, int]
) -> None:
    # By default a proxy on this host that forwards the internet's plain HTTP would look
    # like loopback: refused.
    async with _client_from(runtime, address, "http://testserver") as http:
        refused = await _put(http, overlay, sip_account=SIP_ACCOUNT)
    assert error_of(refused, 403, "https_required")["field"] == "sip_account"
    await _nothing_stored(runtime)
    # `[http] trust_loopback`: development on one machine.
    trusting = replace(runtime.services, http=HTTPSettings(trust_loopback=True))
    app = runtime.app()
    app.state.services = trusting
    transport = httpx.ASGITransport(app=app, client=address)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        accepted = await _put(http, overlay, sip_account=SIP_ACCOUNT)
    assert accepted.status_code == 201, accepted.text


# -- a SIP account in a push instance: checked, or nothing stored ------------------------------


async def test_sip_account_for_a_standalone_tenant_is_refused(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    response = await _put(client, demo, sip_account=SIP_ACCOUNT)
    assert error_of(response, 422, "invalid_input")["field"] == "sip_account"
    assert await _listed(client, demo) == []
    await _nothing_stored(runtime)


async def test_sip_account_refused_once_the_upstream_is_removed(
    client: httpx.AsyncClient, admin_headers: dict[str, str], overlay: Demo, runtime: Runtime
) -> None:
    await _ok(client, admin_headers, "PATCH", ACME, {"upstream": None})
    response = await _put(client, overlay, sip_account=SIP_ACCOUNT)
    assert error_of(response, 422, "invalid_input")["field"] == "sip_account"
    await _nothing_stored(runtime)


HA1 = "0123456789abcdef" * 2
BAD_SIP_ACCOUNTS: list[Any] = [
    pytest.param({"ha1": HA1}, "sip_account.password", id="password-and-ha1"),
    pytest.param({"password": None}, "sip_account.password", id="neither"),
    pytest.param({"password": None, "ha1": "zz" * 16}, "sip_account.ha1", id="ha1-not-hex"),
    pytest.param({"password": None, "ha1": "abc"}, "body.sip_account.ha1", id="ha1-short"),
    pytest.param({"password": "pass\nword"}, "sip_account.password", id="password-control"),
    pytest.param({"username": "carol smith"}, "sip_account.username", id="username-space"),
    pytest.param({"username": "carol@x"}, "sip_account.username", id="username-at"),
    pytest.param({"username": ""}, "body.sip_account.username", id="username-empty"),
    pytest.param({"auth_username": "a b"}, "sip_account.auth_username", id="auth-username"),
    pytest.param({"domain": "pbx example.com"}, "sip_account.domain", id="domain-space"),
    pytest.param({"domain": "sip:pbx.example.com"}, "sip_account.domain", id="domain-scheme"),
    pytest.param({"domain": "pbx.example.com:5x"}, "sip_account.domain", id="domain-port-text"),
    pytest.param(
        {"domain": "pbx.example.com:99999"},
        "sip_account.domain",
        id="domain-port-big",
    ),
    pytest.param(
        {"domain": "pbx.example.com:0"},
        "sip_account.domain",
        id="domain-port-0",
    ),
    pytest.param(
        {"domain": "pbx.example.com:"},
        "sip_account.domain",
        id="domain-port-empty",
    ),
    pytest.param({"realm": "pbx"}, "body.sip_account.realm", id="unknown-field"),
]


@pytest.mark.parametrize(("change", "field"), BAD_SIP_ACCOUNTS)
async def test_invalid_sip_account_names_the_field_and_stores_nothing(
    client: httpx.AsyncClient,
    overlay: Demo,
    runtime: Runtime,
    change: dict[str, Any],
    field: str,
) -> None:
    sip_account = {
        name: value for name, value in {**SIP_ACCOUNT, **change}.items() if value is not None
    }
    response = await _put(client, overlay, sip_account=sip_account)
    assert error_of(response, 422, "invalid_input")["field"] == field
    assert SIP_PASSWORD not in response.text
    assert await _listed(client, overlay) == []
    await _nothing_stored(runtime)


async def test_ha1_and_domain_are_normalised(
    client: httpx.AsyncClient, overlay: Demo, runtime: Runtime
) -> None:
    given = {"username": SIP_USER, "domain": "Voice.Carol-Example.NET", "ha1": HA1.upper()}
    response = await _put(client, overlay, sip_account=given)
    assert response.status_code == 201, response.text
    assert response.json()["sip_aor"] == AOR
    [instance] = await _instances(runtime)
    account = instance.report.sip_account
    assert account is not None
    assert (account.username, account.domain, account.ha1) == (SIP_USER, SIP_DOMAIN, HA1)
    assert account.password is None
    assert account.auth_username is None


# -- sealed with the instance's own key, erased with it (P3) -----------------------------------


@BOTH_BACKENDS
@pytest.mark.promise("P3")
async def test_sip_account_leaves_no_trace_in_the_main_database(
    client: httpx.AsyncClient,
    overlay: Demo,
    runtime: Runtime,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await _put(client, overlay, sip_account=SIP_ACCOUNT)
    assert response.status_code == 201, response.text
    for shown in (response.json(), *(await _listed(client, overlay))):
        assert shown["sip_aor"] == AOR
        assert "sip_account" not in shown
        assert SIP_PASSWORD not in json.dumps(shown)
    # The instance does hold the account (the overlay needs it) ...
    [instance] = await _instances(runtime)
    assert instance.report.sip_account is not None
    assert instance.report.sip_account.password == SIP_PASSWORD
    # ... sealed: no column of any table shows any of it.
    stored = (await _main_database_text(runtime)).lower()
    assert await _rows(runtime) == 1
    for secret in (SIP_PASSWORD, SIP_USER, SIP_AUTH_USER, SIP_DOMAIN):
        assert secret.lower() not in stored, secret
    if backend == "sqlite":
        # Nor do the files themselves (free pages, the write-ahead log).
        data_dir = runtime.settings.storage.data_dir
        for path in data_dir.rglob("*"):
            if path.is_file():
                raw = path.read_bytes()
                for secret in (SIP_PASSWORD, SIP_USER, SIP_AUTH_USER, SIP_DOMAIN):
                    assert secret.encode() not in raw, (path.name, secret)
    assert SIP_PASSWORD not in caplog.text


@pytest.mark.promise("P3")
async def test_delete_destroys_the_key_so_a_copied_blob_stays_sealed(
    client: httpx.AsyncClient, overlay: Demo, runtime: Runtime, tmp_path: Path
) -> None:
    assert (await _put(client, overlay, sip_account=SIP_ACCOUNT)).status_code == 201
    [row] = await sealed_rows(runtime)
    assert await _rows(runtime, subject_keys) == 1
    # A copy of the key store taken before the erasure.
    backup = tmp_path / "keys-before.db"
    for suffix in ("", "-wal"):  # the key is in the write-ahead log until a checkpoint
        source = runtime.settings.storage.data_dir / f"keys.db{suffix}"
        if source.exists():
            shutil.copy(source, f"{backup}{suffix}")
    deleted = await client.delete(
        "/v1/push/instances/phone-1", auth=(overlay.login, overlay.password)
    )
    assert deleted.status_code == 204, deleted.text
    await _nothing_stored(runtime)
    assert await _listed(client, overlay) == []
    assert await runtime.push_instances.by_id(row[0]) is None
    # The old key store still opens the copied blob, and it held the account ...
    old = await open_with(backup, runtime, row)
    assert old is not None
    assert SIP_PASSWORD.encode() in old
    assert SIP_USER.encode() in old
    # ... the live one cannot: the instance's key is gone.
    live = await open_with(runtime.settings.storage.data_dir / "keys.db", runtime, row)
    assert live is None
    ciphers = await runtime.keyring.ciphers([subject_of(row[0])])
    assert subject_of(row[0]) not in ciphers


# -- renewal ----------------------------------------------------------------------------------


async def test_renewal_with_a_new_password_keeps_the_instance(
    client: httpx.AsyncClient, overlay: Demo, runtime: Runtime, clock: FakeClock
) -> None:
    first = await _put(client, overlay, sip_account=SIP_ACCOUNT)
    assert first.status_code == 201, first.text
    [(instance_id, sealed_before)] = await sealed_rows(runtime)
    clock.advance(DAY)
    renewed = {**SIP_ACCOUNT, "password": "n3w-Pa55word-abc"}
    again = await _put(client, overlay, sip_account=renewed)
    assert again.status_code == 200, again.text
    assert again.json()["created_at"] == first.json()["created_at"]
    assert again.json()["expires_at"] > first.json()["expires_at"]
    assert again.json()["sip_aor"] == AOR
    [(same_id, sealed_after)] = await sealed_rows(runtime)
    assert same_id == instance_id
    assert sealed_after != sealed_before
    assert await _rows(runtime, subject_keys) == 1
    [instance] = await _instances(runtime)
    assert instance.id == instance_id
    assert instance.report.sip_account is not None
    assert instance.report.sip_account.password == "n3w-Pa55word-abc"
