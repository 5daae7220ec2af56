"""MESSAGE requests held for sleeping devices: stored sealed, claimed, delivered, forgotten.

The rules:

- a message is held only for an account whose messaging feature is on (P1);
- its sender, recipient, content type and body are sealed with the recipient account's
  key, so that erasing the account makes every held copy unreadable (P19);
- the row is found by the AOR's blind index only: an old copy of the database does not say
  who was written to;
- delivery claims the AOR's messages for CLAIM_S (one node, one worker delivers them, even
  when several see the same registration); a 2xx deletes the message, anything else lets
  the claim lapse so that the next registration tries again;
- an account holds at most MAX_HELD_PER_ACCOUNT messages and each at most MAX_BODY_BYTES:
  beyond, the MESSAGE is refused (the sender's client keeps it);
- a message not delivered within HELD_DAYS is deleted by the sweeper.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.crypto import Keyring
from ringfence.crypto.blind import BlindIndex
from ringfence.provisioning.service import account_subject

#: The envelope context of a held message (crypto.envelope).
CTX_HELD = "message.held"
#: How long a message waits for its recipient's devices before it is deleted.
HELD_DAYS = 7
#: Messages one account may have waiting.
MAX_HELD_PER_ACCOUNT = 500
#: The largest body held (a MESSAGE over UDP is limited to far less, RFC 3428 §7).
MAX_BODY_BYTES = 64 * 1024
#: How long a delivery attempt owns the messages it claimed: the non-INVITE transaction
#: timeout (64 * T1, RFC 3261 §17.1.2.2) and a margin.
CLAIM_S = 40.0
SWEEP_BATCH = 500


class HoldRefusedError(Exception):
    """The message cannot be held; `status` and `reason` are the SIP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """What is held of one MESSAGE (RFC 3428): enough to send it again, as it was."""

    sender: str  # the From header field value, tag included
    recipient: str  # the To header field value
    content_type: str
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class HeldMessage:
    id: str
    account_id: str
    message: Message


@dataclass(frozen=True, slots=True)
class StoredHeld:
    id: str
    account_id: str
    aor_key: str
    sealed: bytes
    received_at: datetime
    expires_at: datetime


class HeldStore(Protocol):
    async def add_held(self, held: StoredHeld, max_per_account: int) -> bool:
        """Insert, unless the account has `max_per_account` already (then False)."""
        ...

    async def claim_held(self, aor_key: str, now: datetime, until: datetime) -> list[StoredHeld]:
        """Claim the AOR's unexpired, unclaimed (or lapsed) messages until `until`."""
        ...

    async def delete_held(self, ids: Sequence[str]) -> int: ...

    async def release_held(self, ids: Sequence[str]) -> None:
        """Let the claim of these messages lapse at once."""
        ...

    async def held_aor_keys(self, now: datetime) -> set[str]: ...

    async def delete_held_expired(self, now: datetime, limit: int) -> int: ...


def _to_json(message: Message) -> bytes:
    return json.dumps(
        {
            "from": message.sender,
            "to": message.recipient,
            "type": message.content_type,
            "body": message.body.decode("latin-1"),
            "at": message.received_at.isoformat(),
        },
        separators=(",", ":"),
    ).encode()


def _from_json(data: bytes) -> Message:
    fields = json.loads(data)
    return Message(
        fields["from"],
        fields["to"],
        fields["type"],
        fields["body"].encode("latin-1"),
        datetime.fromisoformat(fields["at"]),
    )


class HeldMessages:
    """Holds messages for sleeping devices and hands them out for delivery."""

    def __init__(self, store: HeldStore, keyring: Keyring, clock: Clock) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._aors: BlindIndex = keyring.blind_index("message.held.aor")
        #: Blind keys of the AORs with messages waiting, as far as this process knows: a
        #: registration of another AOR costs no database query. `refresh` reloads it.
        self._waiting: set[str] = set()
        # Keys held since the last `refresh` began: its query may have run before them.
        self._added: set[str] = set()
        # The last receive time handed out: messages are delivered in `received_at` order,
        # and two held within one clock tick must not tie (RFC 3428 §7: the order a user
        # sent them in is the order they read them in).
        self._last: datetime | None = None

    def aor_key(self, aor: str) -> str:
        return self._aors.of(aor)

    def may_have(self, aor: str) -> bool:
        """Whether `aor` may have messages waiting (cheap: asked on every registration)."""
        return bool(self._waiting) and self._aors.of(aor) in self._waiting

    async def refresh(self) -> None:
        """Learn which AORs have messages waiting (held by other processes too)."""
        self._added = set()
        found = await self._store.held_aor_keys(self._clock.now())
        self._waiting = found | self._added

    async def hold(
        self, account_id: str, aor: str, sender: str, recipient: str, content_type: str, body: bytes
    ) -> str:
        """Store a MESSAGE for `aor` until a device of it registers; returns its id.

        Args:
            account_id: The recipient's account: its key seals the message.
            aor: The recipient's address-of-record.
            sender: Its From header field value.
            recipient: Its To header field value.
            content_type: Its Content-Type.
            body: Its body, at most MAX_BODY_BYTES.

        Raises:
            HoldRefusedError: too large, or too many waiting.
        """
        now = self._clock.now()
        if self._last is not None and now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        message = Message(sender, recipient, content_type, body, now)
        if len(message.body) > MAX_BODY_BYTES:
            raise HoldRefusedError(513, "Message Too Large")
        cipher = await self._keyring.cipher(account_subject(account_id))
        key = self._aors.of(aor)
        held = StoredHeld(
            str(uuid.uuid4()),
            account_id,
            key,
            cipher.seal(CTX_HELD, _to_json(message)),
            message.received_at,
            message.received_at + timedelta(days=HELD_DAYS),
        )
        if not await self._store.add_held(held, MAX_HELD_PER_ACCOUNT):
            # RFC 3261 §21.4.18: the user cannot be reached now; the sender's client keeps it.
            raise HoldRefusedError(480, "Too Many Messages Waiting")
        self._waiting.add(key)
        self._added.add(key)
        return held.id

    async def claim(self, aor: str) -> list[HeldMessage]:
        """The messages waiting for `aor`, now owned by the caller for CLAIM_S seconds."""
        now = self._clock.now()
        key = self._aors.of(aor)
        stored = await self._store.claim_held(key, now, now + timedelta(seconds=CLAIM_S))
        if not stored:
            self._waiting.discard(key)
            return []
        ciphers = await self._keyring.ciphers(
            sorted({account_subject(item.account_id) for item in stored})
        )
        out = []
        unreadable = []
        for item in stored:
            cipher = ciphers.get(account_subject(item.account_id))
            if cipher is None:
                unreadable.append(item.id)  # the account is being erased
                continue
            out.append(
                HeldMessage(
                    item.id, item.account_id, _from_json(cipher.open(CTX_HELD, item.sealed))
                )
            )
        if unreadable:
            await self._store.delete_held(unreadable)
        return out

    async def delivered(self, message_id: str) -> None:
        await self._store.delete_held([message_id])

    async def failed(self, message_id: str) -> None:
        """Not delivered this time: the next registration tries again."""
        await self._store.release_held([message_id])

    async def sweep(self) -> int:
        """Delete what waited HELD_DAYS in vain; returns how many."""
        now = self._clock.now()
        deleted = 0
        while count := await self._store.delete_held_expired(now, SWEEP_BATCH):
            deleted += count
            if count < SWEEP_BATCH:
                break
        return deleted
