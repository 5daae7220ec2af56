"""Push instances over HTTPS: the device API and Acrobits' Push Token Reporter (P3, P4)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ringfence.provisioning.features import PushMode
from ringfence.provisioning.models import AccountChange
from ringfence.runtime import Runtime
from ringfence.storage.tables import push_instances, subject_keys
from tests.api.shared import open_with, sealed_rows
from tests.conftest import Demo
from tests.support.clock import FakeClock

VOIP = "a1" * 32
REMOTE = "b2" * 32
APNS_BODY = {
    "service": "apns",
    "app_id": "org.example.phone",
    "call_token": VOIP.upper(),
    "other_token": REMOTE,
    "sip_instance": "<urn:uuid:00000000-0000-4000-8000-000000000001>",
}
DAY = 86_400


async def _rows(runtime: Runtime, table: Any = push_instances) -> int:
    engine = runtime.key_engine if table is subject_keys else runtime.engine
    async with engine.connect() as connection:
        query = select(func.count()).select_from(table)
        if table is subject_keys:
            query = query.where(subject_keys.c.subject.like("push-instance:%"))
        return int((await connection.execute(query)).scalar_one())


async def _put(
    client: httpx.AsyncClient, demo: Demo, selector: str = "phone-1", **body: Any
) -> httpx.Response:
    return await client.put(
        f"/v1/push/instances/{selector}",
        json={**APNS_BODY, **body},
        auth=(demo.login, demo.password),
    )


async def test_report_list_renew_and_delete(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, clock: FakeClock
) -> None:
    first = await _put(client, demo)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["selector"] == "phone-1"
    assert body["has_call_token"]
    assert body["has_other_token"]
    assert body["sip_instance"] == "urn:uuid:00000000-0000-4000-8000-000000000001"
    assert "call_token" not in body  # tokens are never given back
    clock.advance(DAY)
    again = await _put(client, demo)
    assert again.status_code == 200
    assert again.json()["created_at"] == body["created_at"]
    assert again.json()["expires_at"] > body["expires_at"]  # each report renews it
    listed = await client.get("/v1/push/instances", auth=(demo.login, demo.password))
    assert [i["selector"] for i in listed.json()] == ["phone-1"]
    assert await _rows(runtime) == 1
    # The waker sees the tokens, normalised to lowercase hex.
    account_id = (await runtime.provisioning.accounts("acme"))[0].id
    [instance] = await runtime.push_instances.of(account_id)
    params = instance.report.parameters()
    assert params.token_for_call() == VOIP
    assert params.token_for_alert() == REMOTE
    assert params.app == "org.example.phone"


@pytest.mark.promise("P3")
async def test_delete_erases_row_and_key_at_once(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, tmp_path: Path
) -> None:
    assert (await _put(client, demo)).status_code == 201
    [row] = await sealed_rows(runtime)
    # A copy of the key store taken before the erasure.
    backup = tmp_path / "keys-before.db"
    for suffix in ("", "-wal"):  # the key is in the write-ahead log until a checkpoint
        source = runtime.settings.storage.data_dir / f"keys.db{suffix}"
        if source.exists():
            shutil.copy(source, f"{backup}{suffix}")
    deleted = await client.delete("/v1/push/instances/phone-1", auth=(demo.login, demo.password))
    assert deleted.status_code == 204
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0
    again = await client.delete("/v1/push/instances/phone-1", auth=(demo.login, demo.password))
    assert again.status_code == 404
    assert again.json()["error"]["field"] == "selector"
    # The old key store still opens the row (the copy predates it) ...
    old = await open_with(backup, runtime, row)
    assert old is not None
    assert VOIP.encode() in old
    # ... and the live one cannot: the key is gone.
    live = await open_with(runtime.settings.storage.data_dir / "keys.db", runtime, row)
    assert live is None


@pytest.mark.promise("P3")
async def test_instance_is_erased_at_its_max_age(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, clock: FakeClock
) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(overrides={"push": {"instance_max_age_days": 4}})
    )
    assert (await _put(client, demo)).status_code == 201
    clock.advance(4 * DAY - 60)
    await runtime.housekeeping()
    assert await _rows(runtime) == 1
    listed = await client.get("/v1/push/instances", auth=(demo.login, demo.password))
    assert len(listed.json()) == 1
    clock.advance(61)
    # Past its max age it is not used, even before the sweeper comes ...
    listed = await client.get("/v1/push/instances", auth=(demo.login, demo.password))
    assert listed.json() == []
    # ... and the sweeper erases row and key.
    await runtime.housekeeping()
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0


@pytest.mark.promise("P3")
async def test_switching_push_off_erases_every_instance(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    await _put(client, demo, "phone-1")
    await _put(client, demo, "tablet-1")
    assert await _rows(runtime) == 2
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(overrides={"push": {"mode": "keepalive"}})
    )
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0


@pytest.mark.promise("P3")
async def test_tenant_default_switching_push_off_erases_instances(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    await _put(client, demo)
    tenant = await runtime.provisioning.tenant("acme")
    defaults = tenant.defaults.model_copy(
        update={"push": tenant.defaults.push.model_copy(update={"mode": PushMode.NONE})}
    )
    await runtime.provisioning.update_tenant("acme", defaults=defaults)
    assert await _rows(runtime) == 0


@pytest.mark.promise("P3")
async def test_account_erasure_erases_instances(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    await _put(client, demo)
    await runtime.provisioning.delete_account("acme", "alice")
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0


@pytest.mark.promise("P4")
@pytest.mark.parametrize("mode", ["none", "keepalive"])
async def test_push_mode_other_than_push_refuses_and_stores_nothing(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, mode: str
) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(overrides={"push": {"mode": mode}})
    )
    response = await _put(client, demo)
    assert response.status_code == 403
    assert f"push mode is '{mode}'" in response.json()["error"]["message"]
    acrobits = await client.post(
        "/acrobits/push-token",
        data={
            "cloud_username": demo.login,
            "cloud_password": demo.password,
            "selector": "ABC:1",
            "pushToken": "dG9rZW4tdGV4dC0xMjM0NTY3ODkw",
            "pushappid": "example-project",
        },
    )
    assert acrobits.status_code == 403, acrobits.text
    assert "push mode" in acrobits.json()["message"]
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"call_token": "not hex"}, "call_token"),
        ({"call_token": None, "other_token": None}, "call_token"),
        ({"app_id": "org.example.phone.voip"}, "app_id"),
        ({"sip_instance": "not a urn"}, "sip_instance"),
        ({"service": "fcm", "call_token": None, "other_token": "short"}, "other_token"),
        (
            {"service": "webhook", "call_token": None, "other_token": "http://x.example/"},
            "other_token",
        ),
        ({"service": "carrier-pigeon"}, "body.service"),
    ],
)
async def test_invalid_reports_name_the_field_and_store_nothing(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, body: dict[str, Any], field: str
) -> None:
    response = await _put(client, demo, **body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0


async def test_bad_selector_and_no_credentials(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.put(
        "/v1/push/instances/has space", json=APNS_BODY, auth=(demo.login, demo.password)
    )
    assert response.status_code == 422
    anonymous = await client.put("/v1/push/instances/phone-1", json=APNS_BODY)
    assert anonymous.status_code == 401


async def test_instances_per_account_are_bounded(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    for index in range(20):
        assert (await _put(client, demo, f"device-{index}")).status_code == 201
    response = await _put(client, demo, "device-20")
    assert response.status_code == 409
    assert (await _put(client, demo, "device-3")).status_code == 200  # a renewal still works


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_acrobits_reporter_keeps_ios_tokens_as_hex(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    response = await client.post(
        "/acrobits/push-token",
        data={
            "cloud_username": demo.login,
            "cloud_password": demo.password,
            "selector": "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14",
            "pushTokenIncomingCall": _b64(bytes.fromhex(VOIP)),
            "pushappid_incoming_call": "org.example.phone.voip",
            "pushTokenOther": _b64(bytes.fromhex(REMOTE)),
            "pushappid_other": "org.example.phone",
        },
    )
    assert response.status_code == 200, response.text
    assert "expires_at" in response.json()
    account_id = (await runtime.provisioning.accounts("acme"))[0].id
    [instance] = await runtime.push_instances.of(account_id)
    assert instance.report.service == "apns"
    assert instance.report.app_id == "org.example.phone"
    assert instance.report.call_token == VOIP
    assert instance.report.other_token == REMOTE
    removal = await client.post(
        "/acrobits/account-removal",
        data={
            "cloud_username": demo.login,
            "cloud_password": demo.password,
            "selector": "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14",
        },
    )
    assert removal.status_code == 200
    assert await _rows(runtime) == 0
    assert await _rows(runtime, subject_keys) == 0


async def test_acrobits_reporter_android_and_refusals(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime
) -> None:
    fcm = "cXbL0a1b2c3d:APA91bH-example_registration_token_0123456789"
    response = await client.post(
        "/acrobits/push-token",
        data={
            "cloud_username": demo.login,
            "cloud_password": demo.password,
            "selector": "ABCDEF:01",
            "pushToken": _b64(fcm.encode()),
            "pushappid": "example-project",
        },
    )
    assert response.status_code == 200, response.text
    account_id = (await runtime.provisioning.accounts("acme"))[0].id
    [instance] = await runtime.push_instances.of(account_id)
    assert instance.report.service == "fcm"
    assert instance.report.other_token == fcm
    wrong = await client.post(
        "/acrobits/push-token",
        data={
            "cloud_username": demo.login,
            "cloud_password": "wrong password",
            "selector": "ABCDEF:02",
            "pushToken": "eA==",
        },
    )
    assert wrong.status_code == 403
    assert wrong.json() == {"message": "wrong login or password"}
    bad = await client.post(
        "/acrobits/push-token",
        data={
            "cloud_username": demo.login,
            "cloud_password": demo.password,
            "selector": "ABCDEF:03",
            "pushTokenIncomingCall": "%%% not base64",
        },
    )
    assert bad.status_code == 422
    assert "pushTokenIncomingCall" in bad.json()["message"]
    assert await _rows(runtime) == 1
