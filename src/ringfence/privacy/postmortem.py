"""Post-mortem directives (P20): what happens to a user's data on their death.

The user sets a directive from the app: erase everything, or hand the export bundle to a
person they name (the trustee, with a way to reach them) and then erase. The directive is
sealed with the account's own key, so it goes with the account, and its row is deleted with
the account row (foreign key).

A notice of death is carried out only once verified (P21): the operator names the evidence
(a death certificate's reference) and who verified it; without both, nothing happens. It is
recorded as a data-subject request of kind post-mortem. With a hand-over directive the
bundle and the trustee come back to the operator, once, and are stored nowhere; then the
account is erased. Without a directive the account is erased. Under a legal hold the
request is rejected and nothing is handed over or erased.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ringfence.clock import Clock
from ringfence.crypto import Keyring
from ringfence.inventory import Category, Declaration, LegalBasis, Stored
from ringfence.privacy.requests import (
    RequestKind,
    RequestState,
    SubjectRequest,
    SubjectRights,
    Verification,
)
from ringfence.privacy.text import MAX_SHORT, MAX_TEXT, required_text
from ringfence.provisioning.errors import InvalidInputError, NotFoundError
from ringfence.provisioning.service import account_subject

#: Envelope context of the sealed trustee (crypto.envelope: each field its own).
CTX_TRUSTEE = "postmortem.trustee"


class DirectiveAction(enum.StrEnum):
    ERASE = "erase"
    HAND_OVER = "hand over"


@dataclass(frozen=True, slots=True)
class Directive:
    action: DirectiveAction
    #: For a hand-over: the person's name and how to reach them.
    trustee: str | None
    set_at: datetime


@dataclass(frozen=True, slots=True)
class StoredDirective:
    subject: str
    action: DirectiveAction
    trustee_sealed: bytes | None
    set_at: datetime


@dataclass(frozen=True, slots=True)
class Carried:
    """What a notice of death led to; `bundle` and `trustee` only for a hand-over."""

    request: SubjectRequest
    trustee: str | None = None
    bundle: dict[str, Any] | None = None


class DirectiveStore(Protocol):
    async def put_directive(self, directive: StoredDirective) -> None: ...

    async def get_directive(self, subject: str) -> StoredDirective | None: ...

    async def delete_directive(self, subject: str) -> bool: ...


class Accounts(Protocol):
    async def account_id(self, tenant_code: str, username: str) -> str: ...


class PostMortem:
    def __init__(
        self,
        store: DirectiveStore,
        keyring: Keyring,
        accounts: Accounts,
        rights: SubjectRights,
        clock: Clock,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._accounts = accounts
        self._rights = rights
        self._clock = clock

    async def set_directive(
        self, subject: str, action: DirectiveAction, trustee: str | None
    ) -> Directive:
        """Set (or replace) the account's directive.

        Raises:
            InvalidInputError: a hand-over without a trustee, or an erasure with one.
        """
        if action is DirectiveAction.HAND_OVER:
            if trustee is None:
                raise InvalidInputError("trustee: required to hand the data over", field="trustee")
            trustee = required_text("trustee", trustee, MAX_SHORT)
        elif trustee is not None:
            raise InvalidInputError("trustee: only for a hand-over", field="trustee")
        sealed = None
        if trustee is not None:
            cipher = await self._keyring.cipher(account_subject(subject))
            sealed = cipher.seal_text(CTX_TRUSTEE, trustee)
        now = self._clock.now()
        await self._store.put_directive(StoredDirective(subject, action, sealed, now))
        return Directive(action, trustee, now)

    async def directive(self, subject: str) -> Directive | None:
        stored = await self._store.get_directive(subject)
        if stored is None:
            return None
        trustee = None
        if stored.trustee_sealed is not None:
            cipher = await self._keyring.cipher(account_subject(subject))
            trustee = cipher.open_text(CTX_TRUSTEE, stored.trustee_sealed)
        return Directive(stored.action, trustee, stored.set_at)

    async def withdraw(self, subject: str) -> None:
        if not await self._store.delete_directive(subject):
            raise NotFoundError("no directive to withdraw", field="directive")

    async def notice_of_death(
        self, tenant_code: str, username: str, *, evidence: str, verified_by: str
    ) -> Carried:
        """Carry out the account's directive on a verified notice of death.

        Args:
            tenant_code: The account's tenant.
            username: The account.
            evidence: The reference of the evidence (e.g. the death certificate's).
            verified_by: Who checked the evidence.

        Raises:
            InvalidInputError: evidence or verifier missing: the notice is not verified, and
                nothing happens.
            NotFoundError: no such account.
        """
        evidence = required_text("evidence", evidence, MAX_TEXT)
        verified_by = required_text("verified_by", verified_by, MAX_SHORT)
        subject = await self._accounts.account_id(tenant_code, username)
        directive = await self.directive(subject)
        request = await self._rights.open_request(
            subject, RequestKind.POST_MORTEM, Verification.DEATH_NOTICE
        )
        notice = f"notice of death {evidence}, verified by {verified_by}"
        if directive is None or directive.action is DirectiveAction.ERASE:
            erased = await self._rights.erase(
                request, reason="post-mortem directive", outcome=f"erased on the {notice}"
            )
            return Carried(erased)
        bundle = await self._rights.bundle(subject)
        erased = await self._rights.erase(
            request,
            reason="post-mortem directive",
            outcome=f"handed over to the trustee, then erased, on the {notice}",
        )
        if erased.state is not RequestState.COMPLETED:
            return Carried(erased)  # held: nothing is handed over either
        return Carried(erased, directive.trustee, bundle)


POST_MORTEM_DIRECTIVES = Category(
    name="post-mortem directive",
    holds="what the user wants done with their data on their death, and the person to hand it to",
    purpose="carry out that wish on a verified notice of death (P20)",
    basis=LegalBasis.CONSENT,
    retention="while the account exists, or until withdrawn",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        POST_MORTEM_DIRECTIVES,
        "postmortem_directives",
        ("subject", "action", "set_at"),
        sealed=False,
    ),
    Stored(POST_MORTEM_DIRECTIVES, "postmortem_directives", ("trustee_sealed",), sealed=True),
)
