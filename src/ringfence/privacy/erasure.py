"""Erasure of an account, legal holds that stop it, and the record of what was destroyed (P15).

An account's personal data is destroyed in one place, `Erasure`: deleting an account or a
tenant (admin API), and later a data-subject request or the retention sweeper, all come here.

- A legal hold (a court order, a pending request: P15 "unless a request or court order is
  pending") names the account, the reason and the reference, and who placed it. While one
  is in force nothing of the account is destroyed: erasure is refused with a clear error
  naming the hold, and nothing changes. Releasing a hold is recorded, not deleted.
- Each destruction is recorded without the data: when, whose (the account's id, which no
  longer leads anywhere), which categories of the data inventory, and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from ringfence.clock import Clock
from ringfence.inventory import Category, Declaration, LegalBasis, Stored
from ringfence.privacy.text import MAX_SHORT, MAX_TEXT, required_text
from ringfence.provisioning.errors import ConflictError, NotFoundError


class LegalHoldError(ConflictError):
    """The account (or one of the tenant's) is under a legal hold: nothing was destroyed."""


@dataclass(frozen=True, slots=True)
class LegalHold:
    id: str
    tenant_id: str
    subject: str
    reason: str
    reference: str
    placed_by: str
    placed_at: datetime
    released_by: str | None = None
    released_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None


@dataclass(frozen=True, slots=True)
class Destruction:
    """One destruction, without the data: what kind, whose (an id), when and why."""

    id: str
    at: datetime
    subject: str
    categories: tuple[str, ...]
    reason: str


class PrivacyStore(Protocol):
    async def add_hold(self, hold: LegalHold) -> None: ...

    async def get_hold(self, hold_id: str) -> LegalHold | None: ...

    async def holds_of(
        self, *, subject: str | None = None, tenant_id: str | None = None
    ) -> list[LegalHold]:
        """The holds, oldest first, of one account or of every account of a tenant."""
        ...

    async def release_hold(self, hold: LegalHold) -> bool:
        """Store the release if the hold was still active; False if it was released."""
        ...

    async def add_destruction(self, destruction: Destruction) -> None: ...

    async def destructions(self) -> list[Destruction]: ...


class Accounts(Protocol):
    async def account_id(self, tenant_code: str, username: str) -> str: ...

    async def tenant_id(self, tenant_code: str) -> str: ...

    async def delete_account(self, tenant_code: str, username: str) -> None: ...

    async def delete_tenant(self, code: str) -> list[str]:
        """Delete the tenant and its accounts; the ids of the accounts erased."""
        ...


class Erasure:
    """Destroys accounts' data, unless a legal hold stops it, and records each destruction.

    Args:
        store: Holds and the destruction record.
        accounts: The account lifecycle (`ProvisioningService`).
        clock: The wall clock.
        erased_with_account: The inventory categories that go with an account (recorded
            by name on each destruction).
    """

    def __init__(
        self,
        store: PrivacyStore,
        accounts: Accounts,
        clock: Clock,
        erased_with_account: Sequence[str],
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._clock = clock
        self._categories = tuple(erased_with_account)

    async def place_hold(
        self, tenant_code: str, username: str, *, reason: str, reference: str, placed_by: str
    ) -> LegalHold:
        """Stop every destruction of the account's data until the hold is released.

        Raises:
            NotFoundError: no such tenant or account.
            InvalidInputError: a field is empty or too long.
        """
        hold = LegalHold(
            id=str(uuid.uuid4()),
            tenant_id=await self._accounts.tenant_id(tenant_code),
            subject=await self._accounts.account_id(tenant_code, username),
            reason=required_text("reason", reason, MAX_TEXT),
            reference=required_text("reference", reference, MAX_SHORT),
            placed_by=required_text("placed_by", placed_by, MAX_SHORT),
            placed_at=self._clock.now(),
        )
        await self._store.add_hold(hold)
        return hold

    async def release_hold(self, hold_id: str, *, released_by: str) -> LegalHold:
        """Release a hold (kept on record).

        Raises:
            NotFoundError: no such hold.
            ConflictError: it was released already.
        """
        hold = await self._store.get_hold(hold_id)
        if hold is None:
            raise NotFoundError("no such legal hold", field="hold")
        released = replace(
            hold,
            released_by=required_text("released_by", released_by, MAX_SHORT),
            released_at=self._clock.now(),
        )
        if not await self._store.release_hold(released):
            raise ConflictError("hold: released already", field="hold")
        return released

    async def holds(self, tenant_code: str, username: str) -> list[LegalHold]:
        subject = await self._accounts.account_id(tenant_code, username)
        return await self._store.holds_of(subject=subject)

    async def erase_account(self, tenant_code: str, username: str, *, reason: str) -> None:
        """Destroy the account's data (its key first), unless a hold is in force.

        Raises:
            NotFoundError: no such tenant or account.
            LegalHoldError: a hold is in force; nothing was destroyed.
        """
        subject = await self._accounts.account_id(tenant_code, username)
        self._refuse_if_held(await self._store.holds_of(subject=subject))
        await self._accounts.delete_account(tenant_code, username)
        await self._record([subject], reason)

    async def erase_tenant(self, tenant_code: str, *, reason: str) -> None:
        """Delete a tenant and destroy each of its accounts' data, unless one is held.

        Raises:
            NotFoundError: no such tenant.
            LegalHoldError: an account of the tenant is held; nothing was destroyed.
        """
        tenant_id = await self._accounts.tenant_id(tenant_code)
        self._refuse_if_held(await self._store.holds_of(tenant_id=tenant_id))
        await self._record(await self._accounts.delete_tenant(tenant_code), reason)

    async def destructions(self) -> list[Destruction]:
        return await self._store.destructions()

    @staticmethod
    def _refuse_if_held(holds: list[LegalHold]) -> None:
        active = [hold for hold in holds if hold.active]
        if active:
            references = ", ".join(hold.reference for hold in active)
            raise LegalHoldError(
                f"account: under legal hold ({references}); nothing was erased", field="account"
            )

    async def _record(self, subjects: list[str], reason: str) -> None:
        now = self._clock.now()
        for subject in subjects:
            await self._store.add_destruction(
                Destruction(str(uuid.uuid4()), now, subject, self._categories, reason)
            )


LEGAL_HOLDS = Category(
    name="legal holds",
    holds="orders that stop the erasure of an account: reason, reference, who placed and "
    "released them",
    purpose="keep data an authority or a pending request needs (P15)",
    basis=LegalBasis.LEGAL_OBLIGATION,
    retention="six years after the hold is released",
    kept_after_closure_days=6 * 365,
)
DESTRUCTIONS = Category(
    name="destruction record",
    holds="when an account's data was destroyed, which categories and why; the account's "
    "id but none of its data",
    purpose="show that data was destroyed when the policy says (P15, P19)",
    basis=LegalBasis.LEGAL_OBLIGATION,
    retention="six years",
    kept_after_closure_days=6 * 365,
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        LEGAL_HOLDS,
        "legal_holds",
        (
            "id",
            "tenant_id",
            "subject",
            "reason",
            "reference",
            "placed_by",
            "placed_at",
            "released_by",
            "released_at",
        ),
        sealed=False,
    ),
    Stored(
        DESTRUCTIONS, "destructions", ("id", "at", "subject", "categories", "reason"), sealed=False
    ),
)
