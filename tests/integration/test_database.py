"""Database resilience: the request owns its transaction, outages give 503 and
heal by themselves, transient failures are retried, start-up backs off."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform.db import PING_IF_IDLE_SECONDS, Database, backoff_delay, is_transient, is_unavailable
from smilingsteps.platform.errors import DatabaseUnavailableError
from smilingsteps.platform.logging import captured_events
from smilingsteps.platform.runtime import Runtime
from tests.conftest import SettingsFactory, running
from tests.support.postgres import free_port
from tests.support.routes import add_test_routes
from tests.support.tcp_proxy import TcpProxy

OUTAGE_BOUND_S = 10  # connect timeout + pool timeout below, with room: a guard against hangs, not a speed test


def runtime(app: FastAPI) -> Runtime:
    value = app.state.runtime
    assert isinstance(value, Runtime)
    return value


@pytest.fixture
async def table(settings: Settings) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    db = Database(settings)
    async with db.engine.begin() as connection:
        key = "SERIAL PRIMARY KEY" if db.backend == "postgresql" else "INTEGER PRIMARY KEY"
        await connection.execute(text(f"CREATE TABLE {name} (id {key}, value VARCHAR(50) NOT NULL)"))
    yield name
    async with db.engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE {name}"))
    await db.dispose()


async def stored(settings: Settings, table: str) -> list[str]:
    db = Database(settings)
    try:
        async with db.engine.connect() as connection:
            return list((await connection.execute(text(f"SELECT value FROM {table} ORDER BY id"))).scalars())
    finally:
        await db.dispose()


async def test_request_commits_on_success_and_rolls_back_on_error(settings: Settings, table: str) -> None:
    app = add_test_routes(create_app(settings), write_table=table)
    async with running(app) as client:
        assert (await client.post("/api/v1/_test/write", params={"value": "kept"})).status_code == 200
        failed = await client.post("/api/v1/_test/write", params={"value": "lost", "fail": "true"})
        assert failed.status_code == 500
    assert await stored(settings, table) == ["kept"]


async def test_health_reports_database_state(client: httpx.AsyncClient, backend: str) -> None:
    body = (await client.get("/health")).json()
    assert body["status"] == "ok" and body["environment"] == "test" and body["version"]
    assert body["uptime_seconds"] >= 0 and body["memory"]["rss_bytes"] > 10_000_000
    assert body["database"]["status"] == "up" and body["database"]["backend"] == backend
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["status"] == "up"
    assert ready.json()["checks"]["database"]["latency_ms"] >= 0


@pytest.fixture
async def proxied(make_settings: SettingsFactory, postgres_database: str) -> AsyncIterator[tuple[TcpProxy, FastAPI]]:
    """The app talking to the test database through a proxy the test can cut or stall."""
    target = urlsplit(postgres_database)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    url = postgres_database.replace(f"@{target.netloc.split('@')[1]}", f"@127.0.0.1:{proxy.port}")
    settings = make_settings(
        DATABASE_URL=url,
        DB_CONNECT_TIMEOUT=2,
        DB_POOL_TIMEOUT=2,
        DB_STATEMENT_TIMEOUT=2,
        DB_RETRY_BASE_DELAY=0.05,
        DB_RETRY_MAX_DELAY=0.2,
    )
    yield proxy, add_test_routes(create_app(settings))
    await proxy.cut()


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/database-unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert "x-request-id" in response.headers and "content-security-policy" in response.headers


@pytest.mark.parametrize("failure", ["refused", "stalled"])
async def test_database_outage_gives_503_then_recovers_without_restart(
    proxied: tuple[TcpProxy, FastAPI], failure: str
) -> None:
    proxy, app = proxied
    async with running(app) as client:
        assert (await client.get("/api/v1/_test/db")).json() == {"value": 1}

        if failure == "refused":
            await proxy.cut()
        else:
            proxy.stall()
        async with asyncio.timeout(OUTAGE_BOUND_S):
            first = await client.get("/api/v1/_test/db")
            second = await client.get("/api/v1/_test/db")
            live = await client.get("/health")
            ready = await client.get("/health/ready")
        assert_database_unavailable(first)
        assert_database_unavailable(second)
        assert live.status_code == 200 and live.json()["database"]["status"] == "down"
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["status"] == "down"
        assert "retry-after" in ready.headers

        await proxy.cut()
        await proxy.start()  # the same port, forwarding again: the database is back
        async with asyncio.timeout(OUTAGE_BOUND_S):
            await runtime(app).db.wait_available()  # the background monitor reconnects on its own
        assert (await client.get("/api/v1/_test/db")).json() == {"value": 1}
        assert (await client.get("/health/ready")).status_code == 200


async def test_app_starts_while_database_is_down_and_answers_503(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none", DB_CONNECT_TIMEOUT=1
    )
    app = add_test_routes(create_app(settings))
    async with running(app) as client:
        assert (await client.get("/health")).status_code == 200
        response = await client.get("/api/v1/_test/db")
        assert response.status_code == 503 and response.json()["type"] == "/problems/database-unavailable"
        assert (await client.get("/health/ready")).status_code == 503


async def test_connect_retries_with_backoff_and_logs_each_attempt(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none",
        DB_MAX_RETRIES=4,
        DB_RETRY_BASE_DELAY=0.5,
        DB_RETRY_MAX_DELAY=3,
        DB_CONNECT_TIMEOUT=1,
    )
    db = Database(settings)
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    db._sleep = record
    with captured_events() as events:
        assert await db.connect_with_retry() is False
    await db.dispose()
    assert len(delays) == 4
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(3, 0.5 * 2**attempt)
    attempts = [event for event in events if event["event"] == "database_connect_failed"]
    assert [event["attempt"] for event in attempts] == [1, 2, 3, 4, 5]
    assert all(event["level"] == "warning" for event in attempts)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    import random

    rng = random.Random(7)
    samples = [[backoff_delay(attempt, base=0.5, cap=8, rng=rng) for _ in range(200)] for attempt in range(8)]
    for attempt, values in enumerate(samples):
        assert max(values) <= min(8, 0.5 * 2**attempt)
        assert len({round(v, 6) for v in values}) > 150  # jitter spreads clients apart
    assert max(samples[7]) > 6  # capped at 8, not 64


@pytest.fixture
async def postgres_db(make_settings: SettingsFactory, postgres_database: str) -> AsyncIterator[Database]:
    db = Database(make_settings(DATABASE_URL=postgres_database))
    await db.connect_with_retry(max_retries=0)
    yield db
    await db.dispose()


class Monotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def one_connection(
    make_settings: SettingsFactory, postgres_database: str
) -> AsyncIterator[tuple[Database, Monotonic]]:
    """A database with a pool of one connection and a hand-moved clock for its checkout ping."""
    clock = Monotonic()
    db = Database(make_settings(DATABASE_URL=postgres_database, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0), monotonic=clock)
    await db.connect_with_retry(max_retries=0)
    yield db, clock
    await db.dispose()


async def backend_pid(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def kill_backend(postgres_database: str, pid: int) -> None:
    """What a database restart or an administrator does to a pooled connection behind our back."""
    admin = await asyncpg.connect(postgres_database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_connection_idle_past_the_window_is_pinged_and_a_dead_one_replaced(
    one_connection: tuple[Database, Monotonic], postgres_database: str
) -> None:
    db, clock = one_connection
    first = await backend_pid(db)
    await kill_backend(postgres_database, first)
    clock.now += PING_IF_IDLE_SECONDS
    assert await backend_pid(db) != first  # no request failed


async def test_a_connection_used_moments_ago_is_handed_out_without_a_ping(
    one_connection: tuple[Database, Monotonic], postgres_database: str
) -> None:
    db, clock = one_connection
    first = await backend_pid(db)
    await kill_backend(postgres_database, first)
    clock.now += PING_IF_IDLE_SECONDS - 0.01
    with pytest.raises(DBAPIError) as caught:  # the price of skipping the round trip...
        await backend_pid(db)
    assert is_unavailable(caught.value)  # ...is counted as an outage (503 in a request)
    assert await backend_pid(db) != first  # and the dead connection is not handed out again


async def test_after_an_outage_every_pooled_connection_is_pinged_however_recent(
    one_connection: tuple[Database, Monotonic], postgres_database: str
) -> None:
    db, _ = one_connection
    first = await backend_pid(db)
    await kill_backend(postgres_database, first)
    db.mark_unavailable(ConnectionResetError())  # e.g. another request saw it
    await db.ping()  # the monitor's probe: it would fail on the dead connection if that were not pinged
    assert await backend_pid(db) != first


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_transient_postgres_errors_are_retried(postgres_db: Database, sqlstate: str) -> None:
    calls = 0

    async def work(session: AsyncSession) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            await session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '{sqlstate}'; END $$"))
        return int((await session.execute(text("SELECT 41 + 1"))).scalar_one())

    assert await postgres_db.run_transaction(work, attempts=3) == 42
    assert calls == 3


async def test_non_transient_errors_are_not_retried(postgres_db: Database) -> None:
    calls = 0

    async def work(session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text("DO $$ BEGIN RAISE EXCEPTION 'dup' USING ERRCODE = '23505'; END $$"))

    with pytest.raises(DBAPIError) as caught:
        await postgres_db.run_transaction(work, attempts=3)
    assert calls == 1 and not is_transient(caught.value)


async def test_fails_fast_while_known_down(make_settings: SettingsFactory) -> None:
    db = Database(make_settings())
    db.mark_unavailable(ConnectionRefusedError())
    with pytest.raises(DatabaseUnavailableError) as caught:
        async with db.session():
            pass
    assert caught.value.headers["Retry-After"].isdigit()
    await db.dispose()


async def test_concurrent_readiness_probes_share_one_ping(client: httpx.AsyncClient, app: FastAPI) -> None:
    db = runtime(app).db
    calls = 0
    original = db._ping_once

    async def counted() -> float:
        nonlocal calls
        calls += 1
        return await original()

    db._ping_once = counted  # type: ignore[method-assign]
    responses = await asyncio.gather(*(client.get("/health/ready") for _ in range(20)))
    assert all(response.status_code == 200 for response in responses)
    assert calls < 20  # the probes overlapped and shared pings
