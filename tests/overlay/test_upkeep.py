"""Many upstream registrations under one REGISTER rate ceiling (sans-IO: the loop is driven
by hand, time is plain floats, responses come from a registrar played in the test)."""

from __future__ import annotations

import bisect
import itertools

import pytest

from ringfence.overlay.registration import (
    BACKOFF_MAX_S,
    GIVE_UP_S,
    State,
    UpstreamRegistration,
)
from ringfence.overlay.upkeep import CEILING_MARGIN, Upkeep
from ringfence.sip.message import Request, Response, make_response
from tests.overlay.upstream import ACCOUNT, Registrar, rng


def registration(seed: int) -> UpstreamRegistration:
    return UpstreamRegistration(ACCOUNT, rng(seed))


def ok(request: Request, granted: int = 600) -> Response:
    """A 200 granting the request's Contact `granted` seconds (RFC 3261 §10.3 step 8)."""
    contact = request.headers.get("Contact")
    return make_response(request, 200, headers=(("Contact", f"{contact};expires={granted}"),))


def header(request: Request, name: str) -> str:
    return request.headers.get(name) or ""


def cseq(request: Request) -> int:
    return int(header(request, "CSeq").split()[0])


def most_in_a_window(times: list[float], width: float = 1.0) -> int:
    """The most of the (sorted) `times` that any window [t, t + width) holds."""
    return max(
        (bisect.bisect_left(times, start + width) - i for i, start in enumerate(times)), default=0
    )


# -- the rate ceiling ---------------------------------------------------------------------------


def test_a_thousand_restored_registrations_keep_to_the_rate_ceiling() -> None:
    upkeep: Upkeep[int] = Upkeep(max_rate=50, restore_window_s=0.0, rng=rng(0))
    for key in range(1000):
        upkeep.add(key, registration(key), 0.0, spread=True)
    sent_at: list[float] = []
    step = 0.003
    for tick in range(round(25.0 / step) + 1):
        now = tick * step
        for key, request in upkeep.ready(now):
            sent_at.append(now)
            upkeep.on_response(key, ok(request), now)
    assert len(sent_at) == upkeep.sent == 1000
    assert upkeep.states() == {State.REGISTERED: 1000}
    # 50 a second in any second (one more for a window's edge), never two at once.
    assert most_in_a_window(sent_at) <= 51
    assert min(b - a for a, b in itertools.pairwise(sent_at)) >= 1 / 50 - step
    # And no slower than the ceiling allows: 1,000 at 50/s take 20 s.
    assert 19.5 <= sent_at[-1] <= 21.0


def test_a_restore_spreads_first_registers_over_the_window() -> None:
    upkeep: Upkeep[int] = Upkeep(max_rate=1000, restore_window_s=60.0, rng=rng(1))
    for key in range(500):
        upkeep.add(key, registration(key), 0.0, spread=True)
    first_at: dict[int, float] = {}
    step = 0.01
    for tick in range(round(61.0 / step) + 1):
        now = tick * step
        for key, request in upkeep.ready(now):
            assert key not in first_at  # answered at once: nothing else is due for minutes
            first_at[key] = now
            upkeep.on_response(key, ok(request), now)
    assert len(first_at) == 500
    assert upkeep.states() == {State.REGISTERED: 500}
    times = sorted(first_at.values())
    assert times[0] >= 0.0
    assert times[-1] <= 60.0 + step
    assert times[-1] - times[0] > 45.0
    assert most_in_a_window(times) <= 30  # ~8 a second on average: no storm


def test_the_answer_to_a_challenge_waits_for_a_slot_and_counts() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=1.0, restore_window_s=0.0)
    registrar = Registrar()
    upkeep.add("a", registration(1), 0.0, spread=False)
    upkeep.add("b", registration(2), 0.5, spread=False)
    [(key, first)] = upkeep.ready(0.0)
    assert key == "a"
    assert header(first, "Authorization") == ""
    upkeep.on_response("a", registrar.handle(first, 0.0), 0.0)  # 401
    # The answer is due at once, but the ceiling (1/s, the grid 2% under it) holds it
    # until the next slot.
    slot = 1.0 + CEILING_MARGIN
    assert upkeep.ready(0.0) == []
    assert upkeep.ready(1.0) == []
    assert upkeep.wake_at(0.5) == slot
    assert upkeep.sent == 1
    [(key, answer)] = upkeep.ready(slot)
    assert key == "a"  # before "b", due since 0.5: an exchange under way goes first
    assert "Digest" in header(answer, "Authorization")
    assert header(answer, "Call-ID") == header(first, "Call-ID")
    assert cseq(answer) == cseq(first) + 1
    assert upkeep.sent == 2
    upkeep.on_response("a", registrar.handle(answer, 1.0), 1.0)
    assert upkeep.states() == {State.REGISTERED: 1, State.REGISTERING: 1}
    assert upkeep.ready(1.5) == []
    [(key, _)] = upkeep.ready(2 * slot)
    assert key == "b"
    assert upkeep.sent == 3


# -- remove, timeouts, giving up, replacing -----------------------------------------------------


@pytest.mark.promise("P3")
def test_removing_a_registered_key_unregisters_it_and_later_responses_are_ignored() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    upkeep.add("a", registration(1), 0.0, spread=False)
    [(_, first)] = upkeep.ready(0.0)
    upkeep.on_response("a", ok(first), 0.0)
    assert upkeep.states() == {State.REGISTERED: 1}
    assert upkeep.remove("a", 0.5) is True
    assert "a" not in upkeep
    assert len(upkeep) == 0
    assert upkeep.registration("a") is None
    assert upkeep.wake_at(1.0) == 1.0  # the unregister is waiting
    [(key, bye)] = upkeep.ready(1.0)
    assert key == "a"
    assert header(bye, "Expires") == "0"
    assert header(bye, "Call-ID") == header(first, "Call-ID")
    assert cseq(bye) > cseq(first)
    assert upkeep.sent == 2
    # Its response, a late timeout: nothing breaks, nothing more is sent.
    upkeep.on_response("a", ok(bye, 0), 1.1)
    upkeep.timed_out("a", 33.0)
    assert upkeep.remove("a", 33.0) is False
    assert upkeep.states() == {}
    assert upkeep.ready(10_000.0) == []
    assert upkeep.wake_at(10_000.0) is None
    assert upkeep.ended() == []


def removed_with_its_register_out() -> tuple[Upkeep[str], UpstreamRegistration, Request]:
    """An upkeep whose only key was removed while its first REGISTER (given) was out."""
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    kept = registration(1)
    upkeep.add("a", kept, 0.0, spread=False)
    [(_, first)] = upkeep.ready(0.0)
    assert upkeep.remove("a", 0.0) is True  # the PBX may take the first REGISTER yet
    assert upkeep.leaving(kept.call_id)
    return upkeep, kept, first


@pytest.mark.promise("P3")
def test_removing_a_key_with_its_register_out_unregisters_it_after_the_response() -> None:
    upkeep, kept, first = removed_with_its_register_out()
    call_id = kept.call_id
    # RFC 3261 §10.2: no REGISTER before the one out has its final response.
    assert upkeep.ready(0.2) == []
    upkeep.on_response("a", ok(first), 0.2)  # it made a binding: removed next
    assert upkeep.leaving(call_id)
    [(key, bye)] = upkeep.ready(0.3)
    assert key == "a"
    assert header(bye, "Expires") == "0"
    assert cseq(bye) == cseq(first) + 1
    upkeep.on_response("a", ok(bye, 0), 0.4)
    assert not upkeep.leaving(call_id)
    assert upkeep.ready(10_000.0) == []


@pytest.mark.promise("P3")
def test_a_refresh_out_when_removed_does_not_end_the_unregister() -> None:
    # The refresh's 200 came back after the removal: it was once taken for the
    # unregister's answer, and the binding stayed on the PBX (P3).
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    registrar = Registrar()
    kept = registration(1)
    upkeep.add("a", kept, 0.0, spread=False)
    now = 0.0
    for _ in range(2):  # the first REGISTER, challenged, then answered
        [(_, request)] = upkeep.ready(now)
        upkeep.on_response("a", registrar.handle(request, now), now)
        now += 1.0
    assert upkeep.states() == {State.REGISTERED: 1}
    assert kept.due_at is not None
    now = kept.due_at
    [(_, refresh)] = upkeep.ready(now)
    assert upkeep.remove("a", now) is True
    upkeep.on_response("a", registrar.handle(refresh, now), now)  # its 200
    assert upkeep.leaving(kept.call_id)
    [(_, bye)] = upkeep.ready(now + 1.0)
    assert header(bye, "Expires") == "0"
    assert header(bye, "Authorization")  # the last credentials, offered again
    # A stray copy of the refresh's response is not the unregister's.
    upkeep.on_response("a", ok(refresh), now + 1.0)
    assert upkeep.leaving(kept.call_id)
    registrar.realms = type(registrar.realms)(b"x" * 32, nonce_lifetime_s=3600)  # new nonces
    upkeep.on_response("a", registrar.handle(bye, now + 1.0), now + 1.0)  # 401: answered
    [(_, answer)] = upkeep.ready(now + 2.0)
    assert header(answer, "Expires") == "0"
    assert cseq(answer) == cseq(bye) + 1
    assert upkeep.leaving(kept.call_id)
    response = registrar.handle(answer, now + 2.0)
    assert response.status == 200
    upkeep.on_response("a", response, now + 2.0)
    assert not upkeep.leaving(kept.call_id)
    assert upkeep.ready(now + 10_000.0) == []


@pytest.mark.promise("P3")
def test_a_register_out_when_removed_that_times_out_is_unregistered_all_the_same() -> None:
    upkeep, kept, _ = removed_with_its_register_out()
    upkeep.timed_out("a", 32.0, kept.call_id)  # did the PBX take it? Unknown.
    [(_, bye)] = upkeep.ready(32.0)
    assert header(bye, "Expires") == "0"
    assert upkeep.leaving(kept.call_id)
    upkeep.timed_out("a", 64.0, kept.call_id)  # the unregister's own timeout ends it
    assert not upkeep.leaving(kept.call_id)
    assert upkeep.ready(10_000.0) == []


def test_a_first_register_challenged_when_removed_leaves_nothing_to_unregister() -> None:
    upkeep, kept, first = removed_with_its_register_out()
    registrar = Registrar()
    upkeep.on_response("a", registrar.handle(first, 0.1), 0.1)  # 401: no binding was made
    assert not upkeep.leaving(kept.call_id)
    assert upkeep.ready(10_000.0) == []


@pytest.mark.promise("P3")
def test_a_register_that_timed_out_before_the_removal_is_unregistered() -> None:
    # Its answer never came (Timer F): the PBX may hold the binding, for up to the interval
    # asked, though nothing confirmed it.
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    kept = registration(1)
    upkeep.add("a", kept, 0.0, spread=False)
    assert len(upkeep.ready(0.0)) == 1
    upkeep.timed_out("a", 32.0, kept.call_id)
    assert kept.expires_at is None
    assert upkeep.remove("a", 40.0) is True  # backing off when the instance is erased
    [(_, bye)] = upkeep.ready(40.0)
    assert header(bye, "Expires") == "0"
    assert header(bye, "Call-ID") == kept.call_id
    # Once the interval asked for is over, no binding can be left: nothing to send.
    again: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    late = registration(2)
    again.add("a", late, 0.0, spread=False)
    assert len(again.ready(0.0)) == 1
    again.timed_out("a", 32.0, late.call_id)
    assert again.remove("a", 32.0 + ACCOUNT.expires + 1.0) is False


def registered(upkeep: Upkeep[str], kept: UpstreamRegistration, now: float) -> Request:
    """`kept` added under "a" and taken by the PBX at `now`; returns its REGISTER."""
    upkeep.add("a", kept, now, spread=False)
    [(_, request)] = upkeep.ready(now)
    upkeep.on_response("a", ok(request), now)
    return request


def replaced() -> tuple[Upkeep[str], UpstreamRegistration, UpstreamRegistration]:
    """ "a" registered at 0 s, then replaced by new credentials at 10 s (not sent yet)."""
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    old = registration(1)
    registered(upkeep, old, 0.0)
    new = registration(2)
    upkeep.add("a", new, 10.0, spread=False)
    return upkeep, old, new


@pytest.mark.promise("P3")
def test_a_key_replaced_by_refused_credentials_is_unregistered_with_the_old_ones() -> None:
    # The app handed a wrong password for the same account: the PBX refuses it, and the
    # binding the old credentials made can only be removed with them.
    upkeep, old, new = replaced()
    [(_, start)] = upkeep.ready(10.0)
    upkeep.on_response("a", make_response(start, 403), 10.0)
    assert new.refused
    assert upkeep.remove("a", 20.0) is True
    [(_, bye)] = upkeep.ready(20.0)
    assert header(bye, "Expires") == "0"
    assert header(bye, "Call-ID") == old.call_id
    # Refused too (the password changed on the PBX meanwhile): the new ones are not tried,
    # refused already (each try is a failed login that fail2ban counts).
    upkeep.on_response("a", make_response(bye, 403), 20.5)
    assert upkeep.ready(21.0) == []
    assert not upkeep.leaving_any()
    # Once the new credentials are taken, they hold the binding: the old ones are let go.
    registered(upkeep, old := registration(3), 30.0)
    registered(upkeep, taken := registration(4), 31.0)
    assert upkeep.remove("a", 40.0) is True
    [(_, bye)] = upkeep.ready(40.0)
    assert header(bye, "Call-ID") == taken.call_id != old.call_id


@pytest.mark.promise("P3")
def test_a_key_replaced_with_its_register_out_then_removed_waits_for_that_register() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    old = registration(1)
    registered(upkeep, old, 0.0)
    assert old.due_at is not None
    now = old.due_at
    [(_, refresh)] = upkeep.ready(now)  # the old credentials' refresh is out
    upkeep.add("a", registration(2), now, spread=False)  # the app reports anew
    assert upkeep.remove("a", now) is True  # and its instance goes before the new one sends
    # RFC 3261 §10.2: not before the refresh's final response.
    assert upkeep.ready(now + 1.0) == []
    upkeep.on_response("a", ok(refresh), now + 1.0)
    [(_, bye)] = upkeep.ready(now + 2.0)
    assert header(bye, "Expires") == "0"
    assert header(bye, "Call-ID") == old.call_id
    assert cseq(bye) == cseq(refresh) + 1
    # A timeout of an earlier REGISTER of that Call-ID does not end the unregister.
    upkeep.timed_out("a", now + 3.0, old.call_id, cseq(refresh))
    assert upkeep.leaving(old.call_id)
    upkeep.on_response("a", ok(bye, 0), now + 3.0)
    assert not upkeep.leaving(old.call_id)


def test_credentials_handed_while_a_register_is_out_wait_for_its_answer() -> None:
    # RFC 3261 §10.2: one REGISTER out at a time. The outcome of the one out says whose
    # credentials hold the binding.
    upkeep, _, second = replaced()
    [(_, start)] = upkeep.ready(10.0)  # the second credentials' first REGISTER is out
    third = registration(3)
    upkeep.add("a", third, 10.5, spread=False)
    assert upkeep.registration("a") is second
    assert upkeep.ready(11.0) == []
    upkeep.on_response("a", ok(start), 11.0)  # the second ones are taken
    assert upkeep.registration("a") is third
    [(_, first_of_third)] = upkeep.ready(11.5)
    assert header(first_of_third, "Call-ID") == third.call_id
    upkeep.on_response("a", make_response(first_of_third, 403), 12.0)  # a wrong password
    assert upkeep.remove("a", 13.0) is True
    [(_, bye)] = upkeep.ready(13.0)
    assert header(bye, "Expires") == "0"
    assert header(bye, "Call-ID") == second.call_id  # the ones the PBX took last


def test_a_new_interval_reaches_credentials_waiting_to_replace() -> None:
    upkeep, _, second = replaced()
    [(_, start)] = upkeep.ready(10.0)
    upkeep.add("a", third := registration(3), 10.5, spread=False)  # waits for the answer
    upkeep.set_expires("a", 1800)  # the tenant's interval changed meanwhile
    assert second.expires == 1800
    upkeep.on_response("a", ok(start), 11.0)
    [(_, first_of_third)] = upkeep.ready(11.5)
    assert header(first_of_third, "Call-ID") == third.call_id
    assert header(first_of_third, "Expires") == "1800"


@pytest.mark.promise("P3")
def test_a_response_whose_call_id_the_pbx_mangled_is_taken_by_its_request() -> None:
    # The transaction layer matches it by its Via branch (RFC 3261 §17.1.3); the Call-ID
    # and CSeq of the request it answers say whose it is.
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    kept = registration(1)
    upkeep.add("a", kept, 0.0, spread=False)
    [(_, first)] = upkeep.ready(0.0)
    upkeep.on_response("a", mangled(ok(first)), 0.1, first)
    assert upkeep.states() == {State.REGISTERED: 1}
    assert upkeep.remove("a", 1.0) is True
    [(_, bye)] = upkeep.ready(1.0)
    upkeep.on_response("a", mangled(ok(bye, 0)), 1.1, bye)
    assert not upkeep.leaving_any()


def mangled(response: Response) -> Response:
    """`response` with a Call-ID and a CSeq of the PBX's own."""
    headers = response.headers.replace("Call-ID", "x@pbx").replace("CSeq", "999 REGISTER")
    return Response(response.status, response.reason, headers)


@pytest.mark.promise("P3")
def test_old_credentials_refused_at_the_unregister_give_way_to_the_new_ones() -> None:
    # The user changed the password on the PBX and the app handed the new one; the
    # instance went before the PBX took it. The old password is refused: the new one
    # removes the binding.
    upkeep, old, new = replaced()
    assert upkeep.remove("a", 10.0) is True
    [(_, bye)] = upkeep.ready(10.0)
    assert header(bye, "Call-ID") == old.call_id
    upkeep.on_response("a", make_response(bye, 403), 10.5)
    [(_, again)] = upkeep.ready(11.0)
    assert header(again, "Expires") == "0"
    assert header(again, "Call-ID") == new.call_id
    assert upkeep.leaving_key("a")
    upkeep.on_response("a", ok(again, 0), 11.5)
    assert not upkeep.leaving_key("a")
    assert not upkeep.leaving_any()


def test_removing_a_key_never_started_sends_nothing() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=60.0, rng=rng(3))
    upkeep.add("a", registration(1), 0.0, spread=True)
    upkeep.add("b", registration(2), 0.0, spread=True)
    assert upkeep.remove("a", 0.0) is False
    assert upkeep.remove("never added", 0.0) is False
    keys = []
    for tick in range(62):
        keys += [key for key, _ in upkeep.ready(float(tick))]
    assert keys == ["b"]
    upkeep.on_response("a", ok(registration(9).start(62.0)), 62.0)  # stray
    upkeep.timed_out("a", 62.0)
    assert "a" not in upkeep
    assert upkeep.sent == 1


def test_a_timeout_schedules_a_retry_after_the_backoff() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    kept = registration(5)
    upkeep.add("a", kept, 0.0, spread=False)
    [(_, first)] = upkeep.ready(0.0)
    assert upkeep.wake_at(0.0) is None  # its REGISTER is out: nothing to wake for
    upkeep.timed_out("a", 32.0)
    assert upkeep.states() == {State.BACKING_OFF: 1}
    due = kept.due_at
    assert due is not None
    assert 32.0 + 15.0 <= due <= 32.0 + 30.0  # RFC 5626 §4.5: 30 s times [0.5, 1]
    assert upkeep.wake_at(32.0) == due
    assert upkeep.ready(due - 0.01) == []
    [(key, retry)] = upkeep.ready(due)
    assert key == "a"
    assert header(retry, "Call-ID") == header(first, "Call-ID")
    assert cseq(retry) == cseq(first) + 1
    upkeep.on_response("a", ok(retry), due + 0.1)
    assert upkeep.states() == {State.REGISTERED: 1}
    assert kept.due_at is not None
    assert upkeep.wake_at(due + 0.1) == kept.due_at


@pytest.mark.promise("P3")
def test_after_12_hours_of_failures_the_key_ends_once() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    upkeep.add("a", registration(6), 0.0, spread=False)
    upkeep.add("b", registration(7), 0.0, spread=False)
    now = 0.0
    ended: list[str] = []
    attempts = 0
    while not ended:
        sent = [(key, request) for key, request in upkeep.ready(now) if key == "a"]
        assert len(sent) == 1
        attempts += 1
        for key, request in upkeep.ready(now + 0.5):
            upkeep.on_response(key, ok(request, 3600 * 24), now + 0.5)  # "b" fares well
        now += 32.0  # Timer F
        upkeep.timed_out("a", now)
        ended = upkeep.ended()
        if not ended:
            wake = upkeep.wake_at(now)
            assert wake is not None
            now = wake
    assert ended == ["a"]
    assert attempts > 10
    assert GIVE_UP_S <= now <= GIVE_UP_S + BACKOFF_MAX_S + 32.0
    assert upkeep.ended() == []
    # Nothing more is sent for it; the caller removes it. Its last REGISTER went
    # unanswered: the PBX may have taken it, so the binding is removed.
    assert all(key == "b" for key, _ in upkeep.ready(now + 1.0))
    assert upkeep.remove("a", now + 1.0) is True
    assert "a" not in upkeep
    assert upkeep.registration("a") is None
    [(key, bye)] = upkeep.ready(now + 2.0)
    assert key == "a"
    assert header(bye, "Expires") == "0"
    assert upkeep.states() == {State.REGISTERED: 1}
    assert all(key == "b" for key, _ in upkeep.ready(now + 100_000.0))


def test_adding_a_key_again_replaces_its_registration() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    old = registration(1)
    first = registered(upkeep, old, 0.0)
    old_due = old.due_at
    assert old_due is not None
    assert 300.0 <= old_due <= 480.0
    # The app hands its account again just before the old refresh is due.
    new = registration(2)
    now = old_due - 1.0
    upkeep.add("a", new, now, spread=False)
    assert len(upkeep) == 1
    assert upkeep.registration("a") is new
    [(key, start)] = upkeep.ready(now)
    assert key == "a"
    assert header(start, "Call-ID") != header(first, "Call-ID")
    assert cseq(start) == 1
    upkeep.on_response("a", ok(start), now)
    new_due = new.due_at
    assert new_due is not None
    assert new_due > old_due + 200.0
    # The old refresh time wakes nobody, and the old registration sends nothing more.
    assert upkeep.wake_at(now) == new_due
    assert upkeep.ready(old_due) == []
    assert old.due_at == old_due  # never asked for its refresh
    [(key, refresh)] = upkeep.ready(new_due)
    assert header(refresh, "Call-ID") == header(start, "Call-ID")
    assert upkeep.sent == 3


# -- replaced and removed registrations, idle clocks ---------------------------------------------


def test_a_response_to_the_replaced_registration_is_not_taken_by_the_new_one() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=10, restore_window_s=0.0)
    registrar = Registrar()
    upkeep.add("a", registration(1), 0.0, spread=False)
    [(_, first)] = upkeep.ready(0.0)
    new = registration(2)
    upkeep.add("a", new, 0.5, spread=False)
    # The final response to the REGISTER of "a" last given out: the old one's 401.
    upkeep.on_response("a", registrar.handle(first, 0.5), 0.5)
    out = upkeep.ready(1.0) + upkeep.ready(1.5) + upkeep.ready(2.0)
    # The new registration starts afresh: one REGISTER, no answer to the old challenge.
    assert [header(request, "Authorization") for _, request in out] == [""]


def first_register_challenged() -> Upkeep[str]:
    """An upkeep whose key's first REGISTER was challenged: its answer waits for a slot."""
    upkeep: Upkeep[str] = Upkeep(max_rate=1.0, restore_window_s=0.0)
    upkeep.add("a", registration(1), 0.0, spread=False)
    [(_, first)] = upkeep.ready(0.0)
    upkeep.on_response("a", Registrar().handle(first, 0.0), 0.0)  # 401
    return upkeep


def test_removing_a_key_mid_challenge_drops_the_answer() -> None:
    upkeep = first_register_challenged()
    # Never bound (its only REGISTER was challenged): nothing to unregister.
    assert upkeep.remove("a", 0.5) is False
    assert upkeep.wake_at(1.0) is None
    assert upkeep.ready(1.0) + upkeep.ready(2.0) + upkeep.ready(3.0) == []


@pytest.mark.promise("P3")
def test_removing_a_bound_key_mid_challenge_sends_only_the_unregister() -> None:
    upkeep: Upkeep[str] = Upkeep(max_rate=1.0, restore_window_s=0.0)
    registrar = Registrar()
    kept = registration(1)
    upkeep.add("a", kept, 0.0, spread=False)
    [(_, first)] = upkeep.ready(0.0)
    upkeep.on_response("a", ok(first), 0.0)
    assert kept.due_at is not None
    now = kept.due_at
    [(_, refresh)] = upkeep.ready(now)
    upkeep.on_response("a", registrar.handle(refresh, now), now)  # 401: the answer waits
    assert upkeep.remove("a", now) is True
    out = upkeep.ready(now + 1.0) + upkeep.ready(now + 2.0) + upkeep.ready(now + 3.0)
    assert [header(request, "Expires") for _, request in out] == ["0"]


def test_a_replaced_key_mid_challenge_sends_no_answer_with_the_old_credentials() -> None:
    upkeep = first_register_challenged()
    new = registration(2)
    upkeep.add("a", new, 0.5, spread=False)
    out = upkeep.ready(1.0) + upkeep.ready(2.0) + upkeep.ready(3.0)
    assert [header(request, "Call-ID") for _, request in out] == [new.call_id]


def test_the_first_registers_on_a_real_clock_keep_to_the_ceiling() -> None:
    upkeep: Upkeep[int] = Upkeep(max_rate=50, restore_window_s=0.0)
    start = 86_400.0  # a monotonic clock some day after boot
    for key in range(100):
        upkeep.add(key, registration(key), start, spread=False)
    sent_at: list[float] = []
    for tick in range(1100):
        now = start + tick * 0.002
        for key, request in upkeep.ready(now):
            sent_at.append(now)
            upkeep.on_response(key, ok(request), now)
    assert len(sent_at) == 100
    assert most_in_a_window(sent_at) <= 51
