"""Time, as the one thing every layer receives instead of reading it.

The only module that reads the wall clock. Everything else takes a `Clock` (services) or a
`now` argument (the sans-IO core), so tests can move time by hand and never sleep.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for deadlines and rate limits."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
