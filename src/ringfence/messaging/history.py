"""Each account's message history: what it sent and received, for every device of it.

A phone that slept, a tablet that was off, the desktop app opened a week later: each asks
for the messages after the last one it has (a cursor), and gets both directions, so a
conversation reads the same everywhere (what Acrobits' Fetch Messages does with
`received_smss` and `sent_smss`).

- A MESSAGE between two users of the service is kept twice: as received by the
  recipient's account, as sent by the sender's, each sealed with that account's own key
  (erasing one account leaves the other's copy, which is the other user's data).
- Only where the account's configuration has messaging on (P1), and for
  `messaging.retention_days` (90 by default, P15), after which the sweeper deletes it.
- "Is typing" indications (RFC 3994) are never kept: they mean nothing a second later.
- Delivery and read notifications (IMDN, RFC 5438, or Acrobits' disposition messages) are
  kept like any message, so a device that follows the cursor learns of them, and they raise
  the status of the message they are about (sent -> delivered -> displayed, never back).
  That message is found by a keyed hash of its IMDN Message-ID: the id itself is sealed.

Nothing here does I/O: storage is the `HistoryStore` a caller gives.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.crypto import Keyring
from ringfence.crypto.blind import BlindIndex
from ringfence.messaging.imdn import (
    ACRO_DISPOSITION,
    CPIM,
    IMDN_XML,
    IS_COMPOSING,
    STATUS_RANK,
    Disposition,
    base_type,
    parse_acro_disposition,
    parse_cpim,
    parse_imdn,
)
from ringfence.provisioning.service import account_subject
from ringfence.proxy.router import Parties

logger = logging.getLogger(__name__)

CTX_MESSAGE = "message.history"
#: A body larger than this is delivered but not kept: a page-mode MESSAGE carries text, and
#: a file goes through the file service, its message only naming it.
MAX_KEPT_BYTES = 256 * 1024
#: Messages one fetch returns at most; the app asks again from the last one.
MAX_FETCH = 500
SWEEP_BATCH = 1000
#: MESSAGEs waiting for a flush, at most: past it (the store is down or too slow) they are
#: delivered but not kept, so a stalled database cannot grow the process without bound.
MAX_QUEUED = 50_000

IN = "in"
OUT = "out"
#: A sequence number as Acrobits apps give it back: ASCII digits, within a 64-bit integer.
_SEQ = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One message of an account's history, opened.

    Attributes:
        seq: Its place in the history: the cursor a device gives to get what follows.
        direction: `in` (received) or `out` (sent).
        peer: The other party's URI (the sender of a received message, the recipient of
            a sent one).
        content_type: Its Content-Type (the CPIM wrapper's content type when wrapped).
        body: Its body as it came (CPIM included).
        at: When the service took it.
        status: `received` for what came in; for what went out `sent`, then `delivered`,
            `displayed` or `failed` as notifications tell.
        imdn_id: Its IMDN Message-ID, when it has one.
        disposition: What an Acrobits app said of notifications when it sent it
            (`disposition_notification`), given back as it came.
    """

    seq: int
    direction: str
    peer: str
    content_type: str
    body: bytes
    at: datetime
    status: str
    imdn_id: str | None = None
    disposition: str | None = None


@dataclass(frozen=True, slots=True)
class NewMessage:
    account_id: str
    direction: str
    #: The keyed hash that finds it when a notification names it (None: none can).
    ref_key: str | None
    status: str
    sealed: bytes
    at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StoredMessage(NewMessage):
    #: Its place in the account's history.
    seq: int


@dataclass(frozen=True, slots=True)
class Recorded:
    """The sequence numbers a MESSAGE got: in the recipient's history, in the sender's."""

    received: int | None = None
    sent: int | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A user who sends a message through the API (the service sends the MESSAGE).

    Attributes:
        account_id: Their account.
        aor: Their address-of-record: the From of the MESSAGE.
        retention_days: How long their history keeps it (None: messaging is off, not kept).
    """

    account_id: str
    aor: str
    retention_days: int | None


@dataclass(frozen=True, slots=True)
class Sent:
    """How a message sent through the API went.

    Attributes:
        status: The SIP final status: 2xx delivered to a device; 202 held for sleeping
            devices (RFC 3428 §7); anything else refused, with `reason`.
        reason: Its reason phrase.
        seq: Its place in the sender's history, when kept.
    """

    status: int
    reason: str
    seq: int | None = None


class MessageSender(Protocol):
    """Sends a MESSAGE on a user's behalf (the SIP node does: `transport.driver.SipNode`)."""

    async def send_message(
        self,
        sender: Outgoing,
        to: str,
        content_type: str,
        body: bytes,
        disposition: str | None = None,
    ) -> Sent: ...


class HistoryStore(Protocol):
    async def add_messages(self, messages: Sequence[NewMessage]) -> list[int]:
        """Store them; their sequence numbers, in order."""
        ...

    async def messages_after(
        self, account_id: str, after: int, now: datetime, limit: int, direction: str | None
    ) -> list[StoredMessage]:
        """The account's unexpired messages with seq > `after`, oldest first.

        Only those of `direction` (IN or OUT) when it is given.
        """
        ...

    async def raise_status(
        self,
        account_id: str,
        status: str,
        lower: Sequence[str],
        *,
        ref_key: str | None = None,
        seq: int | None = None,
    ) -> int:
        """Raise the status of the account's sent messages `ref_key` (or `seq`) finds.

        Only those whose status is in `lower` change; returns how many did.
        """
        ...

    async def delete_message(self, account_id: str, seq: int) -> bool: ...

    async def delete_messages_expired(self, now: datetime, limit: int) -> int: ...


class MessageHistory:
    def __init__(self, store: HistoryStore, keyring: Keyring, clock: Clock) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._refs: BlindIndex = keyring.blind_index("message.imdn")
        # MESSAGEs the proxy routed, written by the next `flush`.
        self._queue: list[_Item] = []
        self._dropped = 0

    def _ref(self, account_id: str, imdn_id: str) -> str:
        return self._refs.of(f"{account_id}\x00{imdn_id}")

    async def record(
        self,
        parties: Parties,
        sender_uri: str,
        recipient_uri: str,
        content_type: str,
        body: bytes,
        disposition_request: str | None = None,
    ) -> Recorded:
        """Keep a MESSAGE in the histories of `parties` now; the sequence numbers given.

        Nothing is kept of an "is typing" indication or of a body over MAX_KEPT_BYTES.
        A notification (IMDN or Acrobits') also raises the status of the message it is
        about in the history of the account it is addressed to (that message's sender).
        """
        item = _Item(parties, sender_uri, recipient_uri, content_type, body, disposition_request)
        # What came before it, queued by the proxy, is written first: the history keeps the
        # order in which messages came.
        queued, self._queue = self._queue, []
        recorded = await self._write([*queued, item])
        return recorded[-1]

    def keep(
        self,
        parties: Parties,
        sender_uri: str,
        recipient_uri: str,
        content_type: str,
        body: bytes,
    ) -> None:
        """`record`, written by the next `flush` (the proxy's path: no wait per MESSAGE).

        A busy node routes thousands of MESSAGEs a second: one transaction (and two key
        unwraps) each would fall behind, so the messages of one second are sealed and
        written together.
        """
        if len(self._queue) >= MAX_QUEUED:
            self._dropped += 1
            return
        self._queue.append(_Item(parties, sender_uri, recipient_uri, content_type, body, None))

    async def flush(self) -> int:
        """Write what `keep` queued; how many messages."""
        queue, self._queue = self._queue, []
        if self._dropped:
            logger.warning(
                "%d message(s) not kept in a history: the store fell behind", self._dropped
            )
            self._dropped = 0
        if not queue:
            return 0
        await self._write(queue)
        return len(queue)

    async def _write(self, items: list[_Item]) -> list[Recorded]:
        prepared = [_prepare(item) for item in items]
        accounts = {account_id for rows, _ in prepared for account_id, *_ in rows}
        if not accounts:
            return [Recorded() for _ in items]
        ciphers = await self._keyring.ciphers(sorted(account_subject(a) for a in accounts))
        now = self._clock.now()
        new: list[NewMessage] = []
        owners: list[int] = []  # the item each new row belongs to
        for index, (item, (rows, meta)) in enumerate(zip(items, prepared, strict=True)):
            for account_id, direction, peer, days in rows:
                cipher = ciphers.get(account_subject(account_id))
                if cipher is None:
                    continue  # the account is being erased
                document = {
                    "peer": peer,
                    "ct": item.content_type,
                    "body": base64.b64encode(item.body).decode(),
                    "imdn": meta.imdn_id,
                    "notify": list(meta.notify),
                    "dn": item.disposition_request,
                }
                sealed = cipher.seal(
                    CTX_MESSAGE, json.dumps(document, separators=(",", ":")).encode()
                )
                ref = (
                    self._ref(account_id, meta.imdn_id)
                    if meta.imdn_id and direction == OUT
                    else None
                )
                new.append(
                    NewMessage(
                        account_id,
                        direction,
                        ref,
                        "received" if direction == IN else "sent",
                        sealed,
                        now,
                        now + timedelta(days=days),
                    )
                )
                owners.append(index)
        seqs = await self._store.add_messages(new) if new else []
        found: list[dict[str, int]] = [{} for _ in items]
        for index, row, seq in zip(owners, new, seqs, strict=True):
            found[index][row.direction] = seq
        for item, (_, meta) in zip(items, prepared, strict=True):
            recipient = item.parties.recipient
            if meta.disposition is not None and recipient is not None:
                await self._dispose(recipient, meta.disposition, item.sender_uri)
        return [Recorded(f.get(IN), f.get(OUT)) for f in found]

    async def _dispose(self, account_id: str, disposition: Disposition, notifier: str) -> None:
        """The notification's addressee sent the message it names: raise its status.

        Only a message sent to the notifier changes: nobody marks another's messages read.
        """
        rank = STATUS_RANK[disposition.status]
        lower = [status for status, r in STATUS_RANK.items() if r < rank]
        # An IMDN Message-ID is the sender's own, and the keyed hash is the account's: a
        # notifier can only name messages of this account, sent with that id.
        ref = self._ref(account_id, disposition.message_id)
        changed = await self._store.raise_status(account_id, disposition.status, lower, ref_key=ref)
        if changed or not _SEQ.fullmatch(disposition.message_id):
            return
        # Acrobits names its messages by the service's own id (`sms_id`), the seq; any
        # notifier could name any seq, so the message must be one sent to them.
        seq = int(disposition.message_id)
        found = await self._store.messages_after(account_id, seq - 1, self._clock.now(), 1, OUT)
        if not found or found[0].seq != seq:
            return
        cipher = await self._keyring.cipher(account_subject(account_id))
        if json.loads(cipher.open(CTX_MESSAGE, found[0].sealed))["peer"] != notifier:
            return
        await self._store.raise_status(account_id, disposition.status, lower, seq=seq)

    async def after(
        self,
        account_id: str,
        cursor: int,
        limit: int = MAX_FETCH,
        direction: str | None = None,
    ) -> list[Entry]:
        """The account's messages after `cursor`, oldest first, at most `limit`.

        With `direction` (IN or OUT) only those: a client that keeps a cursor per direction
        (Acrobits' `last_id` and `last_sent_id`) pages each on its own.
        """
        # What this process queued is written first; another SIP worker's within a second.
        await self.flush()
        stored = await self._store.messages_after(
            account_id, cursor, self._clock.now(), max(1, min(limit, MAX_FETCH)), direction
        )
        if not stored:
            return []
        cipher = await self._keyring.cipher(account_subject(account_id))
        out = []
        for item in stored:
            document = json.loads(cipher.open(CTX_MESSAGE, item.sealed))
            out.append(
                Entry(
                    item.seq,
                    item.direction,
                    document["peer"],
                    document["ct"],
                    base64.b64decode(document["body"]),
                    item.at,
                    item.status,
                    document.get("imdn"),
                    document.get("dn"),
                )
            )
        return out

    async def export(self, account_id: str) -> list[dict[str, object]]:
        """The whole history of the account, opened, for its access request (P19)."""
        out: list[dict[str, object]] = []
        cursor = 0
        while page := await self.after(account_id, cursor):
            for entry in page:
                try:
                    body: dict[str, str] = {"body": entry.body.decode("utf-8")}
                except UnicodeDecodeError:
                    body = {"body_base64": base64.b64encode(entry.body).decode()}
                out.append(
                    {
                        "seq": entry.seq,
                        "direction": entry.direction,
                        "peer": entry.peer,
                        "content_type": entry.content_type,
                        **body,
                        "at": entry.at.isoformat(),
                        "status": entry.status,
                    }
                )
            cursor = page[-1].seq
        return out

    async def delete(self, account_id: str, seq: int) -> bool:
        """The user deletes one message of their history (every device's view of it)."""
        return await self._store.delete_message(account_id, seq)

    async def sweep(self) -> int:
        """Delete what outlived its account's retention; returns how many."""
        now = self._clock.now()
        deleted = 0
        while count := await self._store.delete_messages_expired(now, SWEEP_BATCH):
            deleted += count
            if count < SWEEP_BATCH:
                break
        return deleted


@dataclass(frozen=True, slots=True)
class _Item:
    parties: Parties
    sender_uri: str
    recipient_uri: str
    content_type: str
    body: bytes
    disposition_request: str | None


@dataclass(frozen=True, slots=True)
class _Meta:
    imdn_id: str | None = None
    notify: tuple[str, ...] = ()
    disposition: Disposition | None = None


def _prepare(item: _Item) -> tuple[list[tuple[str, str, str, int]], _Meta]:
    """The rows a MESSAGE makes, and what its body says.

    Rows are (account, direction, peer, retention days); what the body says is its IMDN id,
    the notifications it asks for, and the disposition it reports.
    """
    kind = base_type(item.content_type)
    if kind == IS_COMPOSING or len(item.body) > MAX_KEPT_BYTES:
        return [], _Meta()
    imdn_id: str | None = None
    notify: tuple[str, ...] = ()
    inner, content = kind, item.body
    if kind == CPIM:
        try:
            cpim = parse_cpim(item.body)
        except ValueError:
            cpim = None
        if cpim is not None:
            imdn_id, notify = cpim.message_id, cpim.notify
            inner, content = base_type(cpim.content_type), cpim.content
            if inner == IS_COMPOSING:
                return [], _Meta()
    disposition: Disposition | None = None
    try:
        if inner == IMDN_XML:
            disposition = parse_imdn(content)
        elif inner == ACRO_DISPOSITION:
            disposition = parse_acro_disposition(content)
    except ValueError:
        disposition = None  # kept as it came; it changes no status
    parties = item.parties
    rows: list[tuple[str, str, str, int]] = []
    if parties.recipient is not None:
        rows.append((parties.recipient, IN, item.sender_uri, parties.recipient_retention_days))
    if parties.sender is not None:
        rows.append((parties.sender, OUT, item.recipient_uri, parties.sender_retention_days))
    return rows, _Meta(imdn_id, notify, disposition)
