"""Routing decisions over real accounts: authentication, targets, trunk, no open relay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from ringfence.provisioning.models import AccountChange
from ringfence.proxy.engine import Incoming, Target
from ringfence.proxy.router import NO_DNS, Decision, Forward, Hold, Reply, Router, RouterConfig
from ringfence.pushgw.instances import InstanceReport, PushInstances, PushService
from ringfence.runtime import Runtime
from ringfence.sip.digest import answer, parse_challenge
from ringfence.sip.message import Headers, Request
from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, parse_uri
from ringfence.state.ratelimit import AuthFailureGuard
from ringfence.storage.repos import SqlInstanceStore
from ringfence.transport.dns import SipResolver
from tests.conftest import Demo
from tests.support.dns import dns_server

ALICE_PHONE = Address("UDP", "198.51.100.7", 5070)
BOB_PHONE = Address("TCP", "203.0.113.6", 40000, flow="f-bob")
TRUNK_HOST = Address("UDP", "192.0.2.99", 5060)


@dataclass(frozen=True)
class FakeBinding:
    contact: str
    source: Address
    path: tuple[str, ...] = ()
    instance: str | None = None
    call_id: str = "reg-1"
    cseq: int = 1
    expires_at: float = float("inf")
    pushed_at: float = 0.0


class FakeLocations:
    def __init__(self) -> None:
        self.bindings: dict[str, list[FakeBinding]] = {}

    async def lookup(self, aor: str, now: float) -> Sequence[FakeBinding]:
        return self.bindings.get(aor, [])


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@sip.acme.example",
    sender: str = "sip:alice@sip.acme.example",
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    return Request(
        method,
        uri,
        Headers(
            [
                ("Via", "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-1"),
                ("From", f"<{sender}>;tag=a1"),
                ("To", f"<{uri}>"),
                ("Call-ID", "c1"),
                ("CSeq", f"1 {method}"),
                *extra,
            ]
        ),
    )


@pytest.fixture
async def bob(runtime: Runtime, demo: Demo) -> None:
    await runtime.provisioning.create_account("acme", "bob", "bob's secret")


def make_router(runtime: Runtime, locations: FakeLocations, trunk: str | None = None) -> Router:
    config = RouterConfig(b"s" * 32, trunk=trunk, trusted_hosts=frozenset({TRUNK_HOST.host}))
    return Router(runtime.provisioning, locations, config)


async def authenticated(router: Router, req: Request, password: str = "correct horse") -> Request:
    challenge = await router.decide(Incoming("k", req, ALICE_PHONE), 0.0)
    assert isinstance(challenge, Reply)
    assert challenge.status == 407
    offered = [parse_challenge(v) for n, v in challenge.headers if n == "Proxy-Authenticate"]
    assert [c.algorithm for c in offered] == ["SHA-256", "MD5"]
    credentials = answer(offered[0], req.method, req.uri, "alice", password, cnonce="c0ffee")
    return Request(
        req.method,
        req.uri,
        req.headers.add("Proxy-Authorization", credentials.render()),
    )


@pytest.mark.usefixtures("bob")
async def test_local_caller_authenticates_then_reaches_every_contact(runtime: Runtime) -> None:
    locations = FakeLocations()
    locations.bindings["sip:bob@sip.acme.example"] = [
        FakeBinding("sip:bob@203.0.113.6;transport=tcp", BOB_PHONE),
        FakeBinding("sip:bob@10.0.0.2:5060", Address("UDP", "203.0.113.9", 6000), ("<sip:e>",)),
    ]
    router = make_router(runtime, locations)
    req = await authenticated(router, request())
    decision = await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)
    assert decision == Forward(
        (
            Target("sip:bob@203.0.113.6;transport=tcp", BOB_PHONE),
            Target("sip:bob@10.0.0.2:5060", Address("UDP", "203.0.113.9", 6000), ("<sip:e>",)),
        ),
        consumed_realm="sip.acme.example",
    )


@pytest.mark.usefixtures("bob")
async def test_wrong_password_is_challenged_again(runtime: Runtime) -> None:
    router = make_router(runtime, FakeLocations())
    req = await authenticated(router, request(), password="wrong horse")
    decision = await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)
    assert isinstance(decision, Reply)
    assert decision.status == 407


@pytest.mark.usefixtures("bob")
async def test_credentials_of_another_user_are_refused(runtime: Runtime) -> None:
    router = make_router(runtime, FakeLocations())
    req = await authenticated(router, request())
    spoofed = Request(
        req.method,
        req.uri,
        req.headers.replace("From", "<sip:bob@sip.acme.example>;tag=x"),
    )
    decision = await router.decide(Incoming("k", spoofed, ALICE_PHONE), 1.0)
    assert decision == Reply(403, "Credentials do not match the From user")


@pytest.mark.usefixtures("bob")
async def test_unknown_user_and_unregistered_user(runtime: Runtime) -> None:
    router = make_router(runtime, FakeLocations())
    stranger = "sip:someone@elsewhere.example"
    nobody = await router.decide(
        Incoming("k", request(uri="sip:nobody@sip.acme.example", sender=stranger), ALICE_PHONE),
        0.0,
    )
    assert nobody == Reply(404, "Not Found")
    away = await router.decide(Incoming("k", request(sender=stranger), ALICE_PHONE), 0.0)
    assert away == Reply(480, "Temporarily Unavailable")


@pytest.mark.usefixtures("demo")
async def test_outside_destinations_need_a_trunk_and_a_local_caller(runtime: Runtime) -> None:
    outside = "sip:+15550100@pstn.example"
    router = make_router(runtime, FakeLocations())
    req = await authenticated(router, request(uri=outside))
    assert await router.decide(Incoming("k", req, ALICE_PHONE), 1.0) == Reply(
        403, "No route to destinations outside this service"
    )
    trunked = make_router(runtime, FakeLocations(), trunk="sip:192.0.2.99:5060")
    req = await authenticated(trunked, request(uri=outside))
    assert await trunked.decide(Incoming("k", req, ALICE_PHONE), 1.0) == Forward(
        (Target(outside, TRUNK_HOST),), consumed_realm="sip.acme.example"
    )
    relay = await trunked.decide(
        Incoming("k", request(uri=outside, sender="sip:x@evil.example"), ALICE_PHONE), 1.0
    )
    assert relay == Reply(404, "Domain not served here")


@pytest.mark.usefixtures("bob")
async def test_trusted_hosts_skip_authentication(runtime: Runtime) -> None:
    locations = FakeLocations()
    locations.bindings["sip:bob@sip.acme.example"] = [FakeBinding("sip:bob@x", BOB_PHONE)]
    router = make_router(runtime, locations)
    decision = await router.decide(Incoming("k", request(), TRUNK_HOST), 0.0)
    assert isinstance(decision, Forward)


async def test_in_dialog_follows_the_hop_without_record_route(runtime: Runtime) -> None:
    router = make_router(runtime, FakeLocations())
    bye = request("BYE", uri="sip:alice@198.51.100.7:5070")
    decision = await router.decide(Incoming("k", bye, BOB_PHONE, ALICE_PHONE, True), 0.0)
    assert decision == Forward((Target(bye.uri, ALICE_PHONE),), record_route=False)
    without_hop = await router.decide(Incoming("k", bye, BOB_PHONE, None, True), 0.0)
    assert without_hop == Forward(
        (Target(bye.uri, Address("UDP", "198.51.100.7", 5070)),), record_route=False
    )


@pytest.mark.usefixtures("bob")
async def test_a_closed_connection_falls_back_to_the_contact(runtime: Runtime) -> None:
    locations = FakeLocations()
    locations.bindings["sip:bob@sip.acme.example"] = [
        FakeBinding("sip:bob@203.0.113.6:5062;transport=tcp", BOB_PHONE)
    ]
    router = Router(
        runtime.provisioning,
        locations,
        RouterConfig(b"s" * 32, trusted_hosts=frozenset({TRUNK_HOST.host})),
        flow_open=lambda flow: False,
    )
    decision = await router.decide(Incoming("k", request(), TRUNK_HOST), 0.0)
    assert decision == Forward(
        (Target("sip:bob@203.0.113.6:5062;transport=tcp", Address("TCP", "203.0.113.6", 5062)),)
    )


@pytest.mark.usefixtures("bob")
async def test_guessing_a_callers_password_is_refused(runtime: Runtime) -> None:
    locations = FakeLocations()
    locations.bindings["sip:bob@sip.acme.example"] = [FakeBinding("sip:bob@x", BOB_PHONE)]
    config = RouterConfig(b"s" * 32)
    guard = AuthFailureGuard(per_source=50, per_user=2, window_s=100)
    router = Router(runtime.provisioning, locations, config, guard=guard)
    for guess in ("guess one", "guess two"):
        req = await authenticated(router, request(), password=guess)
        refused = await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)
        assert isinstance(refused, Reply)
        assert refused.status == 407
    right = await authenticated_after_block(router)
    assert await router.decide(Incoming("k", right, ALICE_PHONE), 2.0) == Reply(
        403, AuthFailureGuard.REASON
    )
    # Past the window (and within the nonce's lifetime) the right password gets through.
    decision = await router.decide(Incoming("k", right, ALICE_PHONE), 102.0)
    assert isinstance(decision, Forward)


def parse_sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


async def authenticated_after_block(router: Router) -> Request:
    """Credentials answering a challenge taken from an unblocked router (same secret)."""
    other = Router(router._accounts, FakeLocations(), RouterConfig(b"s" * 32))
    return await authenticated(other, request())


TRUNK_ZONE = """
trunk.example.           60 IN NAPTR 10 50 "s" "SIP+D2T" "" _sip._tcp.trunk.example.
_sip._tcp.trunk.example. 60 IN SRV 10 0 5070 edge.trunk.example.
_sip._tcp.trunk.example. 60 IN SRV 20 0 5071 spare.trunk.example.
edge.trunk.example.      60 IN A 192.0.2.99
spare.trunk.example.     60 IN A 192.0.2.98
"""


@pytest.mark.usefixtures("demo")
async def test_a_trunk_named_by_host_name_is_found_in_dns(runtime: Runtime) -> None:
    # RFC 3263: no transport or port in the trunk URI, so NAPTR then SRV decide them.
    outside = "sip:+15550100@pstn.example"
    with dns_server(TRUNK_ZONE) as port:
        resolve = SipResolver(["127.0.0.1"], port=port, timeout_s=1.0).resolve

        async def decide(trunk: str) -> Decision:
            config = RouterConfig(b"s" * 32, trunk=trunk)
            router = Router(runtime.provisioning, FakeLocations(), config, resolve=resolve)
            req = await authenticated(router, request(uri=outside))
            return await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)

        # The lower-priority SRV target is kept to fail over to (RFC 3263 §4.3).
        spare = (Address("TCP", "192.0.2.98", 5071),)
        assert await decide("sip:trunk.example") == Forward(
            (Target(outside, Address("TCP", "192.0.2.99", 5070), alternates=spare),),
            consumed_realm="sip.acme.example",
        )
        assert await decide("sip:missing.example") == Reply(503, NO_DNS)


@pytest.mark.usefixtures("demo")
async def test_a_stateless_ack_to_a_host_name_goes_where_dns_says(runtime: Runtime) -> None:
    with dns_server(TRUNK_ZONE) as port:
        resolve = SipResolver(["127.0.0.1"], port=port, timeout_s=1.0).resolve
        router = Router(
            runtime.provisioning, FakeLocations(), RouterConfig(b"s" * 32), resolve=resolve
        )
        hop = await router.stateless_hop(parse_sip("sip:pbx@trunk.example"))
        assert hop == Address("TCP", "192.0.2.99", 5070)
        assert await router.stateless_hop(parse_sip("sip:pbx@missing.example")) is None
        # A domain served here: an ACK no transaction took is a late one; nobody waits for it.
        assert await router.stateless_hop(parse_sip("sip:bob@sip.acme.example")) is None


VOIP_HEX = "c3" * 32


async def _report(runtime: Runtime, username: str, selector: str, **fields: object) -> None:
    account = next(a for a in await runtime.provisioning.accounts("acme") if a.username == username)
    report = InstanceReport(
        selector=selector,
        service=PushService.APNS,
        app_id="org.example.phone",
        call_token=VOIP_HEX,
        **fields,  # type: ignore[arg-type]
    )
    await runtime.push_instances.report(account.id, account.config, report)


def router_with_instances(runtime: Runtime, locations: FakeLocations) -> Router:
    config = RouterConfig(b"s" * 32, trusted_hosts=frozenset({TRUNK_HOST.host}))
    return Router(runtime.provisioning, locations, config, devices=runtime.push_instances)


@pytest.mark.usefixtures("bob")
async def test_a_device_known_by_its_push_instance_is_woken(runtime: Runtime) -> None:
    """No binding at all: the INVITE waits for the device that reported its tokens."""
    await _report(runtime, "bob", "bob-phone")
    router = router_with_instances(runtime, FakeLocations())
    # Another process (a SIP worker) learns of the report on its next refresh.
    other = PushInstances(SqlInstanceStore(runtime.engine), runtime.keyring, runtime.clock)
    bob_id = await runtime.provisioning.account_id("acme", "bob")
    assert await other.push_devices(bob_id) == []
    await other.refresh()
    assert len(await other.push_devices(bob_id)) == 1
    req = await authenticated(router, request())
    decision = await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)
    assert isinstance(decision, Forward)
    assert decision.targets == ()
    assert decision.wake is not None
    [sleeper] = decision.wake.sleepers
    assert sleeper.push.token_for_call() == VOIP_HEX
    assert sleeper.push.service == "apns"
    # When the tokens were reported: an APNs 410 from before then does not prune them.
    assert sleeper.registered_at == runtime.clock.now().timestamp()
    # Without instances the same call is 480 at once.
    plain = make_router(runtime, FakeLocations())
    req = await authenticated(plain, request())
    assert await plain.decide(Incoming("k", req, ALICE_PHONE), 1.0) == Reply(
        480, "Temporarily Unavailable"
    )


@pytest.mark.usefixtures("bob")
async def test_an_awake_instance_is_reached_directly_and_not_pushed(runtime: Runtime) -> None:
    instance = "urn:uuid:00000000-0000-4000-8000-0000000000b0"
    await _report(runtime, "bob", "bob-phone", sip_instance=instance)
    locations = FakeLocations()
    locations.bindings["sip:bob@sip.acme.example"] = [
        FakeBinding("sip:bob@203.0.113.6;transport=tcp", BOB_PHONE, instance=instance),
    ]
    router = router_with_instances(runtime, locations)
    req = await authenticated(router, request())
    decision = await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)
    assert isinstance(decision, Forward)
    assert len(decision.targets) == 1
    assert decision.wake is None
    # The same device with its registration expired: pushed.
    locations.bindings["sip:bob@sip.acme.example"] = [
        FakeBinding("sip:bob@203.0.113.6", BOB_PHONE, instance=instance, expires_at=0.5),
    ]
    req = await authenticated(router, request())
    decision = await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)
    assert isinstance(decision, Forward)
    assert decision.targets == ()
    assert decision.wake is not None
    assert [s.instance for s in decision.wake.sleepers] == [instance]


@pytest.mark.usefixtures("bob")
async def test_push_instances_are_not_used_when_push_is_off(runtime: Runtime) -> None:
    await _report(runtime, "bob", "bob-phone")
    router = router_with_instances(runtime, FakeLocations())
    # Switching push off erases the instance (P3) and the router no longer looks (P4).
    await runtime.provisioning.update_account(
        "acme", "bob", AccountChange(overrides={"push": {"mode": "keepalive"}})
    )
    req = await authenticated(router, request())
    assert await router.decide(Incoming("k", req, ALICE_PHONE), 1.0) == Reply(
        480, "Temporarily Unavailable"
    )


@pytest.mark.promise("P1")
@pytest.mark.usefixtures("bob")
async def test_a_message_for_sleeping_devices_is_held_unless_messaging_is_off(
    runtime: Runtime,
) -> None:
    await _report(runtime, "bob", "bob-phone", other_token="d6" * 32)
    router = router_with_instances(runtime, FakeLocations())
    req = await authenticated(router, request("MESSAGE"))
    decision = await router.decide(Incoming("k", req, ALICE_PHONE), 1.0)
    assert isinstance(decision, Hold)
    assert decision.aor == "sip:bob@sip.acme.example"
    assert [s.push.token_for_alert() for s in decision.sleepers] == ["d6" * 32]
    # An awake device takes it directly.
    awake = FakeLocations()
    awake.bindings["sip:bob@sip.acme.example"] = [FakeBinding("sip:bob@203.0.113.6", BOB_PHONE)]
    router = router_with_instances(runtime, awake)
    req = await authenticated(router, request("MESSAGE"))
    assert isinstance(await router.decide(Incoming("k", req, ALICE_PHONE), 1.0), Forward)
    # Messaging off (P1): nothing is kept for the account; the sender's client keeps it.
    await runtime.provisioning.update_account(
        "acme", "bob", AccountChange(overrides={"messaging": {"enabled": False}})
    )
    router = router_with_instances(runtime, FakeLocations())
    req = await authenticated(router, request("MESSAGE"))
    assert await router.decide(Incoming("k", req, ALICE_PHONE), 1.0) == Reply(
        480, "Temporarily Unavailable"
    )
