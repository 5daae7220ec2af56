"""The retention sweeper (P15): privacy records are kept for their legal duty, then deleted."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ringfence.privacy.requests import RequestKind, Verification
from ringfence.runtime import Runtime
from tests.conftest import Demo
from tests.support.clock import FakeClock

pytestmark = pytest.mark.promise("P15")

DAY = 86_400.0
REQUEST: dict[str, Any] = {"authority": "a", "reference": "r", "legal_basis": "b", "requested": "q"}


@pytest.mark.usefixtures("backend")  # SQLite and PostgreSQL
async def test_each_record_goes_when_its_retention_ends_and_not_before(
    runtime: Runtime, demo: Demo, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await runtime.provisioning.account_id("acme", "alice")
    await runtime.disclosures.record(**REQUEST)
    hold = await runtime.erasure.place_hold(
        "acme", "alice", reason="x", reference="y", placed_by="z"
    )
    open_hold = await runtime.erasure.place_hold(
        "acme", "alice", reason="x", reference="kept", placed_by="z"
    )
    await runtime.subject_rights.submit(alice, RequestKind.CONFIRMATION, Verification.SESSION)
    await runtime.erasure.release_hold(hold.id, released_by="z")
    await runtime.provisioning.create_account("acme", "bob", "bob's password")
    await runtime.erasure.erase_account("acme", "bob", reason="closed")

    clock.advance(3 * 365 * DAY)
    assert (await runtime.retention.sweep()).counts == {
        "disclosure register": 0,
        "legal holds": 0,
        "destruction record": 0,
        "data-subject requests": 0,
    }
    clock.advance(1)  # three years after the request closed
    assert (await runtime.retention.sweep()).total == 1
    assert await runtime.subject_rights.of(alice) == []

    clock.advance(3 * 365 * DAY)  # six years after the rest
    with caplog.at_level(logging.INFO):
        await runtime.housekeeping()
    assert await runtime.disclosures.entries() == []
    assert await runtime.erasure.destructions() == []
    # The hold in force stays, however old; the released one is gone.
    assert await runtime.erasure.holds("acme", "alice") == [open_hold]
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention")]
    assert sorted(messages) == [
        "retention: deleted 1 record(s) of destruction record",
        "retention: deleted 1 record(s) of disclosure register",
        "retention: deleted 1 record(s) of legal holds",
    ]
