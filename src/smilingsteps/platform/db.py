"""Database access that survives outages.

`Database` owns the engine and session factory, keeps an availability flag that
a background monitor maintains (connect with exponential backoff and jitter,
then keep probing), and turns "the database is unreachable" into a fast 503
instead of a hang or a 500. The request owns its transaction (`get_session`);
background work uses `run_transaction`, which retries transient failures.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Executable,
    Result,
    TextClause,
    bindparam,
    event,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from smilingsteps.config import DbSslMode, Settings
from smilingsteps.platform.errors import AppError, DatabaseUnavailableError, ServerBusyError

log = structlog.get_logger("smilingsteps.db")
T = TypeVar("T")

# SQLSTATEs that mean "try the same transaction again": serialization failure,
# deadlock, and the connection-exception class (08xxx).
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P")


_DRIVER_MODULES = ("asyncpg", "aiosqlite", "sqlalchemy")
_AFTER_COMMIT = "after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], object]) -> None:
    """Run `callback` only if and after this session's transaction commits (local side effects)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


async def execute_core(
    session: AsyncSession, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> Result[Any]:
    """Run a Core statement (plain rows, no ORM entities) on the session's connection and transaction.

    `session.execute` takes the ORM's execution path even for column selects and Core
    inserts; going to the connection skips it (10-25 % less CPU per statement in a
    microbenchmark), which matters on paths that run several statements per request.
    """
    connection = await session.connection()
    return await connection.execute(statement, parameters)


async def take_write_turn(session: AsyncSession, *, table: str, key: int | None) -> None:
    """Make writers that could clash take turns until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock on `key` (none when `key` is None:
    the caller relies on row locks or constraints there). SQLite: pysqlite opens its
    deferred transaction at the first write, so reads before it may be stale; a
    write that matches no row of `table` takes the single write lock now, and the
    reads that follow stay current until commit.
    """
    if not takes_turns_by_advisory_lock(session):
        await execute_core(session, _no_op_write(table))
    elif key is not None:
        await execute_core(session, _ADVISORY_XACT_LOCK, {"key": key})


def takes_turns_by_advisory_lock(session: AsyncSession) -> bool:
    """PostgreSQL (advisory locks, which a caller may fold into a statement of its own) or SQLite."""
    return session.get_bind().dialect.name != "sqlite"


def advisory_xact_lock(key: BindParameter[int]) -> ColumnElement[Any]:
    """`take_write_turn`'s PostgreSQL lock as a column, to take it within a SELECT the caller runs anyway."""
    return func.pg_advisory_xact_lock(key)


# Built once: a statement object keeps its cache key (these run on every booking).
_ADVISORY_XACT_LOCK = select(advisory_xact_lock(bindparam("key", type_=BigInteger)))


@functools.cache
def _no_op_write(table: str) -> TextClause:
    return text(f"DELETE FROM {table} WHERE 0 = 1")  # noqa: S608 (callers pass constant table names)


def raised_by_database_driver(exc: BaseException) -> bool:
    """True when a plain OSError/TimeoutError came out of the database driver.

    Drivers raise these unwrapped when a connection cannot be opened or a pooled
    one stalls in its liveness ping; other I/O errors in a request (files, HTTP
    calls) must not be mistaken for a database outage.
    """
    traceback = exc.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if module.startswith(_DRIVER_MODULES):
            return True
        traceback = traceback.tb_next
    return False


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2**attempt))
    return (rng or random).uniform(0, ceiling)


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None), exc):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_unavailable(exc: BaseException) -> bool:
    """True when the error means the database cannot be reached (not a bad query)."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, sa_exc.TimeoutError):
        # Every pooled connection stayed busy for DB_POOL_TIMEOUT: this process is overloaded, the
        # database answers. Treating it as an outage turned a busy minute into 503s on every route.
        return False
    if isinstance(exc, OSError | TimeoutError):
        return raised_by_database_driver(exc)
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = _sqlstate(exc)
        if state is not None:
            return state.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
        cause = exc.orig.__cause__ if exc.orig is not None else None
        if isinstance(cause, ConnectionError | OSError | TimeoutError):
            return True
        if isinstance(exc, sa_exc.InterfaceError):
            return True
        message = str(exc.orig).lower()
        return "unable to open database" in message or ("connection" in message and "closed" in message)
    return False


def is_transient(exc: BaseException) -> bool:
    """True when running the same transaction again may succeed."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or _sqlstate(exc) in _RETRYABLE_SQLSTATES:
            return True
        return "database is locked" in str(exc.orig).lower()
    return False


def _ssl_context(settings: Settings) -> ssl.SSLContext | bool:
    mode = settings.db_ssl_mode
    if mode is DbSslMode.DISABLE:
        return False
    cafile = str(settings.DB_SSL_ROOT_CERT) if settings.DB_SSL_ROOT_CERT else None
    context = ssl.create_default_context(cafile=cafile)
    if mode is DbSslMode.REQUIRE:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode is DbSslMode.VERIFY_CA:
        context.check_hostname = False
    return context


def _enable_sqlite_pragmas(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def ensure_sqlite_directory(url: str) -> None:
    """SQLite creates the file but not its folder; create the folder."""
    target = make_url(url)
    if target.get_backend_name() == "sqlite" and target.database and target.database != ":memory:":
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)


def build_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """An engine with explicit pool settings and bounded connect time."""
    target = make_url(url or settings.database_url)
    if target.get_backend_name() == "sqlite":
        ensure_sqlite_directory(str(target))
        engine = create_async_engine(
            target,
            pool_size=settings.DB_POOL_SIZE,
            max_overflow=settings.DB_MAX_OVERFLOW,
            pool_timeout=settings.DB_POOL_TIMEOUT,
            hide_parameters=True,
            connect_args={"timeout": settings.DB_POOL_TIMEOUT},
        )
        event.listen(engine.sync_engine, "connect", _enable_sqlite_pragmas)
        return engine
    return create_async_engine(
        target,
        pool_size=settings.DB_POOL_SIZE,
        max_overflow=settings.DB_MAX_OVERFLOW,
        pool_timeout=settings.DB_POOL_TIMEOUT,
        # `CheckoutPing` (installed by `Database`) does the pre-ping's job for less.
        pool_pre_ping=False,
        # Bound values can be personal data; errors and logs show the SQL only.
        hide_parameters=True,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.DB_CONNECT_TIMEOUT,
            # Also bounds the checkout ping, so a stalled (not refused) server costs
            # at most this long before the request gets its 503.
            "command_timeout": settings.DB_STATEMENT_TIMEOUT,
            "ssl": _ssl_context(settings),
            "server_settings": {"application_name": "smilingsteps"},
        },
    )


# A pooled connection returned this recently is handed out without a liveness round trip
# (HikariCP skips its alive check within 500 ms the same way): on a busy pool that saves a
# round trip per request. A connection that dies inside the window fails its one request,
# which counts as an outage like any other, so every pooled connection is pinged after it.
PING_IF_IDLE_SECONDS = 0.5
_RETURNED = "smilingsteps_returned"


class CheckoutPing:
    """Pessimistic disconnect handling: a connection broken by an outage is replaced, not handed out.

    SQLAlchemy's `pool_pre_ping` pings on every checkout, and asyncpg's ping is wrapped in
    BEGIN ... ROLLBACK (for PgBouncer's transaction mode): three round trips per request.
    This pings with one simple-protocol `SELECT 1`, and only a connection idle for
    PING_IF_IDLE_SECONDS or more, or returned before an outage was seen (`outage_seen`). A
    failed ping invalidates the pool, as pre-ping does, and the pool connects afresh; if that
    fails too, the request gets the connect error (a 503). A new connection is not pinged.
    """

    def __init__(self, engine: AsyncEngine, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._outages = 0
        event.listen(engine.sync_engine, "checkin", self._returned)
        event.listen(engine.sync_engine, "checkout", self._checked_out)

    def outage_seen(self) -> None:
        self._outages += 1

    def _returned(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is not None:
            record.info[_RETURNED] = (self._monotonic(), self._outages)

    def _checked_out(self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED)
        if returned is None:
            return  # opened for this checkout
        at, outages = returned
        if outages == self._outages and self._monotonic() - at < PING_IF_IDLE_SECONDS:
            return
        self.ping(dbapi_connection)

    @staticmethod
    def ping(dbapi_connection: Any) -> None:
        try:
            dbapi_connection.run_async(_select_one)
        except Exception as exc:
            raise sa_exc.InvalidatePoolError() from exc


async def _select_one(connection: Any) -> None:
    # execute() without arguments uses the simple query protocol: no PREPARE, one round trip.
    await connection.execute("SELECT 1")


@dataclass
class DatabaseStatus:
    available: bool = False
    last_error: str | None = None
    latency_ms: float | None = None
    checked_at: float | None = None
    attempts: int = 0


class Database:
    def __init__(
        self, settings: Settings, *, url: str | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.engine = build_engine(settings, url)
        self._checkout_ping = CheckoutPing(self.engine, monotonic) if self.backend == "postgresql" else None
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.status = DatabaseStatus()
        self._available = asyncio.Event()
        self._wake = asyncio.Event()
        self._ping_in_flight: asyncio.Future[float] | None = None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @property
    def retry_after(self) -> int:
        return max(1, round(min(self.settings.DB_RETRY_MAX_DELAY, self.settings.DB_RETRY_BASE_DELAY * 4)))

    async def ping(self) -> float:
        """Run `SELECT 1` within the connect timeout; returns milliseconds. Updates the status.

        Concurrent callers share one in-flight ping, so a flood of readiness
        probes costs the database one query at a time per instance.
        """
        if self._ping_in_flight is None or self._ping_in_flight.done():
            self._ping_in_flight = asyncio.ensure_future(self._ping_once())
        return await asyncio.shield(self._ping_in_flight)

    async def _ping_once(self) -> float:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.DB_CONNECT_TIMEOUT + 1):
                async with self.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            self.mark_unavailable(exc)
            raise
        latency = round((time.perf_counter() - started) * 1000, 2)
        self._mark_available(latency)
        return latency

    def _mark_available(self, latency_ms: float) -> None:
        was_down = not self.status.available
        self.status.available = True
        self.status.latency_ms = latency_ms
        self.status.last_error = None
        self.status.checked_at = time.time()
        self._available.set()
        if was_down:
            log.info("database_available", backend=self.backend, latency_ms=latency_ms)

    def mark_unavailable(self, exc: BaseException) -> None:
        """Record an outage seen anywhere and wake the monitor to reconnect."""
        was_up = self.status.available
        if self._checkout_ping is not None:
            self._checkout_ping.outage_seen()
        self.status.available = False
        self.status.last_error = type(exc).__name__
        self.status.checked_at = time.time()
        self._available.clear()
        if was_up:
            log.error("database_unavailable", backend=self.backend, error=type(exc).__name__)
        self._wake.set()

    async def wait_available(self) -> None:
        """Return once the database answers (the monitor reconnects in the background)."""
        await self._available.wait()

    async def connect_with_retry(self, max_retries: int | None = None) -> bool:
        """Try to reach the database, backing off between attempts; log each attempt."""
        retries = self.settings.DB_MAX_RETRIES if max_retries is None else max_retries
        for attempt in range(retries + 1):
            self.status.attempts += 1
            try:
                await self.ping()
                return True
            except Exception as exc:
                delay = backoff_delay(
                    attempt, base=self.settings.DB_RETRY_BASE_DELAY, cap=self.settings.DB_RETRY_MAX_DELAY
                )
                log.warning(
                    "database_connect_failed",
                    attempt=attempt + 1,
                    of=retries + 1,
                    error=type(exc).__name__,
                    retry_in_s=round(delay, 2) if attempt < retries else None,
                )
                if attempt < retries:
                    await self._sleep(delay)
        return False

    async def monitor(self, *, healthy_interval: float = 15.0) -> None:
        """Background task: connect at start-up, reconnect after outages, forever."""
        if not await self.connect_with_retry():
            log.error("database_still_down_after_startup_retries", retries=self.settings.DB_MAX_RETRIES)
        attempt = 0
        while True:
            if self.status.available:
                attempt = 0
                self._wake.clear()
                try:
                    async with asyncio.timeout(healthy_interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                await self._probe_quietly()
                continue
            delay = backoff_delay(attempt, base=self.settings.DB_RETRY_BASE_DELAY, cap=self.settings.DB_RETRY_MAX_DELAY)
            await self._sleep(delay)
            attempt += 1
            if await self._probe_quietly():
                attempt = 0

    async def _probe_quietly(self) -> bool:
        try:
            await self.ping()
        except Exception:
            return False
        return True

    def ensure_available(self) -> None:
        """Fail fast with 503 while the monitor knows the database is down."""
        if not self.status.available:
            raise DatabaseUnavailableError(retry_after=self.retry_after)

    def classify(self, exc: BaseException) -> AppError | None:
        """Map a database failure escaping a request to the error clients see."""
        if is_unavailable(exc):
            self.mark_unavailable(exc)
            return DatabaseUnavailableError(retry_after=self.retry_after)
        if isinstance(exc, sa_exc.TimeoutError):
            log.warning("database_pool_exhausted", pool_timeout_s=self.settings.DB_POOL_TIMEOUT)
            return ServerBusyError(retry_after=1)
        return None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error.

        Callbacks registered with `after_commit` run once the commit succeeded.
        """
        self.ensure_available()
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            for callback in session.info.pop(_AFTER_COMMIT, ()):
                callback()

    @asynccontextmanager
    async def core_autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection for prebuilt Core statements in autocommit mode (each its own transaction, no BEGIN
        or COMMIT round trips), without an ORM session. Only for hot paths a benchmark justified, whose
        every write is one atomic statement (M-Pesa callbacks)."""
        self.ensure_available()
        async with self.engine.connect() as connection:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")

    async def run_transaction(self, work: Callable[[AsyncSession], Awaitable[T]], *, attempts: int = 3) -> T:
        """Run `work` in its own transaction, retrying it on transient failures.

        `work` must be safe to run again from the start (it sees a fresh session).
        """
        for attempt in range(attempts):
            try:
                async with self.session() as session:
                    return await work(session)
            except sa_exc.DBAPIError as exc:
                if attempt + 1 >= attempts or not is_transient(exc):
                    raise
                delay = backoff_delay(attempt, base=0.02, cap=0.5)
                log.warning(
                    "transaction_retry", attempt=attempt + 1, sqlstate=_sqlstate(exc), retry_in_s=round(delay, 3)
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        ping = self._ping_in_flight
        if ping is not None and not ping.done():
            # A shielded ping outlives its cancelled callers; finish it before the pool goes.
            ping.cancel()
            await asyncio.gather(ping, return_exceptions=True)
        await self.engine.dispose()
