"""Push traces: the account and the admin read them; 7 days, then gone; sealed."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from ringfence.pushgw.traces import TRACE_DAYS, TraceStep
from ringfence.runtime import Runtime
from ringfence.storage.tables import push_traces
from tests.conftest import Demo
from tests.support.clock import FakeClock

STEPS = [
    TraceStep(0, "parked", "1 device(s) asleep, 0 awake"),
    TraceStep(3, "call push sent", "a1a1…a1a1"),
    TraceStep(95, "call push apns", "accepted"),
    TraceStep(30_000, "ended", "480"),
]


async def _record(runtime: Runtime, outcome: str = "no device came back in time") -> None:
    account_id = (await runtime.provisioning.accounts("acme"))[0].id
    runtime.push_traces.record(account_id, 30.0, outcome, STEPS)


async def test_the_account_and_the_admin_read_the_trace(
    client: httpx.AsyncClient,
    demo: Demo,
    runtime: Runtime,
    admin_headers: dict[str, str],
    clock: FakeClock,
) -> None:
    await _record(runtime, "answered")
    clock.advance(1)
    await _record(runtime)
    # Nothing is written per call: the traces of a second go in one transaction, and a
    # read writes this process's pending ones first.
    async with runtime.engine.connect() as connection:
        assert (await connection.execute(select(push_traces))).all() == []
    mine = await client.get("/v1/push/traces", auth=(demo.login, demo.password))
    assert mine.status_code == 200
    body = mine.json()
    assert [t["outcome"] for t in body] == ["no device came back in time", "answered"]
    assert body[0]["steps"][2] == {"at_ms": 95, "step": "call push apns", "detail": "accepted"}
    admin = await client.get(
        "/admin/v1/tenants/acme/accounts/alice/push-traces", headers=admin_headers
    )
    assert admin.status_code == 200
    assert admin.json() == body
    missing = await client.get(
        "/admin/v1/tenants/acme/accounts/nobody/push-traces", headers=admin_headers
    )
    assert missing.status_code == 404
    async with runtime.engine.connect() as connection:
        for row in await connection.execute(select(push_traces.c.sealed)):
            assert b"call push" not in bytes(row.sealed)


async def test_traces_last_seven_days_and_go_with_the_account(
    client: httpx.AsyncClient, demo: Demo, runtime: Runtime, clock: FakeClock
) -> None:
    await _record(runtime)
    clock.advance(TRACE_DAYS * 86_400 - 60)
    assert (
        len(await runtime.push_traces.of((await runtime.provisioning.accounts("acme"))[0].id)) == 1
    )
    clock.advance(61)  # 7 days after the call (it came 30 s before it was recorded)
    await runtime.housekeeping()
    async with runtime.engine.connect() as connection:
        assert (await connection.execute(select(push_traces))).all() == []
    await _record(runtime)
    assert await runtime.push_traces.flush() == 1
    await runtime.provisioning.delete_account("acme", "alice")
    async with runtime.engine.connect() as connection:
        assert (await connection.execute(select(push_traces))).all() == []
    # A call that ended just before the erasure, not yet written: its trace never is.
    await runtime.provisioning.create_account("acme", "alice", "correct horse 42")
    await _record(runtime)
    await runtime.provisioning.delete_account("acme", "alice")
    assert await runtime.push_traces.flush() == 0
