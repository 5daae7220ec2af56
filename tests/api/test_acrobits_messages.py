"""Acrobits' Send Message and Fetch Messages web services over the message history."""

from __future__ import annotations

import httpx
import pytest

from ringfence.provisioning.models import AccountChange
from ringfence.proxy.router import Parties
from ringfence.runtime import Runtime
from tests.conftest import Demo

ALICE = "sip:alice@sip.acme.example"
BOB = "sip:bob@sip.acme.example"


def login(demo: Demo, **fields: str) -> dict[str, str]:
    return {"cloud_username": demo.login, "cloud_password": demo.password, **fields}


async def _conversation(runtime: Runtime, demo: Demo) -> tuple[int, int]:
    await runtime.provisioning.create_account(demo.tenant, "bob", "bob's long secret")
    alice = await runtime.provisioning.account_id(demo.tenant, "alice")
    bob = await runtime.provisioning.account_id(demo.tenant, "bob")
    got = await runtime.history.record(Parties(bob, alice), BOB, ALICE, "text/plain", b"hi Alice")
    sent = await runtime.history.record(
        Parties(alice, bob), ALICE, BOB, "text/plain", b"hi Bob", '{"id":"x1","dn":"delivery"}'
    )
    assert got.received is not None
    assert sent.sent is not None
    return got.received, sent.sent


async def test_fetch_gives_received_and_sent_after_their_ids(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo
) -> None:
    received, sent = await _conversation(runtime, demo)
    response = await client.post("/acrobits/fetch-messages", data=login(demo, device="d1"))
    assert response.status_code == 200
    body = response.json()
    assert body["date"].endswith("Z")
    [got] = body["received_smss"]
    assert got["sms_id"] == str(received)
    assert (got["sender"], got["sms_text"]) == ("bob@sip.acme.example", "hi Alice")
    assert got["content_type"] == "text/plain"
    [mine] = body["sent_smss"]
    assert (mine["recipient"], mine["sms_text"]) == ("bob@sip.acme.example", "hi Bob")
    assert mine["disposition_notification"] == '{"id":"x1","dn":"delivery"}'
    # The app has both now: nothing more.
    again = await client.post(
        "/acrobits/fetch-messages",
        data=login(demo, last_id=str(received), last_sent_id=str(sent)),
    )
    assert again.json()["received_smss"] == []
    assert again.json()["sent_smss"] == []
    # A second device that has the received one but none of the sent.
    other = await client.post(
        "/acrobits/fetch-messages", data=login(demo, last_id=str(received), last_sent_id="")
    )
    assert [m["sms_id"] for m in other.json()["sent_smss"]] == [str(sent)]


async def test_a_device_that_never_sends_still_gets_what_came(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo
) -> None:
    # Past a page of sent messages (500), what came after last_id still comes.
    received, _ = await _conversation(runtime, demo)
    alice = await runtime.provisioning.account_id(demo.tenant, "alice")
    bob = await runtime.provisioning.account_id(demo.tenant, "bob")
    for n in range(510):
        await runtime.history.record(Parties(alice, bob), ALICE, BOB, "text/plain", b"%d" % n)
    late = await runtime.history.record(Parties(bob, alice), BOB, ALICE, "text/plain", b"late")
    body = (
        await client.post(
            "/acrobits/fetch-messages", data=login(demo, last_id=str(received), last_sent_id="0")
        )
    ).json()
    assert [m["sms_id"] for m in body["received_smss"]] == [str(late.received)]
    assert len(body["sent_smss"]) == 500


@pytest.mark.parametrize("field", ["last_id", "last_sent_id"])
async def test_a_bad_id_is_refused_with_a_message(
    client: httpx.AsyncClient, demo: Demo, field: str
) -> None:
    response = await client.post("/acrobits/fetch-messages", data=login(demo, **{field: "x"}))
    assert response.status_code == 422
    assert field in response.json()["message"]


@pytest.mark.promise("P1")
async def test_wrong_password_and_messaging_off_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo
) -> None:
    wrong = await client.post(
        "/acrobits/fetch-messages",
        data={"cloud_username": demo.login, "cloud_password": "not it at all"},
    )
    assert wrong.status_code == 403
    await runtime.provisioning.update_account(
        demo.tenant, demo.username, AccountChange(overrides={"messaging": {"enabled": False}})
    )
    for path, extra in (
        ("/acrobits/fetch-messages", {}),
        ("/acrobits/send-message", {"sms_to": "bob", "sms_body": "hi"}),
    ):
        response = await client.post(path, data=login(demo, **extra))
        assert response.status_code == 403
        assert "messaging" in response.json()["message"]


async def test_send_needs_a_running_sip_node_and_a_proper_recipient(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    response = await client.post(
        "/acrobits/send-message", data=login(demo, sms_to="bob", sms_body="hi")
    )
    assert response.status_code == 503
    assert "not delivered" in response.json()["message"]
    bad = await client.post(
        "/acrobits/send-message", data=login(demo, sms_to="bob@else", sms_body="hi")
    )
    assert bad.status_code == 422
    assert bad.json()["message"].startswith("to:")


async def test_a_content_type_cannot_carry_sip_headers(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    # It becomes the MESSAGE's Content-Type: a line break would add headers, or a request.
    response = await client.post(
        "/acrobits/send-message",
        data=login(demo, sms_to="bob", sms_body="hi", content_type="text/plain\r\nX-Evil: 1"),
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "body.content_type"
