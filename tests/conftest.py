"""Shared fixtures: one event loop, a PostgreSQL server, throwaway databases per
run, and an app factory that runs the real lifespan behind httpx."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform import migrate
from smilingsteps.platform.logging import configure_logging
from tests.support.outbox import FreshDatabases
from tests.support.postgres import PostgresServer, acquire_server, with_database
from tests.support.redis_server import acquire_url
from tests.support.smtp import SmtpServer, running_smtp_server

TEST_SECRET = secrets.token_urlsafe(48)
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: tests start from none of its variables."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    """Log as production does (JSON); tests read events with `captured_events()`."""
    configure_logging(Settings(APP_ENV="test", SECRET_KEY=TEST_SECRET, LOG_FORMAT="json", LOG_LEVEL="debug"))


@pytest.fixture(scope="session")
async def postgres_server() -> AsyncIterator[PostgresServer]:
    server = await acquire_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def postgres_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, migrated database for this run, dropped at the end."""
    name = f"ss_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server.admin_url, name)
    try:
        await _migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    await _migrate(url)
    return url


async def _migrate(url: str) -> None:
    import asyncio

    await asyncio.to_thread(migrate.upgrade, url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared test Redis (real); tests namespace their keys with a unique prefix."""
    url, server = acquire_url()
    yield url
    if server is not None:
        server.close()


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """A real SMTP server (STARTTLS, test CA in `ca_file`); tests use unique recipients."""
    with running_smtp_server(tmp_path_factory.mktemp("smtp")) as server:
        yield server


@pytest.fixture(scope="session")
async def outbox_databases(
    backend: str, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FreshDatabases]:
    """Fresh databases migrated for the outbox, for tests whose sender must see only their own mail."""
    databases = FreshDatabases(backend, tmp_path_factory.mktemp("outbox"), postgres_server.admin_url)
    yield databases
    await databases.close()


@pytest.fixture
async def outbox_url(outbox_databases: FreshDatabases) -> AsyncIterator[str]:
    async with outbox_databases.create() as url:
        yield url


@pytest.fixture
def redis_prefix() -> str:
    return f"sstest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The migrated test database of the current backend."""
    if backend == "postgresql":
        return str(request.getfixturevalue("postgres_database"))
    return str(request.getfixturevalue("sqlite_database"))


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "APP_ENV": "test",
            "SECRET_KEY": TEST_SECRET,
            "DATA_DIR": tmp_path / "data",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
            "LOG_FORMAT": "json",
            "DB_MAX_RETRIES": 0,
            # Cheap hashing keeps the suite fast; bench/ measures the production cost.
            "ARGON2_TIME_COST": 1,
            "ARGON2_MEMORY_KIB": 64,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory, database_url: str) -> Settings:
    return make_settings(DATABASE_URL=database_url)


@asynccontextmanager
async def running(app: FastAPI, **client_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's real lifespan and give an httpx client speaking ASGI to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(
            app=app,
            client=client_options.pop("client_addr", ("127.0.0.1", 50000)),
            raise_app_exceptions=client_options.pop("raise_app_exceptions", True),
        )
        base_url = client_options.pop("base_url", "http://testserver")
        async with httpx.AsyncClient(transport=transport, base_url=base_url, **client_options) as client:
            yield client


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client:
        yield client
