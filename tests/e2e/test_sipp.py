"""`ringfence serve` against real SIP peers: SIPp registers, calls, cancels and messages.

A real process on loopback ports, accounts made with the CLI beforehand, SIPp 3.6
(`sip-tester`) as every user agent. SIPp answers only the first digest challenge and knows
only MD5, so this server offers MD5 (setting `sip.digest_algorithms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest

from ringfence.sip.digest import answer, parse_challenge
from ringfence.sip.message import Headers, Request, Response, serialize, with_content_length
from ringfence.sip.parser import StreamParser
from ringfence.transport.tls import CERT_FILE_NAME
from tests.e2e.conftest import DOMAIN, PASSWORDS, Server
from tests.peers.sipp import (
    SippResult,
    free_udp_port,
    run_scenario,
    uas,
    write_injection,
)
from tests.support.net import free_port


def injection(server: Server, name: str, user: str, callee: str | None = None) -> Path:
    path = server.workdir / f"{name}.csv"
    write_injection(path, [(user, PASSWORDS[user])], DOMAIN, callee=callee)
    return path


TRANSPORTS = {"udp": "u1", "tcp": "t1"}


def port_for(server: Server, transport: str) -> int:
    return server.tls_port if transport == "tls" else server.port


async def tls_exchange(server: Server, request: Request) -> Response:
    """Send one request over a TLS connection that verifies our certificate; its final
    response. (Debian's SIPp is built without TLS, so this client is ours.)"""
    context = ssl.create_default_context(
        cafile=str(server.workdir / "var" / "tls" / CERT_FILE_NAME)
    )
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.tls_port, ssl=context, server_hostname="127.0.0.1"
    )
    parser = StreamParser()
    try:
        writer.write(serialize(request))
        await writer.drain()
        while True:
            event = parser.next_event()
            if isinstance(event, Response) and event.status >= 200:
                return event
            if event is None:
                data = await asyncio.wait_for(reader.read(65536), 10)
                assert data, "connection closed"
                parser.receive_data(data)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


def register_request(cseq: int, authorization: str | None = None) -> Request:
    headers = [
        ("Via", f"SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls-{cseq}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:carol@{DOMAIN}>;tag=t1"),
        ("To", f"<sip:carol@{DOMAIN}>"),
        ("Call-ID", "tls-register-1"),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", "<sip:carol@127.0.0.1:5999;transport=tls>"),
        ("Expires", "600"),
    ]
    if authorization:
        headers.append(("Authorization", authorization))
    message = with_content_length(Request("REGISTER", f"sip:{DOMAIN}", Headers(headers)))
    assert isinstance(message, Request)
    return message


async def test_register_over_tls_with_a_verified_certificate(server: Server) -> None:
    challenge = await tls_exchange(server, register_request(1))
    assert challenge.status == 401
    offered = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
    credentials = answer(
        offered, "REGISTER", f"sip:{DOMAIN}", "carol", PASSWORDS["carol"], cnonce="0a4f113b"
    )
    ok = await tls_exchange(server, register_request(2, credentials.render()))
    assert ok.status == 200
    assert "expires=" in (ok.headers.get("Contact") or "")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_with_digest_authentication(server: Server, transport: str) -> None:
    result = run_scenario(
        "register_auth.xml",
        port_for(server, transport),
        inf=injection(server, f"reg-{transport}", "carol"),
        calls=3,
        rate=10,
        transport=TRANSPORTS[transport],
    )
    assert result == SippResult(3, 0)


def test_wrong_password_is_refused(server: Server) -> None:
    path = server.workdir / "wrong.csv"
    write_injection(path, [("carol", "not-the-password")], DOMAIN)
    result = run_scenario("register_auth.xml", server.port, inf=path, recv_timeout_ms=2000)
    assert result == SippResult(0, 1)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_answered_and_ended_with_bye(server: Server, transport: str) -> None:
    code = TRANSPORTS[transport]
    port = port_for(server, transport)
    callee_code = code
    callee_port = free_udp_port() if callee_code == "u1" else free_port()
    registered = run_scenario(
        "register_auth.xml",
        server.port,
        inf=injection(server, "bob", "bob"),
        local_port=callee_port,
        transport=callee_code,
    )
    assert registered == SippResult(1, 0)
    caller = injection(server, f"alice-{transport}", "alice", callee="bob")
    with uas(server.port, callee_port, transport=callee_code):
        assert run_scenario(
            "uac_call.xml", port, inf=caller, calls=5, rate=10, transport=code
        ) == SippResult(5, 0)
        if transport == "udp":
            assert run_scenario(
                "uac_cancel.xml", port, inf=caller, calls=3, rate=10, transport=code
            ) == SippResult(3, 0)
        if transport != "tls":
            assert run_scenario(
                "uac_message.xml", port, inf=caller, calls=5, rate=10, transport=code
            ) == SippResult(5, 0)
