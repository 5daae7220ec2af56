"""Data-subject requests (P19, P21): confirmation, access and erasure, within 30 days.

A request moves through RECEIVED → VERIFYING → IN_PROGRESS → COMPLETED or REJECTED, each
step recorded with its time. It is due 30 days after it was received (P21); open requests
past that are overdue, and the node says so (a warning, no personal data) at each
housekeeping round and in the admin API.

Identity comes first (P21). A request made from the app over a logged-in session is
verified by that session. One taken by an operator is verified by the operator (who names
the evidence), by a code texted to the account's number of record (`privacy.verification`)
and read back or entered in the app's web form, or, as the last resort, by an ID document.
A second request of the same kind while one is open is recognised as a duplicate: the open
one is returned, not a new one opened.

- Confirmation: the categories of the data inventory held about the subject.
- Rectification: the display name, the number or the email set or cleared; checked before
  anything is recorded.
- Access: an export bundle, JSON per category. What only the subject can read stays as it
  is; the digest credentials are secrets, named but not exported.
- Erasure: through `erasure.Erasure`, so a legal hold rejects it and changes nothing.

When neither a session nor a call-back can verify the requester, an operator takes the
request as received and waits for an ID document (the last resort, P21). The document is
sealed with a key of its own and kept only until the operator decides: accepted, the request
is carried out; refused, it is rejected. Either way the document and its key are destroyed
at the decision.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from ringfence.clock import Clock
from ringfence.crypto.envelope import SubjectCipher
from ringfence.inventory import Category, Declaration, LegalBasis, Stored
from ringfence.privacy.erasure import Erasure, LegalHoldError
from ringfence.privacy.text import MAX_SHORT, required_text
from ringfence.privacy.verification import CodeNotSentError, CodeVerifier, Outcome, TextError
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError

#: P21: requests are answered within 30 days.
DUE_DAYS = 30


class RequestKind(enum.StrEnum):
    CONFIRMATION = "confirmation"
    ACCESS = "access"
    RECTIFICATION = "rectification"
    ERASURE = "erasure"
    #: Carrying out the subject's post-mortem directive (privacy.postmortem, P20).
    POST_MORTEM = "post-mortem"


class RequestState(enum.StrEnum):
    RECEIVED = "received"
    VERIFYING = "verifying"
    IN_PROGRESS = "in progress"
    COMPLETED = "completed"
    REJECTED = "rejected"

    @property
    def open(self) -> bool:
        return self not in (RequestState.COMPLETED, RequestState.REJECTED)


class Verification(enum.StrEnum):
    #: The request came from the subject's app over a logged-in session.
    SESSION = "logged-in session"
    #: A notice of death, verified by an operator against its evidence (P20).
    DEATH_NOTICE = "verified notice of death"
    #: An operator checked the requester's identity (admin API, CLI) and names the evidence.
    OPERATOR = "verified by an operator"
    #: An operator accepted an ID document, destroyed at the decision.
    ID_DOCUMENT = "ID document"
    #: The requester gave back the code texted to the number of record.
    CODE = "code sent to the number of record"


@dataclass(frozen=True, slots=True)
class SubjectRequest:
    id: str
    subject: str
    kind: RequestKind
    state: RequestState
    received_at: datetime
    due_at: datetime
    verified_by: Verification | None = None
    verified_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None

    def overdue(self, now: datetime) -> bool:
        return self.state.open and now > self.due_at


class RequestStore(Protocol):
    async def add_request(self, request: SubjectRequest) -> None: ...

    async def update_request(self, request: SubjectRequest) -> None: ...

    async def get_request(self, request_id: str) -> SubjectRequest | None: ...

    async def requests(self, *, subject: str | None = None) -> list[SubjectRequest]:
        """Requests, oldest first; of one subject when given."""
        ...


class DocumentStore(Protocol):
    async def put_document(
        self, request_id: str, media_type: str, sealed: bytes, received_at: datetime
    ) -> None: ...

    async def get_document(self, request_id: str) -> tuple[str, bytes] | None: ...

    async def delete_document(self, request_id: str) -> bool: ...


class DocumentKeys(Protocol):
    """The keyring, as far as ID documents need it."""

    async def create(self, subject: str) -> SubjectCipher: ...

    async def destroy(self, subject: str) -> bool: ...


#: The largest ID document accepted (a phone photo or a PDF scan).
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
DOCUMENT_TYPES = frozenset({"image/jpeg", "image/png", "application/pdf"})
_CTX_DOCUMENT = "request.id_document"


def document_subject(request_id: str) -> str:
    """The keyring subject of a request's ID document: its own key, destroyed with it."""
    return f"id-document:{request_id}"


class SubjectData(Protocol):
    """What an export reads beyond the account itself."""

    async def devices_for_export(self, account_id: str) -> list[dict[str, Any]]: ...

    async def sessions_for_export(self, account_id: str) -> list[dict[str, Any]]: ...


class Accounts(Protocol):
    async def account_summary(self, account_id: str) -> tuple[str, str]:
        """(tenant code, username) of an account; raises NotFoundError."""
        ...

    async def account_export(self, account_id: str) -> dict[str, dict[str, Any]]:
        """The account's own categories opened: identity and settings."""
        ...

    def check_rectification(self, fields: Mapping[str, str | None]) -> None:
        """Raise InvalidInputError for a field that cannot be corrected, or a bad value."""
        ...

    async def rectify(self, account_id: str, fields: Mapping[str, str | None]) -> None:
        """Set (or, with None, clear) the account's personal fields."""
        ...

    async def number_of_record(self, account_id: str) -> str | None:
        """The account's E.164 number, if it has one."""
        ...


def _check_waiting(kind: RequestKind, way: str) -> None:
    """Only these kinds can wait for a verification; a rectification's changes cannot."""
    if kind not in (RequestKind.CONFIRMATION, RequestKind.ACCESS, RequestKind.ERASURE):
        raise InvalidInputError(
            f"kind: confirmation, access or erasure can wait for {way}", field="kind"
        )


class SubjectRights:
    """Carries out data-subject requests (see the module docstring).

    Args:
        store: Where requests are kept.
        accounts: The accounts (`ProvisioningService`).
        data: Devices and sessions for exports.
        erasure: The one way to destroy an account's data.
        categories: The inventory categories that hold data about an account, by name.
        clock: The wall clock.
    """

    def __init__(
        self,
        store: RequestStore,
        accounts: Accounts,
        data: SubjectData,
        erasure: Erasure,
        categories: list[Category],
        clock: Clock,
        documents: DocumentStore | None = None,
        keys: DocumentKeys | None = None,
        codes: CodeVerifier | None = None,
    ) -> None:
        self._codes = codes
        self._documents = documents
        self._keys = keys
        #: Categories other services keep, by name: each gives its data of an account for
        #: the access bundle (the message history, attachments...). The runtime fills it.
        self.exporters: dict[str, Callable[[str], Awaitable[Any]]] = {}
        self._store = store
        self._accounts = accounts
        self._data = data
        self._erasure = erasure
        self._categories = categories
        self._clock = clock

    async def submit(
        self,
        subject: str,
        kind: RequestKind,
        verification: Verification,
        changes: Mapping[str, str | None] | None = None,
    ) -> tuple[SubjectRequest, bool]:
        """Take a request and carry it out as far as it goes now.

        Args:
            subject: The account.
            kind: What is asked.
            verification: How the requester's identity was verified.
            changes: For a rectification: the corrected fields (None clears one).

        Returns:
            The request, and False when it is an open duplicate returned as it was.

        Raises:
            InvalidInputError: a rectification without changes or with a bad value, or
                changes on another kind; nothing is recorded.
        """
        if kind is RequestKind.RECTIFICATION:
            if not changes:
                raise InvalidInputError("changes: required for a rectification", field="changes")
            self._accounts.check_rectification(changes)
        elif changes:
            raise InvalidInputError("changes: only for a rectification", field="changes")
        duplicate = await self._open_duplicate(subject, kind)
        if duplicate is not None:
            return duplicate, False
        # P21: identity before anything is carried out.
        request = await self.open_request(subject, kind, verification)
        if kind is RequestKind.RECTIFICATION:
            assert changes is not None
            await self._accounts.rectify(subject, changes)
            corrected = ", ".join(sorted(changes))
            return await self._close(
                request, RequestState.COMPLETED, f"corrected: {corrected}"
            ), True
        return await self._carry_out(request), True

    async def receive(self, subject: str, kind: RequestKind) -> tuple[SubjectRequest, bool]:
        """Take a request whose requester is still to be verified (by an ID document).

        Returns:
            The request (VERIFYING), and False when it is an open duplicate.

        Raises:
            InvalidInputError: a rectification (its changes need the app or the admin API).
        """
        _check_waiting(kind, "an ID document")
        duplicate = await self._open_duplicate(subject, kind)
        if duplicate is not None:
            return duplicate, False
        return await self._verifying(subject, kind), True

    async def receive_by_code(self, subject: str, kind: RequestKind) -> tuple[SubjectRequest, bool]:
        """Take a request and text a code to the subject's number of record to verify it.

        The code goes out before the request is recorded: if the gateway refuses it, nothing
        is. An open duplicate is returned as it is (a new code: `send_code`).

        Returns:
            The request (VERIFYING), and False when it is an open duplicate.

        Raises:
            InvalidInputError: a rectification, or an account without a number of record.
            ConflictError: no SMS gateway is configured.
            CodeNotSentError: the gateway did not take the code.
        """
        _check_waiting(kind, "a code")
        duplicate = await self._open_duplicate(subject, kind)
        if duplicate is not None:
            return duplicate, False
        number = await self._number(subject)

        async def text_code(request_id: str) -> None:
            await self._text_code(request_id, number)

        return await self._verifying(subject, kind, first=text_code), True

    async def send_code(self, request_id: str) -> datetime:
        """Text a new code for a request waiting for verification; the old one is void.

        Returns:
            When the new code expires.

        Raises:
            NotFoundError: no such request waiting for verification.
            InvalidInputError: no number of record, or the request had all its codes.
            ConflictError: no SMS gateway is configured.
            CodeNotSentError: the gateway did not take the code.
        """
        request = await self._waiting(request_id)
        return await self._text_code(request.id, await self._number(request.subject))

    async def confirm_code(self, request_id: str, code: str) -> SubjectRequest:
        """Check the code the requester gives back; right, the request is carried out.

        Raises:
            NotFoundError: no such request waiting for a code.
            InvalidInputError: the code is wrong (tries left named), expired, or that was
                the last try (the request is then rejected).
        """
        codes = self._codes
        request = await self._waiting(request_id)
        checked = await codes.check(request.id, code) if codes else None
        if checked is None or checked.outcome is Outcome.NONE:
            raise NotFoundError("no code was sent for this request", field="request")
        if checked.outcome is Outcome.EXPIRED:
            raise InvalidInputError("code: expired; ask for a new one", field="code")
        if checked.outcome is Outcome.WRONG:
            left = checked.attempts_left
            raise InvalidInputError(
                f"code: wrong; {left} {'try' if left == 1 else 'tries'} left", field="code"
            )
        if checked.outcome is Outcome.EXHAUSTED:
            await self._close(
                request, RequestState.REJECTED, "identity not verified: too many wrong codes"
            )
            raise InvalidInputError(
                "code: wrong, and that was the last try: the request is rejected", field="code"
            )
        request = await self._move(
            replace(request, verified_by=Verification.CODE, verified_at=self._clock.now()),
            RequestState.IN_PROGRESS,
        )
        return await self._carry_out(request)

    async def _number(self, subject: str) -> str:
        if self._codes is None or not self._codes.configured:
            raise ConflictError(
                "method: no SMS gateway is configured ([sms] url); verify otherwise",
                field="method",
            )
        number = await self._accounts.number_of_record(subject)
        if number is None:
            raise InvalidInputError(
                "method: the account has no number of record; an ID document is the way left",
                field="method",
            )
        return number

    async def _text_code(self, request_id: str, number: str) -> datetime:
        assert self._codes is not None
        try:
            return await self._codes.send(request_id, number)
        except ValueError as exc:
            raise InvalidInputError(f"code: {exc}", field="code") from exc
        except TextError as exc:
            raise CodeNotSentError(
                "method: the SMS gateway did not take the code; nothing was recorded",
                field="method",
            ) from exc

    async def _open_duplicate(self, subject: str, kind: RequestKind) -> SubjectRequest | None:
        for existing in await self._store.requests(subject=subject):
            if existing.kind is kind and existing.state.open:
                return existing
        return None

    async def _verifying(
        self,
        subject: str,
        kind: RequestKind,
        first: Callable[[str], Awaitable[None]] | None = None,
    ) -> SubjectRequest:
        """A new request, recorded as received, now waiting for its verification.

        `first`, given the new id, runs before anything is recorded: if it raises, nothing is.
        """
        now = self._clock.now()
        request = SubjectRequest(
            id=str(uuid.uuid4()),
            subject=subject,
            kind=kind,
            state=RequestState.RECEIVED,
            received_at=now,
            due_at=now + timedelta(days=DUE_DAYS),
        )
        if first is not None:
            await first(request.id)
        await self._store.add_request(request)
        return await self._move(request, RequestState.VERIFYING)

    async def attach_document(self, request_id: str, media_type: str, data: bytes) -> None:
        """Keep the requester's ID document, sealed with a key of its own, until the decision.

        Raises:
            NotFoundError: no such request waiting for verification.
            InvalidInputError: not a JPEG, PNG or PDF, empty, or over the size limit.
        """
        documents, keys = self._documents, self._keys
        assert documents is not None
        assert keys is not None
        request = await self._waiting(request_id)
        if media_type not in DOCUMENT_TYPES:
            raise InvalidInputError(
                f"content-type: one of {', '.join(sorted(DOCUMENT_TYPES))}", field="content-type"
            )
        if not 0 < len(data) <= MAX_DOCUMENT_BYTES:
            raise InvalidInputError(
                f"document: 1 byte to {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB", field="document"
            )
        subject = document_subject(request.id)
        await keys.destroy(subject)  # a replaced document's key goes too
        cipher = await keys.create(subject)
        sealed = cipher.seal(_CTX_DOCUMENT, data)
        await documents.put_document(request.id, media_type, sealed, self._clock.now())

    async def decide_identity(
        self, request_id: str, *, accepted: bool, verified_by: str
    ) -> SubjectRequest:
        """Accept or refuse the ID document, destroyed either way; then carry out or reject.

        Raises:
            NotFoundError: no such request waiting for verification.
            InvalidInputError: accepted without a document, or no verifier named.
        """
        documents, keys = self._documents, self._keys
        assert documents is not None
        assert keys is not None
        request = await self._waiting(request_id)
        required_text("verified_by", verified_by, MAX_SHORT)
        has_document = await documents.get_document(request.id) is not None
        if accepted and not has_document:
            raise InvalidInputError("document: none to accept", field="document")
        # P21: deleted right after the decision, before anything else happens.
        await keys.destroy(document_subject(request.id))
        await documents.delete_document(request.id)
        if not accepted:
            return await self._close(
                request, RequestState.REJECTED, "identity not verified: the document was refused"
            )
        request = await self._move(
            replace(request, verified_by=Verification.ID_DOCUMENT, verified_at=self._clock.now()),
            RequestState.IN_PROGRESS,
        )
        return await self._carry_out(request)

    async def has_document(self, request_id: str) -> bool:
        assert self._documents is not None
        return await self._documents.get_document(request_id) is not None

    async def _waiting(self, request_id: str) -> SubjectRequest:
        request = await self._store.get_request(request_id)
        if request is None or request.state is not RequestState.VERIFYING:
            raise NotFoundError("no request waiting for verification", field="request")
        return request

    async def _carry_out(self, request: SubjectRequest) -> SubjectRequest:
        if request.kind is RequestKind.CONFIRMATION:
            names = ", ".join(category.name for category in self._categories)
            return await self._close(request, RequestState.COMPLETED, f"we process: {names}")
        if request.kind is RequestKind.ACCESS:
            return await self._close(
                request, RequestState.COMPLETED, "export ready: GET .../requests/{id}/export"
            )
        return await self.erase(request, reason="erasure request")

    async def erase(
        self, request: SubjectRequest, *, reason: str, outcome: str = "erased: key destroyed"
    ) -> SubjectRequest:
        """Erase the request's subject and close it; rejected (nothing erased) if held.

        Args:
            request: The request being carried out.
            reason: Why, for the destruction record (at most 200 characters).
            outcome: The completed request's outcome.
        """
        tenant, username = await self._accounts.account_summary(request.subject)
        try:
            await self._erasure.erase_account(tenant, username, reason=reason)
        except LegalHoldError as refused:
            return await self._close(request, RequestState.REJECTED, refused.message)
        return await self._close(request, RequestState.COMPLETED, outcome)

    async def export(self, subject: str, request_id: str) -> dict[str, Any]:
        """The export bundle of a completed access request of `subject`: JSON per category.

        Raises:
            NotFoundError: no such completed access request of this subject.
        """
        request = await self._store.get_request(request_id)
        if (
            request is None
            or request.subject != subject
            or request.kind is not RequestKind.ACCESS
            or request.state is not RequestState.COMPLETED
        ):
            raise NotFoundError("no completed access request with this id", field="request")
        return await self.bundle(subject)

    async def export_any(self, request_id: str) -> dict[str, Any]:
        """The bundle of a completed access request, whoever its subject (for an operator).

        Raises:
            NotFoundError: no such completed access request.
        """
        request = await self._store.get_request(request_id)
        if request is None:
            raise NotFoundError("no completed access request with this id", field="request")
        return await self.export(request.subject, request_id)

    async def bundle(self, subject: str) -> dict[str, Any]:
        """Everything stored about `subject`, JSON per category (access, P19; hand-over, P20)."""
        bundle: dict[str, Any] = {
            **await self._accounts.account_export(subject),
            "devices": await self._data.devices_for_export(subject),
            "sessions": await self._data.sessions_for_export(subject),
            "SIP credentials": {
                "exported": False,
                "why": "digest HA1 values are secrets: they let anyone register as you",
            },
            "registrations": {
                "exported": False,
                "why": "held in memory only while a device is registered; never stored",
            },
            "requests": [
                {"kind": r.kind.value, "state": r.state.value, "received_at": r.received_at}
                for r in await self._store.requests(subject=subject)
            ],
        }
        for category, export in self.exporters.items():
            bundle[category] = await export(subject)
        return {"subject": subject, "generated_at": self._clock.now(), "categories": bundle}

    async def open_request(
        self, subject: str, kind: RequestKind, verification: Verification
    ) -> SubjectRequest:
        """A new request, verified and in progress, for a caller that carries it out itself."""
        request = await self._verifying(subject, kind)
        return await self._move(
            replace(request, verified_by=verification, verified_at=self._clock.now()),
            RequestState.IN_PROGRESS,
        )

    async def of(self, subject: str) -> list[SubjectRequest]:
        return await self._store.requests(subject=subject)

    async def overdue(self) -> list[SubjectRequest]:
        now = self._clock.now()
        return [request for request in await self._store.requests() if request.overdue(now)]

    async def _move(self, request: SubjectRequest, state: RequestState) -> SubjectRequest:
        moved = replace(request, state=state)
        await self._store.update_request(moved)
        return moved

    async def _close(
        self, request: SubjectRequest, state: RequestState, outcome: str
    ) -> SubjectRequest:
        if self._codes is not None:
            await self._codes.forget(request.id)
        return await self._move(
            replace(request, closed_at=self._clock.now(), outcome=outcome), state
        )


SUBJECT_REQUESTS = Category(
    name="data-subject requests",
    holds="the user's requests under the privacy policy: kind, dates, how identity was "
    "verified, outcome",
    purpose="answer them within 30 days and show that they were (P19, P21)",
    basis=LegalBasis.LEGAL_OBLIGATION,
    retention="three years after the request is closed",
    kept_after_closure_days=3 * 365,
)

ID_DOCUMENTS = Category(
    name="identity documents",
    holds="a copy of an ID document sent to prove who makes a request",
    purpose="verify the requester's identity, as the last resort (P21)",
    basis=LegalBasis.LEGAL_OBLIGATION,
    retention="until the operator decides; then destroyed with its own key",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(ID_DOCUMENTS, "identity_documents", ("sealed",), sealed=True),
    Stored(
        ID_DOCUMENTS,
        "identity_documents",
        ("request_id", "media_type", "received_at"),
        sealed=False,
    ),
    Stored(
        SUBJECT_REQUESTS,
        "subject_requests",
        (
            "id",
            "subject",
            "kind",
            "state",
            "received_at",
            "due_at",
            "verified_by",
            "verified_at",
            "closed_at",
            "outcome",
        ),
        sealed=False,
    ),
)
