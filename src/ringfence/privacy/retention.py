"""The retention sweeper (P15): what the privacy records keep for a legal duty, then no longer.

Account data goes with the account (`erasure`). The privacy records themselves are kept for
a legal duty after their subject's account has gone, and then deleted, by category:

============================  =========================================  ==========
category                      counted from                               kept
============================  =========================================  ==========
disclosure register           the request's arrival                      6 years
legal holds                   the hold's release (never while in force)  6 years
destruction record            the destruction                            6 years
data-subject requests         the request's closing (never while open)   3 years
============================  =========================================  ==========

The periods are the defaults of `RetentionRules`; an operator whose law asks for other
periods sets them in `[privacy]` (the settings name each). Each deletion is counted and
logged by category, never by content, and recorded in the destruction record (one entry per
subject and sweep: when, whose, which categories, why) — except the destruction record's own
entries, whose deletion would otherwise leave a new entry behind for ever, and disclosure
entries that name no subject. A sweep runs at every housekeeping round; time is the clock's,
so tests drive it with a fake one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.privacy.disclosures import DISCLOSURE_REGISTER
from ringfence.privacy.erasure import DESTRUCTIONS, LEGAL_HOLDS, Destruction
from ringfence.privacy.requests import SUBJECT_REQUESTS


class RetentionStore(Protocol):
    """The deletions return the subject (an account id, or None) of each record deleted."""

    async def delete_disclosures_received_before(self, cutoff: datetime) -> list[str | None]: ...

    async def delete_holds_released_before(self, cutoff: datetime) -> list[str | None]: ...

    async def delete_destructions_before(self, cutoff: datetime) -> int: ...

    async def delete_requests_closed_before(self, cutoff: datetime) -> list[str | None]: ...

    async def add_destruction(self, destruction: Destruction) -> None: ...


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """Days each privacy record is kept, counted as the module docstring says."""

    disclosures_days: int = DISCLOSURE_REGISTER.kept_after_closure_days
    released_holds_days: int = LEGAL_HOLDS.kept_after_closure_days
    destructions_days: int = DESTRUCTIONS.kept_after_closure_days
    closed_requests_days: int = SUBJECT_REQUESTS.kept_after_closure_days

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 day")


@dataclass(frozen=True, slots=True)
class Swept:
    """How many records of each category one sweep deleted."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class RetentionSweeper:
    def __init__(
        self, store: RetentionStore, clock: Clock, rules: RetentionRules | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._rules = rules or RetentionRules()

    async def sweep(self) -> Swept:
        now = self._clock.now()

        def cutoff(days: int) -> datetime:
            return now - timedelta(days=days)

        store, rules = self._store, self._rules
        # Their own entries first: a destruction recorded by this sweep is never swept by it.
        destroyed = await store.delete_destructions_before(cutoff(rules.destructions_days))
        deleted = {
            DISCLOSURE_REGISTER.name: await store.delete_disclosures_received_before(
                cutoff(rules.disclosures_days)
            ),
            LEGAL_HOLDS.name: await store.delete_holds_released_before(
                cutoff(rules.released_holds_days)
            ),
            SUBJECT_REQUESTS.name: await store.delete_requests_closed_before(
                cutoff(rules.closed_requests_days)
            ),
        }
        by_subject: dict[str, list[str]] = {}
        for category, subjects in deleted.items():
            for subject in subjects:
                if subject is not None and category not in by_subject.setdefault(subject, []):
                    by_subject[subject].append(category)
        for subject, categories in by_subject.items():
            await store.add_destruction(
                Destruction(
                    str(uuid.uuid4()),
                    now,
                    subject,
                    tuple(categories),
                    "retention period ended (P15)",
                )
            )
        counts = {category: len(subjects) for category, subjects in deleted.items()}
        return Swept({**counts, DESTRUCTIONS.name: destroyed})
