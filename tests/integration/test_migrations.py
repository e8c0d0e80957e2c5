"""Migrations run up, down and up again on both engines, and the models match them."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from smilingsteps.domains import load_all_models
from smilingsteps.platform import migrate
from smilingsteps.platform.models import EnumText
from tests.support.postgres import PostgresServer, with_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    server = postgres_server
    name = f"ss_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server.admin_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def schema(url: str) -> tuple[set[str], str | None]:
    engine = create_async_engine(url)

    def read(connection: Connection) -> tuple[set[str], str | None]:
        tables = set(inspect(connection).get_table_names())
        return tables, MigrationContext.configure(connection).get_current_revision()

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    head = migrate.current_heads(empty_database)
    assert len(head) == 1, "migrations must have a single head"
    await asyncio.to_thread(migrate.upgrade, empty_database)
    upgraded = await schema(empty_database)
    assert upgraded[1] == head[0]
    await asyncio.to_thread(migrate.downgrade, empty_database, "base")
    tables, revision = await schema(empty_database)
    assert revision is None and tables <= {"alembic_version"}
    await asyncio.to_thread(migrate.upgrade, empty_database)
    assert await schema(empty_database) == upgraded


async def test_models_match_migrations(empty_database: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database)
    metadata = load_all_models()
    engine = create_async_engine(empty_database)

    def diff(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_every_enum_column_is_checked_by_the_database_against_its_enum(empty_database: str) -> None:
    """The CHECK constraints the migrations created name exactly the values of the model's enum."""
    await asyncio.to_thread(migrate.upgrade, empty_database)
    metadata = load_all_models()
    expected = {
        (table.name, column.name): {member.value for member in column.type.enum}
        for table in metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, EnumText)
    }
    assert ("bookings", "status") in expected and ("users", "therapist_status") in expected
    engine = create_async_engine(empty_database)

    def checked(connection: Connection) -> dict[tuple[str, str], set[str]]:
        inspector = inspect(connection)
        found: dict[tuple[str, str], set[str]] = {}
        for table, column in expected:
            for check in inspector.get_check_constraints(table):
                text = str(check["sqltext"])
                if re.match(rf'^\(?"?{column}"?(::text)? (IN|= ANY)', text):
                    found[(table, column)] = set(re.findall(r"'([^']*)'", text))
        return found

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(checked) == expected
    finally:
        await engine.dispose()
