"""Binding-refresh pushes (RFC 8599 +sip.pnsreg): due before expiry, once per registration."""

from __future__ import annotations

from ringfence.proxy.refresh import RefreshSchedule, refresh_at, wants_refresh
from ringfence.sip.pn import PNSREG_S
from ringfence.sip.transaction import Address
from ringfence.state.location import Binding

AOR = "sip:bob@sip.acme.example"
PUSH = ";pn-provider=fcm;pn-prid=token-of-bob-0123456789;pn-param=proj"


def binding(
    call_id: str = "r1", cseq: int = 1, expires_at: float = 600.0, *, pnsreg: bool = True
) -> Binding:
    params: tuple[tuple[str, str | None], ...] = (("+sip.pnsreg", None),) if pnsreg else ()
    return Binding(
        aor=AOR,
        contact=f"sip:bob@192.0.2.9:5060{PUSH}",
        expires_at=expires_at,
        call_id=call_id,
        cseq=cseq,
        source=Address("UDP", "192.0.2.9", 5060),
        params=params,
    )


def test_only_contacts_that_ask_are_scheduled() -> None:
    assert wants_refresh(binding())
    assert not wants_refresh(binding(pnsreg=False))
    schedule = RefreshSchedule()
    schedule.changed(AOR, [binding(pnsreg=False)], 0.0)
    assert len(schedule) == 0
    assert not schedule.tracks(AOR)


def test_pushed_pnsreg_seconds_before_expiry_then_not_again() -> None:
    schedule = RefreshSchedule()
    schedule.changed(AOR, [binding(expires_at=600.0)], 0.0)
    assert schedule.next_deadline() == 600.0 - PNSREG_S
    assert schedule.due(600.0 - PNSREG_S - 1) == []
    [(aor, sleeper)] = schedule.due(600.0 - PNSREG_S)
    assert aor == AOR
    assert sleeper.push.token_for_alert() == "token-of-bob-0123456789"
    # Another change of the AOR (a second device) does not push this registration again.
    schedule.changed(AOR, [binding(), binding("r2", 1, 900.0, pnsreg=False)], 500.0)
    assert schedule.due(599.0) == []


def test_a_refresh_in_time_replaces_the_push() -> None:
    schedule = RefreshSchedule()
    schedule.changed(AOR, [binding("r1", 1, 600.0)], 0.0)
    schedule.changed(AOR, [binding("r1", 2, 900.0)], 300.0)  # the app refreshed by itself
    assert schedule.due(600.0) == []  # the old registration's push is dropped
    assert [s.push.token_for_alert() for _, s in schedule.due(900.0 - PNSREG_S)] == [
        "token-of-bob-0123456789"
    ]


def test_a_removed_binding_is_not_pushed_and_short_ones_halfway() -> None:
    schedule = RefreshSchedule()
    schedule.changed(AOR, [binding()], 0.0)
    schedule.changed(AOR, [], 10.0)  # unregistered
    assert schedule.due(1000.0) == []
    assert schedule.next_deadline() is None
    assert refresh_at(100.0, 0.0) == 50.0  # shorter than twice PNSREG_S: halfway
