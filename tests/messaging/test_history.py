"""The message history: both sides kept, sealed, paged by cursor, notified, swept, erased."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select

from ringfence.messaging.history import IN, OUT
from ringfence.proxy.router import Parties
from ringfence.runtime import Runtime
from ringfence.storage.tables import messages
from tests.conftest import Demo
from tests.messaging.test_imdn import CPIM_MESSAGE, DELIVERED
from tests.support.clock import FakeClock

ALICE = "sip:alice@sip.acme.example"
BOB = "sip:bob@sip.acme.example"


async def _ids(runtime: Runtime, demo: Demo) -> tuple[str, str]:
    await runtime.provisioning.create_account(demo.tenant, "bob", "bob's long secret")
    alice = await runtime.provisioning.account_id(demo.tenant, "alice")
    bob = await runtime.provisioning.account_id(demo.tenant, "bob")
    return alice, bob


async def _rows(runtime: Runtime) -> list[bytes]:
    async with runtime.engine.connect() as connection:
        return [bytes(r.sealed) for r in await connection.execute(select(messages))]


@pytest.mark.promise("P16")
@pytest.mark.usefixtures("backend")
async def test_a_message_between_users_is_kept_on_both_sides_sealed(
    runtime: Runtime, demo: Demo
) -> None:
    alice, bob = await _ids(runtime, demo)
    parties = Parties(sender=alice, recipient=bob)
    first = await runtime.history.record(parties, ALICE, BOB, "text/plain", b"lunch at noon?")
    assert first.received is not None
    assert first.sent is not None
    second = await runtime.history.record(
        Parties(sender=bob, recipient=alice), BOB, ALICE, "text/plain", b"yes!"
    )
    # Bob's devices: what he received, then what he sent, oldest first.
    bobs = await runtime.history.after(bob, 0)
    assert [(e.direction, e.peer, e.body) for e in bobs] == [
        (IN, ALICE, b"lunch at noon?"),
        (OUT, ALICE, b"yes!"),
    ]
    assert bobs[0].status == "received"
    assert bobs[1].status == "sent"
    # A device that has the first asks for what follows it.
    assert [e.body for e in await runtime.history.after(bob, bobs[0].seq)] == [b"yes!"]
    assert [e.seq for e in await runtime.history.after(alice, 0)] == [first.sent, second.received]
    for sealed in await _rows(runtime):
        assert b"lunch" not in sealed
        assert b"alice" not in sealed
        assert b"bob" not in sealed


async def test_only_the_parties_of_the_service_keep_it(runtime: Runtime, demo: Demo) -> None:
    alice, _ = await _ids(runtime, demo)
    outside = "sip:carol@elsewhere.example"
    recorded = await runtime.history.record(
        Parties(sender=alice), ALICE, outside, "text/plain", b"hi"
    )
    assert recorded.received is None
    assert [e.peer for e in await runtime.history.after(alice, 0)] == [outside]
    assert await runtime.history.record(Parties(), ALICE, outside, "text/plain", b"x") == (
        type(recorded)()
    )


async def test_typing_indications_and_huge_bodies_are_not_kept(
    runtime: Runtime, demo: Demo
) -> None:
    alice, bob = await _ids(runtime, demo)
    parties = Parties(sender=alice, recipient=bob)
    typing = b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"/>'
    await runtime.history.record(parties, ALICE, BOB, "application/im-iscomposing+xml", typing)
    await runtime.history.record(parties, ALICE, BOB, "text/plain", b"x" * (256 * 1024 + 1))
    assert await _rows(runtime) == []


async def test_a_delivery_notification_raises_the_senders_status(
    runtime: Runtime, demo: Demo
) -> None:
    alice, bob = await _ids(runtime, demo)
    await runtime.history.record(Parties(alice, bob), ALICE, BOB, "message/cpim", CPIM_MESSAGE)
    [sent] = await runtime.history.after(alice, 0)
    assert (sent.status, sent.imdn_id) == ("sent", "34jk324j")
    # Bob's phone answers with an IMDN (RFC 5438 §7.2), itself a CPIM-wrapped MESSAGE.
    notification = (
        b"From: <sip:bob@sip.acme.example>\r\nTo: <sip:alice@sip.acme.example>\r\n"
        b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: dd8dk3\r\n\r\n"
        b"Content-Type: message/imdn+xml\r\n\r\n" + DELIVERED
    )
    await runtime.history.record(Parties(bob, alice), BOB, ALICE, "message/cpim", notification)
    statuses = {e.seq: e.status for e in await runtime.history.after(alice, 0)}
    assert statuses[sent.seq] == "delivered"
    # Never back: a late "delivered" after "displayed" changes nothing; another user's
    # notification naming the same id changes nothing of Alice's.
    displayed = notification.replace(b"delivery-notification", b"display-notification")
    displayed = displayed.replace(b"<delivered/>", b"<displayed/>")
    await runtime.history.record(Parties(bob, alice), BOB, ALICE, "message/cpim", displayed)
    await runtime.history.record(Parties(bob, alice), BOB, ALICE, "message/cpim", notification)
    assert {e.seq: e.status for e in await runtime.history.after(alice, 0)}[sent.seq] == (
        "displayed"
    )


async def test_acrobits_dispositions_name_the_message_by_its_seq(
    runtime: Runtime, demo: Demo
) -> None:
    alice, bob = await _ids(runtime, demo)
    recorded = await runtime.history.record(Parties(alice, bob), ALICE, BOB, "text/plain", b"hi")
    assert recorded.sent is not None
    report = b'{"sms_id": %d, "status": "delivered"}' % recorded.sent
    await runtime.history.record(
        Parties(bob, alice), BOB, ALICE, "application/x-acro-disposition-notification", report
    )
    [sent, _] = await runtime.history.after(alice, 0)
    assert sent.status == "delivered"
    # Someone the message was not sent to cannot mark it read; nor can a malformed id
    # ("²" is a digit to str.isdigit, not to int) fail the MESSAGE that carries it.
    await runtime.provisioning.create_account(demo.tenant, "mallory", "mallory's secret 1")
    mallory = await runtime.provisioning.account_id(demo.tenant, "mallory")
    forged = b'{"sms_id": %d, "status": "displayed"}' % recorded.sent
    mallory_uri = "sip:mallory@sip.acme.example"
    acro = "application/x-acro-disposition-notification"
    await runtime.history.record(Parties(mallory, alice), mallory_uri, ALICE, acro, forged)
    long_id = b'{"sms_id": "' + b"9" * 30 + b'", "status": "displayed"}'
    superscript = '{"sms_id": "\u00b2", "status": "displayed"}'.encode()
    for odd in (superscript, long_id):
        await runtime.history.record(Parties(mallory, alice), mallory_uri, ALICE, acro, odd)
    assert (await runtime.history.after(alice, 0))[0].status == "delivered"


@pytest.mark.promise("P15")
async def test_messages_last_the_accounts_retention_then_are_swept(
    runtime: Runtime, demo: Demo, clock: FakeClock
) -> None:
    alice, bob = await _ids(runtime, demo)
    parties = Parties(alice, bob, sender_retention_days=10, recipient_retention_days=90)
    await runtime.history.record(parties, ALICE, BOB, "text/plain", b"hi")
    clock.advance(10 * 86_400)
    assert await runtime.history.after(alice, 0) == []  # past its retention: not shown
    assert len(await runtime.history.after(bob, 0)) == 1
    await runtime.housekeeping()
    assert len(await _rows(runtime)) == 1
    clock.advance(80 * 86_400)
    await runtime.housekeeping()
    assert await _rows(runtime) == []


@pytest.mark.promise("P19")
async def test_erasing_an_account_erases_its_history_not_the_others(
    runtime: Runtime, demo: Demo
) -> None:
    alice, bob = await _ids(runtime, demo)
    await runtime.history.record(Parties(alice, bob), ALICE, BOB, "text/plain", b"hi")
    await runtime.provisioning.delete_account(demo.tenant, "alice")
    assert len(await _rows(runtime)) == 1
    assert [e.direction for e in await runtime.history.after(bob, 0)] == [IN]


async def test_a_user_deletes_one_message_for_every_device(runtime: Runtime, demo: Demo) -> None:
    alice, bob = await _ids(runtime, demo)
    recorded = await runtime.history.record(Parties(alice, bob), ALICE, BOB, "text/plain", b"oops")
    assert recorded.sent is not None
    assert not await runtime.history.delete(bob, recorded.sent)  # not Bob's to delete
    assert await runtime.history.delete(alice, recorded.sent)
    assert await runtime.history.after(alice, 0) == []
    assert len(await runtime.history.after(bob, 0)) == 1


@pytest.mark.promise("P19")
async def test_the_access_bundle_carries_the_history_and_the_files(
    runtime: Runtime, demo: Demo
) -> None:
    alice, bob = await _ids(runtime, demo)
    await runtime.history.record(Parties(alice, bob), ALICE, BOB, "text/plain", "grüß".encode())
    await runtime.history.record(Parties(bob, alice), BOB, ALICE, "image/png", b"\x89PNG\xff")
    slot = await runtime.files.create(alice, 1000, [bob], 10_000)
    bundle = (await runtime.subject_rights.bundle(alice))["categories"]
    history = bundle["message history"]
    assert [(m["direction"], m["peer"]) for m in history] == [("out", BOB), ("in", BOB)]
    assert history[0]["body"] == "grüß"
    assert base64.b64decode(history[1]["body_base64"]) == b"\x89PNG\xff"
    assert [f["id"] for f in bundle["attachments"]["sent"]] == [slot.id]
    assert (await runtime.subject_rights.bundle(bob))["categories"]["attachments"] == {
        "sent": [],
        "received": [slot.id],
    }


@pytest.mark.promise("P15")
async def test_a_legal_hold_stops_the_retention_sweep(
    runtime: Runtime, demo: Demo, clock: FakeClock
) -> None:
    alice, bob = await _ids(runtime, demo)
    await runtime.history.record(Parties(alice, bob), ALICE, BOB, "text/plain", b"evidence")
    slot = await runtime.files.create(alice, 1000, [bob], 10_000)
    hold = await runtime.erasure.place_hold(
        demo.tenant, "alice", reason="court order", reference="2026/17", placed_by="legal"
    )
    clock.advance(91 * 86_400)
    await runtime.housekeeping()
    # Alice's copy and her file stay while the hold is in force; Bob's copy goes.
    async with runtime.engine.connect() as connection:
        kept = (await connection.execute(select(messages.c.account_id))).all()
    assert [row.account_id for row in kept] == [alice]
    assert await runtime.files.export(alice) != {"sent": [], "received": []}
    await runtime.erasure.release_hold(hold.id, released_by="legal")
    await runtime.housekeeping()
    assert await _rows(runtime) == []
    assert (await runtime.files.export(alice))["sent"] == []
    received = (await runtime.files.export(bob))["received"]
    assert isinstance(received, list)
    assert slot.id not in received


async def test_the_proxys_messages_are_written_together_in_the_order_they_came(
    runtime: Runtime, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await _ids(runtime, demo)
    for n in range(50):
        runtime.history.keep(Parties(alice, bob), ALICE, BOB, "text/plain", b"m%d" % n)
    assert await _rows(runtime) == []  # nothing written per message
    # A message sent through the API meanwhile comes after them all.
    api = await runtime.history.record(Parties(alice, bob), ALICE, BOB, "text/plain", b"api")
    bodies = [e.body for e in await runtime.history.after(bob, 0)]
    assert bodies == [b"m%d" % n for n in range(50)] + [b"api"]
    assert api.received == (await runtime.history.after(bob, 0))[-1].seq
    # Past the queue's bound (a stalled store) messages are delivered but not kept.
    monkeypatch.setattr("ringfence.messaging.history.MAX_QUEUED", 3)
    for n in range(5):
        runtime.history.keep(Parties(alice, bob), ALICE, BOB, "text/plain", b"late%d" % n)
    assert await runtime.history.flush() == 3
    assert await runtime.history.flush() == 0
