"""The upstream registration of overlay mode, against a registrar played with the project's
own digest server (sans-IO: requests in, responses out, time as numbers)."""

from __future__ import annotations

import pytest

from ringfence.overlay.registration import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    GIVE_UP_S,
    REFUSED_WAIT_S,
    State,
    UpstreamAccount,
    UpstreamRegistration,
)
from ringfence.sip.digest import DigestAlgorithm, DigestRealms
from ringfence.sip.message import Request, make_response
from tests.overlay.upstream import ACCOUNT, HA1, REALM, Registrar, rng


def state_of(registration: UpstreamRegistration) -> State:
    """The state now (a call, so that type narrowing from an earlier check does not stick)."""
    return registration.state


def register(registration: UpstreamRegistration, registrar: Registrar, now: float) -> None:
    request: Request | None = registration.start(now)
    while request is not None:
        request = registration.on_response(registrar.handle(request, now), now)


def test_it_answers_the_challenge_and_refreshes_before_the_binding_lapses() -> None:
    registrar = Registrar(granted=600)
    registration = UpstreamRegistration(ACCOUNT, rng(7))
    register(registration, registrar, 1000.0)
    assert registration.state is State.REGISTERED
    assert registration.expires_at == 1600.0
    first, second = registrar.seen
    assert first.headers.get("Authorization") is None
    assert "Digest" in (second.headers.get("Authorization") or "")
    assert second.headers.get("Contact") == f"<{ACCOUNT.contact}>"
    assert second.headers.get("Expires") == "600"
    # The refresh comes in the interval's later half, before it lapses (RFC 5626 §4.4.1).
    assert registration.due_at is not None
    assert 1300.0 <= registration.due_at <= 1480.0
    assert registration.due(registration.due_at - 1) is None
    refresh = registration.due(registration.due_at)
    assert refresh is not None
    # Same Call-ID, a higher CSeq (RFC 3261 §10.2.4); the nonce answered again, nc 2.
    assert refresh.headers.get("Call-ID") == first.headers.get("Call-ID")
    assert int((refresh.headers.get("CSeq") or "").split()[0]) == 3
    assert "nc=00000002" in (refresh.headers.get("Authorization") or "")
    assert registration.on_response(registrar.handle(refresh, 1400.0), 1400.0) is None
    assert registration.expires_at == 2000.0
    # The password never shows in what is sent or in the account's repr.
    assert all("s3cret" not in str(r.headers) for r in registrar.seen)
    assert "s3cret" not in repr(ACCOUNT)


def test_refreshes_of_many_registrations_spread_out() -> None:
    due = []
    for seed in range(200):
        registration = UpstreamRegistration(ACCOUNT, rng(seed))
        register(registration, Registrar(granted=3600), 0.0)
        assert registration.due_at is not None
        due.append(registration.due_at)
    assert min(due) >= 1800.0
    assert max(due) <= 2880.0
    assert max(due) - min(due) > 800.0  # not all at once after a restart


def failing_waits(
    registration: UpstreamRegistration, registrar: Registrar, now: float
) -> tuple[list[float], float]:
    """The waits between attempts until the registration ends, and when it ended."""
    waits = []
    while state_of(registration) is not State.ENDED:
        assert registration.due_at is not None
        waits.append(registration.due_at - now)
        now = registration.due_at
        request = registration.due(now)
        while request is not None:
            request = registration.on_response(registrar.handle(request, now), now)
    return waits, now


def test_a_wrong_password_is_tried_once_per_attempt_and_slowly_then_given_up() -> None:
    wrong = UpstreamAccount(**{**ACCOUNT.__dict__, "password": "not it"})
    registrar = Registrar()
    registration = UpstreamRegistration(wrong, rng(3))
    register(registration, registrar, 0.0)
    assert registration.state is State.BACKING_OFF
    assert registration.refused
    # Challenged, answered once, refused: one failed login, not two.
    assert len(registrar.seen) == 2
    waits, ended_at = failing_waits(registration, registrar, 0.0)
    # Each failed login waits 15 to 22.5 min: fail2ban's default (5 in 10 min) never sees
    # more than one per account (RFC 5626 §4.5's 30 s would be 4 in the first 4 minutes).
    assert all(REFUSED_WAIT_S <= wait <= max(1.5 * REFUSED_WAIT_S, BACKOFF_MAX_S) for wait in waits)
    attempts = len(waits) + 1
    # A retry offers the last credentials, is challenged afresh and answers once: at most
    # one refused answer to a fresh nonce per attempt.
    answered = [r for r in registrar.seen if r.headers.get("Authorization")]
    assert len(answered) <= 2 * attempts
    assert len(registrar.seen) <= 3 * attempts
    assert GIVE_UP_S <= ended_at < GIVE_UP_S + BACKOFF_MAX_S
    assert registration.due(ended_at + 10_000) is None  # ended: nothing more is sent


def test_forbidden_is_a_refusal_and_a_success_clears_it() -> None:
    registrar = Registrar()
    registrar.answer = 403
    registration = UpstreamRegistration(ACCOUNT, rng(8))
    register(registration, registrar, 0.0)
    assert registration.refused
    assert registration.due_at is not None
    assert registration.due_at >= REFUSED_WAIT_S
    registrar.answer = None
    now = registration.due_at
    request = registration.due(now)
    while request is not None:
        request = registration.on_response(registrar.handle(request, now), now)
    assert state_of(registration) is State.REGISTERED
    assert not registration.refused


def test_a_server_failure_backs_off_doubling_per_rfc_5626() -> None:
    registrar = Registrar()
    registrar.answer = 503
    registration = UpstreamRegistration(ACCOUNT, rng(3))
    register(registration, registrar, 0.0)
    assert not registration.refused
    waits, ended_at = failing_waits(registration, registrar, 0.0)
    # RFC 5626 §4.5: base 30 s doubling to 30 min, each times [0.5, 1].
    assert BACKOFF_BASE_S * 0.5 <= waits[0] <= BACKOFF_BASE_S
    assert BACKOFF_BASE_S <= waits[1] <= 2 * BACKOFF_BASE_S
    assert max(waits) <= BACKOFF_MAX_S
    assert GIVE_UP_S <= ended_at < GIVE_UP_S + BACKOFF_MAX_S


def test_a_challenge_marked_stale_after_an_answer_is_answered_again() -> None:
    registrar = Registrar()
    registration = UpstreamRegistration(ACCOUNT, rng(9))
    first = registration.start(0.0)
    challenge = registrar.handle(first, 0.0)
    answered = registration.on_response(challenge, 0.0)
    assert answered is not None
    # The nonce aged while the answer was in flight: stale=true (RFC 7616 §3.3).
    stale = make_response(
        answered,
        401,
        headers=registrar.realms.challenge_headers(REALM, "WWW-Authenticate", 0.0, stale=True),
    )
    again = registration.on_response(stale, 0.0)
    assert again is not None
    assert not registration.refused
    assert registration.on_response(registrar.handle(again, 0.0), 0.0) is None
    assert state_of(registration) is State.REGISTERED


def test_a_registrar_that_wants_a_longer_interval_gets_it() -> None:
    registration = UpstreamRegistration(ACCOUNT, rng(1))
    request = registration.start(0.0)
    too_brief = make_response(request, 423, headers=(("Min-Expires", "1800"),))
    again = registration.on_response(too_brief, 0.0)
    assert again is not None
    assert again.headers.get("Expires") == "1800"
    absurd = make_response(again, 423, headers=(("Min-Expires", "999999"),))
    assert registration.on_response(absurd, 0.0) is None
    assert registration.state is State.BACKING_OFF


def test_a_timeout_is_a_failure_and_unregister_ends_it() -> None:
    registration = UpstreamRegistration(ACCOUNT, rng(2))
    registration.start(0.0)
    registration.timed_out(32.0)
    assert registration.state is State.BACKING_OFF
    assert registration.failing_for == 0.0
    register(registration, Registrar(), 100.0)
    bye = registration.unregister()
    assert bye.headers.get("Expires") == "0"
    assert "Digest" in (bye.headers.get("Authorization") or "")
    assert state_of(registration) is State.ENDED
    assert registration.on_response(make_response(bye, 200), 101.0) is None


def test_an_account_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="password or an HA1"):
        UpstreamAccount("sip:1@x", "sip:x", "sip:c@y", "1")
    with_ha1 = UpstreamAccount(
        **{**ACCOUNT.__dict__, "password": None, "ha1": HA1[DigestAlgorithm.MD5]}
    )
    registrar = Registrar()
    registrar.realms = DigestRealms(b"k" * 32, algorithms=(DigestAlgorithm.MD5,))
    # Stale nonces are answered afresh: a later refresh with an expired nonce is challenged
    # and answered again.
    registration = UpstreamRegistration(with_ha1, rng(4))
    register(registration, registrar, 0.0)
    assert registration.state is State.REGISTERED


def test_a_stale_nonce_is_answered_afresh() -> None:
    registrar = Registrar()
    registrar.realms = DigestRealms(b"k" * 32, nonce_lifetime_s=60)
    registration = UpstreamRegistration(ACCOUNT, rng(5))
    register(registration, registrar, 0.0)
    assert registration.due_at is not None
    now = registration.due_at  # long after the nonce's 60 s
    request = registration.due(now)
    sent = 0
    while request is not None:
        sent += 1
        request = registration.on_response(registrar.handle(request, now), now)
    assert sent == 2  # refused as stale, then the new challenge answered
    assert state_of(registration) is State.REGISTERED


def test_an_unregister_with_a_stale_nonce_answers_the_new_challenge_once() -> None:
    registrar = Registrar()
    registrar.realms = DigestRealms(b"k" * 32, nonce_lifetime_s=60)
    registration = UpstreamRegistration(ACCOUNT, rng(6))
    register(registration, registrar, 0.0)
    bye = registration.unregister()
    assert bye.headers.get("Expires") == "0"
    answer = registration.on_response(registrar.handle(bye, 500.0), 500.0)  # stale: 401
    assert answer is not None
    assert answer.headers.get("Expires") == "0"
    assert answer.headers.get("Call-ID") == bye.headers.get("Call-ID")
    assert registration.on_response(registrar.handle(answer, 500.0), 500.0) is None
    assert registrar.seen[-1] is answer
    # A second refusal is not answered again: nothing more is sent.
    assert registration.on_response(make_response(answer, 401), 501.0) is None
    assert state_of(registration) is State.ENDED


def test_an_ha1_alone_answers_the_md5_challenge_though_sha256_comes_first() -> None:
    # RFC 8760 §2.3: the registrar offers SHA-256 first; an MD5 HA1 can answer only MD5.
    with_ha1 = UpstreamAccount(
        ACCOUNT.aor,
        ACCOUNT.registrar,
        ACCOUNT.contact,
        ACCOUNT.auth_username,
        ha1=HA1[DigestAlgorithm.MD5],
    )
    registrar = Registrar()
    registration = UpstreamRegistration(with_ha1, rng(8))
    register(registration, registrar, 0.0)
    assert state_of(registration) is State.REGISTERED
    assert "algorithm=MD5" in (registrar.seen[-1].headers.get("Authorization") or "")


def test_a_2xx_that_grants_nothing_is_a_failure() -> None:
    registrar = Registrar(granted=0)
    registration = UpstreamRegistration(ACCOUNT, rng(9))
    register(registration, registrar, 0.0)
    assert state_of(registration) is State.BACKING_OFF
    assert registration.due_at is not None
    assert registration.due_at >= 15.0
