"""P21: a requester without a session is verified by a code texted to the number of record.

The codes go to a real HTTP server on loopback that plays the SMS gateway
(tests/support/sms.py); time is a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from ringfence.config import SMSSettings
from ringfence.provisioning.errors import NotFoundError
from ringfence.runtime import Runtime
from ringfence.storage.repos import SqlPrivacyStore
from tests.conftest import make_settings
from tests.support.clock import FakeClock
from tests.support.sms import Gateway, sms_gateway

pytestmark = pytest.mark.promise("P21")

NUMBER = "+41445551234"
ALICE_REQUESTS = "/admin/v1/tenants/acme/accounts/alice/privacy/requests"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with sms_gateway() as running:
        yield running


@pytest.fixture
async def node(
    tmp_path: Path, clock: FakeClock, gateway: Gateway, request: pytest.FixtureRequest
) -> AsyncIterator[Runtime]:
    settings = make_settings(tmp_path, "sqlite", request).model_copy(
        update={"sms": SMSSettings.model_validate({"url": gateway.url, "token": gateway.token})}
    )
    runtime = Runtime(settings, clock)
    await runtime.migrate()
    await runtime.provisioning.create_tenant("acme", "Acme Telecom", "sip.acme.example")
    await runtime.provisioning.create_account(
        "acme", "alice", "correct horse", display_name="Alice Liddell", e164=NUMBER
    )
    yield runtime
    await runtime.aclose()


@pytest.fixture
async def http(node: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    _, token = await node.auth.create_admin_token("support")
    transport = httpx.ASGITransport(app=node.app())
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client


def last_code(gateway: Gateway) -> str:
    match = re.search(r"\b(\d{6})\b", gateway.texts_to(NUMBER)[-1])
    assert match is not None
    return match.group(1)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def take(http: httpx.AsyncClient, kind: str) -> dict[str, str]:
    answer = await http.post(f"{ALICE_REQUESTS}/awaiting-code", json={"kind": kind})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def enter(http: httpx.AsyncClient, request_id: str, code: str) -> httpx.Response:
    """The requester's own entry: the device API, without any session."""
    return await http.post(
        f"/v1/privacy/requests/{request_id}/code",
        json={"code": code},
        headers={"Authorization": ""},
    )


async def test_the_code_texted_to_the_number_verifies_an_erasure(
    node: Runtime, http: httpx.AsyncClient, gateway: Gateway
) -> None:
    request = await take(http, "erasure")
    assert request["state"] == "verifying"
    [(headers, body)] = gateway.received
    assert (body["to"], body["sender"]) == (NUMBER, "ringfence")
    assert headers["content-type"] == "application/json"
    code = last_code(gateway)
    # Asked again while it is open: the same request, no second text.
    again = await http.post(f"{ALICE_REQUESTS}/awaiting-code", json={"kind": "erasure"})
    assert (again.status_code, again.json()["id"]) == (200, request["id"])
    assert len(gateway.received) == 1

    wrong = await enter(http, request["id"], other_code(code))
    assert wrong.status_code == 422
    assert wrong.json()["error"]["field"] == "code"
    assert "4 tries left" in wrong.json()["error"]["message"]
    assert (await node.provisioning.account("acme", "alice")).e164 == NUMBER

    right = await enter(http, request["id"], code)
    assert right.status_code == 200, right.text
    done = right.json()
    assert (done["state"], done["verified_by"], done["outcome"]) == (
        "completed",
        "code sent to the number of record",
        "erased: key destroyed",
    )
    with pytest.raises(NotFoundError):
        await node.provisioning.account("acme", "alice")
    # Used once: the code is gone, and the request with it as far as codes go.
    assert (await enter(http, request["id"], code)).status_code == 404


async def test_the_operator_enters_the_code_read_back(
    node: Runtime, http: httpx.AsyncClient, gateway: Gateway
) -> None:
    request = await take(http, "access")
    answer = await http.post(
        f"/admin/v1/privacy/requests/{request['id']}/code", json={"code": last_code(gateway)}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "completed"
    export = await http.get(f"/admin/v1/privacy/requests/{request['id']}/export")
    assert export.json()["categories"]["account identity"]["e164"] == NUMBER


async def test_a_code_expires_after_15_minutes_and_a_new_one_replaces_it(
    http: httpx.AsyncClient, gateway: Gateway, clock: FakeClock
) -> None:
    request = await take(http, "confirmation")
    first = last_code(gateway)
    clock.advance(15 * 60)
    expired = await enter(http, request["id"], first)
    assert expired.status_code == 422
    assert "expired" in expired.json()["error"]["message"]

    sent = await http.post(f"/admin/v1/privacy/requests/{request['id']}/code/send")
    assert sent.status_code == 200, sent.text
    expires = datetime.fromisoformat(sent.json()["expires_at"])
    assert expires == clock.now() + timedelta(minutes=15)
    second = last_code(gateway)
    if second != first:
        assert (await enter(http, request["id"], first)).status_code == 422
    assert (await enter(http, request["id"], second)).json()["state"] == "completed"


async def test_three_codes_at_most_per_request(http: httpx.AsyncClient, gateway: Gateway) -> None:
    request = await take(http, "access")
    for _ in range(2):
        sent = await http.post(f"/admin/v1/privacy/requests/{request['id']}/code/send")
        assert sent.status_code == 200
    fourth = await http.post(f"/admin/v1/privacy/requests/{request['id']}/code/send")
    assert fourth.status_code == 422
    assert "at most 3" in fourth.json()["error"]["message"]
    assert len(gateway.received) == 3


async def test_five_wrong_codes_reject_the_request_and_erase_nothing(
    node: Runtime, http: httpx.AsyncClient, gateway: Gateway
) -> None:
    request = await take(http, "erasure")
    wrong = other_code(last_code(gateway))
    for left in (4, 3, 2, 1):
        answer = await enter(http, request["id"], wrong)
        assert f"{left} {'try' if left == 1 else 'tries'} left" in answer.json()["error"]["message"]
    last = await enter(http, request["id"], wrong)
    assert last.status_code == 422
    assert "rejected" in last.json()["error"]["message"]
    [rejected] = await node.subject_rights.of(await node.provisioning.account_id("acme", "alice"))
    assert (rejected.state.value, rejected.outcome) == (
        "rejected",
        "identity not verified: too many wrong codes",
    )
    assert (await node.provisioning.account("acme", "alice")).display_name == "Alice Liddell"
    # Nothing left to guess at.
    assert (await enter(http, request["id"], last_code(gateway))).status_code == 404


async def test_without_a_number_or_a_working_gateway_nothing_is_recorded(
    node: Runtime, http: httpx.AsyncClient, gateway: Gateway
) -> None:
    await node.provisioning.create_account("acme", "bob", "bob's password")
    no_number = await http.post(
        "/admin/v1/tenants/acme/accounts/bob/privacy/requests/awaiting-code",
        json={"kind": "access"},
    )
    assert no_number.status_code == 422
    assert no_number.json()["error"]["field"] == "method"
    assert "ID document" in no_number.json()["error"]["message"]

    gateway.status = 503
    refused = await http.post(f"{ALICE_REQUESTS}/awaiting-code", json={"kind": "access"})
    assert refused.status_code == 502
    assert refused.json()["error"]["code"] == "not_sent"
    rectify = await http.post(f"{ALICE_REQUESTS}/awaiting-code", json={"kind": "rectification"})
    assert rectify.status_code == 422
    alice = await node.provisioning.account_id("acme", "alice")
    bob = await node.provisioning.account_id("acme", "bob")
    assert await node.subject_rights.of(alice) == []
    assert await node.subject_rights.of(bob) == []
    async with node.engine.connect() as connection:
        count = (await connection.execute(text("SELECT count(*) FROM verification_codes"))).scalar()
    assert count == 0


async def test_without_a_gateway_the_method_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    answer = await client.post(
        f"{ALICE_REQUESTS}/awaiting-code", json={"kind": "access"}, headers=admin_headers
    )
    assert answer.status_code == 409
    assert "[sms] url" in answer.json()["error"]["message"]


async def test_neither_code_nor_number_is_logged_or_stored_and_orphan_codes_go(
    node: Runtime,
    http: httpx.AsyncClient,
    gateway: Gateway,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    request = await take(http, "access")
    code = last_code(gateway)
    await enter(http, request["id"], other_code(code))
    async with node.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM verification_codes"))).all()
    assert len(rows) == 1
    assert not any(code in str(value) or "445551234" in str(value) for value in rows[0])
    assert code not in caplog.text
    assert "445551234" not in caplog.text
    # A code whose request was never recorded (as when the text is refused half-way) goes a
    # day after expiry; an open request's row stays, with its counts of tries and sends.
    await SqlPrivacyStore(node.engine).reserve_send("never-recorded", 3, clock.now())
    clock.advance(24 * 3600 + 15 * 60 + 1)
    await node.housekeeping()
    async with node.engine.connect() as connection:
        left = (await connection.execute(text("SELECT request_id FROM verification_codes"))).all()
    assert [row[0] for row in left] == [request["id"]]


async def test_tries_made_at_once_count_each_and_new_codes_do_not_reset_them(
    node: Runtime, http: httpx.AsyncClient, gateway: Gateway
) -> None:
    request = await take(http, "erasure")
    code = last_code(gateway)
    guesses = [f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, 4)]
    answers = await asyncio.gather(*(enter(http, request["id"], guess) for guess in guesses))
    assert sorted(a.status_code for a in answers) == [422, 422, 422]
    left = sorted(a.json()["error"]["message"] for a in answers)
    assert left == [
        "code: wrong; 2 tries left",
        "code: wrong; 3 tries left",
        "code: wrong; 4 tries left",
    ]
    # A new code carries on the count: two tries remain for the whole request.
    sent = await http.post(f"/admin/v1/privacy/requests/{request['id']}/code/send")
    assert sent.status_code == 200
    fresh = last_code(gateway)
    assert "1 try left" in (await enter(http, request["id"], other_code(fresh))).text
    many = await asyncio.gather(*(enter(http, request["id"], other_code(fresh)) for _ in range(20)))
    assert {a.status_code for a in many} <= {422, 404}
    assert (await enter(http, request["id"], fresh)).status_code == 404
    [rejected] = await node.subject_rights.of(await node.provisioning.account_id("acme", "alice"))
    assert rejected.state.value == "rejected"
