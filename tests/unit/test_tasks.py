"""Background failures are logged, never silently lost."""

from __future__ import annotations

import asyncio

from smilingsteps.platform.logging import captured_events, log_unhandled_loop_exception
from smilingsteps.platform.tasks import TaskGroup


async def test_failed_background_task_is_logged_with_its_trace() -> None:
    group = TaskGroup()

    async def broken() -> None:
        raise LookupError("reminder lookup failed")

    with captured_events() as events:
        task = group.spawn(broken(), name="reminders")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # done-callbacks run on the next loop turn
    failure = next(event for event in events if event["event"] == "background_task_failed")
    assert failure["task"] == "reminders" and failure["level"] == "error"
    assert "LookupError: reminder lookup failed" in failure["exception"]
    assert len(group) == 0


async def test_cancel_all_stops_running_tasks_quietly() -> None:
    group = TaskGroup()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    group.spawn(forever(), name="monitor")
    await started.wait()
    with captured_events() as events:
        await group.cancel_all()
    assert len(group) == 0 and events == []


def test_loop_exception_handler_logs_instead_of_printing() -> None:
    calls: list[dict[str, object]] = []

    def logger(event: str, **fields: object) -> None:
        calls.append({"event": event, **fields})

    handler = log_unhandled_loop_exception(logger)
    error = RuntimeError("future exception was never retrieved")
    handler(None, {"message": "Future exception was never retrieved", "exception": error})
    assert calls == [
        {"event": "asyncio_unhandled_error", "message": "Future exception was never retrieved", "exc_info": error}
    ]
