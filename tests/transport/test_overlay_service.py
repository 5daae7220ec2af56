"""The overlay service over a real store and keyring, a fake PBX and a clock moved by hand.

It keeps each overlay instance's account registered upstream, unregisters it when the
instance is erased, sends the notices before the instance expires and erases it when it
does (P3), gives up after 12 hours of refusals (the app told), and restores everything
after a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from ringfence.config import OverlaySettings
from ringfence.overlay.contact import ContactTokens
from ringfence.provisioning.features import FeatureConfig
from ringfence.provisioning.models import UpstreamPbx
from ringfence.proxy.engine import Target
from ringfence.proxy.parking import Sleeper
from ringfence.push.provider import PushKind
from ringfence.pushgw.instances import (
    InstanceReport,
    PushInstance,
    PushInstances,
    PushService,
    SipAccount,
)
from ringfence.runtime import Runtime
from ringfence.sip.message import Request, Response, make_response
from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI
from ringfence.storage.repos import SqlInstanceStore, SqlStore
from ringfence.storage.tables import push_instances, subject_keys
from ringfence.transport.overlay import RESTORE_RETRY_S, SYNC_S, OverlayService
from tests.overlay.upstream import Registrar
from tests.support.clock import FakeClock

PBX = UpstreamPbx("pbx.example", 5060)
TOKEN = "ab" * 32


@dataclass
class Pbx:
    """Answers REGISTERs like a registrar; `refuse` makes it answer 403."""

    registrar: Registrar = field(default_factory=Registrar)
    refuse: bool = False
    seen: list[Request] = field(default_factory=list)
    hops: list[Address] = field(default_factory=list)
    #: When set, REGISTERs wait for it before they are answered (held in flight).
    hold: asyncio.Event | None = None
    #: Indexes into `seen` of the requests answered, in the order they were.
    answered: list[int] = field(default_factory=list)

    async def send(self, request: Request, target: Target) -> tuple[int, Response | None]:
        self.seen.append(request)
        self.hops.append(target.destination)
        index = len(self.seen) - 1
        if self.hold is not None:
            await self.hold.wait()
        self.answered.append(index)
        if self.refuse:
            response = make_response(request, 403)
        else:
            response = self.registrar.handle(request, 0.0)
        return response.status, response


@dataclass
class Notices:
    sent: list[tuple[PushKind, str]] = field(default_factory=list)

    def notice(self, aor: str, sleeper: Sleeper, kind: PushKind, ttl_s: int, reason: str) -> None:
        self.sent.append((kind, reason))


#: Where each PBX name resolves to.
ADDRESSES = {
    "pbx.example": "192.0.2.10",
    "pbx2.example": "192.0.2.20",
    "proxy.example": "192.0.2.30",
}


async def resolve(uri: SipURI) -> list[Address]:
    return [Address("UDP", ADDRESSES[uri.host], uri.port or 5060)]


def contact(user: str, transport: object) -> str:
    return f"sip:{user}@198.51.100.1:5070;transport=udp"


@pytest.fixture
async def tenant(runtime: Runtime) -> str:
    await runtime.provisioning.create_tenant("acme", "Acme", "sip.acme.example", upstream=PBX)
    account = await runtime.provisioning.create_account("acme", "bob", "correct horse")
    return account.id


def make(
    runtime: Runtime, pbx: Pbx, notices: Notices, restore_window_s: float = 0
) -> OverlayService:
    return OverlayService(
        runtime.push_instances,
        runtime.provisioning,
        ContactTokens(b"c" * 32),
        pbx.send,
        resolve,
        contact,
        runtime.clock,
        OverlaySettings(max_register_rate=1000, restore_window_s=restore_window_s),
        notifier=notices,
    )


@pytest.fixture
async def service(
    runtime: Runtime, tenant: str
) -> AsyncIterator[tuple[OverlayService, Pbx, Notices]]:
    pbx, notices = Pbx(), Notices()
    overlay = make(runtime, pbx, notices)
    runtime.push_instances.listeners.append(overlay)
    await overlay.start()
    yield overlay, pbx, notices
    await overlay.aclose()


async def settle(overlay: OverlayService, clock: FakeClock) -> None:
    """Let the service work, the clock moving 10 ms a step (the rate ceiling spaces REGISTERs)."""
    for _ in range(20):
        clock.advance(0.01)
        overlay.wake()
        await asyncio.sleep(0.005)


async def until(check: Callable[[], bool], overlay: OverlayService, clock: FakeClock) -> None:
    """Settle until `check` holds (the erasure's database work takes real time)."""
    for _ in range(100):
        if check():
            return
        await settle(overlay, clock)
    raise AssertionError("never came to pass")


async def report(
    runtime: Runtime, account_id: str, selector: str = "bob-phone", user: str = "201"
) -> str:
    config = FeatureConfig()
    instance, _ = await runtime.push_instances.report(
        account_id,
        config,
        InstanceReport(
            selector=selector,
            service=PushService.APNS,
            app_id="org.example.phone",
            call_token=TOKEN,
            other_token=TOKEN[::-1],
            sip_instance="urn:uuid:00000000-0000-4000-8000-000000000b0b",
            sip_account=SipAccount(user, "pbx.example", password=f"s3cret-{user}"),
        ),
    )
    return instance.id


def expires_of(request: Request) -> str:
    return request.headers.get("Expires") or ""


async def rows(runtime: Runtime) -> tuple[int, int]:
    async with runtime.engine.connect() as connection:
        instances = (
            await connection.execute(select(func.count()).select_from(push_instances))
        ).scalar_one()
    async with runtime.key_engine.connect() as connection:
        keys = (
            await connection.execute(select(func.count()).select_from(subject_keys))
        ).scalar_one()
    return int(instances), int(keys)


async def test_a_reported_instance_is_registered_and_its_contact_leads_to_the_device(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, _ = service
    instance_id = await report(runtime, tenant)
    await settle(overlay, clock)
    # 401, then the answer: registered, at the PBX's address.
    assert [expires_of(r) for r in pbx.seen] == ["3600", "3600"]
    assert pbx.seen[1].headers.get("Authorization")
    assert pbx.hops[0] == Address("UDP", "192.0.2.10", 5060)
    assert overlay.stats()["registered"] == 1
    user = ContactTokens(b"c" * 32).user_of(instance_id)
    assert f"<sip:{user}@198.51.100.1:5070;transport=udp>" == pbx.seen[0].headers.get("Contact")
    target = await overlay.overlay_target(user)
    assert target is not None
    assert (target.username, target.domain) == ("bob", "sip.acme.example")
    assert target.instance == "urn:uuid:00000000-0000-4000-8000-000000000b0b"
    # Another instance's Contact, or a forged one, leads nowhere.
    assert await overlay.overlay_target(user[:-1] + ("0" if user[-1] != "0" else "1")) is None


@pytest.mark.promise("P3")
async def test_delete_unregisters_upstream_and_leaves_no_row_and_no_key(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, _ = service
    instance_id = await report(runtime, tenant)
    await settle(overlay, clock)
    await runtime.push_instances.delete(tenant, "bob-phone")
    await settle(overlay, clock)
    assert expires_of(pbx.seen[-1]) == "0"
    assert overlay.stats()["instances"] == 0
    user = ContactTokens(b"c" * 32).user_of(instance_id)
    assert await overlay.overlay_target(user) is None
    assert (await rows(runtime))[0] == 0


@pytest.mark.promise("P3")
async def test_notices_before_expiry_then_the_instance_is_erased_when_it_expires(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, notices = service
    await report(runtime, tenant)
    await settle(overlay, clock)
    instances, keys = await rows(runtime)
    assert instances == 1
    # The default max age is 3 days: 23 hours before its end, the silent push.
    clock.advance(timedelta(days=3, hours=-23).total_seconds())
    await settle(overlay, clock)
    assert notices.sent == [(PushKind.WAKE, "instance_expiring_soon")]
    clock.advance(timedelta(hours=12).total_seconds())
    await settle(overlay, clock)
    assert notices.sent[-1] == (PushKind.INSTANCE_EXPIRING, "instance_expiring")
    clock.advance(timedelta(hours=12).total_seconds())
    await settle(overlay, clock)
    assert notices.sent[-1] == (PushKind.INSTANCE_ENDED, "instance_expired")
    assert len(notices.sent) == 3, notices.sent
    # Unregistered upstream; no row and one key fewer: the credentials are gone (P3).
    await until(lambda: expires_of(pbx.seen[-1]) == "0", overlay, clock)
    assert await rows(runtime) == (0, keys - 1)


async def test_a_report_again_renews_the_notices_and_keeps_the_registration(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, notices = service
    await report(runtime, tenant)
    await settle(overlay, clock)
    clock.advance(timedelta(days=3, hours=-23).total_seconds())
    await settle(overlay, clock)
    assert len(notices.sent) == 1
    sent = len(pbx.seen)
    await report(runtime, tenant)  # the app ran: a new max age from now
    clock.advance(timedelta(hours=12).total_seconds())
    await settle(overlay, clock)
    assert len(notices.sent) == 1
    assert all(expires_of(r) != "0" for r in pbx.seen[sent:])
    assert overlay.stats()["instances"] == 1


async def test_a_pbx_that_refuses_for_12_hours_ends_the_instance_and_tells_the_app(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, notices = service
    pbx.refuse = True
    await report(runtime, tenant)
    await until(lambda: bool(notices.sent), overlay, clock)
    # Told at once, and only once however often it is retried.
    assert notices.sent == [(PushKind.INSTANCE_REFUSED, "upstream_credentials_refused")]
    for _ in range(40):  # retries: no sooner than 15 minutes, then backing off to 30
        clock.advance(1800)
        await settle(overlay, clock)
    # A refusal is a failed login in the PBX's log: at most one per 15 minutes (fail2ban).
    assert 24 <= len(pbx.seen) <= 12 * 4 + 1
    assert notices.sent == [
        (PushKind.INSTANCE_REFUSED, "upstream_credentials_refused"),
        (PushKind.INSTANCE_ENDED, "upstream_refused"),
    ]
    assert (await rows(runtime))[0] == 0
    assert overlay.stats()["instances"] == 0


async def test_a_restart_restores_every_registration(
    runtime: Runtime, clock: FakeClock, tenant: str
) -> None:
    for n in range(5):
        account = await runtime.provisioning.create_account("acme", f"user{n}", "correct horse")
        await report(runtime, account.id, f"phone-{n}")
    pbx, notices = Pbx(), Notices()
    overlay = make(runtime, pbx, notices)
    try:
        assert await overlay.start() == 5
        await settle(overlay, clock)
        assert overlay.stats()["registered"] == 5
    finally:
        await overlay.aclose()


async def test_a_standalone_tenant_keeps_nothing_upstream(
    runtime: Runtime, clock: FakeClock, tenant: str
) -> None:
    await report(runtime, tenant)
    await runtime.provisioning.update_tenant("acme", upstream=None)
    pbx = Pbx()
    await assert_restores_nothing(make(runtime, pbx, Notices()), pbx, clock)


async def assert_restores_nothing(overlay: OverlayService, pbx: Pbx, clock: FakeClock) -> None:
    """Started, `overlay` keeps nothing and sends the PBX nothing."""
    try:
        assert await overlay.start() == 0
        await settle(overlay, clock)
        assert pbx.seen == []
    finally:
        await overlay.aclose()


@pytest.mark.promise("P3")
async def test_an_instance_erased_by_another_process_is_unregistered_within_seconds(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, _ = service
    instance_id = await report(runtime, tenant)
    await settle(overlay, clock)
    # A SIP worker (another process, its own PushInstances) prunes it: a dead token.
    other = PushInstances(SqlInstanceStore(runtime.engine), runtime.keyring, runtime.clock)
    assert await other.forget_token(tenant, TOKEN) == 1
    clock.advance(SYNC_S)
    await until(lambda: expires_of(pbx.seen[-1]) == "0", overlay, clock)
    assert overlay.stats()["instances"] == 0
    user = ContactTokens(b"c" * 32).user_of(instance_id)
    assert await overlay.overlay_target(user) is None


@pytest.mark.promise("P3")
async def test_a_tenant_that_moves_to_another_pbx_or_becomes_standalone_is_followed(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, _ = service
    await report(runtime, tenant)
    await settle(overlay, clock)
    assert set(pbx.hops) == {Address("UDP", "192.0.2.10", 5060)}
    await runtime.provisioning.update_tenant("acme", upstream=UpstreamPbx("pbx2.example"))
    pbx.hold = hold = asyncio.Event()
    clock.advance(SYNC_S)
    await until(lambda: expires_of(pbx.seen[-1]) == "0", overlay, clock)
    await settle(overlay, clock)
    # While the unregister is out unanswered, nothing goes to the new PBX (were they the
    # same registrar under two names, the old Call-ID's Expires: 0 would remove the new
    # binding).
    assert len(pbx.answered) == len(pbx.seen) - 1
    assert expires_of(pbx.seen[-1]) == "0"
    pbx.hold = None
    hold.set()
    await until(lambda: Address("UDP", "192.0.2.20", 5060) in pbx.hops, overlay, clock)
    await until(lambda: overlay.stats()["registered"] == 1, overlay, clock)
    # The old PBX lost the binding (Expires: 0 sent there).
    old = [r for r, hop in zip(pbx.seen, pbx.hops, strict=True) if hop.host == "192.0.2.10"]
    assert expires_of(old[-1]) == "0"
    await runtime.provisioning.update_tenant("acme", upstream=None)
    clock.advance(SYNC_S)
    await until(lambda: overlay.stats()["instances"] == 0, overlay, clock)
    assert expires_of(pbx.seen[-1]) == "0"


async def test_a_pbx_change_made_by_another_process_is_followed(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, _ = service
    await report(runtime, tenant)
    await settle(overlay, clock)
    # The CLI (another process) writes the tenant: this process's caches know nothing.
    store = SqlStore(runtime.engine)
    acme = await store.find_tenant("acme")
    assert acme is not None
    await store.update_tenant(replace(acme, upstream=UpstreamPbx("pbx2.example")))
    clock.advance(SYNC_S)
    await until(lambda: Address("UDP", "192.0.2.20", 5060) in pbx.hops, overlay, clock)
    await until(lambda: overlay.stats()["registered"] == 1, overlay, clock)


async def test_a_new_outbound_proxy_or_interval_goes_on_under_the_same_call_id(
    runtime: Runtime, clock: FakeClock, tenant: str, service: tuple[OverlayService, Pbx, Notices]
) -> None:
    overlay, pbx, _ = service
    await report(runtime, tenant)
    await settle(overlay, clock)
    [registered] = [r for r in pbx.seen if r.headers.get("Authorization")]
    await runtime.provisioning.update_tenant(
        "acme", upstream=replace(PBX, outbound_proxy="proxy.example", expires_s=1800)
    )
    clock.advance(SYNC_S)
    await settle(overlay, clock)
    sent = len(pbx.seen)
    clock.advance(600)  # past the refresh (the PBX granted 600 s)
    await until(lambda: len(pbx.seen) > sent, overlay, clock)
    refresh = pbx.seen[sent]
    # No unregister: one could remove the binding the registration goes on with.
    assert all(expires_of(r) != "0" for r in pbx.seen)
    assert refresh.headers.get("Call-ID") == registered.headers.get("Call-ID")
    assert expires_of(refresh) == "1800"
    assert pbx.hops[sent] == Address("UDP", "192.0.2.30", 5060)
    assert overlay.stats()["instances"] == 1


async def test_a_restore_that_fails_is_tried_again_and_the_loop_runs(
    runtime: Runtime, clock: FakeClock, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await report(runtime, tenant)
    pbx = Pbx()
    overlay = make(runtime, pbx, Notices())
    real_page = runtime.push_instances.page
    failures = [OSError("the database is away")]

    async def page(after: str | None, limit: int) -> list[PushInstance]:
        if failures:
            raise failures.pop()
        return await real_page(after, limit)

    monkeypatch.setattr(runtime.push_instances, "page", page)
    try:
        with pytest.raises(OSError, match="away"):
            await overlay.start()
        # The loop runs all the same: a report is kept at once.
        other = await runtime.provisioning.create_account("acme", "carol", "correct horse")
        runtime.push_instances.listeners.append(overlay)
        await report(runtime, other.id, "carol-phone")
        await until(lambda: overlay.stats()["registered"] == 1, overlay, clock)
        clock.advance(RESTORE_RETRY_S)
        await until(lambda: overlay.stats()["registered"] == 2, overlay, clock)
    finally:
        await overlay.aclose()


@pytest.mark.promise("P3")
async def test_an_instance_erased_while_the_restore_reads_is_not_restored(
    runtime: Runtime, clock: FakeClock, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance_id = await report(runtime, tenant)
    pbx = Pbx()
    overlay = make(runtime, pbx, Notices())
    real_page = runtime.push_instances.page

    async def page(after: str | None, limit: int) -> list[PushInstance]:
        found = await real_page(after, limit)
        # Erased (DELETE) while the page was on its way: the page is out of date.
        await overlay.instances_erased([instance_id])
        return found

    monkeypatch.setattr(runtime.push_instances, "page", page)
    await assert_restores_nothing(overlay, pbx, clock)


@pytest.mark.promise("P3")
async def test_an_instance_given_up_on_is_erased_even_when_the_store_fails_once(
    runtime: Runtime,
    clock: FakeClock,
    tenant: str,
    service: tuple[OverlayService, Pbx, Notices],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overlay, pbx, notices = service
    pbx.refuse = True
    first = await report(runtime, tenant)
    other = await runtime.provisioning.create_account("acme", "carol", "correct horse")
    second = await report(runtime, other.id, "carol-phone")
    real_erase = runtime.push_instances.erase
    failed: list[str] = []

    async def erase(instance_id: str) -> None:
        if not failed:
            failed.append(instance_id)
            raise OSError("the database is away")
        await real_erase(instance_id)

    monkeypatch.setattr(runtime.push_instances, "erase", erase)
    for _ in range(30):
        clock.advance(1800)
        await settle(overlay, clock)
    await until(lambda: overlay.stats()["instances"] == 0, overlay, clock)
    await until(lambda: len(failed) == 1, overlay, clock)
    for _ in range(3):
        await settle(overlay, clock)
    assert set(failed) <= {first, second}
    assert [kind for kind, _ in notices.sent].count(PushKind.INSTANCE_ENDED) == 2
    assert (await rows(runtime))[0] == 0


@pytest.mark.promise("P3")
async def test_a_node_leaving_unregisters_even_with_a_register_out(
    runtime: Runtime, clock: FakeClock, tenant: str
) -> None:
    hold = asyncio.Event()
    pbx = Pbx(hold=hold)
    overlay = make(runtime, pbx, Notices())
    runtime.push_instances.listeners.append(overlay)
    await overlay.start()
    await report(runtime, tenant)
    await until(lambda: len(pbx.seen) == 1, overlay, clock)  # out, unanswered
    closing = asyncio.ensure_future(overlay.aclose(unregister=True))
    # The Expires: 0 does not wait for the REGISTER out (it could take until Timer F).
    await until(lambda: len(pbx.seen) == 2, overlay, clock)
    assert expires_of(pbx.seen[1]) == "0"
    hold.set()
    await closing


async def test_another_account_reported_is_registered_once_the_old_one_is_unregistered(
    runtime: Runtime, clock: FakeClock, tenant: str
) -> None:
    # A restore window of 10 minutes: a report is not a restore, it starts at once.
    pbx = Pbx()
    overlay = make(runtime, pbx, Notices(), restore_window_s=600)
    runtime.push_instances.listeners.append(overlay)
    await overlay.start()
    try:
        await report(runtime, tenant)
        await until(lambda: overlay.stats()["registered"] == 1, overlay, clock)
        await report(runtime, tenant, user="202")  # the app now uses another account
        await until(lambda: "sip:202@" in str(pbx.seen[-1].headers.get("To")), overlay, clock)
        aors = [(r.headers.get("To"), expires_of(r)) for r in pbx.seen]
        # The old account's Expires: 0 went first (the same Contact: RFC 3261 §10.3).
        assert aors.index(("<sip:201@pbx.example>", "0")) < len(aors) - 1
    finally:
        await overlay.aclose()
