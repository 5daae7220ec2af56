"""Overlay mode end to end: Kamailio as the provider's PBX, ringfence beside it.

The tenant "acme" names Kamailio as its upstream PBX. A device's app reports its push
instance over HTTPS with its SIP account on the PBX; ringfence registers that account on
Kamailio with a Contact of its own. A SIPp caller registered on Kamailio calls the user:
Kamailio sends the INVITE to ringfence, which pushes the device (the APNs stand-in sees
it) and answers Kamailio 180 with X-Sipis-Push-Status. The woken "app" (SIPp) registers on
ringfence with the instance's +sip.instance and answers; the call is relayed, and BYE
travels back through Kamailio and ringfence.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ringfence.clock import SystemClock
from ringfence.sandbox.server import PushSandbox
from ringfence.transport.tls import CERT_FILE_NAME, ensure_self_signed
from tests.e2e.conftest import DOMAIN, PASSWORDS, Server, serving
from tests.e2e.pushing import CLOCK, Sandbox, in_background, voip_pushes, wait_for
from tests.peers.kamailio import Pbx, kamailio_binary, kamcmd_binary
from tests.peers.sipp import SippResult, free_udp_port, run_scenario, uas, write_injection
from tests.support.tools import missing_tool

SCENARIOS = Path(__file__).resolve().parents[1] / "peers" / "scenarios"
BENCH_SCENARIOS = Path(__file__).resolve().parents[2] / "benchmarks" / "sip" / "scenarios"
PBX_DOMAIN = "pbx.example"
#: The users' accounts on the PBX (not ringfence's: those are in PASSWORDS).
PBX_USERS = {
    "alice": "alice-at-the-pbx",
    "bob": "bob-at-the-pbx",
    "carol": "carol-at-the-pbx",
    "dave": "dave-at-the-pbx",
}
WAIT_S = 10


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    directory = tmp_path_factory.mktemp("overlay-sandbox")
    thread = Sandbox(PushSandbox(directory, SystemClock(), accept_unknown_tokens=False))
    with thread:
        yield thread


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    if kamailio_binary() is None or kamcmd_binary() is None:
        missing_tool("kamailio", "kamailio")
    with Pbx(tmp_path_factory.mktemp("pbx"), PBX_USERS, PBX_DOMAIN) as running:
        yield running


@pytest.fixture(scope="module")
def server(
    sandbox: Sandbox, pbx: Pbx, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("overlay-e2e")
    tls = ensure_self_signed(workdir / "https", ["localhost"], CLOCK.now())
    config = workdir / "ringfence.toml"
    config.write_text(
        f"[push]\ncall_wait_s = {WAIT_S}\n\n"
        f"[overlay]\ncall_wait_s = {WAIT_S}\nrestore_window_s = 0\n\n"
        f'[http]\ntls_cert_file = "{tls.cert_file}"\ntls_key_file = "{tls.key_file}"\n\n'
        + sandbox.box.toml()
    )
    with serving(
        workdir,
        ("--upstream", pbx.address, "--upstream-expires", "60"),
        config=str(config),
        logging__level="INFO",
    ) as running:
        yield running


def https(server: Server) -> httpx.Client:
    cert = server.workdir / "https" / CERT_FILE_NAME
    return httpx.Client(
        base_url=f"https://127.0.0.1:{server.http_port}",
        verify=ssl.create_default_context(cafile=str(cert)),
        timeout=10,
    )


def report(server: Server, sandbox: Sandbox, user: str, token: str, instance: str) -> None:
    """The app hands its push tokens and its PBX account over HTTPS (P2)."""
    sandbox.box.apns.add_device(token, sandbox.box.bundle_id)
    sandbox.box.apns.add_device(token[::-1], sandbox.box.bundle_id)
    with https(server) as client:
        response = client.put(
            f"/v1/push/instances/{user}-phone",
            json={
                "service": "apns",
                "app_id": sandbox.box.bundle_id,
                "call_token": token,
                "other_token": token[::-1],
                "sip_instance": f"urn:uuid:00000000-0000-4000-8000-{instance}",
                "sip_account": {
                    "username": user,
                    "domain": PBX_DOMAIN,
                    "password": PBX_USERS[user],
                },
            },
            auth=(f"{user}@{DOMAIN}", PASSWORDS[user]),
        )
    assert response.status_code == 201, response.text
    assert response.json()["sip_aor"] == f"sip:{user}@{PBX_DOMAIN}"


def ours(pbx: Pbx, user: str) -> list[str]:
    """The bindings ringfence holds for `user` on the PBX."""
    return [contact for contact in pbx.bindings(user) if "rfo-" in contact]


def pbx_caller(pbx: Pbx, workdir: Path, caller: str, callee: str) -> Path:
    """The caller registers on the PBX; returns its injection file for the call."""
    path = workdir / f"pbx-{caller}-{callee}.csv"
    write_injection(path, [(caller, PBX_USERS[caller])], PBX_DOMAIN, callee=callee)
    registered = run_scenario(
        BENCH_SCENARIOS / "register_auth.xml", pbx.port, inf=path, auth_uri=f"sip:{PBX_DOMAIN}"
    )
    assert registered == (1, 0)
    return path


def woken_app(server: Server, user: str, instance: str, port: int) -> SippResult:
    """The woken app registers on ringfence, naming its instance's +sip.instance."""
    path = server.workdir / f"woken-{user}.csv"
    auth = f"[authentication username={user} password={PASSWORDS[user]}]"
    path.write_text(f"SEQUENTIAL\n{user};{auth};{DOMAIN};-;{instance}\n")
    return run_scenario(SCENARIOS / "register_instance.xml", server.port, inf=path, local_port=port)


def test_a_call_through_the_pbx_wakes_the_device_and_is_relayed_once_it_connects(
    server: Server, sandbox: Sandbox, pbx: Pbx
) -> None:
    token = "0b0b" * 16
    instance = "00000000b0b0"
    report(server, sandbox, "bob", token, instance)
    # ringfence registers bob's PBX account with a Contact of its own.
    wait_for(lambda: len(ours(pbx, "bob")) == 1)
    contact = ours(pbx, "bob")[0]
    assert f":{server.port}" in contact
    caller = pbx_caller(pbx, server.workdir, "alice", "bob")
    call = in_background(
        lambda: run_scenario(
            SCENARIOS / "uac_call_sipis.xml",
            pbx.port,
            inf=caller,
            extra=("-d", "500"),
            recv_timeout_ms=(WAIT_S + 10) * 1000,
            timeout_s=WAIT_S + 30,
        )
    )
    wait_for(lambda: len(voip_pushes(sandbox, token)) == 1)
    push = voip_pushes(sandbox, token)[0]
    assert push.payload["rf"]["type"] == "call"
    woken = free_udp_port()
    assert woken_app(server, "bob", instance, woken) == (1, 0)
    with uas(server.port, woken):
        # The caller saw the SIPIS 180, then the answer; its BYE reached the device.
        assert call.result(timeout=WAIT_S + 40) == (1, 0)
    assert len(voip_pushes(sandbox, token)) == 1


def test_no_device_within_the_wait_gives_480_and_a_missed_call_trace(
    server: Server, sandbox: Sandbox, pbx: Pbx
) -> None:
    token = "0c0c" * 16
    report(server, sandbox, "carol", token, "00000000c0c0")
    wait_for(lambda: len(ours(pbx, "carol")) == 1)
    caller = pbx_caller(pbx, server.workdir, "alice", "carol")
    started = CLOCK.monotonic()
    result = run_scenario(
        "uac_call.xml",
        pbx.port,
        inf=caller,
        recv_timeout_ms=(WAIT_S + 10) * 1000,
        timeout_s=WAIT_S + 30,
    )
    assert result == (0, 1)  # 480: nobody came
    assert CLOCK.monotonic() - started >= WAIT_S - 1
    assert len(voip_pushes(sandbox, token)) == 1
    with https(server) as client:
        traces = client.get("/v1/push/traces", auth=(f"carol@{DOMAIN}", PASSWORDS["carol"]))
    assert traces.status_code == 200
    assert traces.json()[0]["outcome"] == "no device came back in time"


def test_delete_unregisters_from_the_pbx_and_kamailio_restarted_gets_it_back(
    server: Server, sandbox: Sandbox, pbx: Pbx
) -> None:
    token = "0a0a" * 16
    report(server, sandbox, "alice", token, "00000000a0a0")
    wait_for(lambda: len(ours(pbx, "alice")) == 1)
    # The PBX forgets everything (usrloc in memory): ringfence registers again on its own
    # (the refresh at 50-80% of the 60 s granted, at the latest).
    pbx.restart()
    assert ours(pbx, "alice") == []
    wait_for(lambda: len(ours(pbx, "alice")) == 1, timeout_s=60)
    with https(server) as client:
        gone = client.delete(
            "/v1/push/instances/alice-phone", auth=(f"alice@{DOMAIN}", PASSWORDS["alice"])
        )
    assert gone.status_code == 204
    wait_for(lambda: ours(pbx, "alice") == [])


def test_a_message_through_the_pbx_is_held_pushed_and_in_the_history_and_typing_is_dropped(
    server: Server, sandbox: Sandbox, pbx: Pbx
) -> None:
    token = "0d0d" * 16
    report(server, sandbox, "dave", token, "00000000d0d0")
    wait_for(lambda: len(ours(pbx, "dave")) == 1)
    sender = pbx_caller(pbx, server.workdir, "alice", "dave")
    # Typing: taken (200) and dropped, the device not woken.
    assert run_scenario(SCENARIOS / "uac_typing.xml", pbx.port, inf=sender) == (1, 0)
    # The message: held for the sleeping device (202), an alert push, kept in its history.
    assert run_scenario(SCENARIOS / "uac_message_held.xml", pbx.port, inf=sender) == (1, 0)
    alert = token[::-1]
    wait_for(lambda: any(p.token == alert for p in sandbox.pushes()))
    pushed = [p for p in sandbox.pushes() if p.token in (token, alert)]
    assert [p.payload["rf"]["type"] for p in pushed] == ["message"]
    with https(server) as client:
        response = client.get("/v1/messages", auth=(f"dave@{DOMAIN}", PASSWORDS["dave"]))
    assert response.status_code == 200, response.text
    messages = response.json()["messages"]
    assert [m["body"].strip() for m in messages] == ["Hello from alice, message 1."]
    assert (messages[0]["direction"], messages[0]["peer"]) == ("in", f"sip:alice@{PBX_DOMAIN}")
