"""The in-memory location service keeps the contract of `LocationService`."""

from __future__ import annotations

import dataclasses

import pytest

from ringfence.sip.transaction import Address
from ringfence.state.location import (
    Binding,
    LocationService,
    MemoryLocationService,
    ReplicaLocationService,
    decode_bindings,
    encode_bindings,
)

ALICE = "sip:alice@sip.acme.example"
BOB = "sip:bob@sip.acme.example"
UDP = Address("UDP", "192.0.2.10", 5060)


def binding(
    aor: str = ALICE,
    contact: str = "sip:alice@192.0.2.10:5060",
    *,
    expires_at: float = 1000.0,
    flow: str | None = None,
    call_id: str = "call-1",
    outbound: bool = True,
) -> Binding:
    source = Address("TCP", "192.0.2.10", 40000, flow) if flow else UDP
    return Binding(
        aor=aor,
        contact=contact,
        # Over a flow, an RFC 5626 registration unless told otherwise.
        instance="<urn:uuid:00000000-0000-4000-8000-000000000001>" if flow and outbound else None,
        reg_id=1 if flow and outbound else None,
        expires_at=expires_at,
        call_id=call_id,
        cseq=1,
        source=source,
        params=(("expires", "3600"), ("pn-prid", "token-abc")),
        user_agent="Phone/1.0",
    )


def test_memory_service_is_a_location_service() -> None:
    service: LocationService = MemoryLocationService()
    assert isinstance(service, MemoryLocationService)


async def test_replace_then_lookup_in_order() -> None:
    location = MemoryLocationService()
    first, second = binding(contact="sip:a@192.0.2.1"), binding(contact="sip:b@192.0.2.2")
    await location.replace(ALICE, [first, second], now=0.0)
    assert await location.lookup(ALICE, 0.0) == [first, second]
    assert await location.lookup(BOB, 0.0) == []
    assert await location.count() == 2


async def test_lookup_returns_only_live_bindings_and_a_fresh_list() -> None:
    location = MemoryLocationService()
    short, long = binding(contact="sip:a@h", expires_at=100.0), binding(expires_at=200.0)
    await location.replace(ALICE, [short, long], now=0.0)
    assert await location.lookup(ALICE, 99.9) == [short, long]
    assert await location.lookup(ALICE, 100.0) == [long]  # live while now < expires_at
    assert await location.lookup(ALICE, 200.0) == []
    found = await location.lookup(ALICE, 0.0)
    found.clear()
    assert len(await location.lookup(ALICE, 0.0)) == 2


async def test_replace_is_the_complete_set() -> None:
    location = MemoryLocationService()
    await location.replace(ALICE, [binding(contact="sip:a@h"), binding(contact="sip:b@h")], 0.0)
    kept = binding(contact="sip:c@h")
    await location.replace(ALICE, [kept], 0.0)
    assert await location.lookup(ALICE, 0.0) == [kept]
    assert await location.count() == 1
    await location.replace(ALICE, [], 0.0)
    assert await location.lookup(ALICE, 0.0) == []
    assert await location.count() == 0


async def test_replace_drops_bindings_already_expired() -> None:
    location = MemoryLocationService()
    await location.replace(ALICE, [binding(expires_at=5.0), binding(expires_at=50.0)], 10.0)
    assert await location.count() == 1


async def test_replace_refuses_a_binding_of_another_aor() -> None:
    location = MemoryLocationService()
    with pytest.raises(ValueError, match="AOR"):
        await location.replace(ALICE, [binding(aor=BOB)], 0.0)
    assert await location.count() == 0


async def test_purge_frees_expired_bindings_only() -> None:
    location = MemoryLocationService()
    await location.replace(ALICE, [binding(contact="sip:a@h", expires_at=100.0)], 0.0)
    await location.replace(BOB, [binding(aor=BOB, expires_at=300.0)], 0.0)
    assert await location.purge(50.0) == 0
    assert await location.purge(100.0) == 1
    assert await location.count() == 1
    assert await location.lookup(BOB, 100.0) != []
    assert await location.purge(1000.0) == 1
    assert await location.count() == 0
    assert await location.purge(2000.0) == 0


async def test_purge_after_refresh_keeps_the_refreshed_binding() -> None:
    location = MemoryLocationService()
    await location.replace(ALICE, [binding(expires_at=100.0)], 0.0)
    refreshed = binding(expires_at=400.0)
    await location.replace(ALICE, [refreshed], 90.0)
    # The heap still holds the old expiry (100): popping it must not drop the refresh.
    assert await location.purge(150.0) == 0
    assert await location.lookup(ALICE, 150.0) == [refreshed]
    assert await location.purge(400.0) == 1


async def test_remove_flow_removes_that_flows_bindings_across_aors() -> None:
    location = MemoryLocationService()
    on_flow = binding(contact="sip:a@h", flow="tcp-1")
    elsewhere = binding(contact="sip:b@h", flow="tcp-2")
    udp = binding(contact="sip:c@h")
    await location.replace(ALICE, [on_flow, elsewhere, udp], 0.0)
    await location.replace(BOB, [binding(aor=BOB, flow="tcp-1")], 0.0)
    assert await location.remove_flow("tcp-1") == 2
    assert await location.lookup(ALICE, 0.0) == [elsewhere, udp]
    assert await location.lookup(BOB, 0.0) == []
    assert await location.count() == 2
    assert await location.remove_flow("tcp-1") == 0
    assert await location.remove_flow("unknown") == 0


async def test_plain_tcp_registrations_outlive_their_connection() -> None:
    # RFC 3261 §18.2.2: without outbound, the Contact is reached over a new connection.
    location = MemoryLocationService()
    plain = binding(flow="tcp-1", outbound=False)
    websocket = dataclasses.replace(
        plain,
        contact="sip:x@df7jal23ls0d.invalid;transport=ws",
        source=Address("WS", "192.0.2.10", 40001, "ws-1"),
    )
    await location.replace(ALICE, [plain, websocket], 0.0)
    assert await location.remove_flow("tcp-1") == 0
    assert await location.remove_flow("ws-1") == 1  # RFC 7118: only reachable over it
    assert await location.lookup(ALICE, 0.0) == [plain]


async def test_flow_index_follows_replacements() -> None:
    location = MemoryLocationService()
    await location.replace(ALICE, [binding(flow="tcp-old")], 0.0)
    moved = binding(flow="tcp-new")  # RFC 5626: a re-registration over a new flow
    await location.replace(ALICE, [moved], 0.0)
    assert await location.remove_flow("tcp-old") == 0
    assert await location.lookup(ALICE, 0.0) == [moved]
    assert await location.remove_flow("tcp-new") == 1
    assert await location.count() == 0


async def test_purge_updates_the_flow_index() -> None:
    location = MemoryLocationService()
    await location.replace(ALICE, [binding(flow="tcp-1", expires_at=10.0)], 0.0)
    assert await location.purge(10.0) == 1
    assert await location.remove_flow("tcp-1") == 0


def test_binding_repr_shows_no_personal_data() -> None:
    shown = repr(binding(flow="tcp-1"))
    for personal in ("alice", "192.0.2.10", "token-abc", "Phone/1.0", "call-1", "tcp-1"):
        assert personal not in shown
    assert "expires_at=1000.0" in shown


def test_binding_helpers() -> None:
    item = binding(flow="tcp-1", expires_at=100.0)
    assert item.flow == "tcp-1"
    assert item.expires_in(40.0) == 60.0
    assert dataclasses.replace(item, source=UDP).flow is None


# -- one copy per worker process ---------------------------------------------------------------


def test_bindings_cross_a_process_boundary_unchanged() -> None:
    full = dataclasses.replace(
        binding(flow="tcp-w1-00aa"),
        q=0.5,
        path=("<sip:edge.example;lr>", "<sip:edge2.example;lr>"),
        params=(("expires", "60"), ("+sip.instance", '"<urn:uuid:1>"'), ("ob", None)),
        keep_until=259_200.0,
        pushed_at=1_796_000_000.25,
    )
    bare = dataclasses.replace(binding(BOB), user_agent=None, params=())
    for aor, bindings in ((ALICE, (full, binding())), (BOB, (bare,)), (ALICE, ())):
        assert decode_bindings(encode_bindings(aor, bindings)) == (aor, bindings)


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'["a"]', b"[1, []]", b'["a", [[1]]]', b'["a", 5]', b"\xff", b'{"a": 1}'],
)
def test_what_is_not_a_binding_set_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a binding set"):
        decode_bindings(data)


async def test_the_owner_publishes_each_new_set_and_the_others_apply_it() -> None:
    published: list[tuple[str, tuple[Binding, ...]]] = []
    owner = ReplicaLocationService(lambda aor, bindings: published.append((aor, bindings)))
    other = ReplicaLocationService(lambda aor, bindings: pytest.fail("a copy never publishes"))
    first, second = binding(contact="sip:a@192.0.2.1"), binding(contact="sip:b@192.0.2.2")
    await owner.replace(ALICE, [first, second], now=0.0)
    await owner.replace(ALICE, [second], now=0.0)
    await owner.replace(BOB, [binding(BOB, expires_at=5.0)], now=10.0)  # expired: removes
    assert published == [(ALICE, (first, second)), (ALICE, (second,)), (BOB, ())]
    for aor, bindings in published:
        aor, bindings = decode_bindings(encode_bindings(aor, bindings))
        other.apply(aor, bindings, now=0.0)
    assert await other.lookup(ALICE, 0.0) == [second]
    assert await other.lookup(BOB, 0.0) == []
    assert await other.count() == 1


async def test_a_copy_drops_what_expired_or_belongs_to_another_aor() -> None:
    copy = ReplicaLocationService(lambda aor, bindings: None)
    copy.apply(ALICE, [binding(expires_at=5.0), binding(BOB), binding(contact="sip:c@h")], 10.0)
    assert [b.contact for b in await copy.lookup(ALICE, 10.0)] == ["sip:c@h"]


async def test_a_late_update_cannot_bring_back_a_closed_flow() -> None:
    # The flow's worker announces the close; the AOR's owner had published a binding over it
    # just before, and the announcement overtook that update on the way to this copy.
    copy = ReplicaLocationService(lambda aor, bindings: None)
    over_flow = binding(flow="tcp-w1-0001")
    plain_tcp = binding(contact="sip:alice@192.0.2.10;transport=tcp", flow="tcp-w1-0001")
    plain_tcp = dataclasses.replace(plain_tcp, reg_id=None, instance=None)
    assert await copy.remove_flow("tcp-w1-0001") == 0
    assert copy.flow_closed("tcp-w1-0001")
    assert not copy.flow_closed("tcp-w1-0002")
    copy.apply(ALICE, [over_flow, plain_tcp, binding(contact="sip:udp@h")], now=0.0)
    # RFC 5626 §5.3: the outbound binding needs its flow; a plain TCP contact does not.
    assert [b.contact for b in await copy.lookup(ALICE, 0.0)] == [
        plain_tcp.contact,
        "sip:udp@h",
    ]


async def test_a_copy_forgets_the_oldest_closed_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ringfence.state.location.CLOSED_FLOWS_KEPT", 2)
    copy = ReplicaLocationService(lambda aor, bindings: None)
    for n in range(3):
        await copy.remove_flow(f"tcp-w1-{n}")
    assert [copy.flow_closed(f"tcp-w1-{n}") for n in range(3)] == [False, True, True]
