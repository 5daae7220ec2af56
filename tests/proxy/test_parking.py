"""Parking requests for sleeping devices: matching their next REGISTER, deadlines."""

from __future__ import annotations

from ringfence.proxy.parking import Parking, PushDevice, sleepers_of, sleepers_with
from ringfence.sip.message import Headers, Request
from ringfence.sip.pn import PushParameters
from ringfence.sip.transaction import Address
from ringfence.state.location import Binding

AOR = "sip:bob@sip.acme.example"
APNS = ";pn-provider=apns;pn-prid=ab12;pn-param=TEAM123456.org.example.phone.voip"


def binding(contact: str, *, instance: str | None, call_id: str, cseq: int) -> Binding:
    return Binding(
        aor=AOR,
        contact=contact,
        instance=instance,
        expires_at=100.0,
        call_id=call_id,
        cseq=cseq,
        source=Address("UDP", "192.0.2.9", 5060),
    )


INVITE = Request("INVITE", "sip:bob@sip.acme.example", Headers([("Call-ID", "call-1")]))
SLEEPING = binding(f"sip:bob@192.0.2.9:5060{APNS}", instance="urn:uuid:1", call_id="r1", cseq=2)


def test_one_sleeper_per_device_and_none_for_bindings_without_push() -> None:
    plain = binding("sip:bob@192.0.2.8", instance=None, call_id="r2", cseq=1)
    twice = binding(f"sip:bob@192.0.2.9:5062{APNS}", instance="urn:uuid:1", call_id="r3", cseq=1)
    sleepers = sleepers_of([SLEEPING, plain, twice])
    assert [s.device for s in sleepers] == ["urn:uuid:1"]


def test_the_device_is_ready_once_it_registers_again_by_instance_or_token() -> None:
    parking = Parking(wait_s=30)
    parked = parking.park("k1", INVITE, AOR, sleepers_of([SLEEPING]), now=0.0)
    assert parking.has(AOR)
    # The same registration again (a copy from another worker) is not a refresh.
    assert parking.registered(AOR, [SLEEPING], now=1.0) == []
    woken = binding(f"sip:bob@192.0.2.9:6000{APNS}", instance="urn:uuid:1", call_id="r1", cseq=3)
    [(found, ready)] = parking.registered(AOR, [woken], now=2.0)
    assert found is parked
    assert ready == [woken]
    assert parked.waiting() == []
    # Without an instance, the push token identifies the device.
    parking2 = Parking()
    no_instance = binding(f"sip:bob@192.0.2.9{APNS}", instance=None, call_id="x", cseq=1)
    parking2.park("k2", INVITE, AOR, sleepers_of([no_instance]), now=0.0)
    again = binding(f"sip:bob@192.0.2.9:7000{APNS}", instance=None, call_id="y", cseq=1)
    assert len(parking2.registered(AOR, [again], now=1.0)) == 1


def test_deadlines_expire_parked_requests() -> None:
    parking = Parking(wait_s=30)
    parking.park("k1", INVITE, AOR, sleepers_of([SLEEPING]), now=0.0)
    assert parking.next_deadline() == 30.0
    assert parking.expired(29.9) == []
    [expired] = parking.expired(30.0)
    assert expired.key == "k1"
    assert not parking.has(AOR)
    assert parking.next_deadline() is None
    assert len(parking) == 0


def _binding(call_id: str, cseq: int) -> Binding:
    return binding(f"sip:bob@192.0.2.{cseq}:5060", instance=None, call_id=call_id, cseq=cseq)


def test_a_push_instance_without_sip_instance_takes_any_new_registration() -> None:
    params = PushParameters("fcm", "fcm", False, "proj", tokens={"remote": "t" * 40})
    old = _binding("reg-old", 5)
    direct = _binding("reg-direct", 2)
    [sleeper] = sleepers_with([], [PushDevice(None, params)], [old, direct], [direct])
    assert not sleeper.matches(old)  # known at park time
    assert not sleeper.matches(_binding("reg-direct", 3))  # a refresh of a direct one
    assert sleeper.matches(_binding("reg-old", 6))  # the sleeping app, back
    assert sleeper.matches(_binding("reg-new", 1))


def test_a_device_with_both_a_push_binding_and_an_instance_is_pushed_once() -> None:
    token = "d4" * 32
    contact = (
        f"sip:bob@192.0.2.8;pn-provider=apns;pn-param=TEAM.org.example.phone.voip;pn-prid={token}"
    )
    pushed = binding(contact, instance=None, call_id="r", cseq=1)
    from_binding = sleepers_of([pushed])
    same = PushParameters("apns", "apns", False, "org.example.phone", tokens={"voip": token})
    other = PushParameters("apns", "apns", False, "org.example.phone", tokens={"voip": "e5" * 32})
    devices = [PushDevice(None, same), PushDevice("urn:uuid:x", other)]
    merged = sleepers_with(from_binding, devices, [pushed], [])
    assert [s.push.token_for_call() for s in merged] == [token, "e5" * 32]
