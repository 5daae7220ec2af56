"""The message history API: fetch after a cursor, send, delete; only with messaging on (P1)."""

from __future__ import annotations

import base64

import httpx
import pytest
from sqlalchemy import select

from ringfence.provisioning.models import AccountChange
from ringfence.proxy.router import Parties
from ringfence.runtime import Runtime
from ringfence.storage.tables import messages
from tests.conftest import Demo

ALICE = "sip:alice@sip.acme.example"
BOB = "sip:bob@sip.acme.example"


async def _conversation(runtime: Runtime, demo: Demo) -> None:
    await runtime.provisioning.create_account(demo.tenant, "bob", "bob's long secret")
    alice = await runtime.provisioning.account_id(demo.tenant, "alice")
    bob = await runtime.provisioning.account_id(demo.tenant, "bob")
    await runtime.history.record(Parties(bob, alice), BOB, ALICE, "text/plain", "grüezi".encode())
    await runtime.history.record(Parties(alice, bob), ALICE, BOB, "image/png", b"\x89PNG\xff")


async def test_a_device_fetches_what_follows_its_cursor(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo
) -> None:
    await _conversation(runtime, demo)
    auth = (demo.login, demo.password)
    first = await client.get("/v1/messages", auth=auth)
    assert first.status_code == 200
    page = first.json()
    assert [(m["direction"], m["peer"]) for m in page["messages"]] == [("in", BOB), ("out", BOB)]
    assert page["messages"][0]["body"] == "grüezi"
    assert page["messages"][1]["body"] is None
    assert base64.b64decode(page["messages"][1]["body_base64"]) == b"\x89PNG\xff"
    assert page["cursor"] == page["messages"][1]["seq"]
    # Another device of Alice's, which had the first one already.
    after = page["messages"][0]["seq"]
    rest = (await client.get(f"/v1/messages?after={after}&limit=10", auth=auth)).json()
    assert [m["seq"] for m in rest["messages"]] == [page["cursor"]]
    empty = (await client.get(f"/v1/messages?after={page['cursor']}", auth=auth)).json()
    assert empty == {"messages": [], "cursor": page["cursor"]}
    bad = await client.get("/v1/messages?after=-1", auth=auth)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "query.after"


async def test_delete_removes_one_message_of_the_own_history(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo
) -> None:
    await _conversation(runtime, demo)
    auth = (demo.login, demo.password)
    seq = (await client.get("/v1/messages", auth=auth)).json()["messages"][0]["seq"]
    assert (await client.delete(f"/v1/messages/{seq}", auth=auth)).status_code == 204
    again = await client.delete(f"/v1/messages/{seq}", auth=auth)
    assert again.status_code == 404
    assert again.json()["error"]["field"] == "seq"
    assert len((await client.get("/v1/messages", auth=auth)).json()["messages"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "bob", "body": "hi", "body_base64": "aGk="}, "body"),
        ({"to": "bob"}, "body"),
        ({"to": "bob@elsewhere", "body": "hi"}, "to"),
        ({"to": "bob", "body_base64": "not base64!"}, "body_base64"),
        ({"to": "bob", "body": "x" * (64 * 1024 + 1)}, "body"),
        ({"to": "bob", "body": "hi", "content_type": "no type"}, "body.content_type"),
        ({"to": "bob", "body": "hi", "extra": 1}, "body.extra"),
    ],
)
async def test_a_bad_message_is_refused_naming_the_field(
    client: httpx.AsyncClient, demo: Demo, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/messages", json=body, auth=(demo.login, demo.password))
    assert response.status_code == 422
    assert field in response.json()["error"]["field"]


async def test_sending_needs_a_running_sip_node(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post(
        "/v1/messages", json={"to": "bob", "body": "hi"}, auth=(demo.login, demo.password)
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_delivered"


@pytest.mark.promise("P1")
async def test_with_messaging_off_nothing_is_read_sent_or_kept(
    client: httpx.AsyncClient, runtime: Runtime, demo: Demo
) -> None:
    await _conversation(runtime, demo)
    await runtime.provisioning.update_account(
        demo.tenant, demo.username, AccountChange(overrides={"messaging": {"enabled": False}})
    )
    auth = (demo.login, demo.password)
    for response in (
        await client.get("/v1/messages", auth=auth),
        await client.post("/v1/messages", json={"to": "bob", "body": "hi"}, auth=auth),
        await client.delete("/v1/messages/1", auth=auth),
    ):
        assert response.status_code == 403
        assert response.json()["error"]["feature"] == "messaging"
    # The router no longer names Alice as a party: a MESSAGE to her is not kept for her.
    credentials = await runtime.provisioning.sip_credentials("sip.acme.example", "alice")
    assert credentials is not None
    assert not credentials.messaging
    async with runtime.engine.connect() as connection:
        assert len((await connection.execute(select(messages))).all()) == 4
