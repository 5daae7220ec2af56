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

Each deletion is counted and logged by category, never by content. A sweep runs at every
housekeeping round; time is the clock's, so tests drive it with a fake one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.privacy.disclosures import DISCLOSURE_REGISTER
from ringfence.privacy.erasure import DESTRUCTIONS, LEGAL_HOLDS
from ringfence.privacy.requests import SUBJECT_REQUESTS


class RetentionStore(Protocol):
    async def delete_disclosures_received_before(self, cutoff: datetime) -> int: ...

    async def delete_holds_released_before(self, cutoff: datetime) -> int: ...

    async def delete_destructions_before(self, cutoff: datetime) -> int: ...

    async def delete_requests_closed_before(self, cutoff: datetime) -> int: ...


@dataclass(frozen=True, slots=True)
class Swept:
    """How many records of each category one sweep deleted."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class RetentionSweeper:
    def __init__(self, store: RetentionStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def sweep(self) -> Swept:
        now = self._clock.now()

        def cutoff(days: int) -> datetime:
            return now - timedelta(days=days)

        store = self._store
        return Swept(
            {
                DISCLOSURE_REGISTER.name: await store.delete_disclosures_received_before(
                    cutoff(DISCLOSURE_REGISTER.kept_after_closure_days)
                ),
                LEGAL_HOLDS.name: await store.delete_holds_released_before(
                    cutoff(LEGAL_HOLDS.kept_after_closure_days)
                ),
                DESTRUCTIONS.name: await store.delete_destructions_before(
                    cutoff(DESTRUCTIONS.kept_after_closure_days)
                ),
                SUBJECT_REQUESTS.name: await store.delete_requests_closed_before(
                    cutoff(SUBJECT_REQUESTS.kept_after_closure_days)
                ),
            }
        )
