"""Policy versions and notices (P18): users are told of a change before it takes effect.

The operator publishes a new version of the privacy policy with the date it takes effect,
which must leave at least `min_notice_days` (30 by default) for notice. Notifying then tells
every account once: by email where it has an address and mail is configured, else (or when
the email fails) by an in-app notice the app fetches. Each notice is recorded per account and
channel, and the app acknowledges it; the acknowledgements are kept with the version, so the
operator can show who was told, how and when, and who confirmed.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.inventory import Category, Declaration, LegalBasis, NotPersonal, Stored
from ringfence.privacy.text import MAX_SHORT, MAX_TEXT, required_text
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

#: Accounts read per page when notifying.
PAGE = 500


class Channel(enum.StrEnum):
    EMAIL = "email"
    IN_APP = "in-app"


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    id: str
    version: str
    summary: str
    published_at: datetime
    effective_at: datetime
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    version_id: str
    subject: str
    channel: Channel
    sent_at: datetime
    acknowledged_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Notified:
    """What one notify run did."""

    emailed: int
    in_app: int
    email_failed: int
    already: int


class MailError(Exception):
    """The message could not be handed to the mail server."""


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None:
        """Hand one plain-text message to the mail server.

        Raises:
            MailError: it was not accepted.
        """
        ...


class PolicyStore(Protocol):
    async def add_version(self, version: PolicyVersion) -> bool:
        """False if the label is taken."""
        ...

    async def get_version(self, version_id: str) -> PolicyVersion | None: ...

    async def versions(self) -> list[PolicyVersion]: ...

    async def notified(self, version_id: str, subjects: list[str]) -> set[str]:
        """Which of `subjects` have a notice of this version already."""
        ...

    async def add_notice(self, notice: Notice) -> None: ...

    async def notices_of(self, subject: str) -> list[Notice]: ...

    async def notices_for(self, version_id: str) -> list[Notice]: ...

    async def acknowledge(self, version_id: str, subject: str, at: datetime) -> bool:
        """Record the acknowledgement; False if there is no such notice."""
        ...


class Contacts(Protocol):
    async def contact_page(self, after_id: str | None, limit: int) -> list[tuple[str, str | None]]:
        """(account id, email or None) of the accounts after `after_id`, in id order."""
        ...


class Policies:
    def __init__(
        self,
        store: PolicyStore,
        contacts: Contacts,
        mailer: Mailer | None,
        clock: Clock,
        *,
        min_notice_days: int = 30,
    ) -> None:
        self._store = store
        self._contacts = contacts
        self._mailer = mailer
        self._clock = clock
        self._min_notice = timedelta(days=min_notice_days)

    async def publish(
        self, version: str, summary: str, effective_at: datetime, url: str | None = None
    ) -> PolicyVersion:
        """Publish a new version.

        Raises:
            InvalidInputError: it takes effect too soon for notice (the error says when it
                may), or a field is empty.
            ConflictError: the label is taken.
        """
        now = self._clock.now()
        if effective_at.tzinfo is None:
            raise InvalidInputError("effective_at: needs a time zone", field="effective_at")
        earliest = now + self._min_notice
        if effective_at < earliest:
            raise InvalidInputError(
                f"effective_at: users must be told {self._min_notice.days} days before; "
                f"the earliest is {earliest.isoformat()}",
                field="effective_at",
            )
        published = PolicyVersion(
            id=str(uuid.uuid4()),
            version=required_text("version", version, MAX_SHORT),
            summary=required_text("summary", summary, MAX_TEXT),
            published_at=now,
            effective_at=effective_at,
            url=required_text("url", url, MAX_SHORT) if url is not None else None,
        )
        if not await self._store.add_version(published):
            raise ConflictError(f"version: {published.version!r} exists", field="version")
        return published

    async def versions(self) -> list[PolicyVersion]:
        return await self._store.versions()

    async def get(self, version_id: str) -> PolicyVersion:
        found = await self._store.get_version(version_id)
        if found is None:
            raise NotFoundError("no such policy version", field="version")
        return found

    async def notify(self, version_id: str) -> Notified:
        """Tell every account not yet told of this version; safe to run again."""
        version = await self.get(version_id)
        emailed = in_app = failed = already = 0
        after: str | None = None
        while page := await self._contacts.contact_page(after, PAGE):
            after = page[-1][0]
            told = await self._store.notified(version.id, [subject for subject, _ in page])
            for subject, email in page:
                if subject in told:
                    already += 1
                    continue
                channel = Channel.IN_APP
                if email is not None and self._mailer is not None:
                    try:
                        await self._mailer.send(email, *_message(version))
                        channel = Channel.EMAIL
                    except MailError as exc:
                        # The app still shows it: nobody goes untold for a mail outage.
                        logger.warning("policy notice by email failed: %s", exc)
                        failed += 1
                if channel is Channel.EMAIL:
                    emailed += 1
                else:
                    in_app += 1
                await self._store.add_notice(
                    Notice(version.id, subject, channel, self._clock.now())
                )
        return Notified(emailed, in_app, failed, already)

    async def notices(self, subject: str) -> list[tuple[PolicyVersion, Notice]]:
        """The account's notices, newest version first, with their versions."""
        found = [
            (await self.get(notice.version_id), notice)
            for notice in await self._store.notices_of(subject)
        ]
        return sorted(found, key=lambda pair: pair[0].published_at, reverse=True)

    async def acknowledge(self, subject: str, version_id: str) -> None:
        """Record that the account's user read the notice.

        Raises:
            NotFoundError: the account was not told of this version.
        """
        if not await self._store.acknowledge(version_id, subject, self._clock.now()):
            raise NotFoundError("no notice of this version for this account", field="version")

    async def acknowledgements(self, version_id: str) -> list[Notice]:
        await self.get(version_id)
        return await self._store.notices_for(version_id)


def _message(version: PolicyVersion) -> tuple[str, str]:
    subject = f"Our privacy policy changes on {version.effective_at:%Y-%m-%d}"
    lines = [
        f"A new version of our privacy policy ({version.version}) takes effect on "
        f"{version.effective_at:%Y-%m-%d %H:%M} UTC.",
        "",
        "What changes:",
        version.summary,
    ]
    if version.url:
        lines += ["", f"The full text: {version.url}"]
    lines += ["", "You can confirm that you read this notice in the app."]
    return subject, "\n".join(lines)


POLICY_NOTICES = Category(
    name="policy notices",
    holds="which version of the privacy policy each account was told of, how, when, and "
    "when its user confirmed",
    purpose="tell users of a change before it takes effect, and show that they were (P18)",
    basis=LegalBasis.LEGAL_OBLIGATION,
    retention="while the account exists; deleted with it",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        POLICY_NOTICES,
        "policy_notices",
        ("version_id", "subject", "channel", "sent_at", "acknowledged_at"),
        sealed=False,
    ),
    NotPersonal("policy_versions", "the published versions of the policy: no one's data"),
)
