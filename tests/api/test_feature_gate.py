"""Promise P1: a feature processes personal data only when the account's configuration
enables it. Every route gated by a feature switch answers 403 with the reason while the
switch is off, and writes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import MetaData, select

from ringfence.api.deps import FEATURE_EXTENSION, AccountDep, ServicesDep, feature_route
from ringfence.provisioning.features import Feature
from ringfence.provisioning.models import AccountChange, Device, Platform
from ringfence.runtime import Runtime
from ringfence.storage.tables import metadata
from tests.conftest import Demo

OFF: dict[str, Any] = {
    "push": {"mode": "keepalive"},
    "location": {"mode": "off"},
    **{f.value: {"enabled": False} for f in Feature if f not in (Feature.PUSH, Feature.LOCATION)},
}


async def _snapshot(runtime: Runtime, tables: MetaData) -> dict[str, list[tuple[Any, ...]]]:
    async with runtime.engine.connect() as connection:
        return {
            name: [tuple(row) for row in (await connection.execute(select(table))).all()]
            for name, table in tables.tables.items()
        }


async def _token(client: httpx.AsyncClient, demo: Demo) -> dict[str, str]:
    response = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": demo.password}
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _gated_operations(client_app: Any) -> list[tuple[str, str, str]]:
    spec = client_app.openapi()
    return [
        (method.upper(), path, operation[FEATURE_EXTENSION])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and FEATURE_EXTENSION in operation
    ]


@pytest.mark.promise("P1")
async def test_every_gated_route_refuses_while_its_switch_is_off(
    runtime: Runtime, demo: Demo
) -> None:
    """Walks every route the OpenAPI document marks with a feature; grows with the features."""
    app = runtime.app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        headers = await _token(client, demo)
        await runtime.provisioning.update_account("acme", "alice", AccountChange(overrides=OFF))
        for method, path, feature in _gated_operations(app):
            before = await _snapshot(runtime, metadata)
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 403, (method, path)
            error = response.json()["error"]
            assert error["code"] == "feature_disabled"
            assert error["feature"] == feature
            assert error["reason"]
            assert await _snapshot(runtime, metadata) == before


@pytest.mark.promise("P1")
@pytest.mark.parametrize("feature", list(Feature))
async def test_the_gate_runs_before_the_handler_writes(
    runtime: Runtime, demo: Demo, feature: Feature
) -> None:
    """The mechanism itself, on a route that would write if it were reached."""
    router = APIRouter()

    @router.post("/probe", **feature_route(feature))
    async def probe(account: AccountDep, svc: ServicesDep) -> dict[str, str]:
        now = svc.clock.now()
        await runtime.store.upsert_device(
            Device("probe", account.id, "probe-install", Platform.WEB, None, now, now)
        )
        return {"written": "yes"}

    app = runtime.app()
    app.include_router(router)
    assert ("POST", "/probe", feature.value) in _gated_operations(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        headers = await _token(client, demo)
        await runtime.provisioning.update_account("acme", "alice", AccountChange(overrides=OFF))
        before = await _snapshot(runtime, metadata)
        refused = await client.post("/probe", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["feature"] == feature.value
        assert await _snapshot(runtime, metadata) == before

        # Switched on, the same request goes through: the gate is what stopped it.
        on = (
            {"push": {"mode": "push"}}
            if feature is Feature.PUSH
            else (
                {"location": {"mode": "emergency", "country": "CH"}}
                if feature is Feature.LOCATION
                else {feature.value: {"enabled": True}}
            )
        )
        await runtime.provisioning.update_account("acme", "alice", AccountChange(overrides=on))
        allowed = await client.post("/probe", headers=headers)
        assert allowed.status_code == 200
        assert await _snapshot(runtime, metadata) != before
