"""Calls to sleeping phones (RFC 8599) through `ringfence serve`, SIPp as the phones.

The push stand-ins (APNs and FCM over HTTP/2 and TLS) run in a thread of this process, so
the test sees every push they accept; `ringfence serve` is configured to send to them.
A SIPp "device" registers with push parameters and exits (the app is suspended); a caller
INVITEs it; the test waits for the VoIP push, then plays the woken app: it registers again
from a new port (same +sip.instance) and answers there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from ringfence.clock import SystemClock
from ringfence.sandbox.record import ReceivedPush
from ringfence.sandbox.server import PushSandbox
from tests.e2e.conftest import DOMAIN, PASSWORDS, Server, serving
from tests.e2e.pushing import CLOCK, Sandbox, in_background, voip_pushes, wait_for
from tests.peers.sipp import SippResult, free_udp_port, run_scenario, uas, write_injection
from tests.support.tools import missing_tool

SCENARIOS = Path(__file__).resolve().parents[1] / "peers" / "scenarios"
TEAM = "SANDBOXTM1"
WAIT_S = 8


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    directory = tmp_path_factory.mktemp("push-sandbox")
    thread = Sandbox(PushSandbox(directory, SystemClock(), accept_unknown_tokens=False))
    with thread:
        yield thread


@pytest.fixture(scope="module")
def server(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("push-e2e")
    config = workdir / "ringfence.toml"
    config.write_text(f"[push]\ncall_wait_s = {WAIT_S}\n\n" + sandbox.box.toml())
    # Registrations as short as 1 s: the binding-refresh test waits for one to near expiry.
    with serving(
        workdir, config=str(config), logging__level="INFO", sip__min_expires_s="1"
    ) as running:
        yield running


def device_injection(server: Server, user: str, token: str, instance: str) -> Path:
    """A register_push.xml injection file: the account, then its push parameters."""
    path = server.workdir / f"device-{user}-{instance}.csv"
    password = PASSWORDS[user]
    auth = f"[authentication username={user} password={password}]"
    param = f"{TEAM}.org.ringfence.sandbox.voip"
    path.write_text(
        f"SEQUENTIAL\n{user};{auth};{DOMAIN};{user};apns;{token};{param};{instance};60;rf-test\n"
    )
    return path


def caller_injection(server: Server, user: str, callee: str) -> Path:
    path = server.workdir / f"caller-{user}-{callee}.csv"
    write_injection(path, [(user, PASSWORDS[user])], DOMAIN, callee=callee)
    return path


def register_device(server: Server, user: str, token: str, instance: str, port: int) -> SippResult:
    return run_scenario(
        SCENARIOS / "register_push.xml",
        server.port,
        inf=device_injection(server, user, token, instance),
        local_port=port,
    )


def alerts(sandbox: Sandbox, token: str) -> list[ReceivedPush]:
    return [
        p for p in sandbox.pushes() if p.token == token and p.headers["apns-push-type"] == "alert"
    ]


def traces_of(server: Server, user: str) -> list[dict[str, Any]]:
    """The account's push traces, as its app reads them."""
    response = httpx.get(
        f"{server.http_url}/v1/push/traces", auth=(f"{user}@{DOMAIN}", PASSWORDS[user]), timeout=10
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def call_in_background(
    server: Server,
    callee: str,
    scenario: str | Path = "uac_call.xml",
    extra: tuple[str, ...] = (),
) -> Future[SippResult]:
    """Alice calls `callee`, waiting long enough for a parked call to end either way."""
    return in_background(
        lambda: run_scenario(
            scenario,
            server.port,
            inf=caller_injection(server, "alice", callee),
            recv_timeout_ms=WAIT_S * 1000 + 5000,
            timeout_s=40,
            extra=extra,
        )
    )


def test_a_call_wakes_a_sleeping_phone_by_push_and_reaches_it_once_it_registers(
    server: Server, sandbox: Sandbox
) -> None:
    token = "b0b0" * 16
    sandbox.box.apns.add_device(token, sandbox.box.bundle_id)
    assert register_device(server, "bob", token, "00000000b0b0", free_udp_port()) == (1, 0)
    # The app is suspended now: nothing listens at the port it registered from.
    call = call_in_background(server, "bob")
    wait_for(lambda: len(voip_pushes(sandbox, token)) == 1)
    push = voip_pushes(sandbox, token)[0]
    assert push.headers["apns-topic"] == "org.ringfence.sandbox.voip"
    assert push.headers["apns-expiration"] == "0"
    assert push.payload["rf"]["type"] == "call"
    # The push woke the app: it registers again from a new socket, and answers there.
    woken = free_udp_port()
    assert register_device(server, "bob", token, "00000000b0b0", woken) == (1, 0)
    with uas(server.port, woken):
        assert call.result(timeout=60) == (1, 0)
    assert len(voip_pushes(sandbox, token)) == 1  # one VoIP push for the call, no more
    assert alerts(sandbox, token) == []
    # "Why did I (not) miss this call": the account reads the call's push trace.
    [trace] = traces_of(server, "bob")
    assert trace["outcome"] == "answered"
    steps = [step["step"] for step in trace["steps"]]
    for expected in ("parked", "call push sent", "call push apns", "device back", "forwarded"):
        assert expected in steps
    assert steps[-1] == "ended"
    assert token not in str(trace)  # a fingerprint, not the token
    # The server logs at INFO here, HTTP clients included: no device token in any line.
    log = (server.workdir / "serve.log").read_text()
    assert "Uvicorn running" in log  # the log is the server's, at INFO
    assert token not in log


def test_a_device_known_by_its_https_push_instance_is_woken_and_reached(
    server: Server, sandbox: Sandbox
) -> None:
    """No RFC 8599 in SIP: the app reported its tokens over HTTPS, then slept unregistered."""
    token = "4e1d" * 16
    sandbox.box.apns.add_device(token, sandbox.box.bundle_id)
    instance = "urn:uuid:00000000-0000-4000-8000-000000004e1d"
    reported = httpx.put(
        f"{server.http_url}/v1/push/instances/heidi-phone",
        json={
            "service": "apns",
            "app_id": sandbox.box.bundle_id,
            "call_token": token,
            "other_token": "4e1e" * 16,
            "sip_instance": instance,
        },
        auth=(f"heidi@{DOMAIN}", PASSWORDS["heidi"]),
        timeout=10,
    )
    assert reported.status_code == 201, reported.text
    call = call_in_background(server, "heidi")
    wait_for(lambda: len(voip_pushes(sandbox, token)) == 1)
    push = voip_pushes(sandbox, token)[0]
    assert push.headers["apns-topic"] == f"{sandbox.box.bundle_id}.voip"
    assert push.payload["rf"]["type"] == "call"
    # The woken app registers, naming the +sip.instance of its push instance, and answers.
    woken = free_udp_port()
    path = server.workdir / "heidi.csv"
    auth = f"[authentication username=heidi password={PASSWORDS['heidi']}]"
    path.write_text(f"SEQUENTIAL\nheidi;{auth};{DOMAIN};-;000000004e1d\n")
    registered = run_scenario(
        SCENARIOS / "register_instance.xml", server.port, inf=path, local_port=woken
    )
    assert registered == (1, 0)
    with uas(server.port, woken):
        assert call.result(timeout=60) == (1, 0)
    assert len(voip_pushes(sandbox, token)) == 1
    # The app signs off: DELETE erases the instance, and the next call finds no device.
    gone = httpx.delete(
        f"{server.http_url}/v1/push/instances/heidi-phone",
        auth=(f"heidi@{DOMAIN}", PASSWORDS["heidi"]),
        timeout=10,
    )
    assert gone.status_code == 204


def fcm_device(
    server: Server,
    sandbox: Sandbox,
    user: str,
    token: str,
    port: int,
    *,
    expires: int = 60,
    param: str = "rf-test",
) -> SippResult:
    """register_push.xml for an Android app: FCM, the sandbox's project."""
    sandbox.box.fcm.add_device(token, sandbox.box.project_id)
    path = server.workdir / f"fcm-{user}.csv"
    auth = f"[authentication username={user} password={PASSWORDS[user]}]"
    project = sandbox.box.project_id
    fields = [user, auth, DOMAIN, user, "fcm", token, project, "0000000fc111", str(expires), param]
    path.write_text("SEQUENTIAL\n" + ";".join(fields) + "\n")
    return run_scenario(SCENARIOS / "register_push.xml", server.port, inf=path, local_port=port)


def fcm_pushes(sandbox: Sandbox, token: str) -> list[ReceivedPush]:
    return [p for p in list(sandbox.box.fcm.inbox.pushes) if p.token == token]


def test_a_message_for_a_sleeping_phone_is_held_pushed_and_delivered_when_it_registers(
    server: Server, sandbox: Sandbox
) -> None:
    token = "fcm-token-of-ivan-s-phone-0123456789"
    assert fcm_device(server, sandbox, "ivan", token, free_udp_port()) == (1, 0)
    # Asleep: the MESSAGE is accepted for later (202), and the phone told by a push.
    sent = run_scenario(
        SCENARIOS / "uac_message_held.xml",
        server.port,
        inf=caller_injection(server, "alice", "ivan"),
    )
    assert sent == (1, 0)
    wait_for(lambda: len(fcm_pushes(sandbox, token)) == 1)
    push = fcm_pushes(sandbox, token)[0]
    assert push.payload["data"]["type"] == "message"
    assert push.payload["android"]["priority"] == "high"
    assert "Hello" not in str(push.payload)  # the text never goes through Google
    # The phone wakes and registers: the held MESSAGE follows, with its Date.
    woken = free_udp_port()
    assert fcm_device(server, sandbox, "ivan", token, woken) == (1, 0)
    took = run_scenario(SCENARIOS / "uas_message.xml", server.port, local_port=woken, timeout_s=20)
    assert took == (1, 0)
    # Delivered once: the next registration brings nothing more.
    again = free_udp_port()
    assert fcm_device(server, sandbox, "ivan", token, again) == (1, 0)
    with uas(server.port, again, scenario=SCENARIOS / "uas_message.xml") as idle:
        time.sleep(3)
        assert idle.poll() is None  # still waiting: no MESSAGE came
    assert len(fcm_pushes(sandbox, token)) == 1


def test_a_call_cancelled_while_parked_gives_an_alert_and_never_a_second_voip_push(
    server: Server, sandbox: Sandbox
) -> None:
    voip, remote = "ca01" * 16, "ca02" * 16
    sandbox.box.apns.add_device(voip, sandbox.box.bundle_id)
    sandbox.box.apns.add_device(remote, sandbox.box.bundle_id)
    # Linphone's form: one token per APNs service.
    token = f"{remote}:remote&{voip}:voip"
    path = device_injection(server, "carol", token, "00000000ca01")
    path.write_text(path.read_text().replace(".voip;", ".remote&voip;"))
    result = run_scenario(
        SCENARIOS / "register_push.xml", server.port, inf=path, local_port=free_udp_port()
    )
    assert result == (1, 0)
    cancelled = run_scenario(
        "uac_cancel.xml", server.port, inf=caller_injection(server, "alice", "carol")
    )
    assert cancelled == (1, 0)
    wait_for(lambda: len(alerts(sandbox, remote)) == 1)
    alert = alerts(sandbox, remote)[0]
    assert alert.payload["rf"]["type"] == "call_ended"
    assert alert.payload["rf"]["reason"] == "cancelled"
    assert alert.payload["aps"]["alert"] == {"loc-key": "RF_CALL_ENDED"}
    time.sleep(0.5)
    assert len(voip_pushes(sandbox, voip)) == 1
    assert alerts(sandbox, voip) == []  # the VoIP token only ever gets the call


def test_several_devices_and_a_retransmitted_invite_get_one_push_each(
    server: Server, sandbox: Sandbox
) -> None:
    # Laura's phone (one VoIP token) and her tablet (Linphone's form: an alert token too).
    phone, tablet, tablet_alerts = "1a01" * 16, "1a02" * 16, "1a03" * 16
    for token in (phone, tablet, tablet_alerts):
        sandbox.box.apns.add_device(token, sandbox.box.bundle_id)
    assert register_device(server, "laura", phone, "000000001a01", free_udp_port()) == (1, 0)
    path = device_injection(
        server, "laura", f"{tablet_alerts}:remote&{tablet}:voip", "000000001a02"
    )
    path.write_text(path.read_text().replace(".voip;", ".remote&voip;"))
    assert run_scenario(
        SCENARIOS / "register_push.xml", server.port, inf=path, local_port=free_udp_port()
    ) == (1, 0)
    # Both sleep. The caller sends its INVITE twice (the copy after the 180).
    call = call_in_background(server, "laura", SCENARIOS / "uac_call_retransmitted.xml")
    wait_for(
        lambda: len(voip_pushes(sandbox, phone)) == 1 and len(voip_pushes(sandbox, tablet)) == 1
    )
    time.sleep(1)  # the copy has come and gone (the scenario sends it on the 180)
    assert not call.done()
    # The phone wakes and answers; the tablet never comes back.
    woken = free_udp_port()
    assert register_device(server, "laura", phone, "000000001a01", woken) == (1, 0)
    with uas(server.port, woken):
        assert call.result(timeout=60) == (1, 0)
    # One VoIP push per device for the call, whatever the copies and the forks; the tablet
    # is told by an alert that the call was taken elsewhere, the phone (no alert token) not.
    wait_for(lambda: len(alerts(sandbox, tablet_alerts)) == 1)
    assert alerts(sandbox, tablet_alerts)[0].payload["rf"]["reason"] == "answered_elsewhere"
    time.sleep(0.5)
    assert len(voip_pushes(sandbox, phone)) == 1
    assert len(voip_pushes(sandbox, tablet)) == 1
    assert alerts(sandbox, phone) == []
    assert alerts(sandbox, tablet) == []
    [trace] = traces_of(server, "laura")
    assert trace["outcome"] == "answered"
    steps = [step["step"] for step in trace["steps"]]
    assert steps.count("call push sent") == 2
    assert steps.count("forwarded") == 1


def test_no_device_within_the_wait_gives_480(server: Server, sandbox: Sandbox) -> None:
    token = "da7e" * 16
    sandbox.box.apns.add_device(token, sandbox.box.bundle_id)
    assert register_device(server, "dave", token, "00000000da7e", free_udp_port()) == (1, 0)
    started = CLOCK.monotonic()
    result = run_scenario(
        SCENARIOS / "uac_unavailable.xml",
        server.port,
        inf=caller_injection(server, "alice", "dave"),
        recv_timeout_ms=WAIT_S * 1000 + 5000,
        timeout_s=40,
    )
    assert result == (1, 0)
    assert CLOCK.monotonic() - started >= WAIT_S - 1
    assert len(voip_pushes(sandbox, token)) == 1
    wait_for(lambda: len(traces_of(server, "dave")) == 1)
    [trace] = traces_of(server, "dave")
    assert trace["outcome"] == "no device came back in time"
    assert "wait over" in [step["step"] for step in trace["steps"]]


def test_a_dead_token_prunes_the_binding(server: Server, sandbox: Sandbox) -> None:
    token = "e1e1" * 16
    sandbox.box.apns.add_device(token, sandbox.box.bundle_id)
    assert register_device(server, "erin", token, "00000000e1e1", free_udp_port()) == (1, 0)
    sandbox.box.apns.unregister(token, at_ms=int((CLOCK.now().timestamp() + 1) * 1000))
    first = call_in_background(server, "erin", SCENARIOS / "uac_unavailable.xml")
    assert first.result(timeout=60) == (1, 0)
    # Apple said the token is gone: the binding went with it, so the next call is 480 at once.
    pushed = len(voip_pushes(sandbox, token))
    started = CLOCK.monotonic()
    again = run_scenario("uac_call.xml", server.port, inf=caller_injection(server, "alice", "erin"))
    assert again == (0, 1)
    assert CLOCK.monotonic() - started < WAIT_S
    assert len(voip_pushes(sandbox, token)) == pushed  # no push for a pruned binding


class Linphone:
    """linphonec 5 as an RFC 8599 client (PEERS.md), driven on stdin; auto-answers calls."""

    def __init__(self, server: Server, user: str, push: str, home: Path) -> None:
        self.home = home
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.rc = home / "linphonerc"
        sip_port = free_udp_port()
        self.rc.write_text(
            "\n".join(
                [
                    "[sip]",
                    f"sip_port={sip_port}",
                    "sip_tcp_port=-1",
                    "sip_tls_port=-1",
                    "default_proxy=0",
                    "[rtp]",
                    f"audio_rtp_port={free_udp_port()}",
                    "[sound]",
                    "echocancellation=0",
                    "[misc]",
                    "uuid=5b0a7c1e-3f3d-4b43-9a0c-f00dfeedf00d",
                    "[auth_info_0]",
                    f"username={user}",
                    f"passwd={PASSWORDS[user]}",
                    f"realm={DOMAIN}",
                    f"domain={DOMAIN}",
                    "[proxy_0]",
                    f"reg_proxy=<sip:127.0.0.1:{server.port};transport=udp>",
                    f"reg_identity=<sip:{user}@{DOMAIN}>",
                    "reg_expires=600",
                    "reg_sendregister=1",
                    "publish=0",
                    f"contact_uri_parameters={push}",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        path = self.home / "debug.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        with (self.home / "linphonec.log").open("ab") as log:
            self._spawn(log)

    def _spawn(self, log: BinaryIO) -> None:
        self.process = subprocess.Popen(
            ["linphonec", "-c", str(self.rc), "-a", "-d", "6", "-l", str(self.home / "debug.log")],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(self.home)},
        )

    def stop(self) -> None:
        """Gone at once, as iOS suspends an app: no un-REGISTER."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process = None


@pytest.mark.parametrize("service", ["apns", "fcm"])
def test_linphone_is_woken_by_a_push_and_answers_the_parked_call(
    server: Server, sandbox: Sandbox, tmp_path: Path, service: str
) -> None:
    if shutil.which("linphonec") is None:
        missing_tool("linphonec", "linphone-cli")
    box = sandbox.box
    if service == "apns":
        token = "f4a7" * 16
        box.apns.add_device(token, box.bundle_id)
        push = f"pn-provider=apns;pn-prid={token};pn-param={TEAM}.{box.bundle_id}.voip"
        user = "frank"
    else:
        token = "fcm-registration-token-of-grace-s-android-phone"
        box.fcm.add_device(token, box.project_id)
        push = f"pn-provider=fcm;pn-prid={token};pn-param={box.project_id}"
        user = "grace"

    def pushed() -> list[ReceivedPush]:
        inbox = box.apns.inbox if service == "apns" else box.fcm.inbox
        return [p for p in list(inbox.pushes) if p.token == token]

    phone = Linphone(server, user, push, tmp_path)
    phone.start()
    try:
        # Registered with its push parameters (the registrar's 200 named +sip.pns).
        wait_for(lambda: f'+sip.pns="{service}"' in phone.log(), 20)
        phone.stop()  # suspended
        call = call_in_background(server, user, extra=("-d", "1000"))
        wait_for(lambda: len(pushed()) == 1)
        push_received = pushed()[0]
        if service == "apns":
            assert push_received.headers["apns-push-type"] == "voip"
        else:
            assert push_received.payload["android"] == {"priority": "high", "ttl": "0s"}
            assert push_received.payload["data"]["type"] == "call"
        phone.start()  # what the push does: the app runs again and registers
        assert call.result(timeout=60) == (1, 0)  # answered by linphonec, ended with BYE
        assert "Call 1 with sip:alice@" in (tmp_path / "linphonec.log").read_text()
        assert len(pushed()) == 1
    finally:
        phone.stop()


def test_a_device_that_asks_is_pushed_to_refresh_its_binding_before_it_expires(
    server: Server, sandbox: Sandbox
) -> None:
    token = "fcm-token-of-ken-s-tablet-0123456789"
    started = CLOCK.monotonic()
    registered = fcm_device(
        server, sandbox, "ken", token, free_udp_port(), expires=6, param="+sip.pnsreg"
    )
    assert registered == (1, 0)
    # RFC 8599 §5.3: a background push before the 6 s registration lapses (halfway here).
    wait_for(lambda: len(fcm_pushes(sandbox, token)) == 1, 10)
    push = fcm_pushes(sandbox, token)[0]
    assert push.payload["data"]["type"] == "wake"
    assert push.payload["android"]["priority"] == "normal"
    assert push.received_at - started < 6
    # The app refreshes, as asked: the next push comes before the new expiry, not twice.
    assert fcm_device(server, sandbox, "ken", token, free_udp_port(), expires=60) == (1, 0)
    time.sleep(4)
    assert len(fcm_pushes(sandbox, token)) == 1


def test_linphone_asleep_gets_a_held_message_when_a_push_wakes_it(
    server: Server, sandbox: Sandbox, tmp_path: Path
) -> None:
    if shutil.which("linphonec") is None:
        missing_tool("linphonec", "linphone-cli")
    box = sandbox.box
    token = "fcm-registration-token-of-judy-s-android-phone"
    box.fcm.add_device(token, box.project_id)
    push = f"pn-provider=fcm;pn-prid={token};pn-param={box.project_id}"
    phone = Linphone(server, "judy", push, tmp_path)
    phone.start()
    try:
        wait_for(lambda: '+sip.pns="fcm"' in phone.log(), 20)
        phone.stop()  # suspended
        sent = run_scenario(
            SCENARIOS / "uac_message_held.xml",
            server.port,
            inf=caller_injection(server, "alice", "judy"),
        )
        assert sent == (1, 0)  # 202: held for the phone
        wait_for(lambda: len(fcm_pushes(sandbox, token)) == 1)
        assert fcm_pushes(sandbox, token)[0].payload["data"]["type"] == "message"
        phone.start()  # the push woke the app: it registers, and the message follows
        output = tmp_path / "linphonec.log"
        wait_for(lambda: "Hello from alice, message 1." in output.read_text(errors="replace"), 30)
    finally:
        phone.stop()
