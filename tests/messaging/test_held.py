"""Messages held for sleeping devices: sealed, claimed once, delivered or kept, swept."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ringfence.messaging.held import (
    HELD_DAYS,
    MAX_BODY_BYTES,
    MAX_HELD_PER_ACCOUNT,
    HeldMessages,
    HoldRefusedError,
)
from ringfence.runtime import Runtime
from ringfence.storage.repos import SqlHeldStore
from ringfence.storage.tables import held_messages
from tests.conftest import Demo
from tests.support.clock import FakeClock

AOR = "sip:alice@sip.acme.example"
FROM = "<sip:bob@sip.acme.example>;tag=b1"
TO = "<sip:alice@sip.acme.example>"


async def _account_id(runtime: Runtime) -> str:
    return (await runtime.provisioning.accounts("acme"))[0].id


async def _rows(runtime: Runtime) -> list[bytes]:
    async with runtime.engine.connect() as connection:
        return [bytes(r.sealed) for r in await connection.execute(select(held_messages))]


async def _hold(runtime: Runtime, body: bytes = b"see you at 8") -> str:
    account = await _account_id(runtime)
    return await runtime.held_messages.hold(account, AOR, FROM, TO, "text/plain", body)


@pytest.mark.usefixtures("demo")
async def test_held_sealed_then_delivered_once_in_order(runtime: Runtime) -> None:
    await _hold(runtime, b"first")
    await _hold(runtime, b"second")
    assert runtime.held_messages.may_have(AOR)
    assert not runtime.held_messages.may_have("sip:bob@sip.acme.example")
    for sealed in await _rows(runtime):
        assert b"first" not in sealed
        assert b"second" not in sealed
        assert b"bob" not in sealed
    # The clock stands still: several held within one tick keep the order they came in.
    for n in range(6):
        await _hold(runtime, b"third %d" % n)
    claimed = await runtime.held_messages.claim(AOR)
    assert [h.message.body for h in claimed] == [b"first", b"second"] + [
        b"third %d" % n for n in range(6)
    ]
    for extra in claimed[2:]:
        await runtime.held_messages.delivered(extra.id)
    assert claimed[0].message.sender == FROM
    assert claimed[0].message.recipient == TO
    # Claimed: a second registration seen meanwhile (another worker) gets nothing.
    assert await runtime.held_messages.claim(AOR) == []
    await runtime.held_messages.delivered(claimed[0].id)
    await runtime.held_messages.failed(claimed[1].id)
    again = await runtime.held_messages.claim(AOR)
    assert [h.message.body for h in again] == [b"second"]
    await runtime.held_messages.delivered(again[0].id)
    assert await runtime.held_messages.claim(AOR) == []
    assert not runtime.held_messages.may_have(AOR)


@pytest.mark.usefixtures("demo")
async def test_a_claim_lapses_and_what_waited_too_long_is_swept(
    runtime: Runtime, clock: FakeClock
) -> None:
    await _hold(runtime)
    assert len(await runtime.held_messages.claim(AOR)) == 1
    clock.advance(41)  # the delivery died with its node: the claim lapses
    assert len(await runtime.held_messages.claim(AOR)) == 1
    clock.advance(HELD_DAYS * 86_400)
    assert await runtime.held_messages.claim(AOR) == []  # expired: not delivered late
    await runtime.housekeeping()
    assert await _rows(runtime) == []


@pytest.mark.usefixtures("demo")
async def test_limits_refuse_with_a_sip_status_and_keep_nothing(runtime: Runtime) -> None:
    with pytest.raises(HoldRefusedError) as large:
        await _hold(runtime, b"x" * (MAX_BODY_BYTES + 1))
    assert large.value.status == 513
    account = await _account_id(runtime)
    store = SqlHeldStore(runtime.engine)
    small = HeldMessages(store, runtime.keyring, runtime.clock)
    for _ in range(MAX_HELD_PER_ACCOUNT):
        await small.hold(account, AOR, FROM, TO, "text/plain", b"x")
    with pytest.raises(HoldRefusedError) as full:
        await small.hold(account, AOR, FROM, TO, "text/plain", b"one too many")
    assert full.value.status == 480
    async with runtime.engine.connect() as connection:
        count = (await connection.execute(select(func.count()).select_from(held_messages))).scalar()
    assert count == MAX_HELD_PER_ACCOUNT


async def test_erasing_the_account_deletes_what_is_held(runtime: Runtime, demo: Demo) -> None:
    await _hold(runtime)
    await runtime.provisioning.delete_account(demo.tenant, demo.username)
    assert await _rows(runtime) == []


@pytest.mark.usefixtures("demo")
async def test_another_process_learns_of_held_messages_on_refresh(runtime: Runtime) -> None:
    other = HeldMessages(SqlHeldStore(runtime.engine), runtime.keyring, runtime.clock)
    await _hold(runtime)
    assert not other.may_have(AOR)
    await other.refresh()
    assert other.may_have(AOR)
