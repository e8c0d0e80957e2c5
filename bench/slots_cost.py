"""Slot computation: ``compute_slots`` for a 60-day window, a therapist with a year of bookings.

Target (from the issue): slots for 60 days in under 20 ms for a therapist with a year of bookings.

The therapist works Mon-Fri 08:00-18:00 in Africa/Nairobi, 50-minute sessions plus a 10-minute
buffer, 12 h notice, 60-day horizon: 2,610 grid slots in 2027, of which 2,000 (a seeded random
sample) are booked, passed unsorted as the services would load them. ``now`` is at the start of
the year and at mid-year; the window is ``[now, now + 60 days)``.

Each case runs against a baseline in the same process, interleaved run by run (the machine is
shared and noisy): the same computation with no bookings. Reported: median, p95, min and max wall
time per call over N runs (after a warm-up), the ratio of medians, and the slot counts. A side
measurement times one ``is_bookable`` check (the booking path) against the same year.

Usage (from the repository root)::

    .tools/bin/uv run --frozen python bench/slots_cost.py              # 200 runs, a few seconds
    .tools/bin/uv run --frozen python bench/slots_cost.py --runs 1000

Results: ``bench/results/slots_cost.json``.

smilingsteps ships no ``py.typed`` marker, so its imports carry ``type: ignore[import-untyped, unused-ignore]``.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import harness
from smilingsteps.therapists import slots  # type: ignore[import-untyped, unused-ignore]

DEFAULT_OUT = harness.RESULTS_DIR / "slots_cost.json"
TARGET_MS = 20.0
BOOKINGS = 2_000
SEED = 7

THERAPIST_TZ = ZoneInfo("Africa/Nairobi")
RULES = [slots.WeeklyRule(weekday, clock(8), clock(18)) for weekday in range(5)]
POLICY = slots.SlotPolicy(
    session_minutes=50, buffer_minutes=10, min_notice=timedelta(hours=12), horizon=timedelta(days=60)
)
NOWS = {"start-of-year": datetime(2027, 1, 1, tzinfo=UTC), "mid-year": datetime(2027, 7, 1, tzinfo=UTC)}


def year_of_bookings() -> list[Any]:
    """2,000 one-hour bookings (session + buffer) on the 2027 grid, in random order."""
    days = (date(2027, 1, 1) + timedelta(days=offset) for offset in range(365))
    grid = [
        datetime.combine(day, clock(hour), tzinfo=THERAPIST_TZ).astimezone(UTC)
        for day in days
        if day.weekday() < 5
        for hour in range(8, 18)
    ]
    chosen = random.Random(SEED).sample(grid, BOOKINGS)  # sample order is already shuffled
    return [slots.Busy(start, start + POLICY.step) for start in chosen]


def slots_for(now: datetime, busy: list[Any]) -> Callable[[], list[datetime]]:
    def run() -> list[datetime]:
        found: list[datetime] = slots.compute_slots(
            tz=THERAPIST_TZ,
            rules=RULES,
            exceptions=[],
            busy=busy,
            policy=POLICY,
            window_start=now,
            window_end=now + slots.MAX_WINDOW,
            now=now,
        )
        return found

    return run


def wall_ms(func: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        started = time.perf_counter_ns()
        func()
        return (time.perf_counter_ns() - started) / 1e6

    return timed


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples), 4),
        "p95_ms": round(statistics.quantiles(samples, n=20)[18], 4),
        "min_ms": round(min(samples), 4),
        "max_ms": round(max(samples), 4),
    }


def main() -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    busy = year_of_bookings()
    cases: dict[str, Callable[[], object]] = {}
    for label, now in NOWS.items():
        cases[f"{label}/bookings"] = slots_for(now, busy)
        cases[f"{label}/baseline-no-bookings"] = slots_for(now, [])
    first_free = slots_for(NOWS["mid-year"], busy)()[0]
    cases["is_bookable/bookings"] = lambda: slots.is_bookable(
        first_free, tz=THERAPIST_TZ, rules=RULES, exceptions=[], busy=busy, policy=POLICY, now=NOWS["mid-year"]
    )

    samples = harness.interleaved({name: wall_ms(case) for name, case in cases.items()}, args.runs, args.warmup)
    results: dict[str, Any] = {}
    for label, now in NOWS.items():
        with_bookings = summary(samples[f"{label}/bookings"])
        baseline = summary(samples[f"{label}/baseline-no-bookings"])
        results[label] = {
            "now": now.isoformat(),
            "slots_with_bookings": len(slots_for(now, busy)()),
            "slots_without_bookings": len(slots_for(now, [])()),
            "bookings": with_bookings,
            "baseline_no_bookings": baseline,
            "ratio_of_medians": round(with_bookings["median_ms"] / baseline["median_ms"], 2),
            "target_met": with_bookings["p95_ms"] < TARGET_MS,
        }
    results["is_bookable"] = summary(samples["is_bookable/bookings"])

    report = {
        "benchmark": "compute_slots for 60 days, Mon-Fri 08:00-18:00, 50 + 10 min, 2,000 bookings in a year",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "target_ms": TARGET_MS,
        "runs": args.runs,
        "warmup": args.warmup,
        "bookings": len(busy),
        "machine": {
            "cpu_model_proc_cpuinfo": harness.cpu_model_proc_cpuinfo(),
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
        },
        "source": {
            "commit": harness.git("rev-parse", "--short", "HEAD") or "unknown",
            "module": slots.__file__,
            "module_sha256": harness.sha256_prefix(Path(slots.__file__)),
        },
        "results": results,
    }
    print(json.dumps(results, indent=2))
    harness.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
