"""Periodic background jobs, each isolated: one failing job is logged and retried
with backoff while the others keep running. `smilingsteps worker` runs them all;
in development the app runs them itself (`JobRunner`), so no worker is needed."""

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


async def wait_or_stop(stop: asyncio.Event, seconds: float, *, wake: asyncio.Event | None = None) -> None:
    """Wait `seconds`, or less if `stop` (or `wake`, which whoever sets `stop` sets too) is set meanwhile."""
    if stop.is_set():
        return
    try:
        async with asyncio.timeout(seconds):
            await (wake or stop).wait()
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


PassHook = Callable[[], Awaitable[None]]


async def run_periodically(
    job: PeriodicJob,
    stop: asyncio.Event,
    *,
    wake: asyncio.Event | None = None,
    before_pass: PassHook | None = None,
    after_pass: PassHook | None = None,
) -> None:
    """Run `job` every `interval` until `stop`; after failures, back off (with jitter) up to the cap.

    Setting `wake` starts the next pass at once.
    """
    failures = 0
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        if before_pass is not None:
            await before_pass()
        succeeded = await run_pass(job, stop)
        if after_pass is not None:
            await after_pass()
        if succeeded:
            failures = 0
            delay = job.interval
        else:
            delay = max(
                job.interval,
                backoff_delay(failures, base=max(job.interval, 1.0), cap=job.max_failure_delay),
            )
            failures += 1
        await wait_or_stop(stop, delay, wake=wake)


async def run_jobs(jobs: Sequence[PeriodicJob], stop: asyncio.Event) -> None:
    """Run every job concurrently until `stop` is set; return once each finished its pass."""
    await asyncio.gather(*(run_periodically(job, stop) for job in jobs))


async def run_jobs_once(jobs: Sequence[PeriodicJob], stop: asyncio.Event) -> list[str]:
    """One pass of each job, one after the other; the names of those that failed."""
    return [job.name for job in jobs if not await run_pass(job, stop)]


class JobRunner:
    """Every job on this event loop, each on its own period: what the development server runs.

    `run_all_now` is `smilingsteps worker --once` for a running app: it starts a pass of
    every job at once and returns when each has finished one that began after the call.
    """

    def __init__(self, jobs: Sequence[PeriodicJob], *, grace_s: float) -> None:
        self.jobs = list(jobs)
        self.grace_s = grace_s
        self._stop = asyncio.Event()
        self._wake = {job.name: asyncio.Event() for job in self.jobs}
        self._begun = dict.fromkeys(self._wake, 0)
        self._finished = dict.fromkeys(self._wake, 0)
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[Any] | None = None

    def start(self, tasks: TaskGroup) -> None:
        log.info("jobs_started", jobs=[job.name for job in self.jobs], in_process=True)
        self._task = tasks.spawn(self._run_all(), name="periodic-jobs")

    async def _run_all(self) -> None:
        await asyncio.gather(*(self._run(job) for job in self.jobs))

    async def _run(self, job: PeriodicJob) -> None:
        async def begun() -> None:
            self._begun[job.name] += 1

        async def finished() -> None:
            async with self._progress:
                self._finished[job.name] += 1
                self._progress.notify_all()

        await run_periodically(job, self._stop, wake=self._wake[job.name], before_pass=begun, after_pass=finished)

    def wake(self, name: str) -> None:
        """Start a pass of the job `name` now rather than at its next period (no effect if it is unknown)."""
        wake = self._wake.get(name)
        if wake is not None:
            wake.set()

    async def run_all_now(self) -> None:
        """Start a pass of every job now; return when each finished a pass begun after this call."""
        targets = {name: begun + 1 for name, begun in self._begun.items()}
        for wake in self._wake.values():
            wake.set()
        async with self._progress:
            await self._progress.wait_for(
                lambda: self._stop.is_set() or all(self._finished[name] >= n for name, n in targets.items())
            )

    async def stop(self) -> None:
        """Let the passes in flight finish (bounded by `grace_s`), then return."""
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        async with self._progress:
            self._progress.notify_all()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.grace_s)


# ---- the worker process ---------------------------------------------------

EXIT_FAILED = 1
EXIT_FORCED = 130
JobsFactory = Callable[[Settings, Database], Sequence[PeriodicJob]]  # the registry's jobs for the worker


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
