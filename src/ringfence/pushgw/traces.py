"""Per-call push traces: "why did I miss this call", answered for 7 days.

When a call waits for sleeping devices (RFC 8599, or push instances), each step is noted
with its time from the call's arrival: the devices pushed, what each push service answered,
each device back, the call forwarded, and how it ended. The trace is written once, when the
call ends, sealed with the callee account's key (it says when the user was called); the
account and the admin read it; the sweeper deletes it after TRACE_DAYS. It names no caller:
the account's own call history is the app's.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.crypto import Keyring
from ringfence.provisioning.service import account_subject

logger = logging.getLogger(__name__)

TRACE_DAYS = 7
CTX_TRACE = "push.trace"
#: Traces returned per request, newest first.
MAX_LISTED = 200
SWEEP_BATCH = 500
#: Traces waiting for a flush, at most: past it (the store is down) new ones are dropped,
#: so a stalled database cannot grow the process without bound.
MAX_PENDING = 20_000
#: Traces sealed between two waits for keys (see `_write`).
SEAL_SLICE = 16


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One step: milliseconds after the call arrived, what, and details.

    Details carry no personal data but a token's fingerprint.
    """

    at_ms: int
    step: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CallTrace:
    id: str
    started_at: datetime
    outcome: str
    steps: tuple[TraceStep, ...]


@dataclass(frozen=True, slots=True)
class StoredTrace:
    id: str
    account_id: str
    started_at: datetime
    expires_at: datetime
    sealed: bytes


class TraceStore(Protocol):
    async def add_traces(self, traces: Sequence[StoredTrace]) -> None: ...

    async def traces_of(self, account_id: str, now: datetime, limit: int) -> list[StoredTrace]:
        """The account's unexpired traces, newest first."""
        ...

    async def delete_traces_expired(self, now: datetime, limit: int) -> int: ...


class PushTraces:
    def __init__(self, store: TraceStore, keyring: Keyring, clock: Clock) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        # (account id, started at, body) of the calls ended since the last flush.
        self._pending: list[tuple[str, datetime, bytes]] = []
        self._dropped = 0

    def record(
        self, account_id: str, elapsed_s: float, outcome: str, steps: Sequence[TraceStep]
    ) -> None:
        """Keep a call's trace; it came `elapsed_s` seconds ago. Written by `flush`.

        Calls end by the hundred a second on a busy node: one transaction (and one key
        unwrap) per call would cost the event loop more than routing the calls does, so the
        traces of one second are sealed and written together.
        """
        started_at = self._clock.now() - timedelta(seconds=elapsed_s)
        body = json.dumps(
            {"outcome": outcome, "steps": [[s.at_ms, s.step, s.detail] for s in steps]},
            separators=(",", ":"),
        ).encode()
        if len(self._pending) >= MAX_PENDING:
            self._dropped += 1
            return
        self._pending.append((account_id, started_at, body))

    async def flush(self) -> int:
        """Seal and write the traces recorded since the last flush; returns how many."""
        pending, self._pending = self._pending, []
        if self._dropped:
            logger.warning("%d push trace(s) dropped: the store fell behind", self._dropped)
            self._dropped = 0
        if not pending:
            return 0
        try:
            return await self._write(pending)
        except Exception:
            # Kept for the next round (within MAX_PENDING): a database that failed once
            # does not lose a second of traces.
            self._pending[:0] = pending[: max(0, MAX_PENDING - len(self._pending))]
            raise

    async def _write(self, pending: list[tuple[str, datetime, bytes]]) -> int:
        traces = []
        # In slices: each awaits its keys, so the calls arriving meanwhile are routed between
        # slices instead of waiting for a second's worth of unwrapping and sealing.
        for first in range(0, len(pending), SEAL_SLICE):
            part = pending[first : first + SEAL_SLICE]
            subjects = sorted({account_subject(account_id) for account_id, _, _ in part})
            ciphers = await self._keyring.ciphers(subjects)
            for account_id, started_at, body in part:
                cipher = ciphers.get(account_subject(account_id))
                if cipher is None:
                    continue  # the account was erased meanwhile
                traces.append(
                    StoredTrace(
                        str(uuid.uuid4()),
                        account_id,
                        started_at,
                        started_at + timedelta(days=TRACE_DAYS),
                        cipher.seal(CTX_TRACE, body),
                    )
                )
        await self._store.add_traces(traces)
        return len(traces)

    async def of(self, account_id: str) -> list[CallTrace]:
        """The account's traces of the last TRACE_DAYS, newest first.

        Those this process recorded are written first; another SIP worker's come with its
        next flush (within a second).
        """
        await self.flush()
        stored = await self._store.traces_of(account_id, self._clock.now(), MAX_LISTED)
        if not stored:
            return []
        cipher = await self._keyring.cipher(account_subject(account_id))
        out = []
        for item in stored:
            body = json.loads(cipher.open(CTX_TRACE, item.sealed))
            steps = tuple(TraceStep(at, step, detail) for at, step, detail in body["steps"])
            out.append(CallTrace(item.id, item.started_at, body["outcome"], steps))
        return out

    async def sweep(self) -> int:
        now = self._clock.now()
        deleted = 0
        while count := await self._store.delete_traces_expired(now, SWEEP_BATCH):
            deleted += count
            if count < SWEEP_BATCH:
                break
        return deleted
