"""Helpers for the outbox tests: a fresh migrated database per test (the sender
sends everything that is due, so it must not see other tests' rows), and reading
outbox rows back."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy import select

from smilingsteps.notifications.models import OutboxMessage
from smilingsteps.platform import migrate
from smilingsteps.platform.db import Database
from tests.support.postgres import with_database

OUTBOX_REVISION = "head"  # the worker runs every domain's jobs, so the whole schema


class FreshDatabases:
    """Databases migrated to the outbox revision, copied from a template made once."""

    def __init__(self, backend: str, workdir: Path, postgres_admin_url: str | None) -> None:
        self.backend = backend
        self.workdir = workdir
        self.admin_url = postgres_admin_url
        self._template: str | None = None

    async def _prepare(self) -> str:
        if self._template is not None:
            return self._template
        if self.backend == "sqlite":
            path = self.workdir / "outbox-template.db"
            await asyncio.to_thread(migrate.upgrade, f"sqlite+aiosqlite:///{path}", OUTBOX_REVISION)
            self._template = str(path)
        else:
            assert self.admin_url is not None
            name = f"ss_outbox_tpl_{uuid.uuid4().hex[:10]}"
            await self._admin(f'CREATE DATABASE "{name}"')
            await asyncio.to_thread(migrate.upgrade, with_database(self.admin_url, name), OUTBOX_REVISION)
            self._template = name
        return self._template

    async def _admin(self, sql: str) -> None:
        assert self.admin_url is not None
        connection = await asyncpg.connect(self.admin_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    @asynccontextmanager
    async def create(self) -> AsyncIterator[str]:
        """A database URL for one test, dropped afterwards."""
        template = await self._prepare()
        if self.backend == "sqlite":
            path = self.workdir / f"outbox-{uuid.uuid4().hex[:10]}.db"
            shutil.copyfile(template, path)
            yield f"sqlite+aiosqlite:///{path}"
            return
        assert self.admin_url is not None
        name = f"ss_outbox_{uuid.uuid4().hex[:12]}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        try:
            yield with_database(self.admin_url, name)
        finally:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def close(self) -> None:
        if self.backend == "postgresql" and self._template is not None:
            await self._admin(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')


async def outbox_rows(db: Database, *, to: str | None = None) -> list[OutboxMessage]:
    async with db.sessionmaker() as session:
        statement = select(OutboxMessage).order_by(OutboxMessage.created_at, OutboxMessage.to_address)
        if to is not None:
            statement = statement.where(OutboxMessage.to_address == to)
        return list((await session.execute(statement)).scalars())


async def one_row(db: Database, to: str) -> OutboxMessage:
    rows = await outbox_rows(db, to=to)
    assert len(rows) == 1, rows
    return rows[0]
