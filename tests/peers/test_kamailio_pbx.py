"""The Kamailio stand-in PBX (tests/peers/kamailio.py), driven by the project's own upstream
registration (ringfence.overlay.registration) over a real UDP socket: what overlay mode's
end-to-end tests build on."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.overlay.registration import State, UpstreamAccount, UpstreamRegistration
from ringfence.sip.message import Request, Response, serialize
from ringfence.sip.parser import parse_datagram
from ringfence.sip.randomness import random_hex
from tests.peers.kamailio import Pbx, kamailio_binary, kamcmd_binary, sip_ping
from tests.support.tools import missing_tool

USERS = {"alice": "pw", "bob": "bob:pw\\2"}  # bob's has db_text's separator and escape


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[Pbx]:
    if kamailio_binary() is None or kamcmd_binary() is None:
        missing_tool("kamailio", "kamailio")
    with Pbx(tmp_path / "pbx", USERS) as running:
        yield running


class UdpRegistrar:
    """The transport the sans-IO registration leaves out: a UDP socket, a Via per request
    (the registration builds REGISTERs without one, as the transaction layer adds it), and
    retransmission while no final response came (RFC 3261 §17.1.2.2, simplified)."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port: int = self.sock.getsockname()[1]
        self.statuses: list[int] = []

    def close(self) -> None:
        self.sock.close()

    def transact(self, request: Request) -> Response:
        via = f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{random_hex(12)};rport"
        data = serialize(Request(request.method, request.uri, request.headers.prepend("Via", via)))
        for _ in range(8):
            self.sock.sendto(data, ("127.0.0.1", self.pbx.port))
            try:
                while True:
                    message = parse_datagram(self.sock.recv(65535))
                    if isinstance(message, Response) and message.status >= 200:
                        self.statuses.append(message.status)
                        return message
            except TimeoutError:
                continue
        raise AssertionError(f"no final response to {request.method} from {self.pbx.address}")

    def run(self, registration: UpstreamRegistration, first: Request) -> None:
        """Send `first` and whatever the registration asks for next, until it stops."""
        request: Request | None = first
        while request is not None:
            response = self.transact(request)
            request = registration.on_response(response, time.perf_counter())


def account(pbx: Pbx, user: str, password: str, contact_port: int) -> UpstreamAccount:
    return UpstreamAccount(
        aor=f"sip:{user}@{pbx.domain}",
        registrar=f"sip:{pbx.domain}",
        contact=f"sip:rf-{random_hex(6)}@127.0.0.1:{contact_port};transport=udp",
        auth_username=user,
        password=password,
        expires=600,
    )


@pytest.fixture
def client(pbx: Pbx) -> Iterator[UdpRegistrar]:
    registrar = UdpRegistrar(pbx)
    yield registrar
    registrar.close()


def test_a_digest_registration_shows_as_a_binding_and_a_restart_forgets_it(
    pbx: Pbx, client: UdpRegistrar
) -> None:
    alice = account(pbx, "alice", USERS["alice"], client.port)
    registration = UpstreamRegistration(alice)
    client.run(registration, registration.start(time.perf_counter()))
    assert client.statuses == [401, 200]
    assert registration.state is State.REGISTERED
    assert pbx.bindings("alice") == [alice.contact]
    assert pbx.bindings("bob") == []
    # TCP listens on the same port number.
    socket.create_connection(("127.0.0.1", pbx.port), timeout=2).close()

    port = pbx.port
    pbx.restart()
    assert pbx.port == port
    assert sip_ping(pbx.port, 2.0) == 200
    assert pbx.bindings("alice") == []


def test_a_wrong_password_gets_no_binding(pbx: Pbx, client: UdpRegistrar) -> None:
    registration = UpstreamRegistration(account(pbx, "alice", "not-pw", client.port))
    client.run(registration, registration.start(time.perf_counter()))
    # One answer to the challenge, challenged again: refused, and not tried again at once
    # (one failed login per attempt keeps fail2ban on the PBX from banning ringfence).
    assert client.statuses == [401, 401]
    assert registration.state is State.BACKING_OFF
    assert registration.refused
    assert pbx.bindings("alice") == []


def test_a_password_with_db_text_specials_and_unregistering(pbx: Pbx, client: UdpRegistrar) -> None:
    bob = account(pbx, "bob", USERS["bob"], client.port)
    registration = UpstreamRegistration(bob)
    client.run(registration, registration.start(time.perf_counter()))
    assert registration.state is State.REGISTERED
    assert pbx.bindings("bob") == [bob.contact]
    # Expires: 0 with the nonce answered again (nc=2) removes the binding.
    client.run(registration, registration.unregister())
    assert client.statuses[-1] == 200
    assert pbx.bindings("bob") == []
