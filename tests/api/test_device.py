"""The device API: login, tokens, provisioning as JSON and Account XML, rate limits."""

from __future__ import annotations

from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import func, select

from ringfence.provisioning.models import AccountChange, AccountStatus
from ringfence.runtime import Runtime
from ringfence.storage.tables import devices, sessions
from tests.conftest import Demo
from tests.support.clock import FakeClock


async def _login(client: httpx.AsyncClient, demo: Demo, **extra: object) -> dict[str, object]:
    response = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": demo.password, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _count(runtime: Runtime, table: object) -> int:
    async with runtime.engine.connect() as connection:
        value = (await connection.execute(select(func.count()).select_from(table))).scalar()  # type: ignore[arg-type]
    return int(value or 0)


@pytest.mark.usefixtures("backend")
async def test_login_then_fetch_configuration(client: httpx.AsyncClient, demo: Demo) -> None:
    tokens = await _login(client, demo)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    response = await client.get("/v1/provisioning", headers=_bearer(tokens["access_token"]))
    assert response.status_code == 200
    body = response.json()
    assert body["account"]["username"] == "alice"
    assert body["account"]["display_name"] == "Alice Liddell"
    assert body["sip"] == {
        "domain": "sip.acme.example",
        "username": "alice",
        "auth_username": "alice",
        "aor": "sip:alice@sip.acme.example",
    }
    assert body["features"]["push"] == {"mode": "push", "instance_max_age_days": 3}


async def test_account_xml(client: httpx.AsyncClient, demo: Demo) -> None:
    tokens = await _login(client, demo)
    response = await client.get(
        "/v1/provisioning?format=xml", headers=_bearer(tokens["access_token"])
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    root = ElementTree.fromstring(response.content)  # noqa: S314 - our own output
    assert root.tag == "account"
    assert root.findtext("username") == "alice"
    assert root.findtext("host") == "sip.acme.example"
    assert root.findtext("title") == "Alice Liddell"
    assert root.find("password") is None  # a bearer token proves no password


async def test_basic_auth_gives_the_configuration_in_one_request(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    response = await client.get("/v1/provisioning", auth=(demo.login, demo.password))
    assert response.status_code == 200
    assert response.json()["account"]["tenant"] == "acme"
    wrong = await client.get("/v1/provisioning", auth=(demo.login, "wrong password"))
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"


async def test_login_by_sip_domain_too(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post(
        "/v1/auth/login", json={"login": "alice@sip.acme.example", "password": demo.password}
    )
    assert response.status_code == 200


async def test_reprovisioning_returns_the_current_configuration(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    tokens = await _login(client, demo)
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(overrides={"blf": {"enabled": True}})
    )
    response = await client.get("/v1/provisioning", headers=_bearer(tokens["access_token"]))
    assert response.json()["features"]["blf"] == {"enabled": True}


async def test_refresh_rotates_both_tokens(client: httpx.AsyncClient, demo: Demo) -> None:
    first = await _login(client, demo)
    response = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    second = response.json()
    assert second["access_token"] != first["access_token"]
    old = await client.get("/v1/provisioning", headers=_bearer(first["access_token"]))
    assert old.status_code == 401
    again = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 401
    new = await client.get("/v1/provisioning", headers=_bearer(second["access_token"]))
    assert new.status_code == 200


async def test_access_token_expires(
    client: httpx.AsyncClient, demo: Demo, clock: FakeClock
) -> None:
    tokens = await _login(client, demo)
    clock.advance(901)
    response = await client.get("/v1/provisioning", headers=_bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    refreshed = await client.post(
        "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200


async def test_logout_revokes(client: httpx.AsyncClient, demo: Demo) -> None:
    tokens = await _login(client, demo)
    response = await client.post("/v1/auth/logout", headers=_bearer(tokens["access_token"]))
    assert response.status_code == 204
    after = await client.get("/v1/provisioning", headers=_bearer(tokens["access_token"]))
    assert after.status_code == 401


async def test_changed_password_revokes_tokens(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    tokens = await _login(client, demo)
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(password="a new password")
    )
    after = await client.get("/v1/provisioning", headers=_bearer(tokens["access_token"]))
    assert after.status_code == 401
    refresh = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    old = await client.post("/v1/auth/login", json={"login": demo.login, "password": demo.password})
    assert old.status_code == 401


async def test_suspended_account(client: httpx.AsyncClient, demo: Demo, runtime: Runtime) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(status=AccountStatus.SUSPENDED)
    )
    response = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": demo.password}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_suspended"


async def test_login_registers_the_device(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    device = {"install_id": "0f8e7d6c-aaaa", "platform": "ios", "app_id": "com.acme.phone"}
    await _login(client, demo, device=device)
    await _login(client, demo, device=device)
    assert await _count(runtime, devices) == 1
    assert await _count(runtime, sessions) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"login": "alice", "password": "x"}, "login"),
        ({"login": "alice@acme"}, "body.password"),
        ({"login": "alice@acme", "password": "x", "admin": True}, "body.admin"),
        (
            {"login": "alice@acme", "password": "x", "device": {"platform": "ios"}},
            "body.device.install_id",
        ),
        (
            {
                "login": "alice@acme",
                "password": "x",
                "device": {"install_id": "0f8e7d6c-aaaa", "platform": "palm"},
            },
            "body.device.platform",
        ),
    ],
)
async def test_bad_login_requests_name_the_field_and_write_nothing(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/auth/login", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field
    assert await _count(runtime, sessions) == 0
    assert await _count(runtime, devices) == 0


async def test_malformed_json_is_a_4xx(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post(
        "/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"].startswith("body")


async def test_wrong_password_writes_nothing(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    response = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": "wrong password"}
    )
    assert response.status_code == 401
    unknown = await client.post(
        "/v1/auth/login", json={"login": "nobody@acme", "password": "wrong password"}
    )
    assert unknown.json() == response.json()  # no hint whether the account exists
    assert await _count(runtime, sessions) == 0


async def test_failed_logins_are_rate_limited_per_account(
    client: httpx.AsyncClient, demo: Demo, clock: FakeClock
) -> None:
    for _ in range(5):
        response = await client.post(
            "/v1/auth/login", json={"login": demo.login, "password": "wrong password"}
        )
        assert response.status_code == 401
    limited = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": demo.password}
    )
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) == 300
    assert limited.json()["error"]["code"] == "rate_limited"
    clock.advance(301)
    assert (
        await client.post("/v1/auth/login", json={"login": demo.login, "password": demo.password})
    ).status_code == 200


async def test_failed_logins_are_rate_limited_per_address(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    for n in range(20):
        await client.post("/v1/auth/login", json={"login": f"user{n}@acme", "password": "guess"})
    limited = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": demo.password}
    )
    assert limited.status_code == 429
    assert "retry-after" in limited.headers


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_access_log_names_the_route_not_the_person(
    client: httpx.AsyncClient, demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ringfence.access")
    await client.get(
        "/acrobits/provisioning",
        params={"cloud_username": demo.login, "cloud_password": demo.password},
    )
    await client.get("/v1/provisioning", auth=(demo.login, demo.password))
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /acrobits/provisioning 200" in text
    assert "GET /v1/provisioning 200" in text
    for secret in (demo.password, demo.username, "acme", "Alice"):
        assert secret not in text


@pytest.mark.promise("P15")
async def test_expired_sessions_are_deleted(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, clock: FakeClock
) -> None:
    await _login(client, demo)
    clock.advance(20 * 86_400)
    fresh = await _login(client, demo)
    clock.advance(11 * 86_400)  # the first session's refresh token is now 31 days old
    await runtime.housekeeping()
    assert await _count(runtime, sessions) == 1
    refreshed = await client.post(
        "/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}
    )
    assert refreshed.status_code == 200
