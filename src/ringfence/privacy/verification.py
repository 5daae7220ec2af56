"""Codes sent to the number of record: verifying a requester who has no session (P21).

Someone asks the provider's support, by phone or by mail, to see or erase an account's data.
Before anything is carried out, ringfence texts a one-time code to the account's number of
record; the requester reads it back to the operator or enters it in the app's web form. Only
the number's holder can, so the request is the subject's (GDPR art. 12(6), "reasonable
doubts concerning the identity").

The code is 6 random digits (`secrets`), valid 15 minutes (NIST SP 800-63B §5.1.3: an
out-of-band secret is short-lived and its tries limited). A request gets at most 3 codes and
5 tries in all, whatever the codes: each try is counted by one atomic statement before the
code is compared, so tries made at the same moment cannot slip past the limit, and the counts
live as long as the request is open. Only a keyed hash of the code is stored (HMAC-SHA-256
under a key derived from the KEK: a copy of the database does not give the code away by a
brute force over a million values), never the number, and nothing of either is logged. The
row goes when the code is used, when the request ends, and, for a request that was never
recorded (its text refused), a day after expiry.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.inventory import Category, Declaration, LegalBasis, Stored
from ringfence.provisioning.errors import ProvisioningError

CODE_DIGITS = 6
CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5
MAX_SENDS = 3


class TextError(Exception):
    """The text message could not be handed to the gateway."""


class CodeNotSentError(ProvisioningError):
    """The SMS gateway did not take the code (HTTP 502): nothing was recorded."""


class TextSender(Protocol):
    async def send_text(self, to: str, text: str) -> None:
        """Hand one text message for the E.164 number `to` to the gateway.

        Raises:
            TextError: it was not accepted.
        """
        ...


@dataclass(frozen=True, slots=True)
class PendingCode:
    request_id: str
    code_hash: str
    expires_at: datetime
    attempts: int = 0
    sends: int = 1


class CodeStore(Protocol):
    """Each method is one atomic step: concurrent calls for a request never both pass a limit."""

    async def reserve_send(self, request_id: str, max_sends: int, now: datetime) -> int | None:
        """Count one more send for the request (a new row: an expired, matchless code).

        Returns:
            The sends counted, this one included; None when `max_sends` were made.
        """
        ...

    async def set_code(self, request_id: str, code_hash: str, expires_at: datetime) -> None:
        """Make `code_hash` the request's code; tries and sends stay as they are."""
        ...

    async def count_try(self, request_id: str, max_attempts: int) -> PendingCode | None:
        """Count one more try; the row as it is now, or None if `max_attempts` were made."""
        ...

    async def get_code(self, request_id: str) -> PendingCode | None: ...

    async def delete_code(self, request_id: str) -> bool: ...

    async def delete_orphan_codes_expired_before(self, cutoff: datetime) -> int:
        """Delete expired codes of requests that are not recorded or not open any more."""
        ...


class Outcome(enum.Enum):
    RIGHT = "right"
    WRONG = "wrong"
    #: The last try was wrong: the code is gone.
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Checked:
    outcome: Outcome
    attempts_left: int = 0


def message_text(code: str, minutes: int) -> str:
    return (
        f"Your code to confirm your privacy request is {code}. It is valid for {minutes} "
        "minutes. If you did not ask for it, tell your provider: someone may be asking in "
        "your name."
    )


class CodeVerifier:
    """Sends codes and checks them (see the module docstring).

    Args:
        store: Where pending codes are kept.
        sender: The SMS gateway; None when none is configured.
        secret: The key of the codes' hashes (derived from the KEK).
        clock: The wall clock.
    """

    def __init__(
        self, store: CodeStore, sender: TextSender | None, secret: bytes, clock: Clock
    ) -> None:
        self._store = store
        self._sender = sender
        self._secret = secret
        self._clock = clock

    @property
    def configured(self) -> bool:
        return self._sender is not None

    def _hash(self, request_id: str, code: str) -> str:
        message = f"{request_id}:{code}".encode()
        return hmac.digest(self._secret, message, hashlib.sha256).hex()

    async def send(self, request_id: str, number: str) -> datetime:
        """Text a fresh code to `number`; it replaces the request's earlier one.

        The send is counted before the text goes out (a refused text counts too: the limit
        is on what an attacker can make the gateway do); a refused first text leaves nothing.

        Returns:
            When the code expires.

        Raises:
            TextError: the gateway did not take it, or none is set up.
            ValueError: the request had its MAX_SENDS codes.
        """
        if self._sender is None:
            raise TextError("no SMS gateway is configured")
        sends = await self._store.reserve_send(request_id, MAX_SENDS, self._clock.now())
        if sends is None:
            raise ValueError(f"at most {MAX_SENDS} codes per request")
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        try:
            await self._sender.send_text(number, message_text(code, CODE_TTL.seconds // 60))
        except TextError:
            if sends == 1:
                await self._store.delete_code(request_id)
            raise
        expires_at = self._clock.now() + CODE_TTL
        await self._store.set_code(request_id, self._hash(request_id, code), expires_at)
        return expires_at

    async def check(self, request_id: str, code: str) -> Checked:
        """Count a try, then compare `code` with the request's current one."""
        pending = await self._store.get_code(request_id)
        if pending is None:
            return Checked(Outcome.NONE)
        if pending.attempts >= MAX_ATTEMPTS:
            return Checked(Outcome.EXHAUSTED)
        if self._clock.now() >= pending.expires_at:
            return Checked(Outcome.EXPIRED)
        counted = await self._store.count_try(request_id, MAX_ATTEMPTS)
        if counted is None:
            return Checked(Outcome.EXHAUSTED)
        if hmac.compare_digest(self._hash(request_id, code.strip()), counted.code_hash):
            await self._store.delete_code(request_id)
            return Checked(Outcome.RIGHT)
        if counted.attempts >= MAX_ATTEMPTS:
            return Checked(Outcome.EXHAUSTED)
        return Checked(Outcome.WRONG, MAX_ATTEMPTS - counted.attempts)

    async def forget(self, request_id: str) -> None:
        await self._store.delete_code(request_id)

    async def sweep(self) -> int:
        """Delete codes of requests never recorded or closed, expired a day ago or more."""
        cutoff = self._clock.now() - timedelta(days=1)
        return await self._store.delete_orphan_codes_expired_before(cutoff)


VERIFICATION_CODES = Category(
    name="verification codes",
    holds="a keyed hash of a one-time code texted to the number of record, its expiry and "
    "the tries made",
    purpose="verify that a request without a session comes from the number's holder (P21)",
    basis=LegalBasis.LEGAL_OBLIGATION,
    retention="until the code is used or the request ends (a day after expiry for a request "
    "never recorded)",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        VERIFICATION_CODES,
        "verification_codes",
        ("request_id", "code_hash", "expires_at", "attempts", "sends"),
        sealed=False,
    ),
)
