"""The registrar over real accounts (SQLite) and the in-memory location service."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from ringfence.provisioning.models import AccountChange, AccountStatus
from ringfence.proxy.parking import sleepers_of
from ringfence.registrar.service import Registrar
from ringfence.runtime import Runtime
from ringfence.sip.digest import (
    Challenge,
    DigestAlgorithm,
    answer,
    parse_challenge,
)
from ringfence.sip.message import Request, Response
from ringfence.sip.transaction import Address
from ringfence.state.location import Binding, LocationServiceError, MemoryLocationService
from ringfence.state.ratelimit import AuthFailureGuard
from tests.conftest import Demo
from tests.registrar.helpers import register, torture
from tests.support.clock import FakeClock

SECRET = b"registrar-test-nonce-secret-0001"
NOW = 1_767_603_600.0
AOR = "sip:alice@sip.acme.example"
UDP = Address("UDP", "192.0.2.1", 5060)
PHONE = "<sip:alice@192.0.2.1:5060>"
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-aabbccddeeff>"'


@pytest.fixture
def location() -> MemoryLocationService:
    return MemoryLocationService()


@pytest.fixture
def registrar(runtime: Runtime, demo: Demo, location: MemoryLocationService) -> Registrar:
    return Registrar(runtime.provisioning, location, SECRET, clock=runtime.clock)


def challenges(response: Response) -> list[Challenge]:
    return [parse_challenge(value) for value in response.headers.get_all("WWW-Authenticate")]


def authorized(
    request: Request,
    challenged: Response,
    *,
    username: str = "alice",
    password: str = "correct horse",
    algorithm: DigestAlgorithm = DigestAlgorithm.SHA256,
    nc: int = 1,
    uri: str | None = None,
) -> Request:
    """`request` with credentials answering the `algorithm` challenge of `challenged`."""
    challenge = next(c for c in challenges(challenged) if c.digest_algorithm is algorithm)
    credentials = answer(
        challenge,
        request.method,
        uri or request.uri,
        username,
        password,
        cnonce="0a4f113b",
        nc=nc,
    )
    return dataclasses.replace(
        request, headers=request.headers.add("Authorization", credentials.render())
    )


async def register_ok(
    registrar: Registrar,
    *contacts: str,
    source: Address = UDP,
    now: float = NOW,
    cseq: int = 1,
    **fields: Any,
) -> Response:
    """Challenge, answer with CSeq + 1, and expect 200 (the usual two-step REGISTER)."""
    first = await registrar.handle(register(*contacts, cseq=cseq, **fields), source, now)
    assert first.status == 401
    second = register(*contacts, cseq=cseq + 1, **fields)
    response = await registrar.handle(authorized(second, first), source, now)
    assert response.status == 200, response.reason
    return response


def contacts(response: Response) -> list[str]:
    return response.headers.get_all("Contact")


def to_tag(response: Response) -> str | None:
    to = response.headers.get("To") or ""
    return to.partition(";tag=")[2] or None


# -- digest authentication (RFC 3261 §22.4, RFC 7616, RFC 8760) ------------------------------


async def test_challenge_then_200_with_contact_expires(
    registrar: Registrar, location: MemoryLocationService, clock: FakeClock
) -> None:
    first = await registrar.handle(register(PHONE), UDP, NOW)
    assert (first.status, first.reason) == (401, "Unauthorized")
    offered = challenges(first)
    assert [c.algorithm for c in offered] == ["SHA-256", "MD5"]  # RFC 8760 §2.3
    assert {c.realm for c in offered} == {"sip.acme.example"}
    assert all(c.qop == ("auth",) and not c.stale for c in offered)
    assert to_tag(first)
    assert await location.count() == 0

    ok = await registrar.handle(authorized(register(PHONE, cseq=2), first), UDP, NOW)
    assert (ok.status, ok.reason) == (200, "OK")
    assert contacts(ok) == ["<sip:alice@192.0.2.1:5060>;expires=3600"]
    assert to_tag(ok)
    assert ok.headers.get("Call-ID") == "call-1@phone"
    # §10.3 step 8, in the rfc1123-date form of §20.17 (the fake clock's 2026-01-05 09:00).
    assert ok.headers.get("Date") == "Mon, 05 Jan 2026 09:00:00 GMT"
    assert first.headers.get("Date") is None
    # The Date follows the clock (it is formatted once a second, not once for all).
    clock.advance(61.5)
    again = await registrar.handle(register(PHONE, cseq=3), UDP, NOW)
    again_ok = await registrar.handle(authorized(register(PHONE, cseq=4), again), UDP, NOW)
    assert again_ok.headers.get("Date") == "Mon, 05 Jan 2026 09:01:01 GMT"
    [binding] = await registrar.bindings(AOR, NOW)
    assert (binding.contact, binding.expires_at, binding.source) == (
        "sip:alice@192.0.2.1:5060",
        NOW + 3600,
        UDP,
    )


async def test_md5_answers_are_accepted(registrar: Registrar) -> None:
    first = await registrar.handle(register(PHONE), UDP, NOW)
    request = authorized(register(PHONE, cseq=2), first, algorithm=DigestAlgorithm.MD5)
    assert (await registrar.handle(request, UDP, NOW)).status == 200


async def test_wrong_password_is_401_without_stale(
    registrar: Registrar, location: MemoryLocationService
) -> None:
    first = await registrar.handle(register(PHONE), UDP, NOW)
    request = authorized(register(PHONE, cseq=2), first, password="wrong horse")
    refused = await registrar.handle(request, UDP, NOW)
    assert refused.status == 401
    assert [c.stale for c in challenges(refused)] == [False, False]
    assert await location.count() == 0


async def test_replayed_nonce_count_is_refused(registrar: Registrar) -> None:
    first = await registrar.handle(register(PHONE), UDP, NOW)
    ok = await registrar.handle(authorized(register(PHONE, cseq=2), first, nc=1), UDP, NOW)
    assert ok.status == 200
    replay = authorized(register(PHONE, cseq=3), first, nc=1)
    refused = await registrar.handle(replay, UDP, NOW + 1)
    assert refused.status == 401
    assert not any(c.stale for c in challenges(refused))
    counted = authorized(register(PHONE, cseq=4), first, nc=2)
    assert (await registrar.handle(counted, UDP, NOW + 2)).status == 200


async def test_expired_nonce_is_401_stale(registrar: Registrar) -> None:
    first = await registrar.handle(register(PHONE), UDP, NOW)
    late = authorized(register(PHONE, cseq=2), first)
    refused = await registrar.handle(late, UDP, NOW + 301)  # nonce lifetime: 300 s
    assert refused.status == 401
    assert [c.stale for c in challenges(refused)] == [True, True]
    retry = authorized(register(PHONE, cseq=3), refused)
    assert (await registrar.handle(retry, UDP, NOW + 302)).status == 200


async def test_credentials_for_another_realm_are_challenged(registrar: Registrar) -> None:
    first = await registrar.handle(register(PHONE), UDP, NOW)
    [sha256, _] = challenges(first)
    elsewhere = dataclasses.replace(sha256, realm="other.example")
    credentials = answer(
        elsewhere, "REGISTER", "sip:sip.acme.example", "alice", "x" * 8, cnonce="c"
    )
    request = register(PHONE, cseq=2, extra=[("Authorization", credentials.render())])
    assert (await registrar.handle(request, UDP, NOW)).status == 401


async def test_non_digest_scheme_is_challenged_rfc4475_regaut01(runtime: Runtime) -> None:
    # RFC 4475 §3.3.7: a registrar that authenticates answers 401 with a challenge in a
    # scheme it understands.
    await runtime.provisioning.create_tenant("example", "Example", "example.com")
    await runtime.provisioning.create_account("example", "j.user", "a long password")
    registrar = Registrar(runtime.provisioning, MemoryLocationService(), SECRET)
    response = await registrar.handle(torture("regaut01.dat"), UDP, NOW)
    assert response.status == 401
    assert [c.realm for c in challenges(response)] == ["example.com", "example.com"]


async def test_malformed_authorization_is_400(registrar: Registrar) -> None:
    request = register(PHONE, extra=[("Authorization", 'Digest username="alice", realm=')])
    assert (await registrar.handle(request, UDP, NOW)).status == 400


async def test_qop_without_cnonce_is_400(registrar: Registrar) -> None:
    first = await registrar.handle(register(PHONE), UDP, NOW)
    [sha256, _] = challenges(first)
    credentials = answer(
        sha256, "REGISTER", "sip:sip.acme.example", "alice", "correct horse", cnonce="c"
    )
    broken = dataclasses.replace(credentials, cnonce=None)
    request = register(PHONE, cseq=2, extra=[("Authorization", broken.render())])
    assert (await registrar.handle(request, UDP, NOW)).status == 400


async def test_digest_uri_other_than_the_request_uri_is_accepted(registrar: Registrar) -> None:
    # SIPp puts the server's address in the digest uri; the response still proves the
    # password, and the nonce-count stops replays (see Registrar._authenticate).
    first = await registrar.handle(register(PHONE), UDP, NOW)
    elsewhere = authorized(register(PHONE, cseq=2), first, uri="sip:127.0.0.1:5060")
    assert (await registrar.handle(elsewhere, UDP, NOW)).status == 200
    replayed = authorized(register(PHONE, cseq=3), first, uri="sip:127.0.0.1:5060")
    assert (await registrar.handle(replayed, UDP, NOW)).status == 401


# -- who may register (§10.3 steps 4 and 5) --------------------------------------------------


async def test_unknown_user_is_404(registrar: Registrar) -> None:
    response = await registrar.handle(
        register(PHONE, to="<sip:mallory@sip.acme.example>"), UDP, NOW
    )
    assert (response.status, response.reason) == (404, "Not Found")


async def test_unknown_domain_is_403(registrar: Registrar) -> None:
    for domain in ("sip.other.example", "acme"):  # a tenant code is not a SIP domain
        response = await registrar.handle(register(PHONE, to=f"<sip:alice@{domain}>"), UDP, NOW)
        assert (response.status, response.reason) == (403, "Domain not served here")


async def test_to_must_be_a_sip_uri_rfc4475_unksm2(registrar: Registrar) -> None:
    assert (await registrar.handle(torture("unksm2.dat"), UDP, NOW)).status == 400


async def test_credentials_of_another_user_are_403(runtime: Runtime, registrar: Registrar) -> None:
    await runtime.provisioning.create_account("acme", "bob", "bobs password")
    first = await registrar.handle(register(PHONE), UDP, NOW)
    as_bob = authorized(register(PHONE, cseq=2), first, username="bob", password="bobs password")
    response = await registrar.handle(as_bob, UDP, NOW)
    assert (response.status, response.reason) == (403, "Credentials do not match the To user")


async def test_suspended_account_is_403(
    runtime: Runtime, registrar: Registrar, location: MemoryLocationService
) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(status=AccountStatus.SUSPENDED)
    )
    first = await registrar.handle(register(PHONE), UDP, NOW)
    assert first.status == 401  # suspension is told only to whoever knows the password
    response = await registrar.handle(authorized(register(PHONE, cseq=2), first), UDP, NOW)
    assert (response.status, response.reason) == (403, "Account suspended")
    assert await location.count() == 0


async def test_other_methods_are_405(registrar: Registrar) -> None:
    response = await registrar.handle(register(PHONE, method="OPTIONS"), UDP, NOW)
    assert response.status == 405
    assert response.headers.get("Allow") == "REGISTER"


# -- bindings (§10.3 steps 6-8) ----------------------------------------------------------------


async def test_brief_interval_is_423_with_min_expires(registrar: Registrar) -> None:
    first = await registrar.handle(register(PHONE, expires="30"), UDP, NOW)
    response = await registrar.handle(
        authorized(register(PHONE, expires="30", cseq=2), first), UDP, NOW
    )
    assert (response.status, response.reason) == (423, "Interval Too Brief")
    assert response.headers.get("Min-Expires") == "60"


async def test_two_contacts_then_star_removes_them(
    registrar: Registrar, location: MemoryLocationService
) -> None:
    ok = await register_ok(registrar, PHONE, "<sip:alice@198.51.100.7:5070>;expires=600")
    assert contacts(ok) == [
        "<sip:alice@192.0.2.1:5060>;expires=3600",
        "<sip:alice@198.51.100.7:5070>;expires=600",
    ]
    assert await location.count() == 2
    removed = await register_ok(registrar, "*", expires="0", cseq=3)
    assert contacts(removed) == []
    assert await registrar.bindings(AOR, NOW) == []


async def test_outbound_reregistration_replaces_the_flow(registrar: Registrar) -> None:
    contact = "<sip:alice@192.0.2.1;transport=tcp;ob>;+sip.instance=" + INSTANCE + ";reg-id=1"
    first_flow = Address("TCP", "192.0.2.1", 40000, "tcp-1")
    ok = await register_ok(registrar, contact, source=first_flow, supported=["outbound"])
    assert ok.headers.get("Require") == "outbound"
    # The phone changed networks: new flow, new address, new Call-ID, same instance/reg-id.
    moved = contact.replace("192.0.2.1", "198.51.100.20")
    second_flow = Address("TCP", "198.51.100.20", 41000, "tcp-2")
    await register_ok(
        registrar, moved, source=second_flow, supported=["outbound"], call_id="after-move"
    )
    [binding] = await registrar.bindings(AOR, NOW)
    assert (binding.flow, binding.reg_id, binding.call_id) == ("tcp-2", 1, "after-move")
    assert await registrar.flow_closed("tcp-1") == 0
    assert await registrar.flow_closed("tcp-2") == 1
    assert await registrar.bindings(AOR, NOW) == []


async def test_path_is_echoed(registrar: Registrar) -> None:
    path = "<sip:edge.acme.example;lr>"
    ok = await register_ok(registrar, PHONE, vias=2, path=[path], supported=["path"])
    assert ok.headers.get("Path") == path
    [binding] = await registrar.bindings(AOR, NOW)
    assert binding.path == (path,)


async def test_flow_closed_removes_only_that_flows_outbound_bindings(
    registrar: Registrar,
) -> None:
    tcp = Address("TCP", "192.0.2.1", 40000, "tcp-9")
    outbound = "<sip:alice@192.0.2.1;transport=tcp;ob>;+sip.instance=" + INSTANCE + ";reg-id=1"
    await register_ok(registrar, outbound, source=tcp)
    plain = Address("TCP", "192.0.2.1", 40001, "tcp-10")
    await register_ok(
        registrar, "<sip:alice@192.0.2.1:5062;transport=tcp>", source=plain, call_id="plain-tcp"
    )
    await register_ok(registrar, PHONE, call_id="udp-phone")
    assert len(await registrar.bindings(AOR, NOW)) == 3
    assert await registrar.flow_closed("tcp-9") == 1
    # A plain TCP registration is reached over a new connection (RFC 3261 §18.2.2).
    assert await registrar.flow_closed("tcp-10") == 0
    assert {b.source for b in await registrar.bindings(AOR, NOW)} == {UDP, plain}


async def test_bindings_expire(registrar: Registrar) -> None:
    await register_ok(registrar, PHONE, expires="60")
    assert len(await registrar.bindings(AOR, NOW + 59)) == 1
    assert await registrar.bindings(AOR, NOW + 60) == []


class BrokenLocation(MemoryLocationService):
    async def replace(self, aor: str, bindings: list[Binding], now: float) -> None:
        raise LocationServiceError("store unreachable")


async def test_a_failed_store_is_500(runtime: Runtime, demo: Demo) -> None:
    # §10.3 step 7: a failed commit fails the request with 500.
    registrar = Registrar(runtime.provisioning, BrokenLocation(), SECRET)
    first = await registrar.handle(register(PHONE), UDP, NOW)
    response = await registrar.handle(authorized(register(PHONE, cseq=2), first), UDP, NOW)
    assert response.status == 500


async def test_logs_carry_no_personal_data(
    registrar: Registrar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ringfence")
    tcp = Address("TCP", "203.0.113.5", 40000, "tcp-secret-flow")
    contact = "<sip:alice@203.0.113.5;transport=tcp>;pn-prid=token-0fd2"
    await register_ok(registrar, contact, source=tcp)
    await registrar.handle(register(PHONE, to="<sip:alice@sip.other.example>"), UDP, NOW)
    first = await registrar.handle(register(PHONE), UDP, NOW)
    await registrar.handle(authorized(register(PHONE, cseq=2), first, password="nope"), UDP, NOW)
    await registrar.flow_closed("tcp-secret-flow")
    assert caplog.records  # something was logged ...
    for personal in ("alice", "203.0.113.5", "192.0.2.1", "token-0fd2", "tcp-secret-flow"):
        assert personal not in caplog.text  # ... but no user, AOR, contact or address


def test_the_nonce_secret_must_be_long_enough(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Registrar(runtime.provisioning, MemoryLocationService(), b"short")
    with pytest.raises(ValueError, match="positive"):
        Registrar(runtime.provisioning, MemoryLocationService(), SECRET, nonce_lifetime_s=0)


PUSH_CONTACT = (
    "<sip:alice@203.0.113.5;transport=tcp;pn-provider=apns;pn-prid=0fd2aa;"
    "pn-param=TEAM123456.com.example.voip>"
)


@pytest.fixture
def push_registrar(runtime: Runtime, demo: Demo, location: MemoryLocationService) -> Registrar:
    return Registrar(
        runtime.provisioning,
        location,
        SECRET,
        clock=runtime.clock,
        push_services=frozenset({"apns", "webhook"}),
    )


async def test_push_parameters_are_kept_and_the_binding_outlives_its_registration(
    push_registrar: Registrar, runtime: Runtime
) -> None:
    response = await register_ok(push_registrar, PUSH_CONTACT, expires="600")
    # RFC 8599: +sip.pns tells the UA that it will be woken by APNs pushes.
    assert response.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
    [binding] = await push_registrar.bindings(AOR, NOW)
    assert "pn-prid=0fd2aa" in binding.contact
    # The wall time of the REGISTER that brought the token: an APNs 410 dated before it
    # does not prune the binding (sleepers carry it to the push).
    assert binding.pushed_at == runtime.clock.now().timestamp()
    assert sleepers_of([binding])[0].registered_at == binding.pushed_at
    # The registration ends after 600 s; the sleeping device is kept for the push
    # instance max age (3 days by default), then forgotten (P3).
    assert binding.registered(NOW + 599)
    assert not binding.registered(NOW + 600)
    assert len(await push_registrar.bindings(AOR, NOW + 600)) == 1
    assert len(await push_registrar.bindings(AOR, NOW + 3 * 86_400 - 1)) == 1
    assert await push_registrar.bindings(AOR, NOW + 3 * 86_400) == []


async def test_a_contact_asking_for_refresh_pushes_is_told_when_they_come(
    push_registrar: Registrar,
) -> None:
    # RFC 8599 §5.3: +sip.pnsreg in the Contact asks the proxy to push before expiry.
    response = await register_ok(push_registrar, PUSH_CONTACT + ";+sip.pnsreg", expires="600")
    assert response.headers.get("Feature-Caps") == '*;+sip.pns="apns";+sip.pnsreg="120"'
    [binding] = await push_registrar.bindings(AOR, NOW)
    assert ("+sip.pnsreg", None) in binding.params


@pytest.mark.promise("P3")
async def test_a_push_binding_is_forgotten_at_the_configured_max_age(
    runtime: Runtime, push_registrar: Registrar
) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(overrides={"push": {"instance_max_age_days": 5}})
    )
    await register_ok(push_registrar, PUSH_CONTACT, expires="600")
    assert len(await push_registrar.bindings(AOR, NOW + 5 * 86_400 - 1)) == 1
    assert await push_registrar.bindings(AOR, NOW + 5 * 86_400) == []


async def test_a_sleeping_binding_is_refreshed_not_duplicated_and_not_listed(
    push_registrar: Registrar,
) -> None:
    await register_ok(push_registrar, PUSH_CONTACT, expires="600")
    # Later another device registers: the sleeping one stays, but is not listed as current.
    response = await register_ok(push_registrar, PHONE, now=NOW + 700, call_id="other")
    assert contacts(response) == [f"{PHONE};expires=3600"]
    assert len(await push_registrar.bindings(AOR, NOW + 700)) == 2
    # The woken app registers again (same Contact): one binding for it, registered again.
    await register_ok(push_registrar, PUSH_CONTACT, now=NOW + 800, cseq=5, expires="600")
    bindings = await push_registrar.bindings(AOR, NOW + 800)
    assert len(bindings) == 2
    assert all(b.registered(NOW + 800) for b in bindings)


async def test_an_unsupported_push_service_is_refused_with_555(push_registrar: Registrar) -> None:
    contact = "<sip:alice@203.0.113.5;pn-provider=acme-push;pn-prid=abc;pn-param=x>"
    first = await push_registrar.handle(register(contact), UDP, NOW)
    response = await push_registrar.handle(authorized(register(contact, cseq=2), first), UDP, NOW)
    assert (response.status, response.reason) == (555, "Push Notification Service Not Supported")
    assert response.headers.get("Feature-Caps") == '*;+sip.pns="apns,webhook"'
    assert await push_registrar.bindings(AOR, NOW) == []


@pytest.mark.parametrize(
    "contact",
    [
        "<sip:alice@203.0.113.5;pn-provider=apns;pn-param=TEAM123456.com.example.voip>",
        "<sip:alice@203.0.113.5;pn-provider=apns;pn-prid=abc;pn-param=nodots>",
    ],
)
async def test_incomplete_push_parameters_are_a_400(
    push_registrar: Registrar, contact: str
) -> None:
    first = await push_registrar.handle(register(contact), UDP, NOW)
    response = await push_registrar.handle(authorized(register(contact, cseq=2), first), UDP, NOW)
    assert response.status == 400
    assert response.reason.startswith("Bad push parameters")
    assert await push_registrar.bindings(AOR, NOW) == []


@pytest.mark.promise("P4")
@pytest.mark.promise("P1")
async def test_push_parameters_are_dropped_in_another_background_mode(
    runtime: Runtime, push_registrar: Registrar
) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(overrides={"push": {"mode": "keepalive"}})
    )
    response = await register_ok(push_registrar, PUSH_CONTACT + ";pn-silent=1", expires="600")
    assert response.headers.get("Feature-Caps") is None  # the UA learns it will not be pushed
    [binding] = await push_registrar.bindings(AOR, NOW)
    assert "pn-" not in binding.contact
    assert "0fd2aa" not in repr(binding)
    assert [name for name, _ in binding.params if name.startswith("pn-")] == []
    assert binding.keep_until is None
    assert await push_registrar.bindings(AOR, NOW + 600) == []  # no sleeping device kept


# -- password guessing ---------------------------------------------------------------------


def guarded(runtime: Runtime, per_source: int, per_user: int) -> Registrar:
    guard = AuthFailureGuard(per_source=per_source, per_user=per_user, window_s=300)
    return Registrar(runtime.provisioning, MemoryLocationService(), SECRET, guard=guard)


@pytest.mark.usefixtures("demo")
async def test_guessing_from_one_address_is_refused_then_allowed_again(runtime: Runtime) -> None:
    registrar = guarded(runtime, per_source=50, per_user=3)
    guesser = Address("UDP", "198.51.100.66", 5060)
    for attempt in range(3):
        first = await registrar.handle(register(PHONE, cseq=2 * attempt + 1), guesser, NOW)
        wrong = authorized(
            register(PHONE, cseq=2 * attempt + 2), first, password=f"guess {attempt}"
        )
        assert (await registrar.handle(wrong, guesser, NOW)).status == 401
    # The fourth try is refused before any password is checked, even the right one...
    blocked = await registrar.handle(register(PHONE, cseq=7), guesser, NOW + 1)
    assert (blocked.status, blocked.reason) == (403, AuthFailureGuard.REASON)
    # ...while the user's own phone, elsewhere, registers as usual...
    await register_ok(registrar, PHONE, source=UDP, now=NOW + 1, cseq=20)
    # ...and once the window has passed the address may try again.
    await register_ok(registrar, PHONE, source=guesser, now=NOW + 301, cseq=30)


@pytest.mark.usefixtures("demo")
async def test_enumerating_users_counts_against_the_address(runtime: Runtime) -> None:
    registrar = guarded(runtime, per_source=5, per_user=3)
    scanner = Address("UDP", "198.51.100.99", 5060)
    for n in range(5):
        to = f"<sip:user{n}@sip.acme.example>"
        assert (await registrar.handle(register(PHONE, to=to), scanner, NOW)).status == 404
    # Now even a real user's name gets no challenge from this address.
    refused = await registrar.handle(register(PHONE), scanner, NOW)
    assert refused.status == 403
    assert refused.headers.get("WWW-Authenticate") is None


async def test_aor_of_another_tenant_than_the_request_uri_is_404(
    runtime: Runtime, registrar: Registrar
) -> None:
    # §10.3 step 5: the AOR must be valid for the Request-URI's domain.
    await runtime.provisioning.create_tenant("globex", "Globex", "sip.globex.example")
    await runtime.provisioning.create_account("globex", "hank", "hank's secret")
    across = register(PHONE, to="<sip:hank@sip.globex.example>", uri="sip:sip.acme.example")
    response = await registrar.handle(across, UDP, NOW)
    assert (response.status, response.reason) == (404, "Not Found in the Request-URI's domain")
    # Addressed to the node itself (an IP address), any tenant's user registers.
    by_address = register(PHONE, to="<sip:hank@sip.globex.example>", uri="sip:192.0.2.10")
    assert (await registrar.handle(by_address, UDP, NOW)).status == 401
    own = register(PHONE, to="<sip:hank@sip.globex.example>", uri="sip:SIP.globex.example")
    assert (await registrar.handle(own, UDP, NOW)).status == 401
