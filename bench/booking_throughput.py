"""Booking creation throughput on PostgreSQL: distinct slots, and many clients racing for the same slots.

Target (from the issue): at least 300 successful bookings per second across distinct slots on this
machine. (The issue's other number, slots for 60 days in under 20 ms, is ``bench/slots_cost.py``.)

What runs:

* A fresh PostgreSQL database (``CREATE DATABASE`` with a random name on the local server, migrated
  with ``smilingsteps.platform.migrate.upgrade``), dropped at the end, also after a failure.
* A real server in its own process, pinned to CPU 0: ``create_app`` + ``build_server`` (the
  production uvicorn set-up: uvloop, httptools, ``DrainingServer`` with ``gc.freeze``), the JSON
  access log written to a file, ``APP_ENV=test``, a random ``SECRET_KEY``, ``RATE_LIMITS_ENABLED=false``,
  ``DB_POOL_SIZE=20``, ``DB_MAX_OVERFLOW=0`` (no backend churn, so PostgreSQL's CPU can be summed
  per backend). argon2 is set to the OWASP minimum (m=19 MiB, t=2) so that signing in the clients
  during set-up takes seconds; no password is checked while measuring.
* Set-up, not measured: approved therapists with profiles, available every day 00:00-23:59
  (Africa/Nairobi), 50-minute sessions + 10-minute buffer, so each has a slot every hour, ~1,400
  within the 60-day horizon after the 12 h notice; verified clients, written straight to the
  database (as ``tests/support/bookings.py`` does), then signed in over HTTP with ``client: native``
  (bearer tokens: no CSRF). The slot grid is read from ``GET /therapists/{id}/slots``.
* A load generator in this process, pinned to CPU 1: raw HTTP/1.1 keep-alive over asyncio streams
  on uvloop (much cheaper per request than an HTTP library; every request has its own body).
  PostgreSQL is not pinned: it runs wherever the kernel puts it, on both cores.

Phases (``--connections`` concurrent connections, default 64; interleaved rounds, order rotating):

* ``distinct``   - ``POST /api/v1/bookings``, every request a different (therapist, start). A client
  never asks for two overlapping times (so no 409 client-overlap is expected): request ``i`` for time
  ``k`` on therapist ``t`` is sent by client ``(t + k) mod C`` with C >= the number of therapists.
* ``contention`` - the same endpoint, ``--racers`` (default 8) requests per slot, sent back to back
  by different clients (a separate set of therapists and clients), so they are in flight together.
  Exactly one per slot must succeed (201) and the others answer 409 slot-taken; checked in the
  responses and, at the end, in the database.
* ``read``       - baseline: ``GET /api/v1/therapists/{id}`` (anonymous; three SELECTs) on the same
  server at the same concurrency.
* ``health``     - ``GET /health`` (no query), the floor of the stack.
* ``sequential`` - once: bookings over one connection, the latency without queueing.

For every phase: requests and successful bookings per second, latency percentiles, the server's CPU
per request (all its threads, ``/proc/<pid>/task/*/schedstat``), PostgreSQL's CPU per request (the
backends of this database, from ``pg_stat_activity`` + ``/proc/<pid>/schedstat``; the WAL writer and
other shared background processes separately), the load generator's CPU, and how busy each core was
(``/proc/stat``). In process, after the load: the SQL round trips of one booking, counted with
SQLAlchemy events (``--py-spy`` adds a sampled profile of the server during a distinct-slot phase).

What-if (on by default, ``--no-what-if`` skips it): a second server on the same database without
SQLAlchemy's ``pool_pre_ping`` (the ``SELECT 1`` on every checkout), patched in that process only
(``apply_no_pre_ping_what_if``; never the package) and measured in the same interleaved rounds, so
what the liveness round trip costs is a measurement, not a guess.

Usage (from the repository root; bench/README.md has the details)::

    .tools/bin/uv run --frozen python bench/booking_throughput.py             # ~4 minutes
    .tools/bin/uv run --frozen python bench/booking_throughput.py --py-spy    # + py-spy profile (uv tool run py-spy)
    # one server (standard or no-pre-ping), its settings from the environment as settings_env() sets them:
    .tools/bin/uv run --frozen python bench/booking_throughput.py --serve standard --port 8001 --workdir /tmp/x

Results: ``bench/results/booking_throughput.json``.

smilingsteps ships no ``py.typed`` marker, so its imports here carry
``type: ignore[import-untyped, unused-ignore]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import health_overhead as common  # bench/health_overhead.py: free port, readiness, stopping, machine facts

HOST = common.HOST  # loopback only, always
API = "/api/v1"
BOOKINGS_PATH = f"{API}/bookings"
LOGIN_PATH = f"{API}/auth/login"
TARGET_BOOKINGS_PER_SECOND = 300.0
PASSWORD = "tangerine orbit lantern 4127"
THERAPIST_TZ = "Africa/Nairobi"
ARGON2 = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_KIB": "19456", "ARGON2_PARALLELISM": "1"}
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_OUT = RESULTS_DIR / "booking_throughput.json"
DEFAULT_PY_SPY = f"{BENCH_DIR.parent / '.tools/bin/uv'} tool run py-spy"
# A slot must still be 12 h ahead when its request is sent: keep this margin past the set-up's "now".
SLOT_MARGIN = dt.timedelta(hours=3)
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
PROBLEM_TYPE = re.compile(rb'"type"\s*:\s*"[^"]*/([a-z0-9-]+)"')


# --------------------------------------------------------------------------
# Options and the server process
# --------------------------------------------------------------------------


@dataclass
class Options:
    connections: int = 64
    duration: float = 8.0
    warmup: float = 2.0
    rounds: int = 3
    sequential: float = 4.0
    racers: int = 8
    therapists: int = 40
    race_therapists: int = 8
    pool_size: int = 20
    max_overflow: int = 0
    admin_url: str = DEFAULT_ADMIN_URL
    py_spy: list[str] | None = None
    profile_seconds: float = 12.0
    what_if: bool = True
    server_cpu: int = 0
    client_cpu: int = 1
    pinned: bool = True
    tmp_root: str | None = None
    instances: int = 1


VARIANTS = ("standard", "no-pre-ping")


def apply_no_pre_ping_what_if() -> None:
    """What-if, never in the package: no liveness ping on checkout at all (``CheckoutPing.ping``, one
    ``SELECT 1`` for a connection idle 0.5 s or pooled before an outage; before ``0227c29``
    SQLAlchemy's ``pool_pre_ping``, three round trips on every checkout). A connection broken by an
    outage would then fail a request instead of being replaced on checkout. Patched in this process
    only, before the engine is built."""
    import smilingsteps.platform.db as db  # type: ignore[import-untyped, unused-ignore]

    create_engine = db.create_async_engine

    def without_pre_ping(*args: Any, **kwargs: Any) -> Any:
        kwargs["pool_pre_ping"] = False
        return create_engine(*args, **kwargs)

    def no_ping(*_: Any) -> None:
        return None

    db.create_async_engine = without_pre_ping
    if hasattr(db, "CheckoutPing"):
        db.CheckoutPing.ping = staticmethod(no_ping)


def serve(port: int, workdir: Path, variant: str) -> None:
    """One server from the environment's settings until SIGTERM (the production server class)."""
    from smilingsteps.app import create_app  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.logging import configure_logging  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.server import build_server  # type: ignore[import-untyped, unused-ignore]

    if variant == "no-pre-ping":
        apply_no_pre_ping_what_if()
    settings = Settings()
    configure_logging(settings, stream=(workdir / f"app-{variant}.log").open("a", encoding="utf-8"))
    app = create_app(settings)
    build_server(app, settings, host=HOST, port=port).run()


def settings_env(database_url: str, workdir: Path, options: Options, secret: str) -> dict[str, str]:
    return {
        "APP_ENV": "test",
        "SECRET_KEY": secret,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(workdir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "RATE_LIMITS_ENABLED": "false",
        "DB_POOL_SIZE": str(options.pool_size),
        "DB_MAX_OVERFLOW": str(options.max_overflow),
        "ACCESS_TOKEN_TTL_MINUTES": "60",
        "SESSION_IDLE_TIMEOUT_MINUTES": "240",
        "SHUTDOWN_READINESS_DELAY": "0",
        **ARGON2,
    }


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    output: Path
    label: str = "booking"


def pin(cpu: int, options: Options) -> list[str]:
    return ["taskset", "-c", str(cpu)] if options.pinned and shutil.which("taskset") else []


@dataclass
class Instances:
    """The servers of one variant: one pinned process, or ``--instances`` unpinned ones on their own ports."""

    servers: list[Server]

    @property
    def port(self) -> int:
        return self.servers[0].port

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def pids(self) -> list[int]:
        return [server.process.pid for server in self.servers]


def start_server(env: dict[str, str], workdir: Path, options: Options, variant: str, index: int) -> Server:
    port = common.free_port()
    output = workdir / f"server-{variant}-{index}.out"
    command = [
        *pin(options.server_cpu, options),
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        variant,
        "--port",
        str(port),
        "--workdir",
        str(workdir),
    ]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**common.child_env(), **env})
    return Server(port, process, output, variant)


@contextmanager
def running_server(env: dict[str, str], workdir: Path, options: Options, variant: str) -> Iterator[Instances]:
    servers: list[Server] = []
    try:
        for index in range(options.instances):
            servers.append(start_server(env, workdir, options, variant, index))
            common.wait_ready(servers[-1], timeout=60.0)
        yield Instances(servers)
    finally:
        for server in servers:
            common.stop_server(server)


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------


def threads_cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far (ns)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    return total


def process_cpu_ns(pids: list[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for pid in pids:
        try:
            found[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # gone
    return found


def cores_busy() -> dict[str, tuple[int, int]]:
    """Per CPU (and all): (busy, total) jiffies from /proc/stat; busy excludes idle and iowait."""
    found: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            break
        name, *values = line.split()
        numbers = [int(v) for v in values[:8]]
        total = sum(numbers)
        found[name] = (total - numbers[3] - numbers[4], total)
    return found


@dataclass
class PgProcesses:
    backends: list[int]
    shared: dict[int, str]  # pid -> backend_type (WAL writer, checkpointer, ...): shared by the cluster


async def pg_processes(admin: Any, database: str) -> PgProcesses:
    rows = await admin.fetch(
        "SELECT pid, datname, application_name, backend_type FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    )
    backends = [r["pid"] for r in rows if r["datname"] == database and r["application_name"] == "smilingsteps"]
    shared = {r["pid"]: r["backend_type"] for r in rows if r["datname"] is None}
    return PgProcesses(backends, shared)


@dataclass
class CpuSnapshot:
    at: float
    server: int
    client: float
    backends: dict[int, int]
    shared: dict[int, int]
    cores: dict[str, tuple[int, int]]


def snapshot(server_pids: list[int], pg: PgProcesses) -> CpuSnapshot:
    return CpuSnapshot(
        at=time.perf_counter(),
        server=sum(threads_cpu_ns(pid) for pid in server_pids),
        client=time.process_time(),
        backends=process_cpu_ns(pg.backends),
        shared=process_cpu_ns(list(pg.shared)),
        cores=cores_busy(),
    )


def cpu_between(before: CpuSnapshot, after: CpuSnapshot, pg_after: PgProcesses) -> dict[str, Any]:
    """Seconds of CPU used between two snapshots; backends that appeared meanwhile count from their start."""
    after_backends = process_cpu_ns(pg_after.backends) | after.backends
    backends = sum(ns - before.backends.get(pid, 0) for pid, ns in after_backends.items())
    shared = sum(ns - before.shared.get(pid, ns) for pid, ns in after.shared.items())
    cores = {}
    for name, (busy, total) in after.cores.items():
        busy0, total0 = before.cores.get(name, (busy, total))
        cores[name] = round((busy - busy0) / max(1, total - total0), 3)
    return {
        "server_s": (after.server - before.server) / 1e9,
        "client_s": after.client - before.client,
        "pg_backends_s": backends / 1e9,
        "pg_backends": len(after_backends),
        "pg_shared_s": shared / 1e9,
        "core_busy_fraction": cores,
    }


# --------------------------------------------------------------------------
# The database: create, migrate, populate, verify, drop
# --------------------------------------------------------------------------


def database_url_for(admin_url: str, name: str, *, driver: str = "postgresql+asyncpg") -> str:
    parts = urlsplit(admin_url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"--admin-url must point at a loopback address, not {parts.hostname!r}")
    return urlunsplit((driver, parts.netloc, f"/{name}", parts.query, ""))


async def create_database(admin_url: str) -> str:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    name = f"bench_booking_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class People:
    therapists: list[uuid.UUID]  # the distinct-slot therapists
    race_therapists: list[uuid.UUID]
    probe_therapist: uuid.UUID  # for the in-process round-trip count
    clients: list[str]  # emails: distinct-slot clients
    race_clients: list[str]
    probe_client: str


async def populate(url: str, options: Options) -> People:
    """Therapists (profile, every day 00:00-23:59) and verified clients, straight into the database."""
    import argon2
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from smilingsteps.accounts.models import Role, TherapistStatus, User  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.therapists import service as therapists  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.therapists.schemas import (  # type: ignore[import-untyped, unused-ignore]
        AvailabilityIn,
        ProfileIn,
        RuleIn,
    )

    # The server's own argon2 parameters, so a login does not rehash.
    password_hash = argon2.PasswordHasher(
        time_cost=int(ARGON2["ARGON2_TIME_COST"]),
        memory_cost=int(ARGON2["ARGON2_MEMORY_KIB"]),
        parallelism=int(ARGON2["ARGON2_PARALLELISM"]),
        type=argon2.Type.ID,
    ).hash(PASSWORD)
    now = dt.datetime.now(dt.UTC)
    run = secrets.token_hex(3)

    def user(role: Any, tag: str, index: int) -> Any:
        therapist = role is Role.THERAPIST
        return User(
            id=uuid.uuid4(),
            email=f"bench-{run}-{tag}-{index}@example.com",
            password_hash=password_hash,
            full_name=f"Bench {tag.title()} {index:04d}",
            phone="254712345678",
            timezone=THERAPIST_TZ,
            role=role.value,
            status="active",
            therapist_status=TherapistStatus.APPROVED.value if therapist else None,
            email_verified_at=now,
            password_changed_at=now,
            created_at=now,
            updated_at=now,
        )

    profile = ProfileIn(
        bio="Warm, practical support.",
        specialties=["anxiety"],
        languages=["en", "sw"],
        years_of_practice=8,
        license_number="KCPB-12345",
        price_kes=2500,
        session_minutes=50,
        buffer_minutes=10,
        timezone=THERAPIST_TZ,
    )
    availability = AvailabilityIn(
        rules=[RuleIn(weekday=day, start=dt.time(0), end=dt.time(23, 59)) for day in range(7)], exceptions=[]
    )
    clients_needed = max(options.therapists, 1)
    race_clients_needed = options.race_therapists * options.racers
    engine = create_async_engine(url)
    try:
        maker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        async with maker() as session, session.begin():
            therapist_users = [user(Role.THERAPIST, "therapist", i) for i in range(options.therapists)]
            race_users = [user(Role.THERAPIST, "race-therapist", i) for i in range(options.race_therapists)]
            probe = user(Role.THERAPIST, "probe-therapist", 0)
            clients = [user(Role.CLIENT, "client", i) for i in range(clients_needed)]
            race_clients = [user(Role.CLIENT, "race-client", i) for i in range(race_clients_needed)]
            probe_client = user(Role.CLIENT, "probe-client", 0)
            session.add_all([*therapist_users, *race_users, probe, *clients, *race_clients, probe_client])
            await session.flush()
            for therapist in [*therapist_users, *race_users, probe]:
                await therapists.save_profile(session, therapist.id, Role.THERAPIST, profile, now=now)
                await therapists.set_availability(session, therapist.id, availability)
    finally:
        await engine.dispose()
    return People(
        therapists=[u.id for u in therapist_users],
        race_therapists=[u.id for u in race_users],
        probe_therapist=probe.id,
        clients=[u.email for u in clients],
        race_clients=[u.email for u in race_clients],
        probe_client=probe_client.email,
    )


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


async def verify(admin: Any, people: People, contention: SlotLedger, distinct: SlotLedger) -> dict[str, Any]:
    """What the database holds after the load: one active booking per slot, one per success."""
    from smilingsteps.bookings.models import ACTIVE_VALUES  # type: ignore[import-untyped, unused-ignore]

    active = list(ACTIVE_VALUES)
    doubles = await admin.fetchval(
        "SELECT count(*) FROM (SELECT therapist_id, starts_at FROM bookings WHERE status = ANY($1) "
        "GROUP BY 1, 2 HAVING count(*) > 1) AS d",
        active,
    )
    overlapping = await admin.fetchval(
        "SELECT count(*) FROM bookings a JOIN bookings b ON a.therapist_id = b.therapist_id AND a.id < b.id "
        "AND a.starts_at < b.blocks_until AND b.starts_at < a.blocks_until "
        "WHERE a.status = ANY($1) AND b.status = ANY($1)",
        active,
    )
    rows = await admin.fetch(
        "SELECT therapist_id, starts_at, count(*) AS n FROM bookings WHERE status = ANY($1) "
        "AND therapist_id = ANY($2) GROUP BY 1, 2",
        active,
        people.race_therapists,
    )
    stored = {(uuid.UUID(str(r["therapist_id"])), _utc(r["starts_at"])): r["n"] for r in rows}
    attempted = contention.attempted
    one_each = all(stored.get(slot) == 1 for slot in attempted)
    wins = Counter(contention.successes)
    distinct_rows = await admin.fetchval(
        "SELECT count(*) FROM bookings WHERE status = ANY($1) AND therapist_id = ANY($2)", active, people.therapists
    )
    return {
        "bookings_total": await admin.fetchval("SELECT count(*) FROM bookings"),
        "bookings_by_status": {
            r["status"]: r["n"]
            for r in await admin.fetch("SELECT status, count(*) AS n FROM bookings GROUP BY status ORDER BY status")
        },
        "outbox_messages": await admin.fetchval("SELECT count(*) FROM email_outbox")
        if await admin.fetchval("SELECT to_regclass('email_outbox') IS NOT NULL")
        else None,
        "double_bookings_same_start": doubles,
        "overlapping_active_pairs": overlapping,
        "contention": {
            "slots_attempted": len(attempted),
            "slots_with_exactly_one_active_booking": sum(1 for slot in attempted if stored.get(slot) == 1),
            "rows_for_unattempted_slots": sum(n for slot, n in stored.items() if slot not in attempted),
            "slots_with_one_201": sum(1 for slot in attempted if wins.get(slot) == 1),
            "exactly_one_per_slot": one_each
            and len(stored) == len(attempted)
            and all(wins.get(slot) == 1 for slot in attempted),
        },
        "distinct": {
            "successes_reported": len(distinct.successes),
            "active_rows": distinct_rows,
            "rows_match_successes": distinct_rows == len(distinct.successes),
        },
    }


# --------------------------------------------------------------------------
# Requests: the slot grid, the request streams, the load generator
# --------------------------------------------------------------------------


def http_json(port: int, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def sign_in(port: int, emails: list[str]) -> list[str]:
    tokens = []
    for email in emails:
        status, body = http_json(port, "POST", LOGIN_PATH, {"email": email, "password": PASSWORD, "client": "native"})
        if status != 200 or not body.get("access_token"):
            raise RuntimeError(f"login {email}: {status} {body}")
        tokens.append(body["access_token"])
    return tokens


def slot_grid(port: int, therapist_id: uuid.UUID) -> tuple[list[dt.datetime], dt.datetime]:
    """Every free start within the horizon, as the API lists them, minus a margin at the near end."""
    now = dt.datetime.now(dt.UTC)
    query = f"from={now.isoformat()}&to={(now + dt.timedelta(days=60)).isoformat()}&tz=UTC".replace("+", "%2B")
    status, body = http_json(port, "GET", f"{API}/therapists/{therapist_id}/slots?{query}")
    if status != 200:
        raise RuntimeError(f"slots: {status} {body}")
    starts = [_utc(dt.datetime.fromisoformat(s["start"])) for s in body]
    earliest = now + dt.timedelta(hours=12) + SLOT_MARGIN
    return [s for s in starts if s >= earliest], now


Slot = tuple[uuid.UUID, dt.datetime]


def booking_request(token: str, therapist_id: uuid.UUID, start: dt.datetime) -> bytes:
    body = json.dumps(
        {"therapist_id": str(therapist_id), "starts_at": start.isoformat(), "timezone": THERAPIST_TZ},
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST {BOOKINGS_PATH} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get_request(path: str) -> bytes:
    """No port in Host: the same bytes serve every server of the run."""
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


@dataclass
class SlotLedger:
    """Which slots were asked for and which requests succeeded."""

    attempted: set[Slot] = field(default_factory=set)
    successes: list[Slot] = field(default_factory=list)


class Stream:
    """Requests handed out in order, each once (bookings), or round and round (reads)."""

    def __init__(self, items: list[tuple[bytes, Slot | None]], *, cycle: bool, ledger: SlotLedger | None) -> None:
        self.items = items
        self.cycle = cycle
        self.ledger = ledger
        self.next_index = 0

    def take(self) -> tuple[bytes, Slot | None] | None:
        if self.next_index >= len(self.items):
            if not self.cycle:
                return None
            self.next_index = 0
        item = self.items[self.next_index]
        self.next_index += 1
        if self.ledger is not None and item[1] is not None:
            self.ledger.attempted.add(item[1])
        return item

    @property
    def remaining(self) -> int:
        return len(self.items) - self.next_index


def distinct_stream(
    therapists: list[uuid.UUID], starts: list[dt.datetime], tokens: list[str], ledger: SlotLedger
) -> Stream:
    """Time k outer, therapist t inner; client (t + k) mod C never gets two requests for one time."""
    if len(tokens) < len(therapists):
        raise ValueError("need at least as many clients as therapists")
    items: list[tuple[bytes, Slot | None]] = []
    for k, start in enumerate(starts):
        for t, therapist in enumerate(therapists):
            items.append((booking_request(tokens[(t + k) % len(tokens)], therapist, start), (therapist, start)))
    return Stream(items, cycle=False, ledger=ledger)


def contention_stream(
    therapists: list[uuid.UUID],
    starts: list[dt.datetime],
    tokens: list[str],
    racers: int,
    ledger: SlotLedger,
) -> Stream:
    """`racers` requests per slot, back to back, each from a different client; for one time k the
    clients of different therapists are disjoint ((t * racers + j + k) mod C), so no client-overlap."""
    clients = len(tokens)
    if clients < len(therapists) * racers:
        raise ValueError("need therapists x racers clients")
    items: list[tuple[bytes, Slot | None]] = []
    for k, start in enumerate(starts):
        for t, therapist in enumerate(therapists):
            for j in range(racers):
                token = tokens[(t * racers + j + k) % clients]
                items.append((booking_request(token, therapist, start), (therapist, start)))
    return Stream(items, cycle=False, ledger=ledger)


class Connection:
    """One keep-alive HTTP/1.1 connection; responses carry Content-Length (uvicorn, JSON bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        import socket

        reader, writer = await asyncio.open_connection(HOST, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = CONTENT_LENGTH.search(head)
        if length is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        body = await self.reader.readexactly(int(length.group(1)))
        return status, body

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


def outcome(status: int, body: bytes) -> str:
    if status < 400:
        return str(status)
    found = PROBLEM_TYPE.search(body)
    return f"{status} {found.group(1).decode() if found else '?'}"


def percentiles(latencies_ns: list[int]) -> dict[str, float]:
    if not latencies_ns:
        return {}
    ms = sorted(x / 1e6 for x in latencies_ns)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {
        "p50": round(cuts[49], 3),
        "p90": round(cuts[89], 3),
        "p95": round(cuts[94], 3),
        "p99": round(cuts[98], 3),
        "max": round(ms[-1], 3),
        "mean": round(statistics.fmean(ms), 3),
    }


@dataclass
class Context:
    ports: list[int]  # one per server instance; connections are spread over them in turn, like a load balancer
    server_pids: list[int]
    admin: Any  # asyncpg connection to the cluster (pg_stat_activity)
    database: str


async def run_phase(
    ctx: Context, kind: str, stream: Stream, connections: int, duration: float, *, record: bool = True
) -> dict[str, Any]:
    """`connections` workers send requests from `stream` until `duration` has passed (or it runs dry)."""
    conns = [await Connection.open(ctx.ports[i % len(ctx.ports)]) for i in range(connections)]
    pg = await pg_processes(ctx.admin, ctx.database)
    latencies: list[int] = []
    outcomes: Counter[str] = Counter()
    ledger = stream.ledger
    before = snapshot(ctx.server_pids, pg)
    started = time.perf_counter()
    deadline = started + duration
    last_done = started

    async def worker(conn: Connection) -> None:
        nonlocal last_done
        while time.perf_counter() < deadline:
            item = stream.take()
            if item is None:
                return
            raw, slot = item
            sent = time.perf_counter_ns()
            status, body = await conn.send(raw)
            latencies.append(time.perf_counter_ns() - sent)
            outcomes[outcome(status, body)] += 1
            if status == 201 and ledger is not None and slot is not None:
                ledger.successes.append(slot)
            last_done = time.perf_counter()

    await asyncio.gather(*(worker(conn) for conn in conns))
    after = snapshot(ctx.server_pids, pg)
    pg_after = await pg_processes(ctx.admin, ctx.database)
    for conn in conns:
        await conn.close()
    if not record:
        return {}
    elapsed = last_done - started
    requests = len(latencies)
    cpu = cpu_between(before, after, pg_after)
    successes = outcomes.get("201", 0) if kind in {"distinct", "contention", "sequential"} else None
    ok = sum(n for key, n in outcomes.items() if key.startswith("2"))
    result: dict[str, Any] = {
        "kind": kind,
        "connections": connections,
        "seconds": round(elapsed, 3),
        "requests": requests,
        "requests_per_second": round(requests / elapsed, 1),
        "ok_per_second": round(ok / elapsed, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "latency_ms": percentiles(latencies),
        "cpu_s": {key: round(value, 4) if isinstance(value, float) else value for key, value in cpu.items()},
        "server_cpu_us_per_request": round(cpu["server_s"] * 1e6 / max(1, requests), 1),
        "pg_cpu_us_per_request": round(cpu["pg_backends_s"] * 1e6 / max(1, requests), 1),
        "pg_shared_cpu_us_per_request": round(cpu["pg_shared_s"] * 1e6 / max(1, requests), 1),
        "client_cpu_us_per_request": round(cpu["client_s"] * 1e6 / max(1, requests), 1),
        "server_busy_fraction": round(cpu["server_s"] / elapsed, 3),
        # Cores busy with anything but the server, this database's backends, PostgreSQL's shared processes
        # and this load generator: other work on the (shared) machine; about 0 in a clean run.
        "other_load_cores": round(
            cpu["core_busy_fraction"].get("cpu", 0.0) * (len(cpu["core_busy_fraction"]) - 1)
            - (cpu["server_s"] + cpu["pg_backends_s"] + cpu["pg_shared_s"] + cpu["client_s"]) / elapsed,
            3,
        ),
        "pg_busy_fraction": round(cpu["pg_backends_s"] / elapsed, 3),
    }
    if successes is not None:
        result["bookings_per_second"] = round(successes / elapsed, 1)
        result["server_cpu_us_per_booking"] = round(cpu["server_s"] * 1e6 / max(1, successes), 1)
        result["pg_cpu_us_per_booking"] = round(cpu["pg_backends_s"] * 1e6 / max(1, successes), 1)
    return result


# --------------------------------------------------------------------------
# In process: the SQL round trips of one booking
# --------------------------------------------------------------------------


async def round_trips(
    url: str, workdir: Path, people: People, starts: list[dt.datetime], variant: str
) -> dict[str, Any]:
    """One booking (and one anonymous therapist read) in process, every statement recorded with SQLAlchemy
    events; the pool's pre-ping (a round trip SQLAlchemy does not report as a statement) is counted too."""
    import httpx
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from smilingsteps.app import create_app  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.logging import configure_logging  # type: ignore[import-untyped, unused-ignore]

    if variant == "no-pre-ping":
        apply_no_pre_ping_what_if()  # for good, in this process: the last thing the benchmark does with the app
    env = settings_env(url, workdir, Options(pool_size=2), secrets.token_urlsafe(36))
    settings = Settings(**env)
    configure_logging(settings, stream=(workdir / f"inproc-{variant}.log").open("a", encoding="utf-8"))
    app = create_app(settings)
    seen: list[str] = []
    recording = False

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if recording:
            seen.append(" ".join(sql.split())[:160])

    def marker(name: str) -> Any:
        def mark(*_: Any) -> None:
            if recording:
                seen.append(name)

        return mark

    listeners = [
        ("before_cursor_execute", statement),
        ("begin", marker("BEGIN")),
        ("commit", marker("COMMIT")),
        ("rollback", marker("ROLLBACK")),
    ]
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    results: dict[str, Any] = {}
    try:
        async with app.router.lifespan_context(app):
            import smilingsteps.platform.db as db  # type: ignore[import-untyped, unused-ignore]

            engine = app.state.runtime.db.engine.sync_engine
            original_ping = engine.dialect.do_ping

            def counted_ping(dbapi_connection: Any) -> Any:  # SQLAlchemy's pool_pre_ping (source before 0227c29)
                if recording:
                    seen.append("pre-ping (BEGIN; SELECT; ROLLBACK on checkout)")
                return original_ping(dbapi_connection)

            engine.dialect.do_ping = counted_ping
            if hasattr(db, "CheckoutPing") and variant == "standard":
                checkout_ping = db.CheckoutPing.ping

                def counted_checkout_ping(dbapi_connection: Any) -> None:
                    if recording:
                        seen.append("ping on checkout (SELECT 1)")
                    checkout_ping(dbapi_connection)

                db.CheckoutPing.ping = staticmethod(counted_checkout_ping)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                login = await client.post(
                    LOGIN_PATH, json={"email": people.probe_client, "password": PASSWORD, "client": "native"}
                )
                login.raise_for_status()
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                runs: list[dict[str, Any]] = []
                for start in starts:  # the first ones warm caches; the last is reported
                    seen.clear()
                    recording = True
                    response = await client.post(
                        BOOKINGS_PATH,
                        json={"therapist_id": str(people.probe_therapist), "starts_at": start.isoformat()},
                        headers=headers,
                    )
                    recording = False
                    runs.append(
                        {
                            "status": response.status_code,
                            "statements": list(seen),
                            **({"body": response.text[:500]} if response.status_code != 201 else {}),
                        }
                    )
                seen.clear()
                recording = True
                read = await client.get(f"{API}/therapists/{people.probe_therapist}")
                recording = False
                read_statements = list(seen)
            results = {
                "booking": {
                    "status": runs[-1]["status"],
                    **({"body": runs[-1]["body"]} if "body" in runs[-1] else {}),
                    "round_trips": len(runs[-1]["statements"]),
                    "statements": runs[-1]["statements"],
                    "round_trips_per_run": [len(r["statements"]) for r in runs],
                },
                "therapist_read": {
                    "status": read.status_code,
                    "round_trips": len(read_statements),
                    "statements": read_statements,
                },
                "note": "one entry per round trip to PostgreSQL, as SQLAlchemy sees them: the pool's pre-ping, "
                "BEGIN (sent by asyncpg as its own message before the first statement), each statement "
                "(SAVEPOINT / RELEASE included), COMMIT. Not counted: asyncpg's PREPARE on a prepared-statement "
                "cache miss (once per statement text per connection; warm after the first requests)",
            }
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)
    return results


# --------------------------------------------------------------------------
# py-spy: where the server's CPU goes during distinct-slot bookings
# --------------------------------------------------------------------------

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("asyncpg (driver)", ("asyncpg/", "asyncpg.protocol", "asyncpg/pgproto")),
    ("SQLAlchemy (ORM, unit of work, SQL compilation, result rows)", ("sqlalchemy/",)),
    ("pydantic (request/response models)", ("pydantic/", "pydantic_core")),
    ("email rendering (jinja2, queue_email)", ("jinja2/", "smilingsteps/notifications/", "markupsafe")),
    ("slot rules (is_bookable)", ("smilingsteps/therapists/slots.py",)),
    ("access log and logging", ("structlog/", "smilingsteps/platform/logging", "smilingsteps/platform/access_log")),
    ("authentication (JWT)", ("jwt/", "smilingsteps/accounts/")),
    ("application code (bookings, therapists, platform)", ("smilingsteps/",)),
    ("FastAPI / Starlette (routing, dependencies, middleware plumbing)", ("fastapi/", "starlette/")),
    ("uvicorn, httptools, asyncio, uvloop", ("uvicorn/", "httptools", "asyncio/", "uvloop")),
]


def categorise(frames: list[str]) -> str:
    """The innermost frame that belongs to a known layer decides."""
    for frame in reversed(frames):
        for name, markers in CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return "other (interpreter, stdlib, GC)"


EXECUTING = ("sqlalchemy/orm/session.py", "sqlalchemy/ext/asyncio/", "sqlalchemy/engine/", "sqlalchemy/orm/loading")


def sqlalchemy_part(frames: list[str]) -> str:
    """A SQLAlchemy sample: building a statement in our code (select().where(), before any Session or
    engine frame), or executing it (cache key, compile cache, ORM, results, unit of work, asyncpg adapter)."""
    if any(marker in frame for frame in frames for marker in EXECUTING):
        return "executing (Session/engine: cache key, compiled cache, ORM loading, flush, asyncpg adapter)"
    return "building statements in our code (select()/where()/update() expressions)"


async def sampled_profile(ctx: Context, stream: Stream, options: Options, workdir: Path) -> dict[str, Any]:
    assert options.py_spy is not None
    out = workdir / "pyspy.txt"
    seconds = int(options.profile_seconds)
    command = [
        *pin(options.client_cpu, options),
        *options.py_spy,
        "record",
        "--pid",
        str(ctx.server_pids[0]),  # with --instances N, the first instance only
        "--rate",
        "200",
        "--duration",
        str(seconds),
        "--format",
        "raw",
        "--threads",
        "--output",
        str(out),
    ]
    spy = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    await asyncio.sleep(1.0)  # py-spy attaches
    phase = await run_phase(ctx, "distinct", stream, options.connections, seconds - 1.5)
    spy_output, _ = await spy.communicate()
    if spy.returncode != 0 or not out.exists():
        return {"error": spy_output.decode(errors="replace")[-2000:]}
    by_category: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    by_root: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    sqlalchemy_parts: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        by_thread[re.sub(r"^thread \(\d+\): ", "", thread)] += count
        # The event loop's thread only: the thread pool's idle workers are sampled as if busy,
        # and /proc shows the loop's thread doing all the server's work.
        if not thread.endswith("MainThread") or not frames:
            continue
        total += count
        layer = categorise(frames)
        by_category[layer] += count
        if layer.startswith("SQLAlchemy"):
            sqlalchemy_parts[sqlalchemy_part(frames)] += count
        by_leaf[frames[-1]] += count
        by_root[frames[0]] += count
        # Inclusive: each of our own functions once per sample it is on the stack of.
        for frame in {f for f in frames if "smilingsteps/" in f}:
            by_function[re.sub(r":\d+\)$", ")", frame)] += count
    us = phase.get("server_cpu_us_per_booking", 0.0)
    return {
        "samples_event_loop_thread": total,
        "samples_by_thread": dict(by_thread.most_common()),
        "phase": phase,
        "method": "py-spy record --rate 200 --threads on the server during a distinct-slot phase, event-loop "
        "thread only (the only busy thread by /proc). Python frames only: time in C extensions is charged to "
        "the Python frame that called them (asyncpg's Cython protocol shows under the asyncio callback that "
        "ran it). Each sample goes to the innermost frame of a known layer; see us_basis. SQLAlchemy's ORM "
        "work runs in greenlets whose stacks do not link back to the awaiting code, so the inclusive figures "
        "of our functions leave out most of the ORM work of their queries (see roots).",
        "layers": [
            {"layer": name, "share": round(n / total, 4), "us_per_booking": round(us * n / total, 1)}
            for name, n in by_category.most_common()
        ],
        "sqlalchemy_split": [
            {"part": part, "share": round(n / total, 4), "us_per_booking": round(us * n / total, 1)}
            for part, n in sqlalchemy_parts.most_common()
        ],
        "roots": [{"frame": f, "share": round(n / total, 4)} for f, n in by_root.most_common(10)],
        "top_leaf_frames": [{"frame": f, "share": round(n / total, 4)} for f, n in by_leaf.most_common(25)],
        "inclusive_smilingsteps": [
            {"frame": f, "share": round(n / total, 4), "us_per_booking": round(us * n / total, 1)}
            for f, n in by_function.most_common(30)
        ],
    }


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return round(statistics.median(values), 1) if values else float("nan")


def summarise(runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    mine = [r for r in runs if r["kind"] == kind]
    summary: dict[str, Any] = {
        "rounds": len(mine),
        "requests_per_second": median_of(mine, "requests_per_second"),
        "rounds_requests_per_second": [r["requests_per_second"] for r in mine],
        "p50_ms": median_of([r["latency_ms"] for r in mine], "p50"),
        "p95_ms": median_of([r["latency_ms"] for r in mine], "p95"),
        "p99_ms": median_of([r["latency_ms"] for r in mine], "p99"),
        "server_cpu_us_per_request": median_of(mine, "server_cpu_us_per_request"),
        "pg_cpu_us_per_request": median_of(mine, "pg_cpu_us_per_request"),
        "pg_shared_cpu_us_per_request": median_of(mine, "pg_shared_cpu_us_per_request"),
        "client_cpu_us_per_request": median_of(mine, "client_cpu_us_per_request"),
        "server_busy_fraction": median_of(mine, "server_busy_fraction"),
        "pg_busy_fraction": median_of(mine, "pg_busy_fraction"),
        "other_load_cores_max": max((r["other_load_cores"] for r in mine), default=float("nan")),
        "outcomes": dict(sum((Counter(r["outcomes"]) for r in mine), Counter())),
    }
    if any("bookings_per_second" in r for r in mine):
        summary["bookings_per_second"] = median_of(mine, "bookings_per_second")
        summary["rounds_bookings_per_second"] = [r["bookings_per_second"] for r in mine]
        summary["server_cpu_us_per_booking"] = median_of(mine, "server_cpu_us_per_booking")
        summary["pg_cpu_us_per_booking"] = median_of(mine, "pg_cpu_us_per_booking")
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        summary[key] = round(summary[key], 2)
    return summary


async def benchmark(options: Options, workdir: Path) -> dict[str, Any]:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    from smilingsteps.platform import migrate  # type: ignore[import-untyped, unused-ignore]

    report: dict[str, Any] = {}
    name = await create_database(options.admin_url)
    url = database_url_for(options.admin_url, name)
    report["database"] = {"name": name, "dropped": False}
    print(f"database {name}", flush=True)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        people = await populate(url, options)
        # One secret for both servers: the tokens of the set-up stay valid for the what-if server.
        env = settings_env(url, workdir, options, secrets.token_urlsafe(36))
        report["server_settings"] = {k: v for k, v in env.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
        admin = await asyncpg.connect(database_url_for(options.admin_url, name, driver="postgresql"))
        try:
            report["postgres"] = {
                "version": await admin.fetchval("SHOW server_version"),
                **{
                    setting: await admin.fetchval(f"SHOW {setting}")
                    for setting in ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
                },
            }
            report.update(await measure(options, workdir, env, admin, name, url, people))
        finally:
            await admin.close()
    finally:
        await drop_database(options.admin_url, name)
        report["database"]["dropped"] = True
        print(f"dropped {name}", flush=True)
    return report


@dataclass
class Workload:
    streams: dict[str, Stream]
    distinct_ledger: SlotLedger
    race_ledger: SlotLedger
    starts: list[dt.datetime]
    setup: dict[str, Any]


async def prepare(port: int, people: People, options: Options) -> Workload:
    print("signing in clients", flush=True)
    setup_started = time.monotonic()
    tokens = await asyncio.to_thread(sign_in, port, people.clients)
    race_tokens = await asyncio.to_thread(sign_in, port, people.race_clients)
    starts, grid_now = await asyncio.to_thread(slot_grid, port, people.therapists[0])
    distinct_ledger, race_ledger = SlotLedger(), SlotLedger()
    distinct = distinct_stream(people.therapists, starts, tokens, distinct_ledger)
    contention = contention_stream(people.race_therapists, starts, race_tokens, options.racers, race_ledger)
    read = Stream([(get_request(f"{API}/therapists/{t}"), None) for t in people.therapists], cycle=True, ledger=None)
    health = Stream([(get_request("/health"), None)], cycle=True, ledger=None)
    setup = {
        "seconds": round(time.monotonic() - setup_started, 1),
        "therapists_distinct": len(people.therapists),
        "therapists_contention": len(people.race_therapists),
        "clients_distinct": len(tokens),
        "clients_contention": len(race_tokens),
        "slots_per_therapist": len(starts),
        "first_slot": starts[0].isoformat(),
        "last_slot": starts[-1].isoformat(),
        "grid_read_at": grid_now.isoformat(),
        "distinct_slots_available": len(distinct.items),
        "contention_slots_available": len(contention.items) // options.racers,
    }
    print(f"set-up: {setup}", flush=True)
    streams = {"distinct": distinct, "contention": contention, "read": read, "health": health}
    return Workload(streams, distinct_ledger, race_ledger, starts, setup)


async def interleaved(ctx: Context, workload: Workload, options: Options, label: str) -> list[dict[str, Any]]:
    """Warm-up per kind, then rounds of every kind, the order rotating."""
    streams = workload.streams
    kinds = list(streams)
    for kind in kinds:
        print(f"[{label}] warm-up {kind} {options.warmup} s", flush=True)
        await run_phase(ctx, kind, streams[kind], options.connections, options.warmup, record=False)
    runs: list[dict[str, Any]] = []
    for rnd in range(options.rounds):
        shift = rnd % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            result = await run_phase(ctx, kind, streams[kind], options.connections, options.duration)
            result["round"] = rnd + 1
            runs.append(result)
            rate = result.get("bookings_per_second", result["requests_per_second"])
            print(
                f"[{label}] round {rnd + 1} {kind:<11} {result['requests_per_second']:8.1f} req/s {rate:8.1f} ok/s "
                f"p50 {result['latency_ms']['p50']:7.2f} p99 {result['latency_ms']['p99']:7.2f} ms "
                f"server {result['server_cpu_us_per_request']:7.1f} pg {result['pg_cpu_us_per_request']:7.1f} "
                f"µs/req other load {result['other_load_cores']:.2f} cores",
                flush=True,
            )
            if streams["distinct"].remaining == 0 or streams["contention"].remaining == 0:
                raise RuntimeError("ran out of free slots: add therapists (--therapists / --race-therapists)")
    return runs


def headline(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {kind: summarise(runs, kind) for kind in ("distinct", "contention", "read", "health")}
    distinct_bps = summary["distinct"]["bookings_per_second"]
    return {
        "summary": summary,
        "ratios": {
            "distinct_bookings_per_read": round(distinct_bps / summary["read"]["requests_per_second"], 3),
            "distinct_bookings_per_health": round(distinct_bps / summary["health"]["requests_per_second"], 3),
            "contention_requests_per_distinct_request": round(
                summary["contention"]["requests_per_second"] / summary["distinct"]["requests_per_second"], 3
            ),
        },
    }


async def measure(
    options: Options, workdir: Path, env: dict[str, str], admin: Any, name: str, url: str, people: People
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with running_server(env, workdir, options, "standard") as server:
        ctx = Context(server.ports, server.pids, admin, name)
        workload = await prepare(server.port, people, options)
        distinct = workload.streams["distinct"]
        runs = await interleaved(ctx, workload, options, "standard")
        print(f"sequential bookings {options.sequential} s", flush=True)
        sequential = await run_phase(ctx, "sequential", distinct, 1, options.sequential)
        profile = None
        if options.py_spy:
            print(f"py-spy profile {options.profile_seconds} s", flush=True)
            profile = await sampled_profile(ctx, distinct, options, workdir)
    main = headline(runs)
    distinct_bps = main["summary"]["distinct"]["bookings_per_second"]
    if profile and "layers" in profile:
        # py-spy pauses the server 200 times a second, which inflates its CPU per booking in that phase:
        # the shares are applied to the rounds' median instead.
        base = main["summary"]["distinct"]["server_cpu_us_per_booking"]
        profile["us_basis"] = f"share x {base} µs (the rounds' median server CPU per distinct booking)"
        for key in ("layers", "sqlalchemy_split", "inclusive_smilingsteps"):
            for row in profile[key]:
                row["us_per_booking"] = round(row["share"] * base, 1)
    result.update(
        {
            "setup": workload.setup,
            "summary": main["summary"],
            "sequential": sequential,
            "target": {
                "bookings_per_second": TARGET_BOOKINGS_PER_SECOND,
                "measure": "median over rounds of successful (201) bookings per second, distinct slots",
                "distinct_bookings_per_second": distinct_bps,
                "met": distinct_bps >= TARGET_BOOKINGS_PER_SECOND,
                "contention_bookings_per_second": main["summary"]["contention"]["bookings_per_second"],
            },
            "ratios": main["ratios"],
            "profile": profile,
            "runs": runs,
        }
    )
    what_if_runs: list[dict[str, Any]] = []
    if options.what_if:
        with running_server(env, workdir, options, "no-pre-ping") as server:
            ctx = Context(server.ports, server.pids, admin, name)
            what_if_runs = await interleaved(ctx, workload, options, "no-pre-ping")
    print("in process: round trips of one booking", flush=True)
    probe_starts = workload.starts[: len(workload.starts) // 2 : 24]  # days apart, the probe therapist only
    trips = {"standard": await round_trips(url, workdir, people, probe_starts[:4], "standard")}
    if options.what_if:
        trips["no-pre-ping"] = await round_trips(url, workdir, people, probe_starts[4:8], "no-pre-ping")
    result["round_trips"] = trips
    if what_if_runs:
        other = headline(what_if_runs)
        result["what_if_no_pre_ping"] = {
            "description": (apply_no_pre_ping_what_if.__doc__ or "").strip(),
            "round_trips_per_booking": trips["no-pre-ping"]["booking"]["round_trips"],
            "summary": other["summary"],
            "ratios": other["ratios"],
            "distinct_bookings_per_second_vs_standard": round(
                other["summary"]["distinct"]["bookings_per_second"] / distinct_bps, 3
            ),
            "runs": what_if_runs,
        }
    result["checks"] = await verify(admin, people, workload.race_ledger, workload.distinct_ledger)
    result["server_errors"] = {variant: server_errors(workdir / f"app-{variant}.log") for variant in VARIANTS}
    return result


def server_errors(log_file: Path) -> dict[str, Any]:
    """Error-level lines of a server's JSON log: counted by event and exception, the first few kept."""
    if not log_file.exists():
        return {"lines": 0}
    counts: Counter[str] = Counter()
    examples: list[str] = []
    with log_file.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"level":"error"' not in line.replace(" ", ""):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                counts["unparsed"] += 1
                continue
            text = str(event.get("exception", ""))
            last = text.strip().splitlines()[-1] if text.strip() else ""
            counts[f"{event.get('event')}: {last[:200]}"] += 1
            if len(examples) < 2:
                examples.append(text[-4000:])
    return {"lines": sum(counts.values()), "by_event": dict(counts.most_common()), "examples": examples}


def machine() -> dict[str, Any]:
    info = common.machine()
    info["cpu_model_proc_cpuinfo"] = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    info["versions"].update(
        {name: common._version(name) for name in ("sqlalchemy", "asyncpg", "argon2-cffi", "PyJWT", "jinja2")}
    )
    return info


def source_info() -> dict[str, Any]:
    return common.measured_source(
        (
            "bookings/router.py",
            "bookings/service.py",
            "bookings/repository.py",
            "therapists/service.py",
            "therapists/repository.py",
            "therapists/slots.py",
            "notifications/service.py",
            "platform/db.py",
        )
    )


def print_report(report: dict[str, Any]) -> None:
    summary = report["summary"]
    print(f"\n{'':<11}{'req/s':>9}{'ok/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'server µs':>11}{'pg µs':>9}")
    for kind, row in summary.items():
        ok = row.get("bookings_per_second", row["requests_per_second"])
        print(
            f"{kind:<11}{row['requests_per_second']:>9.1f}{ok:>9.1f}{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{row['server_cpu_us_per_request']:>11.1f}{row['pg_cpu_us_per_request']:>9.1f}"
        )
    seq = report["sequential"]
    print(
        f"sequential: {seq['bookings_per_second']:.1f} bookings/s, p50 {seq['latency_ms']['p50']:.2f} ms, "
        f"server {seq['server_cpu_us_per_booking']:.1f} µs, pg {seq['pg_cpu_us_per_booking']:.1f} µs per booking"
    )
    target = report["target"]
    print(
        f"target >= {target['bookings_per_second']:.0f} bookings/s: {target['distinct_bookings_per_second']:.1f} "
        f"({'MET' if target['met'] else 'NOT MET'}); contention {target['contention_bookings_per_second']:.1f}/s"
    )
    print(f"ratios: {report['ratios']}")
    trips = report["round_trips"]
    print("round trips per booking: " + ", ".join(f"{k} {v['booking']['round_trips']}" for k, v in trips.items()))
    what_if = report.get("what_if_no_pre_ping")
    if what_if:
        for kind, row in what_if["summary"].items():
            ok = row.get("bookings_per_second", row["requests_per_second"])
            print(
                f"what-if no pre-ping {kind:<4}{row['requests_per_second']:>9.1f}{ok:>9.1f} ok/s "
                f"p50 {row['p50_ms']:.2f} "
                f"p99 {row['p99_ms']:.2f} ms server {row['server_cpu_us_per_request']:.1f} µs"
            )
        ratio = what_if["distinct_bookings_per_second_vs_standard"]
        print(f"what-if no pre-ping / standard, distinct bookings/s: {ratio}")
    print(f"checks: {json.dumps(report['checks'])}")
    if report.get("profile") and "layers" in report["profile"]:
        for row in report["profile"]["layers"]:
            print(f"  {row['share'] * 100:5.1f} %  {row['us_per_booking']:7.1f} µs  {row['layer']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--serve", choices=VARIANTS, help="run one server (used by the benchmark itself)")
    parser.add_argument("--port", type=int, help="port for --serve (127.0.0.1 only)")
    parser.add_argument("--workdir", type=Path, help="scratch directory for --serve")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured phase (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per kind (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--sequential", type=float, default=4.0, help="seconds of one-connection bookings (4)")
    parser.add_argument("--racers", type=int, default=8, help="contention: requests per slot (default 8)")
    parser.add_argument("--therapists", type=int, default=40, help="distinct-slot therapists (default 40)")
    parser.add_argument("--race-therapists", type=int, default=8, help="contention therapists (default 8)")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="server processes (default 1, pinned to a core); more run unpinned on their own ports, "
        "the load generator spreading its connections over them like a load balancer",
    )
    parser.add_argument("--pool-size", type=int, default=20, help="DB_POOL_SIZE of the server (default 20)")
    parser.add_argument("--max-overflow", type=int, default=0, help="DB_MAX_OVERFLOW of the server (default 0)")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="libpq URL of a maintenance database")
    parser.add_argument(
        "--py-spy",
        nargs="?",
        const=DEFAULT_PY_SPY,
        default=None,
        help="also profile the server with py-spy (optionally the command to run it; default: uv tool run py-spy)",
    )
    parser.add_argument("--no-what-if", action="store_true", help="skip the what-if server (no pool pre-ping)")
    parser.add_argument("--profile-seconds", type=float, default=12.0, help="py-spy recording length (12)")
    parser.add_argument(
        "--tmp-root", default=common.default_tmp_root(), help="scratch directory root (default: /dev/shm when present)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument(
        "--ref", help="measure this commit's src/ (git archive), not the working tree (which others may be editing)"
    )
    args = parser.parse_args(argv)

    if args.serve:
        if args.port is None or args.workdir is None:
            parser.error("--serve needs --port and --workdir")
        serve(args.port, args.workdir, args.serve)
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    options = Options(
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        sequential=args.sequential,
        racers=args.racers,
        therapists=args.therapists,
        race_therapists=args.race_therapists,
        pool_size=args.pool_size,
        max_overflow=args.max_overflow,
        admin_url=args.admin_url,
        py_spy=shlex.split(args.py_spy) if args.py_spy else None,
        profile_seconds=args.profile_seconds,
        what_if=not args.no_what_if,
        server_cpu=cpus[0],
        client_cpu=cpus[1] if len(cpus) > 1 else cpus[0],
        pinned=len(cpus) > 1 and args.instances == 1,
        tmp_root=args.tmp_root,
        instances=args.instances,
    )
    database_url_for(options.admin_url, "check")  # loopback only
    import uvloop

    exported = tempfile.TemporaryDirectory(prefix="booking-bench-src-")
    if args.ref:
        common.use_ref(args.ref, Path(exported.name))  # here and, through PYTHONPATH, in the servers
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "Booking creation throughput on PostgreSQL: distinct slots and contention",
        "generated_at": now_iso(),
        "machine": machine(),
        "source": source_info(),
        "command": " ".join(
            [
                ".tools/bin/uv run --frozen python bench/booking_throughput.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "options": {
            key: value for key, value in vars(options).items() if key not in {"admin_url", "tmp_root", "py_spy"}
        },
        "load_average_at_start": os.getloadavg(),
    }
    before = os.sched_getaffinity(0)
    if options.pinned:
        os.sched_setaffinity(0, {options.client_cpu})  # the load generator; the server goes to the other core
    try:
        with (
            tempfile.TemporaryDirectory(prefix="booking-bench-", dir=options.tmp_root) as tmp,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            report.update(runner.run(benchmark(options, Path(tmp))))
    finally:
        os.sched_setaffinity(0, before)
        exported.cleanup()
    report["load_average_at_end"] = os.getloadavg()
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print_report(report)
    print(f"\nwritten {out.relative_to(BENCH_DIR.parent) if out.is_relative_to(BENCH_DIR.parent) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
