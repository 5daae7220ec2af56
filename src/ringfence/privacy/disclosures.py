"""The disclosure register (P17): no sharing or selling; disclosure only under legal process.

Every request from an authority for a user's data is recorded when it arrives, with the
legal process it rests on (its legal basis and the authority's reference); nothing can be
recorded without them. It is then decided once: disclosed, naming exactly what was given, or
refused; in both cases with who approved the decision and when. Entries are never edited
after the decision and never deleted before their retention ends: the register is how the
provider shows, later, that it disclosed nothing else.

The subject is kept as the account's id, not its name: an entry outlives the account's
erasure (a legal duty, GDPR Art. 30 and 6(1)(c)), but then names nobody who still has data.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from ringfence.clock import Clock
from ringfence.inventory import Category, Declaration, LegalBasis, Stored
from ringfence.privacy.text import MAX_SHORT, MAX_TEXT, required_text
from ringfence.provisioning.errors import ConflictError, NotFoundError

#: How long an entry is kept: six years, a common limitation period for legal claims.
RETENTION_DAYS = 6 * 365


class DisclosureStatus(enum.StrEnum):
    RECEIVED = "received"
    DISCLOSED = "disclosed"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One legal-process request and what became of it.

    Attributes:
        id: The entry's id.
        received_at: When the request arrived.
        authority: Who asked (a court, a police force, a regulator).
        reference: The authority's reference: case or warrant number.
        legal_basis: The law or order the request rests on.
        requested: What was asked for.
        subject: The account's id, if the request is about one account.
        status: Received, then disclosed or refused.
        given: What was handed over (disclosed), or why not (refused).
        decided_by: Who approved the decision.
        decided_at: When.
    """

    id: str
    received_at: datetime
    authority: str
    reference: str
    legal_basis: str
    requested: str
    subject: str | None
    status: DisclosureStatus = DisclosureStatus.RECEIVED
    given: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None


class DisclosureStore(Protocol):
    async def add_disclosure(self, disclosure: Disclosure) -> None: ...

    async def get_disclosure(self, disclosure_id: str) -> Disclosure | None: ...

    async def decide_disclosure(self, disclosure: Disclosure) -> bool:
        """Store the decision if the entry is still RECEIVED; False if it was decided."""
        ...

    async def list_disclosures(self) -> list[Disclosure]:
        """Every entry, oldest first."""
        ...


class Accounts(Protocol):
    async def account_id(self, tenant_code: str, username: str) -> str:
        """The id of an account; raises NotFoundError."""
        ...


class DisclosureRegister:
    """Records legal-process requests and their decisions (see the module docstring)."""

    def __init__(self, store: DisclosureStore, accounts: Accounts, clock: Clock) -> None:
        self._store = store
        self._accounts = accounts
        self._clock = clock

    async def record(
        self,
        *,
        authority: str,
        reference: str,
        legal_basis: str,
        requested: str,
        subject: tuple[str, str] | None = None,
    ) -> Disclosure:
        """Record a request as received.

        Args:
            authority: Who asks.
            reference: The authority's case or warrant number.
            legal_basis: The law or order the request rests on.
            requested: What is asked for.
            subject: (tenant code, username) of the account it is about, if one.

        Raises:
            InvalidInputError: a field is empty or too long (named in the error).
            NotFoundError: no such account.
        """
        disclosure = Disclosure(
            id=str(uuid.uuid4()),
            received_at=self._clock.now(),
            authority=required_text("authority", authority, MAX_SHORT),
            reference=required_text("reference", reference, MAX_SHORT),
            legal_basis=required_text("legal_basis", legal_basis, MAX_TEXT),
            requested=required_text("requested", requested, MAX_TEXT),
            subject=await self._accounts.account_id(*subject) if subject else None,
        )
        await self._store.add_disclosure(disclosure)
        return disclosure

    async def decide(
        self, disclosure_id: str, *, disclosed: bool, given: str, approved_by: str
    ) -> Disclosure:
        """Record the decision on a received request, once.

        Args:
            disclosure_id: The entry.
            disclosed: True if data was handed over, False if the request was refused.
            given: Exactly what was handed over, or why the request was refused.
            approved_by: Who approved the decision.

        Raises:
            InvalidInputError: `given` or `approved_by` is empty or too long.
            NotFoundError: no such entry.
            ConflictError: the entry was decided already; decisions are final.
        """
        current = await self.get(disclosure_id)
        decided = replace(
            current,
            status=DisclosureStatus.DISCLOSED if disclosed else DisclosureStatus.REFUSED,
            given=required_text("given", given, MAX_TEXT),
            decided_by=required_text("approved_by", approved_by, MAX_SHORT),
            decided_at=self._clock.now(),
        )
        if not await self._store.decide_disclosure(decided):
            raise ConflictError("status: this request was decided already", field="status")
        return decided

    async def get(self, disclosure_id: str) -> Disclosure:
        found = await self._store.get_disclosure(disclosure_id)
        if found is None:
            raise NotFoundError("no such disclosure request", field="disclosure")
        return found

    async def entries(self) -> list[Disclosure]:
        return await self._store.list_disclosures()


DISCLOSURE_REGISTER = Category(
    name="disclosure register",
    holds="requests from authorities about an account: who asked, on what legal basis, "
    "what was asked and given, who approved it",
    purpose="show that data was disclosed only under legal process (P17)",
    basis=LegalBasis.LEGAL_OBLIGATION,
    retention="six years from the request, the account's erasure notwithstanding",
    kept_after_closure_days=RETENTION_DAYS,
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        DISCLOSURE_REGISTER,
        "disclosures",
        (
            "id",
            "received_at",
            "authority",
            "reference",
            "legal_basis",
            "requested",
            "subject",
            "status",
            "given",
            "decided_by",
            "decided_at",
        ),
        sealed=False,
    ),
)
