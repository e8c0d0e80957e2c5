"""The audit log on real databases: written in the caller's transaction, one
unforked chain under concurrency, append-only, tampering detected, filtered
reads, and `smilingsteps audit verify` as an operator runs it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.audit import repository
from smilingsteps.audit.models import AuditEvent
from smilingsteps.audit.schemas import AuditFilters, AuditLogPage
from smilingsteps.audit.service import (
    GENESIS_HASH,
    AuditContext,
    ChainAnchor,
    ChainBreak,
    compute_hash,
    fields_of,
    list_events,
    record,
    verify_chain,
)
from smilingsteps.platform import migrate
from smilingsteps.platform.db import Database
from smilingsteps.platform.logging import captured_events
from tests.conftest import TEST_SECRET, SettingsFactory
from tests.support.postgres import PostgresServer, with_database
from tests.support.processes import run_cli

NAIROBI = timezone(timedelta(hours=3))
# Microseconds and a non-UTC offset: what is hashed must survive both backends' round trip.
T0 = datetime(2026, 11, 24, 11, 30, 5, 123456, tzinfo=NAIROBI)


class BoomError(Exception):
    pass


def context(actor_id: uuid.UUID | None = None) -> AuditContext:
    return AuditContext(actor_id=actor_id or uuid.uuid4(), ip="2001:0db8:0000::1", request_id="req-audit-test")


@pytest.fixture
def postgres_admin_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The server's maintenance URL on the PostgreSQL backend (started only when needed)."""
    if backend != "postgresql":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.admin_url


@pytest.fixture
async def own_database(postgres_admin_url: str | None, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database of the current backend for this test alone (tests here tamper and count)."""
    if postgres_admin_url is None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
        return
    name = f"ss_audit_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(postgres_admin_url, name)
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def open_database(make_settings: SettingsFactory, url: str) -> Database:
    db = Database(make_settings(DATABASE_URL=url))
    await db.ping()
    return db


@pytest.fixture
async def own_db(make_settings: SettingsFactory, own_database: str) -> AsyncIterator[Database]:
    db = await open_database(make_settings, own_database)
    yield db
    await db.dispose()


@pytest.fixture
async def shared_db(make_settings: SettingsFactory, database_url: str) -> AsyncIterator[Database]:
    db = await open_database(make_settings, database_url)
    yield db
    await db.dispose()


def recorder(action: str = "auth.login.succeeded", **kwargs: Any) -> Callable[[AsyncSession], Awaitable[AuditEvent]]:
    async def work(session: AsyncSession) -> AuditEvent:
        return await record(session, action=action, context=context(), now=T0, **kwargs)

    return work


async def seqs(db: Database) -> list[int]:
    async with db.session() as session:
        return list((await session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq))).scalars())


async def record_many(db: Database, count: int) -> list[AuditEvent]:
    events = []
    for n in range(count):
        details = {"n": n, "amount": 1500.25, "note": "ñandú 😀", "roles": ["client"], "nested": {"ok": True}}
        events.append(await db.run_transaction(recorder("admin.user.updated", target_type="user", details=details)))
    return events


async def disable_append_only(db: Database) -> None:
    async with db.engine.begin() as connection:
        if db.backend == "postgresql":
            await connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            await connection.execute(text("DROP TRIGGER audit_events_no_update"))
            await connection.execute(text("DROP TRIGGER audit_events_no_delete"))


async def tamper(db: Database, statement: str, **params: Any) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text(statement), params)


# --- writing ---------------------------------------------------------------------------------


async def test_rolled_back_record_leaves_no_row_and_no_gap(own_db: Database) -> None:
    async def record_then_fail(session: AsyncSession) -> None:
        await recorder()(session)
        await recorder()(session)
        raise BoomError

    with pytest.raises(BoomError):
        await own_db.run_transaction(record_then_fail)
    assert await seqs(own_db) == []

    async def two_in_one_transaction(session: AsyncSession) -> list[AuditEvent]:
        return [await recorder()(session), await recorder("auth.logout.succeeded")(session)]

    first, second = await own_db.run_transaction(two_in_one_transaction)
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)

    with pytest.raises(BoomError):
        await own_db.run_transaction(record_then_fail)
    third = await own_db.run_transaction(recorder())
    assert third.seq == 3 and third.prev_hash == second.hash
    assert await seqs(own_db) == [1, 2, 3]
    assert (await verify_chain(own_db)).ok


async def test_stored_row_is_what_was_hashed(own_db: Database) -> None:
    actor = uuid.uuid4()
    written = await own_db.run_transaction(
        lambda session: record(
            session,
            action="auth.login.failed",
            context=context(actor),
            now=T0,
            target_type="user",
            target_id="someone",
            details={"attempts": 3, "roles": ("client",)},
        )
    )
    async with own_db.sessionmaker() as session:
        stored = (await session.execute(select(AuditEvent))).scalar_one()
    assert stored.occurred_at == T0 and stored.occurred_at.tzinfo == UTC
    assert stored.ip == "2001:db8::1"  # canonical spelling
    assert stored.details == {"attempts": 3, "roles": ["client"]}
    assert (stored.actor_id, stored.id, stored.hash) == (actor, written.id, written.hash)
    assert compute_hash(fields_of(stored)) == stored.hash


async def test_chain_verifies_after_many_records_in_any_batch_size(own_db: Database) -> None:
    events = await record_many(own_db, 25)
    for batch_size in (1, 5, 7, 25, 1000):
        report = await verify_chain(own_db, batch_size=batch_size)
        assert report.ok and report.first_broken is None, (batch_size, report)
        assert (report.checked, report.head_seq, report.head_hash) == (25, 25, events[-1].hash)
    anchored = await verify_chain(own_db.sessionmaker, anchor=ChainAnchor(10, events[9].hash))
    assert anchored.ok


async def test_empty_log_verifies(own_db: Database) -> None:
    report = await verify_chain(own_db)
    assert report.ok and report.checked == 0 and report.head_seq is None and report.head_hash is None


async def test_concurrent_records_form_one_contiguous_chain(own_db: Database) -> None:
    count = 50
    results = await asyncio.gather(*(own_db.run_transaction(recorder()) for _ in range(count)))
    assert sorted(event.seq for event in results) == list(range(1, count + 1))
    assert await seqs(own_db) == list(range(1, count + 1))
    report = await verify_chain(own_db, batch_size=16)
    assert report.ok and report.checked == count


async def test_secret_looking_details_are_refused_before_anything_is_written(own_db: Database) -> None:
    async def leak(session: AsyncSession) -> AuditEvent:
        return await record(
            session, action="mfa.enabled", context=context(), now=T0, details={"user": "x", "totp_secret": "ABC"}
        )

    with pytest.raises(ValueError, match="secret"):
        await own_db.run_transaction(leak)
    assert await seqs(own_db) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "Auth.Login"}, "lowercase dotted"),
        ({"action": "login"}, "lowercase dotted"),
        ({"action": "auth." + "x" * 64}, "lowercase dotted"),
        ({"action": "auth.login", "now": datetime(2026, 1, 1)}, "naive"),
        ({"action": "auth.login", "target_id": "x" * 129}, "target_id"),
    ],
)
async def test_malformed_record_is_refused(shared_db: Database, kwargs: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"context": context(), "now": T0, **kwargs}
    async with shared_db.sessionmaker() as session:
        with pytest.raises(ValueError, match=message):
            await record(session, **values)


# --- append-only -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'auth.login.failed' WHERE seq = :seq",
        "UPDATE audit_events SET details = details WHERE seq = :seq",
        "DELETE FROM audit_events WHERE seq = :seq",
    ],
)
async def test_database_refuses_update_and_delete(shared_db: Database, statement: str) -> None:
    event = await shared_db.run_transaction(recorder("admin.user.suspended", target_id="refuse-test"))
    with pytest.raises(DBAPIError, match="append-only"):
        await tamper(shared_db, statement, seq=event.seq)
    async with shared_db.sessionmaker() as session:
        kept = await session.get(AuditEvent, event.id)
    assert kept is not None and kept.action == "admin.user.suspended" and kept.hash == event.hash


async def test_orm_changes_to_a_recorded_event_are_refused(shared_db: Database) -> None:
    async def edit(session: AsyncSession) -> None:
        event = await recorder()(session)
        event.action = "auth.login.failed"
        await session.flush()

    with pytest.raises(DBAPIError, match="append-only"):
        await shared_db.run_transaction(edit)


async def test_database_refuses_emptying_the_table(own_db: Database) -> None:
    await own_db.run_transaction(recorder())
    # SQLite has no TRUNCATE; its unfiltered DELETE fast path is off for tables with triggers.
    statement = "TRUNCATE audit_events" if own_db.backend == "postgresql" else "DELETE FROM audit_events"
    with pytest.raises(DBAPIError, match="append-only"):
        await tamper(own_db, statement)
    assert await seqs(own_db) == [1]


# --- tamper evidence -------------------------------------------------------------------------


async def test_edited_middle_row_is_reported(own_db: Database) -> None:
    events = await record_many(own_db, 6)
    await disable_append_only(own_db)
    await tamper(own_db, "UPDATE audit_events SET target_id = 'someone-else' WHERE seq = 3")
    with captured_events() as logged:
        report = await verify_chain(own_db, batch_size=2)
    assert not report.ok and report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.id) == (3, events[2].id)
    assert report.first_broken.reason is ChainBreak.CONTENT_HASH_MISMATCH
    assert (report.checked, report.head_seq, report.head_hash) == (3, 2, events[1].hash)
    broken = [event for event in logged if event["event"] == "audit_chain_broken"]
    assert len(broken) == 1 and broken[0]["level"] == "error" and broken[0]["seq"] == 3


async def test_edited_details_are_reported(own_db: Database) -> None:
    events = await record_many(own_db, 4)
    await disable_append_only(own_db)
    cast = "CAST(:value AS JSON)" if own_db.backend == "postgresql" else ":value"
    await tamper(own_db, f"UPDATE audit_events SET details = {cast} WHERE seq = 2", value='{"n": 1, "amount": 1}')
    report = await verify_chain(own_db)
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.id) == (2, events[1].id)
    assert report.first_broken.reason is ChainBreak.CONTENT_HASH_MISMATCH


async def test_deleted_row_is_reported_as_a_gap(own_db: Database) -> None:
    events = await record_many(own_db, 5)
    await disable_append_only(own_db)
    await tamper(own_db, "DELETE FROM audit_events WHERE seq = 3")
    report = await verify_chain(own_db)
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.id) == (4, events[3].id)
    assert report.first_broken.reason is ChainBreak.SEQUENCE_GAP
    assert "expected seq 3" in report.first_broken.detail


async def test_rehashed_edit_breaks_the_next_rows_link(own_db: Database) -> None:
    events = await record_many(own_db, 5)
    await disable_append_only(own_db)
    await tamper(own_db, "UPDATE audit_events SET action = 'admin.user.deleted' WHERE seq = 2")
    async with own_db.sessionmaker() as session:
        (edited,) = await repository.chain_batch(session, after_seq=1, limit=1)
    await tamper(own_db, "UPDATE audit_events SET hash = :hash WHERE seq = 2", hash=compute_hash(edited))
    report = await verify_chain(own_db)
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.id) == (3, events[2].id)
    assert report.first_broken.reason is ChainBreak.PREV_HASH_MISMATCH


async def test_truncated_tail_is_caught_only_with_an_anchor(own_db: Database) -> None:
    events = await record_many(own_db, 4)
    await disable_append_only(own_db)
    await tamper(own_db, "DELETE FROM audit_events WHERE seq = 4")
    assert (await verify_chain(own_db)).ok  # the chain alone cannot know its end was cut off
    report = await verify_chain(own_db, anchor=ChainAnchor(4, events[3].hash))
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (4, ChainBreak.ANCHOR_MISMATCH)


# --- reading ---------------------------------------------------------------------------------


async def test_list_events_filters_newest_first(shared_db: Database) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    target = f"user-{uuid.uuid4().hex}"
    plan = [
        (alice, "auth.login.failed", 0),
        (alice, "auth.login.failed", 1),
        (alice, "auth.lockout", 2),
        (bob, "admin.user.suspended", 3),
        (alice, "auth.login.succeeded", 4),
        (alice, "authzx.other", 5),  # `auth_x.` must not match it: LIKE wildcards are escaped
    ]

    async def write(session: AsyncSession) -> list[AuditEvent]:
        return [
            await record(
                session,
                action=action,
                context=context(actor),
                now=T0 + timedelta(minutes=minutes),
                target_type="user",
                target_id=target,
            )
            for actor, action, minutes in plan
        ]

    events = await shared_db.run_transaction(write)

    async def query(limit: int = 50, before_seq: int | None = None, **filters: Any) -> list[int]:
        async with shared_db.sessionmaker() as session:
            found = await list_events(session, AuditFilters(**filters), limit=limit, before_seq=before_seq)
        return [event.seq for event in found]

    seq = [event.seq for event in events]
    assert await query(target_type="user", target_id=target) == seq[::-1]
    assert await query(actor_id=alice) == [seq[5], seq[4], seq[2], seq[1], seq[0]]
    assert await query(actor_id=alice, action="auth.") == [seq[4], seq[2], seq[1], seq[0]]
    assert await query(actor_id=alice, action="auth.login.") == [seq[4], seq[1], seq[0]]
    assert await query(actor_id=alice, action="auth.login.failed") == [seq[1], seq[0]]
    assert await query(actor_id=alice, action="auth.login") == []  # exact unless it ends in a dot
    assert await query(actor_id=alice, action="auth_x.") == []
    assert await query(actor_id=bob) == [seq[3]]
    assert await query(target_id=target, target_type="therapist") == []
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=4)  # since inclusive, until exclusive
    assert await query(target_id=target, since=since, until=until) == [seq[3], seq[2], seq[1]]


async def test_list_events_pages_by_seq(shared_db: Database) -> None:
    actor = uuid.uuid4()

    async def write(session: AsyncSession) -> list[AuditEvent]:
        return [await record(session, action="auth.login.succeeded", context=context(actor), now=T0) for _ in range(5)]

    expected = [event.seq for event in reversed(await shared_db.run_transaction(write))]
    pages: list[list[int]] = []
    cursor: int | None = None
    while True:
        async with shared_db.sessionmaker() as session:
            found = await list_events(session, AuditFilters(actor_id=actor), limit=2, before_seq=cursor)
        page = AuditLogPage.of(found, limit=2)
        pages.append([item.seq for item in page.items])
        if page.next_before_seq is None:
            break
        cursor = page.next_before_seq
    assert pages[0] == expected[:2] and [seq for page in pages for seq in page] == expected
    assert len(pages) in (3, 4) and pages[-1] in ([expected[-1]], [])
    async with shared_db.sessionmaker() as session:
        with pytest.raises(ValueError, match="limit"):
            await list_events(session, AuditFilters(), limit=0, before_seq=None)


async def test_shared_log_still_verifies(shared_db: Database) -> None:
    """Every other test's writes to the shared database kept one intact chain."""
    await shared_db.run_transaction(recorder())
    report = await verify_chain(shared_db, batch_size=50)
    assert report.ok, report.first_broken
    async with shared_db.sessionmaker() as session:
        assert report.checked == (await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one()


# --- the operator's command ------------------------------------------------------------------


def verify_cli(tmp_path: Path, url: str, *args: str) -> tuple[int, str]:
    result = run_cli(
        tmp_path, "audit", "verify", *args, DATABASE_URL=url, APP_ENV="test", SECRET_KEY=TEST_SECRET, LOG_FORMAT="json"
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result.returncode, result.stdout


async def test_verify_command_reports_the_head_then_the_first_broken_row(
    own_db: Database, own_database: str, tmp_path: Path
) -> None:
    events = await record_many(own_db, 3)
    code, out = await asyncio.to_thread(verify_cli, tmp_path, own_database, "--batch-size", "2")
    assert code == 0, out
    assert "audit chain ok: 3 rows checked" in out
    assert f"head: 3:{events[-1].hash}" in out
    code, out = await asyncio.to_thread(verify_cli, tmp_path, own_database, "--anchor", f"3:{events[-1].hash}")
    assert code == 0, out

    await disable_append_only(own_db)
    await tamper(own_db, "UPDATE audit_events SET request_id = 'forged' WHERE seq = 2")
    code, out = await asyncio.to_thread(verify_cli, tmp_path, own_database)
    assert code == 1, out
    assert f"first broken row: seq=2 id={events[1].id}: content hash mismatch" in out
    assert f"last good row: seq=1 hash={events[0].hash}" in out


async def test_verify_command_on_an_empty_log(own_database: str, tmp_path: Path) -> None:
    code, out = await asyncio.to_thread(verify_cli, tmp_path, own_database)
    assert code == 0 and "0 rows checked" in out
    code, _ = await asyncio.to_thread(verify_cli, tmp_path, own_database, "--anchor", "nonsense")
    assert code == 2
