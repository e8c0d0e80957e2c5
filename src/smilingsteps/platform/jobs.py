"""Periodic background jobs, each isolated: one failing job is logged and retried
with backoff while the others keep running. `smilingsteps worker` runs them all;
the app runs a few in-process in development."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from smilingsteps import __version__
from smilingsteps.config import Settings
from smilingsteps.platform.db import Database, backoff_delay, is_unavailable
from smilingsteps.platform.logging import log_unhandled_loop_exception
from smilingsteps.platform.tasks import TaskGroup

log = structlog.get_logger("smilingsteps.jobs")

# One pass of a job. It should return soon after `stop` is set (finishing the
# item in flight), so shutdown is graceful.
JobPass = Callable[[asyncio.Event], Awaitable[object]]


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval: float  # seconds between the end of one pass and the start of the next
    run: JobPass
    max_failure_delay: float = 300.0


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    if stop.is_set():
        return
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


async def run_pass(job: PeriodicJob, stop: asyncio.Event) -> bool:
    """Run one pass; log (never raise) its failure. True when it succeeded."""
    try:
        await job.run(stop)
    except Exception as exc:
        if is_unavailable(exc):
            # An outage, not a bug: the database monitor logs it; this job just waits.
            log.warning("job_waiting_for_database", job=job.name, error=type(exc).__name__)
        else:
            log.error("job_failed", job=job.name, error=type(exc).__name__, exc_info=exc)
        return False
    return True


async def run_periodically(job: PeriodicJob, stop: asyncio.Event) -> None:
    """Run `job` every `interval` until `stop`; after failures, back off (with jitter) up to the cap."""
    failures = 0
    while not stop.is_set():
        if await run_pass(job, stop):
            failures = 0
            delay = job.interval
        else:
            delay = max(
                job.interval,
                backoff_delay(failures, base=max(job.interval, 1.0), cap=job.max_failure_delay),
            )
            failures += 1
        await wait_or_stop(stop, delay)


async def run_jobs(jobs: Sequence[PeriodicJob], stop: asyncio.Event) -> None:
    """Run every job concurrently until `stop` is set; return once each finished its pass."""
    await asyncio.gather(*(run_periodically(job, stop) for job in jobs))


async def run_jobs_once(jobs: Sequence[PeriodicJob], stop: asyncio.Event) -> list[str]:
    """One pass of each job, one after the other; the names of those that failed."""
    return [job.name for job in jobs if not await run_pass(job, stop)]


# ---- the worker process ---------------------------------------------------

EXIT_FAILED = 1
EXIT_FORCED = 130
JobsFactory = Callable[[Settings, Database], Sequence[PeriodicJob]]


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, main: asyncio.Task[Any]
) -> list[signal.Signals]:
    """First SIGTERM/SIGINT: finish what is in flight, then exit 0. A second one: stop at once."""

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("worker_forced_stop", signal=sig.name)
            main.cancel()
            return
        log.info("worker_stop_requested", signal=sig.name)
        stop.set()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            continue
        installed.append(sig)
    return installed


async def run_worker(settings: Settings, build_jobs: JobsFactory, *, once: bool = False) -> int:
    """`smilingsteps worker`: run every job until SIGTERM/SIGINT (or one pass each with `once`)."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log_unhandled_loop_exception(log.error))
    main = asyncio.current_task()
    assert main is not None
    stop = asyncio.Event()
    installed = _install_signal_handlers(loop, stop, main)
    db = Database(settings)
    background = TaskGroup()
    code = 0
    try:
        jobs = build_jobs(settings, db)
        log.info("worker_started", jobs=[job.name for job in jobs], once=once, database=db.backend, version=__version__)
        await db.connect_with_retry()
        background.spawn(db.monitor(), name="database-monitor")
        if once:
            failed = await run_jobs_once(jobs, stop)
            code = EXIT_FAILED if failed else 0
        else:
            await run_jobs(jobs, stop)
    except asyncio.CancelledError:
        code = EXIT_FORCED
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await background.cancel_all()
        await db.dispose()
        log.info("worker_stopped", exit_code=code)
    return code
