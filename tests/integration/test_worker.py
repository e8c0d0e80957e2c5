"""`smilingsteps worker` as an operator runs it: `--once` sends what is due and
exits, SIGTERM lets the message in flight finish before a clean exit, and a
failing job is logged without stopping the others."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from smilingsteps.notifications.models import OutboxStatus
from smilingsteps.notifications.service import queue_email
from smilingsteps.platform.db import Database
from smilingsteps.platform.jobs import PeriodicJob, run_jobs, run_jobs_once
from smilingsteps.platform.logging import captured_events
from tests.conftest import TEST_SECRET, SettingsFactory
from tests.support.outbox import one_row
from tests.support.processes import clean_env, cli_command, run_cli, wait_for_line
from tests.support.smtp import SmtpServer


@pytest.fixture
async def db(make_settings: SettingsFactory, outbox_url: str) -> AsyncIterator[Database]:
    database = Database(make_settings(DATABASE_URL=outbox_url))
    assert await database.connect_with_retry(max_retries=0)
    yield database
    await database.dispose()


def worker_env(database_url: str, smtp: SmtpServer) -> dict[str, str]:
    return {
        "APP_ENV": "test",
        "SECRET_KEY": TEST_SECRET,
        "LOG_FORMAT": "json",
        "DATABASE_URL": database_url,
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_CA_FILE": str(smtp.ca_file),
        "SMTP_USER": smtp.username,
        "SMTP_PASSWORD": smtp.password,
        "DB_MAX_RETRIES": "0",
    }


async def queue_now(db: Database, to: str) -> None:
    async with db.session() as session:
        await queue_email(
            session, to=to, template="password_changed", context={"full_name": "Imani"}, now=datetime.now(UTC)
        )


def events(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_worker_once_sends_what_is_due_and_exits(
    tmp_path: Path, outbox_url: str, db: Database, smtp_server: SmtpServer
) -> None:
    to = f"once-{uuid.uuid4().hex[:12]}@example.com"
    await queue_now(db, to)
    env = worker_env(outbox_url, smtp_server)

    result = await asyncio.to_thread(run_cli, tmp_path, "worker", "--once", **env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert len(smtp_server.messages_to(to)) == 1
    logged = events(result.stdout)
    names = [event["event"] for event in logged]
    assert names.index("worker_started") < names.index("email_sent") < names.index("worker_stopped")
    assert logged[names.index("worker_started")]["jobs"] == [
        "email-outbox",
        "email-outbox-retention",
        "booking-hold-expiry",
        "booking-reminders",
        "payment-reconciliation",
    ]
    assert to not in result.stdout + result.stderr
    assert (await one_row(db, to)).status == OutboxStatus.SENT

    again = await asyncio.to_thread(run_cli, tmp_path, "worker", "--once", **env)
    assert again.returncode == 0, again.stderr
    assert len(smtp_server.messages_to(to)) == 1


async def test_worker_finishes_the_message_in_flight_on_sigterm_then_exits_cleanly(
    tmp_path: Path, outbox_url: str, db: Database, smtp_server: SmtpServer
) -> None:
    to = f"inflight-{uuid.uuid4().hex[:12]}@example.com"
    hold = smtp_server.hold(to)
    await queue_now(db, to)
    process = subprocess.Popen(
        cli_command("worker"),
        env=clean_env(tmp_path, **worker_env(outbox_url, smtp_server)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        assert await asyncio.to_thread(hold.arrived.wait, 30), "the worker never sent the message"
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(wait_for_line, process, "worker_stop_requested", seen)
        hold.release.set()
        assert await asyncio.to_thread(process.wait, 30) == 0
        assert process.stdout is not None
        seen.append(process.stdout.read())
    finally:
        hold.release.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    output = "".join(seen)
    assert output.index("worker_stop_requested") < output.index("email_sent") < output.index("worker_stopped")
    assert len(smtp_server.messages_to(to)) == 1
    assert (await one_row(db, to)).status == OutboxStatus.SENT


async def test_a_failing_job_is_logged_and_the_others_keep_running() -> None:
    stop = asyncio.Event()
    runs = 0

    async def broken(_: asyncio.Event) -> None:
        raise RuntimeError("boom")

    async def counting(_: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()

    jobs = [PeriodicJob("broken", 0.0, broken), PeriodicJob("counting", 0.0, counting)]
    with captured_events() as logged:
        async with asyncio.timeout(30):  # a guard against a hang, not a wait
            await run_jobs(jobs, stop)
        assert await run_jobs_once(jobs, asyncio.Event()) == ["broken"]
    assert runs == 4
    failures = [event for event in logged if event["event"] == "job_failed"]
    assert len(failures) >= 2 and {event["job"] for event in failures} == {"broken"}
    assert failures[0]["level"] == "error" and "boom" in failures[0]["exception"]
