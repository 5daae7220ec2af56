"""Message history end to end: `ringfence serve`, SIPp phones, the HTTP API as other devices.

Alice's phone (SIPp) sends Bob a MESSAGE; Alice's tablet sends him another through the API;
Bob's phone (SIPp, registered) takes both. Then every device reads the history over HTTPS:
Bob's two devices see both as received, Alice's tablet sees both as sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import DOMAIN, PASSWORDS, Server, serving
from tests.peers.sipp import free_udp_port, run_scenario, uas, write_injection

SCENARIOS = Path(__file__).resolve().parents[1] / "peers" / "scenarios"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("messages-e2e")) as running:
        yield running


def injection(server: Server, user: str, callee: str) -> Path:
    path = server.workdir / f"{user}-{callee}.csv"
    write_injection(path, [(user, PASSWORDS[user])], DOMAIN, callee=callee)
    return path


def history(server: Server, user: str, after: int = 0) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.http_url}/v1/messages",
        params={"after": after},
        auth=(f"{user}@{DOMAIN}", PASSWORDS[user]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def test_every_device_sees_the_conversation(server: Server) -> None:
    phone = free_udp_port()
    assert run_scenario(
        "register_auth.xml", server.port, inf=injection(server, "bob", "bob"), local_port=phone
    ) == (1, 0)
    with uas(server.port, phone, scenario=SCENARIOS / "uas_message_any.xml"):
        # Alice's phone: an authenticated MESSAGE through the proxy, 200 from Bob's phone.
        sent = run_scenario("uac_message.xml", server.port, inf=injection(server, "alice", "bob"))
        assert sent == (1, 0)
        # Alice's tablet: the same through the API; the service sends the MESSAGE.
        response = httpx.post(
            f"{server.http_url}/v1/messages",
            json={"to": "bob", "body": "sent from the tablet"},
            auth=(f"alice@{DOMAIN}", PASSWORDS["alice"]),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "delivered"
        api_seq = response.json()["seq"]
        # Alice's Acrobits-based app: its Send Message web service.
        acrobits = httpx.post(
            f"{server.http_url}/acrobits/send-message",
            data={
                "cloud_username": f"alice@{DOMAIN}",
                "cloud_password": PASSWORDS["alice"],
                "sms_to": "bob",
                "sms_body": "sent from Groundwire",
            },
            timeout=30,
        )
        assert acrobits.status_code == 200, acrobits.text
        acro_seq = int(acrobits.json()["sms_id"])
    alice = f"sip:alice@{DOMAIN}"
    bob = f"sip:bob@{DOMAIN}"
    # Bob's phone and Bob's desktop app: both read the same two messages.
    received = history(server, "bob")
    for _device in ("phone", "desktop"):
        assert history(server, "bob") == received
        assert [(m["direction"], m["peer"]) for m in received] == [("in", alice)] * 3
        assert received[0]["body"].startswith("Hello from alice")
        assert received[1]["body"] == "sent from the tablet"
        assert received[2]["body"] == "sent from Groundwire"
    # A device that had the first one asks only for what follows.
    assert [m["body"] for m in history(server, "bob", received[0]["seq"])] == [
        "sent from the tablet",
        "sent from Groundwire",
    ]
    # Bob's Acrobits-based app fetches the same.
    fetched = httpx.post(
        f"{server.http_url}/acrobits/fetch-messages",
        data={"cloud_username": f"bob@{DOMAIN}", "cloud_password": PASSWORDS["bob"]},
        timeout=10,
    ).json()
    assert [m["sms_text"] for m in fetched["received_smss"]][1:] == [
        "sent from the tablet",
        "sent from Groundwire",
    ]
    # Alice's tablet sees what her phone sent, and what it sent itself, as sent.
    mine = history(server, "alice")
    assert [(m["direction"], m["peer"], m["status"]) for m in mine] == [("out", bob, "sent")] * 3
    assert [m["seq"] for m in mine[1:]] == [api_seq, acro_seq]
    # The server's log names nobody and quotes no message.
    log = (server.workdir / "serve.log").read_text()
    assert "sent from the tablet" not in log
    assert "Hello from alice" not in log


def test_a_message_for_a_user_without_devices_is_refused_and_not_kept(server: Server) -> None:
    response = httpx.post(
        f"{server.http_url}/v1/messages",
        json={"to": "carol", "body": "anyone there?"},
        auth=(f"dave@{DOMAIN}", PASSWORDS["dave"]),
        timeout=30,
    )
    assert response.status_code == 409
    assert "480" in response.json()["error"]["message"]
    missing = httpx.post(
        f"{server.http_url}/v1/messages",
        json={"to": "nobody-here", "body": "hi"},
        auth=(f"dave@{DOMAIN}", PASSWORDS["dave"]),
        timeout=30,
    )
    assert missing.status_code == 404
    assert history(server, "dave") == []
    assert history(server, "carol") == []


def test_a_sip_message_nobody_took_is_not_kept(server: Server) -> None:
    # Ken has no device: the proxy answers 480, and neither history keeps the message.
    refused = run_scenario(
        SCENARIOS / "uac_message_unavailable.xml",
        server.port,
        inf=injection(server, "judy", "ken"),
    )
    assert refused == (1, 0)
    # Now Ken's phone is registered but refuses it (480 from the device, relayed).
    phone = free_udp_port()
    assert run_scenario(
        "register_auth.xml", server.port, inf=injection(server, "ken", "ken"), local_port=phone
    ) == (1, 0)
    with uas(server.port, phone, scenario=SCENARIOS / "uas_message_refuse.xml"):
        again = run_scenario(
            SCENARIOS / "uac_message_unavailable.xml",
            server.port,
            inf=injection(server, "judy", "ken"),
        )
    assert again == (1, 0)
    assert history(server, "judy") == []
    assert history(server, "ken") == []


def test_the_history_api_needs_credentials(server: Server) -> None:
    response = httpx.get(f"{server.http_url}/v1/messages", timeout=10)
    assert response.status_code == 401
    wrong = httpx.get(
        f"{server.http_url}/v1/messages", auth=(f"bob@{DOMAIN}", "not his password"), timeout=10
    )
    assert wrong.status_code == 401
