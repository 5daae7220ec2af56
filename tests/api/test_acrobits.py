"""Acrobits external provisioning: Account XML for Cloud Softphone-based apps."""

from __future__ import annotations

from xml.etree import ElementTree

import httpx

from ringfence.provisioning.models import AccountChange
from ringfence.runtime import Runtime
from tests.conftest import Demo


def _xml(response: httpx.Response) -> ElementTree.Element:
    assert response.headers["content-type"].startswith("application/xml")
    return ElementTree.fromstring(response.content)  # noqa: S314 - our own output


async def test_post_gives_account_xml_with_the_proven_password(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    response = await client.post(
        "/acrobits/provisioning",
        data={"cloud_username": demo.login, "cloud_password": demo.password},
    )
    assert response.status_code == 200
    root = _xml(response)
    assert root.tag == "account"
    assert root.findtext("username") == "alice"
    assert root.findtext("authUsername") == "alice"
    assert root.findtext("password") == demo.password
    assert root.findtext("host") == "sip.acme.example"
    assert root.findtext("cloud_username") == demo.login
    assert root.findtext("allowMessage") == "1"
    assert root.findtext("icm") == "push"


async def test_get_works_the_same(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.get(
        "/acrobits/provisioning",
        params={"cloud_username": demo.login, "cloud_password": demo.password},
    )
    assert response.status_code == 200
    assert _xml(response).findtext("username") == "alice"


async def test_wrong_password_is_403_with_a_message(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post(
        "/acrobits/provisioning",
        data={"cloud_username": demo.login, "cloud_password": "wrong password"},
    )
    assert response.status_code == 403
    root = _xml(response)
    assert root.tag == "error"
    assert root.findtext("message") == "wrong login or password"


async def test_login_without_tenant_is_422(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post(
        "/acrobits/provisioning", data={"cloud_username": "alice", "cloud_password": "x"}
    )
    assert response.status_code == 422
    assert "username@tenant" in (_xml(response).findtext("message") or "")


async def test_rate_limited_with_retry_after(client: httpx.AsyncClient, demo: Demo) -> None:
    for _ in range(5):
        await client.post(
            "/acrobits/provisioning", data={"cloud_username": demo.login, "cloud_password": "nope"}
        )
    response = await client.post(
        "/acrobits/provisioning",
        data={"cloud_username": demo.login, "cloud_password": demo.password},
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "300"


async def test_disabled_features_are_not_provisioned(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    await runtime.provisioning.update_account(
        "acme",
        "alice",
        AccountChange(overrides={"push": {"mode": "keepalive"}, "messaging": {"enabled": False}}),
    )
    response = await client.post(
        "/acrobits/provisioning",
        data={"cloud_username": demo.login, "cloud_password": demo.password},
    )
    root = _xml(response)
    assert root.find("icm") is None
    assert root.findtext("allowMessage") == "0"


async def test_xml_special_characters_are_escaped(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(display_name='Alice <&> "Bob"')
    )
    response = await client.post(
        "/acrobits/provisioning",
        data={"cloud_username": demo.login, "cloud_password": demo.password},
    )
    assert _xml(response).findtext("title") == 'Alice <&> "Bob"'
