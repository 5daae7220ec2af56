"""The waker: one VoIP push per device per call; a call that ends gives an alert."""

from __future__ import annotations

import asyncio

from ringfence.proxy.parking import EndReason, Parking, Sleeper, sleepers_of
from ringfence.push.dispatcher import PushDispatcher
from ringfence.push.provider import (
    Delivered,
    Notification,
    ProviderName,
    PushKind,
    PushResult,
    PushTarget,
    TokenDead,
)
from ringfence.push.waker import PushWaker
from ringfence.sip.message import Headers, Request
from ringfence.sip.transaction import Address
from ringfence.state.location import Binding
from tests.support.clock import FakeClock

AOR = "sip:bob@sip.acme.example"


class Recorder:
    name = ProviderName.APNS

    def __init__(self, answer: PushResult = Delivered()) -> None:
        self.sent: list[tuple[PushTarget, Notification]] = []
        self.answer = answer

    def serves(self, target: PushTarget) -> bool:
        return True

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        self.sent.append((target, notification))
        return self.answer

    async def aclose(self) -> None:
        pass


def device(contact_params: str) -> Binding:
    return Binding(
        aor=AOR,
        contact=f"sip:bob@192.0.2.9{contact_params}",
        instance="urn:uuid:1",
        expires_at=100.0,
        call_id="r",
        cseq=1,
        source=Address("UDP", "192.0.2.9", 5060),
    )


LINPHONE = ";pn-provider=apns;pn-prid=aa11:remote&bb22:voip;pn-param=T123456789.org.ex.remote&voip"


def invite(call_id: str) -> Request:
    return Request("INVITE", "sip:bob@sip.acme.example", Headers([("Call-ID", call_id)]))


async def drain() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_device_is_rung_once_per_call_whatever_the_forks() -> None:
    clock = FakeClock()
    provider = Recorder()
    waker = PushWaker(PushDispatcher([provider], clock), clock, ring_window_s=30)
    parking = Parking()
    sleepers = sleepers_of([device(LINPHONE)])
    one = parking.park("k1", invite("call-1"), AOR, sleepers, 0.0)
    fork = parking.park("k2", invite("call-1"), AOR, sleepers_of([device(LINPHONE)]), 0.0)
    other = parking.park("k3", invite("call-2"), AOR, sleepers_of([device(LINPHONE)]), 0.0)
    waker.ring(one, one.sleepers[0])
    waker.ring(fork, fork.sleepers[0])  # the same call reached us twice
    waker.ring(one, one.sleepers[0])
    waker.ring(other, other.sleepers[0])
    await drain()
    assert [(t.token, n.kind) for t, n in provider.sent] == [
        ("bb22", PushKind.CALL),
        ("bb22", PushKind.CALL),
    ]
    waker.ended(one, one.sleepers, EndReason.CANCELLED)
    await drain()
    target, ended = provider.sent[-1]
    assert target.token == "aa11"  # the "remote" token: never a VoIP push without a call
    assert (ended.kind, ended.data["reason"], ended.push_id) == (
        PushKind.CALL_ENDED,
        "cancelled",
        one.push_id,
    )
    await waker.aclose()


async def test_a_dead_token_is_pruned() -> None:
    clock = FakeClock()
    pruned: list[tuple[str, str]] = []

    async def prune(aor: str, sleeper: Sleeper) -> None:
        pruned.append((aor, sleeper.device))

    provider = Recorder(TokenDead("APNs 410 Unregistered"))
    waker = PushWaker(PushDispatcher([provider], clock), clock, ring_window_s=30, prune=prune)
    parked = Parking().park("k", invite("c"), AOR, sleepers_of([device(LINPHONE)]), 0.0)
    waker.ring(parked, parked.sleepers[0])
    await drain()
    assert pruned == [(AOR, "urn:uuid:1")]
    await waker.aclose()


async def test_a_waiting_message_is_an_alert_on_the_other_token_never_a_voip_push() -> None:
    clock = FakeClock()
    provider = Recorder()
    waker = PushWaker(PushDispatcher([provider], clock), clock, ring_window_s=30)
    voip_only = device(";pn-provider=apns;pn-prid=cc33;pn-param=T123456789.org.ex.voip")
    waker.message_waiting(AOR, sleepers_of([device(LINPHONE)]) + sleepers_of([voip_only]))
    await drain()
    [(target, notification)] = provider.sent
    assert target.token == "aa11"  # the remote token; the VoIP-only device is not pushed
    assert target.registered_at == 0.0  # an RFC 8599 binding: its time is not known here
    assert notification.kind is PushKind.MESSAGE
    assert notification.ttl_s == 7 * 86_400
    assert notification.collapse_id == "rf-message"
    await waker.aclose()
