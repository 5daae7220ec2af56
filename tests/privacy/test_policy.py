"""Policy versions and notices (P18): told before it takes effect, by email or in the app.

Email goes to a real SMTP server on loopback (aiosmtpd), through the same SMTP client the
node uses.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from ringfence.config import SMTPSettings
from ringfence.mail import SMTPMailer
from ringfence.privacy.policy import Channel, MailError, Policies
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from ringfence.provisioning.models import AccountChange
from ringfence.runtime import Runtime
from ringfence.storage.repos import SqlPrivacyStore
from tests.conftest import Demo
from tests.support.clock import FakeClock
from tests.support.net import free_port

pytestmark = pytest.mark.promise("P18")


@dataclass
class Inbox:
    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def mailer(port: int) -> SMTPMailer:
    return SMTPMailer(
        SMTPSettings(host="127.0.0.1", port=port, sender="privacy@acme.example", starttls=False)
    )


def with_mailer(runtime: Runtime, clock: FakeClock, mail: SMTPMailer) -> Policies:
    """The runtime's policy service, sending through `mail` (the node's SMTP client)."""
    return Policies(SqlPrivacyStore(runtime.engine), runtime.provisioning, mail, clock)


async def publish(runtime: Runtime, clock: FakeClock, days: float = 30, **extra: Any) -> str:
    version = await runtime.policies.publish(
        extra.pop("version", "2027-01"),
        "Call recordings are no longer kept.",
        clock.now() + timedelta(days=days),
        **extra,
    )
    return version.id


async def test_a_version_takes_effect_only_after_the_notice_period(
    runtime: Runtime, clock: FakeClock
) -> None:
    with pytest.raises(InvalidInputError, match="told 30 days before") as caught:
        await publish(runtime, clock, days=29.9)
    assert caught.value.field == "effective_at"
    assert await runtime.policies.versions() == []
    await publish(runtime, clock, days=30)
    with pytest.raises(ConflictError, match="exists"):
        await publish(runtime, clock, days=40)
    assert [v.version for v in await runtime.policies.versions()] == ["2027-01"]


async def test_users_are_told_by_email_or_in_the_app_once_and_confirm(
    runtime: Runtime,
    demo: Demo,
    clock: FakeClock,
    smtp: tuple[Inbox, int],
    client: httpx.AsyncClient,
) -> None:
    inbox, port = smtp
    policies = with_mailer(runtime, clock, mailer(port))
    await runtime.provisioning.create_account(
        "acme", "bob", "bob's password", email="bob@builder.example"
    )
    version_id = await publish(runtime, clock, url="https://acme.example/privacy/2027-01")
    clock.advance(60)
    result = await policies.notify(version_id)
    assert (result.emailed, result.in_app, result.email_failed, result.already) == (1, 1, 0, 0)
    [(recipients, message)] = inbox.messages
    assert recipients == ["bob@builder.example"]
    assert message["From"] == "privacy@acme.example"
    effective = (clock.now() - timedelta(seconds=60) + timedelta(days=30)).date().isoformat()
    assert message["Subject"] == f"Our privacy policy changes on {effective}"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    text = body.decode()
    assert "Call recordings are no longer kept." in text
    assert "https://acme.example/privacy/2027-01" in text
    # Told once: a second run tells no one again.
    again = await policies.notify(version_id)
    assert (again.emailed, again.in_app, again.already) == (0, 0, 2)
    assert len(inbox.messages) == 1
    # Alice has no email address: the app shows her the notice, and she confirms it.
    login = await client.post(
        "/v1/auth/login", json={"login": demo.login, "password": demo.password}
    )
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    [notice] = (await client.get("/v1/privacy/notices", headers=auth)).json()
    assert notice["version"]["version"] == "2027-01"
    assert (notice["channel"], notice["acknowledged_at"]) == ("in-app", None)
    clock.advance(120)
    ack = await client.post(f"/v1/privacy/notices/{version_id}/ack", headers=auth)
    assert ack.status_code == 204
    told = {n.subject: n for n in await runtime.policies.acknowledgements(version_id)}
    alice = await runtime.provisioning.account_id("acme", "alice")
    bob = await runtime.provisioning.account_id("acme", "bob")
    assert told[alice].acknowledged_at == clock.now()
    assert (told[bob].channel, told[bob].acknowledged_at) == (Channel.EMAIL, None)


async def test_a_mail_outage_falls_back_to_the_app(
    runtime: Runtime, demo: Demo, clock: FakeClock
) -> None:
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(email="alice@example.com")
    )
    policies = with_mailer(runtime, clock, mailer(free_port()))  # nothing listens there
    result = await policies.notify(await publish(runtime, clock))
    assert (result.emailed, result.in_app, result.email_failed) == (0, 1, 1)
    alice = await runtime.provisioning.account_id("acme", "alice")
    [(_, notice)] = await runtime.policies.notices(alice)
    assert notice.channel is Channel.IN_APP


async def test_the_smtp_client_names_no_address_in_its_errors() -> None:
    with pytest.raises(MailError) as caught:
        await mailer(free_port()).send("secret.person@example.com", "s", "b")
    assert "secret.person" not in str(caught.value)


async def test_only_a_notice_that_was_given_can_be_confirmed(
    runtime: Runtime, demo: Demo, clock: FakeClock
) -> None:
    version_id = await publish(runtime, clock)
    alice = await runtime.provisioning.account_id("acme", "alice")
    with pytest.raises(NotFoundError):
        await runtime.policies.acknowledge(alice, version_id)
    with pytest.raises(NotFoundError):
        await runtime.policies.notify("00000000-0000-4000-8000-000000000000")


async def test_the_admin_api_publishes_notifies_and_lists(
    client: httpx.AsyncClient, admin_headers: dict[str, str], clock: FakeClock
) -> None:
    soon = (clock.now() + timedelta(days=3)).isoformat()
    body = {"version": "2027-02", "summary": "New processor for backups", "effective_at": soon}
    early = await client.post("/admin/v1/policy/versions", json=body, headers=admin_headers)
    assert early.status_code == 422
    assert early.json()["error"]["field"] == "effective_at"
    later = {**body, "effective_at": (clock.now() + timedelta(days=45)).isoformat()}
    created = await client.post("/admin/v1/policy/versions", json=later, headers=admin_headers)
    assert created.status_code == 201, created.text
    version_id = created.json()["id"]
    notified = await client.post(
        f"/admin/v1/policy/versions/{version_id}/notify", headers=admin_headers
    )
    assert notified.json() == {"emailed": 0, "in_app": 1, "email_failed": 0, "already": 0}
    notices = await client.get(
        f"/admin/v1/policy/versions/{version_id}/notices", headers=admin_headers
    )
    assert [n["channel"] for n in notices.json()] == ["in-app"]
    naive = {**later, "version": "x", "effective_at": "2030-01-01T00:00:00"}
    refused = await client.post("/admin/v1/policy/versions", json=naive, headers=admin_headers)
    assert refused.status_code == 422


@pytest.mark.promise("P16")
@pytest.mark.parametrize("address", ["no-at-sign", "a@b", "a b@example.com", "x" * 250 + "@e.com"])
async def test_an_account_email_is_checked_and_sealed(
    runtime: Runtime, demo: Demo, address: str
) -> None:
    with pytest.raises(InvalidInputError, match=r"^email: ") as caught:
        await runtime.provisioning.update_account("acme", "alice", AccountChange(email=address))
    assert caught.value.field == "email"
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(email="alice@wonderland.example")
    )
    stored = await runtime.store.get_account_by_id(
        await runtime.provisioning.account_id("acme", "alice")
    )
    assert stored is not None
    assert stored.email_sealed is not None
    assert b"wonderland" not in stored.email_sealed
    account = await runtime.provisioning.account("acme", "alice")
    assert account.email == "alice@wonderland.example"
