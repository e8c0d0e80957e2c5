"""Wall-clock time for rules that expire things (tokens, sessions, lockouts, holds).

Everything reads the time through a `Clock` (seconds since the epoch) so tests
move time by hand instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]


def system_clock() -> float:
    return time.time()


def utc_from(clock: Clock) -> datetime:
    """The clock's current time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock(), UTC)
