"""The retention sweeper (P15): privacy records are kept for their legal duty, then deleted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from ringfence.config import ConfigError, load_settings
from ringfence.privacy.requests import RequestKind, Verification
from ringfence.privacy.retention import RetentionRules, RetentionSweeper
from ringfence.runtime import Runtime
from ringfence.storage.repos import SqlPrivacyStore
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
    # Recorded without the data: whose, which category, why.
    [bob_erased, request_swept] = await runtime.erasure.destructions()
    assert (request_swept.subject, request_swept.categories, request_swept.reason) == (
        alice,
        ("data-subject requests",),
        "retention period ended (P15)",
    )

    clock.advance(3 * 365 * DAY)  # six years after the rest
    with caplog.at_level(logging.INFO):
        await runtime.housekeeping()
    assert await runtime.disclosures.entries() == []
    # Bob's erasure record is gone after its six years; the hold swept now is recorded (the
    # disclosure named no subject), and the request swept three years ago is still there.
    left = await runtime.erasure.destructions()
    assert bob_erased not in left
    assert [(d.subject, d.categories) for d in left] == [
        (alice, ("data-subject requests",)),
        (alice, ("legal holds",)),
    ]
    # The hold in force stays, however old; the released one is gone.
    assert await runtime.erasure.holds("acme", "alice") == [open_hold]
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention")]
    assert sorted(messages) == [
        "retention: deleted 1 record(s) of destruction record",
        "retention: deleted 1 record(s) of disclosure register",
        "retention: deleted 1 record(s) of legal holds",
    ]


async def test_the_periods_are_the_operators_to_set(runtime: Runtime, clock: FakeClock) -> None:
    rules = RetentionRules(disclosures_days=10, closed_requests_days=1)
    sweeper = RetentionSweeper(SqlPrivacyStore(runtime.engine), clock, rules)
    await runtime.disclosures.record(**REQUEST)
    clock.advance(10 * DAY)
    assert (await sweeper.sweep()).counts["disclosure register"] == 0
    clock.advance(1)
    assert (await sweeper.sweep()).counts["disclosure register"] == 1
    with pytest.raises(ValueError, match="released_holds_days must be at least 1 day"):
        RetentionRules(released_holds_days=0)


def test_the_settings_carry_the_periods(tmp_path: Path) -> None:
    (tmp_path / "ringfence.toml").write_text("[privacy]\ndisclosures_days = 3650\n")
    settings = load_settings(tmp_path / "ringfence.toml")
    assert settings.privacy.disclosures_days == 3650
    assert settings.privacy.closed_requests_days == 3 * 365
    (tmp_path / "bad.toml").write_text("[privacy]\ndestructions_days = 0\n")
    with pytest.raises(ConfigError, match="destructions_days"):
        load_settings(tmp_path / "bad.toml")
