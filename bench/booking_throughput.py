"""Booking creation throughput on PostgreSQL: distinct slots, and many clients racing for the same slots.

Measures successful ``POST /api/v1/bookings`` per second (target: at least 300 across distinct slots
on this machine; the issue's slots target is ``slots_cost.py``), on a fresh PostgreSQL database
(dropped at the end) and one production server (``create_app`` + ``build_server``) pinned to CPU 0,
loaded by the harness's asyncio load generator on CPU 1. Set-up, not measured: approved therapists
with a slot every hour, verified clients signed in over HTTP (bearer tokens), the slot grid.

Phases, in interleaved rounds: ``distinct`` (every request a different slot), ``contention``
(``--racers`` clients per slot: exactly one must win, checked in the responses and the database),
``read`` (``GET /api/v1/therapists/{id}``, the baseline), ``health``, and once ``sequential`` (one
connection). Each reports requests and bookings per second, latency, and the CPU per request of
the server, of PostgreSQL and of the load generator. In process: the SQL round trips of one
booking. ``--py-spy``: where the server's CPU goes. What-if (``--no-what-if`` skips it): a second
server with no liveness ping on checkout (``apply_no_pre_ping_what_if``), in the same rounds.

Usage (from the repository root; bench/README.md has the details)::

    .tools/bin/uv run --frozen python bench/booking_throughput.py --ref HEAD --py-spy   # ~4 min
    .tools/bin/uv run --frozen python bench/booking_throughput.py --serve standard --port 8001 --workdir /tmp/x

Results: ``bench/results/booking_throughput.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import secrets
import shlex
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import profiling

API = "/api/v1"
BOOKINGS_PATH = f"{API}/bookings"
LOGIN_PATH = f"{API}/auth/login"
TARGET_BOOKINGS_PER_SECOND = 300.0
PASSWORD = "tangerine orbit lantern 4127"
THERAPIST_TZ = "Africa/Nairobi"
ARGON2 = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_KIB": "19456", "ARGON2_PARALLELISM": "1"}
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_PY_SPY = f"{harness.REPO_DIR / '.tools/bin/uv'} tool run py-spy"
# A slot must still be 12 h ahead when its request is sent: keep this margin past the set-up's "now".
SLOT_MARGIN = dt.timedelta(hours=3)
VARIANTS = ("standard", "no-pre-ping")
SOURCE_FILES = (
    "bookings/router.py",
    "bookings/service.py",
    "bookings/repository.py",
    "therapists/service.py",
    "therapists/repository.py",
    "therapists/slots.py",
    "notifications/service.py",
    "platform/db.py",
)


@dataclass
class Options(harness.Load):
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
    instances: int = 1


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


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
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.server import build_server  # type: ignore[import-untyped, unused-ignore]

    if variant == "no-pre-ping":
        apply_no_pre_ping_what_if()
    settings = Settings()
    app = harness.logged_app(settings, workdir / f"app-{variant}.log")
    build_server(app, settings, host=harness.HOST, port=port).run()


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


@asynccontextmanager
async def running_server(
    env: dict[str, str], workdir: Path, options: Options, variant: str
) -> AsyncIterator[harness.Target]:
    """The servers of one variant: one pinned process, or ``--instances`` unpinned ones on their own ports."""

    def start(name: str) -> harness.Server:
        return harness.start_server(__file__, [variant], name, workdir, options.taskset(options.server_cpu), env)

    names = [f"{variant}-{index}" for index in range(options.instances)]
    with harness.running_servers(start, names, timeout=60.0) as servers:
        yield harness.Target([s.port for s in servers.values()], [s.pid for s in servers.values()])


# --------------------------------------------------------------------------
# The database: populate, verify
# --------------------------------------------------------------------------


@dataclass
class People:
    therapists: list[uuid.UUID]  # the distinct-slot therapists
    race_therapists: list[uuid.UUID]
    probe_therapist: uuid.UUID  # for the in-process round-trip count
    clients: list[str]  # emails: distinct-slot clients
    race_clients: list[str]
    probe_client: str


async def populate(url: str, options: Options) -> People:
    """Therapists (profile, every day 00:00-23:59) and verified clients, straight into the database
    (as tests/support/bookings.py does)."""
    import argon2
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from smilingsteps.accounts.models import Role, TherapistStatus, User  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.therapists import service as therapists  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.therapists.schemas import AvailabilityIn, ProfileIn, RuleIn  # type: ignore[import-untyped, unused-ignore]

    # The server's own argon2 parameters, so a login does not rehash.
    password_hash = argon2.PasswordHasher(
        time_cost=int(ARGON2["ARGON2_TIME_COST"]),
        memory_cost=int(ARGON2["ARGON2_MEMORY_KIB"]),
        parallelism=int(ARGON2["ARGON2_PARALLELISM"]),
        type=argon2.Type.ID,
    ).hash(PASSWORD)
    now = dt.datetime.now(dt.UTC)
    run = secrets.token_hex(3)

    def users(role: Any, tag: str, count: int) -> list[Any]:
        therapist = role is Role.THERAPIST
        return [
            User(
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
            for index in range(count)
        ]

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
    therapist_users = users(Role.THERAPIST, "therapist", options.therapists)
    race_users = users(Role.THERAPIST, "race-therapist", options.race_therapists)
    probe = users(Role.THERAPIST, "probe-therapist", 1)[0]
    clients = users(Role.CLIENT, "client", max(options.therapists, 1))
    race_clients = users(Role.CLIENT, "race-client", options.race_therapists * options.racers)
    probe_client = users(Role.CLIENT, "probe-client", 1)[0]
    engine = create_async_engine(url)
    try:
        maker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        async with maker() as session, session.begin():
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


async def verify(admin: Any, people: People, contention: harness.Ledger, distinct: harness.Ledger) -> dict[str, Any]:
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
    wins = Counter(contention.successes)
    distinct_rows = await admin.fetchval(
        "SELECT count(*) FROM bookings WHERE status = ANY($1) AND therapist_id = ANY($2)", active, people.therapists
    )
    has_outbox = await admin.fetchval("SELECT to_regclass('email_outbox') IS NOT NULL")
    return {
        "bookings_total": await admin.fetchval("SELECT count(*) FROM bookings"),
        "bookings_by_status": {
            r["status"]: r["n"]
            for r in await admin.fetch("SELECT status, count(*) AS n FROM bookings GROUP BY status ORDER BY status")
        },
        "outbox_messages": await admin.fetchval("SELECT count(*) FROM email_outbox") if has_outbox else None,
        "double_bookings_same_start": doubles,
        "overlapping_active_pairs": overlapping,
        "contention": {
            "slots_attempted": len(attempted),
            "slots_with_exactly_one_active_booking": sum(1 for slot in attempted if stored.get(slot) == 1),
            "rows_for_unattempted_slots": sum(n for slot, n in stored.items() if slot not in attempted),
            "slots_with_one_201": sum(1 for slot in attempted if wins.get(slot) == 1),
            "exactly_one_per_slot": all(stored.get(slot) == 1 and wins.get(slot) == 1 for slot in attempted)
            and len(stored) == len(attempted),
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


def sign_in(port: int, emails: list[str]) -> list[str]:
    client = harness.Client(port, timeout=60)
    tokens = []
    for email in emails:
        status, _, raw = client.request("POST", LOGIN_PATH, {"email": email, "password": PASSWORD, "client": "native"})
        body = json.loads(raw) if raw else {}
        if status != 200 or not body.get("access_token"):
            raise RuntimeError(f"login {email}: {status} {body}")
        tokens.append(body["access_token"])
    client.close()
    return tokens


def slot_grid(port: int, therapist_id: uuid.UUID) -> tuple[list[dt.datetime], dt.datetime]:
    """Every free start within the horizon, as the API lists them, minus a margin at the near end."""
    now = dt.datetime.now(dt.UTC)
    query = f"from={now.isoformat()}&to={(now + dt.timedelta(days=60)).isoformat()}&tz=UTC".replace("+", "%2B")
    status, _, raw = harness.request(port, "GET", f"{API}/therapists/{therapist_id}/slots?{query}", timeout=60)
    if status != 200:
        raise RuntimeError(f"slots: {status} {raw[:300]!r}")
    starts = [_utc(dt.datetime.fromisoformat(s["start"])) for s in json.loads(raw)]
    earliest = now + dt.timedelta(hours=12) + SLOT_MARGIN
    return [s for s in starts if s >= earliest], now


def booking_request(token: str, therapist_id: uuid.UUID, start: dt.datetime) -> bytes:
    body = json.dumps(
        {"therapist_id": str(therapist_id), "starts_at": start.isoformat(), "timezone": THERAPIST_TZ},
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST {BOOKINGS_PATH} HTTP/1.1\r\nHost: {harness.HOST}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get_request(path: str) -> bytes:
    """No port in Host: the same bytes serve every server of the run."""
    return f"GET {path} HTTP/1.1\r\nHost: {harness.HOST}\r\n\r\n".encode()


def booking_stream(
    therapists: list[uuid.UUID], starts: list[dt.datetime], tokens: list[str], racers: int, ledger: harness.Ledger
) -> harness.Stream:
    """Time k outer, therapist t inner, `racers` requests per slot back to back, each from a different
    client: client (t * racers + j + k) mod C. With racers = 1 (distinct slots) a client never gets
    two requests for one time; with racers > 1 the clients of different therapists are disjoint for
    one time k, so no client-overlap either."""
    if len(tokens) < len(therapists) * racers:
        raise ValueError("need therapists x racers clients")
    items: list[tuple[bytes, Any]] = []
    for k, start in enumerate(starts):
        for t, therapist in enumerate(therapists):
            for j in range(racers):
                token = tokens[(t * racers + j + k) % len(tokens)]
                items.append((booking_request(token, therapist, start), (therapist, start)))
    return harness.Stream(items, ledger=ledger)


# --------------------------------------------------------------------------
# In process: the SQL round trips of one booking
# --------------------------------------------------------------------------


async def round_trips(
    url: str, workdir: Path, people: People, starts: list[dt.datetime], variant: str
) -> dict[str, Any]:
    """One booking (and one anonymous therapist read) in process, every statement recorded with SQLAlchemy
    events; the checkout ping (a round trip SQLAlchemy does not report as a statement) is counted too."""
    import httpx
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import smilingsteps.platform.db as db  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

    if variant == "no-pre-ping":
        apply_no_pre_ping_what_if()  # for good, in this process: the last thing the benchmark does with the app
    settings = Settings(**settings_env(url, workdir, Options(pool_size=2), secrets.token_urlsafe(36)))
    app = harness.logged_app(settings, workdir / f"inproc-{variant}.log")
    seen: list[str] = []
    recording = False

    def note(entry: str) -> None:
        if recording:
            seen.append(entry)

    listeners = [
        ("before_cursor_execute", lambda _conn, _cursor, sql, *_: note(" ".join(sql.split())[:160])),
        ("begin", lambda *_: note("BEGIN")),
        ("commit", lambda *_: note("COMMIT")),
        ("rollback", lambda *_: note("ROLLBACK")),
    ]
    for name, listener in listeners:
        event.listen(Engine, name, listener)

    async def recorded(request: Any) -> tuple[Any, list[str]]:
        nonlocal recording
        seen.clear()
        recording = True
        try:
            return await request, list(seen)
        finally:
            recording = False

    try:
        async with app.router.lifespan_context(app):
            engine = harness.app_runtime(app).db.engine.sync_engine
            original_ping = engine.dialect.do_ping

            def counted_ping(dbapi_connection: Any) -> Any:  # SQLAlchemy's pool_pre_ping (source before 0227c29)
                note("pre-ping (BEGIN; SELECT; ROLLBACK on checkout)")
                return original_ping(dbapi_connection)

            engine.dialect.do_ping = counted_ping
            if hasattr(db, "CheckoutPing") and variant == "standard":
                checkout_ping = db.CheckoutPing.ping

                def counted_checkout_ping(dbapi_connection: Any) -> None:
                    note("ping on checkout (SELECT 1)")
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
                    body = {"therapist_id": str(people.probe_therapist), "starts_at": start.isoformat()}
                    response, statements = await recorded(client.post(BOOKINGS_PATH, json=body, headers=headers))
                    runs.append(
                        {
                            "status": response.status_code,
                            "statements": statements,
                            **({"body": response.text[:500]} if response.status_code != 201 else {}),
                        }
                    )
                read, read_statements = await recorded(client.get(f"{API}/therapists/{people.probe_therapist}"))
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)
    return {
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


# --------------------------------------------------------------------------
# py-spy: where the server's CPU goes during distinct-slot bookings
# --------------------------------------------------------------------------

CATEGORIES: profiling.Layers = [
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
OTHER = "other (interpreter, stdlib, GC)"
EXECUTING = ("sqlalchemy/orm/session.py", "sqlalchemy/ext/asyncio/", "sqlalchemy/engine/", "sqlalchemy/orm/loading")


def categorise(frames: list[str]) -> str:
    """The innermost frame that belongs to a known layer decides."""
    for frame in reversed(frames):
        for name, markers in CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return OTHER


def sqlalchemy_part(frames: list[str]) -> str:
    """A SQLAlchemy sample: building a statement in our code (select().where(), before any Session or
    engine frame), or executing it (cache key, compile cache, ORM, results, unit of work, asyncpg adapter)."""
    if any(marker in frame for frame in frames for marker in EXECUTING):
        return "executing (Session/engine: cache key, compiled cache, ORM loading, flush, asyncpg adapter)"
    return "building statements in our code (select()/where()/update() expressions)"


async def sampled_profile(
    ctx: harness.Target, stream: harness.Stream, options: Options, workdir: Path
) -> dict[str, Any]:
    assert options.py_spy is not None
    out = workdir / "pyspy.txt"
    seconds = int(options.profile_seconds)
    # With --instances N, the first instance only.
    command = profiling.py_spy_record(options.py_spy, ctx.server_pids[0], out, rate=200, seconds=seconds, threads=True)
    spy = await asyncio.create_subprocess_exec(
        *options.taskset(options.client_cpu), *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    await asyncio.sleep(1.0)  # py-spy attaches
    phase = await run_phase(ctx, "distinct", stream, options.connections, seconds - 1.5)
    spy_output, _ = await spy.communicate()
    if spy.returncode != 0 or not out.exists():
        return {"error": spy_output.decode(errors="replace")[-2000:]}
    counters: dict[str, Counter[str]] = {
        name: Counter() for name in ("layer", "leaf", "root", "function", "thread", "sa")
    }
    total = 0
    for (thread, *frames), count in profiling.collapsed(out):
        counters["thread"][re.sub(r"^thread \(\d+\): ", "", thread)] += count
        # The event loop's thread only: the thread pool's idle workers are sampled as if busy,
        # and /proc shows the loop's thread doing all the server's work.
        if not thread.endswith("MainThread") or not frames:
            continue
        total += count
        layer = categorise(frames)
        counters["layer"][layer] += count
        if layer.startswith("SQLAlchemy"):
            counters["sa"][sqlalchemy_part(frames)] += count
        counters["leaf"][frames[-1]] += count
        counters["root"][frames[0]] += count
        # Inclusive: each of our own functions once per sample it is on the stack of.
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames if "smilingsteps/" in f}:
            counters["function"][frame] += count
    us = phase.get("server_cpu_us_per_booking", 0.0)

    def rows(name: str, key: str, top: int | None = None, *, with_us: bool = True) -> list[dict[str, Any]]:
        return [
            {key: f, "share": round(n / total, 4), **({"us_per_booking": round(us * n / total, 1)} if with_us else {})}
            for f, n in counters[name].most_common(top)
        ]

    return {
        "samples_event_loop_thread": total,
        "samples_by_thread": dict(counters["thread"].most_common()),
        "phase": phase,
        "method": "py-spy record --rate 200 --threads on the server during a distinct-slot phase, event-loop "
        "thread only (the only busy thread by /proc). Python frames only: time in C extensions is charged to "
        "the Python frame that called them (asyncpg's Cython protocol shows under the asyncio callback that "
        "ran it). Each sample goes to the innermost frame of a known layer; see us_basis. SQLAlchemy's ORM "
        "work runs in greenlets whose stacks do not link back to the awaiting code, so the inclusive figures "
        "of our functions leave out most of the ORM work of their queries (see roots).",
        "layers": rows("layer", "layer"),
        "sqlalchemy_split": rows("sa", "part"),
        "roots": rows("root", "frame", 10, with_us=False),
        "top_leaf_frames": rows("leaf", "frame", 25, with_us=False),
        "inclusive_smilingsteps": rows("function", "frame", 30),
    }


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


def headline(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {
        kind: harness.phase_summary([r for r in runs if r["kind"] == kind], "booking")
        for kind in ("distinct", "contention", "read", "health")
    }
    distinct = summary["distinct"]
    return {
        "summary": summary,
        "ratios": {
            "distinct_bookings_per_read": round(
                distinct["bookings_per_second"] / summary["read"]["requests_per_second"], 3
            ),
            "distinct_bookings_per_health": round(
                distinct["bookings_per_second"] / summary["health"]["requests_per_second"], 3
            ),
            "contention_requests_per_distinct_request": round(
                summary["contention"]["requests_per_second"] / distinct["requests_per_second"], 3
            ),
        },
    }


@dataclass
class Workload:
    streams: dict[str, harness.Stream]
    distinct_ledger: harness.Ledger
    race_ledger: harness.Ledger
    starts: list[dt.datetime]
    setup: dict[str, Any]


async def prepare(port: int, people: People, options: Options) -> Workload:
    print("signing in clients", flush=True)
    setup_started = time.monotonic()
    tokens = await asyncio.to_thread(sign_in, port, people.clients)
    race_tokens = await asyncio.to_thread(sign_in, port, people.race_clients)
    starts, grid_now = await asyncio.to_thread(slot_grid, port, people.therapists[0])
    distinct_ledger, race_ledger = harness.Ledger(), harness.Ledger()
    streams = {
        "distinct": booking_stream(people.therapists, starts, tokens, 1, distinct_ledger),
        "contention": booking_stream(people.race_therapists, starts, race_tokens, options.racers, race_ledger),
        "read": harness.Stream(
            [(get_request(f"{API}/therapists/{t}"), None) for t in people.therapists], cycle=True, ledger=None
        ),
        "health": harness.Stream([(get_request("/health"), None)], cycle=True, ledger=None),
    }
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
        "distinct_slots_available": len(streams["distinct"].items),
        "contention_slots_available": len(streams["contention"].items) // options.racers,
    }
    print(f"set-up: {setup}", flush=True)
    return Workload(streams, distinct_ledger, race_ledger, starts, setup)


BOOKING_KINDS = {"distinct", "contention", "sequential"}


async def run_phase(
    ctx: harness.Target, kind: str, stream: harness.Stream, connections: int, duration: float, *, record: bool = True
) -> dict[str, Any]:
    success = "booking" if kind in BOOKING_KINDS else None
    return await harness.load_phase(ctx, kind, stream, connections, duration, record=record, success=success)


async def interleaved(ctx: harness.Target, workload: Workload, options: Options, label: str) -> list[dict[str, Any]]:
    """Warm-up per kind, then rounds of every kind, the order rotating."""
    streams = workload.streams
    for kind, stream in streams.items():
        print(f"[{label}] warm-up {kind} {options.warmup} s", flush=True)
        await run_phase(ctx, kind, stream, options.connections, options.warmup, record=False)
    runs: list[dict[str, Any]] = []
    for rnd, kind in harness.rounds(list(streams), options.rounds):
        result = await run_phase(ctx, kind, streams[kind], options.connections, options.duration)
        result["round"] = rnd
        runs.append(result)
        print(
            f"[{label}] round {rnd} {kind:<11} {result['requests_per_second']:8.1f} req/s "
            f"{result.get('bookings_per_second', result['requests_per_second']):8.1f} ok/s "
            f"p50 {result['latency_ms']['p50']:7.2f} p99 {result['latency_ms']['p99']:7.2f} ms "
            f"server {result['server_cpu_us_per_request']:7.1f} pg {result['pg_cpu_us_per_request']:7.1f} "
            f"µs/req other load {result['other_load_cores']:.2f} cores",
            flush=True,
        )
        if streams["distinct"].remaining == 0 or streams["contention"].remaining == 0:
            raise RuntimeError("ran out of free slots: add therapists (--therapists / --race-therapists)")
    return runs


async def benchmark(options: Options, workdir: Path) -> dict[str, Any]:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    from smilingsteps.platform import migrate  # type: ignore[import-untyped, unused-ignore]

    report: dict[str, Any] = {}
    async with harness.scratch_database(options.admin_url, "bench_booking") as name:
        report["database"] = {"name": name, "dropped": False}
        url = harness.postgres_url(options.admin_url, name)
        await asyncio.to_thread(migrate.upgrade, url)
        people = await populate(url, options)
        # One secret for both servers: the tokens of the set-up stay valid for the what-if server.
        env = settings_env(url, workdir, options, secrets.token_urlsafe(36))
        report["server_settings"] = {k: v for k, v in env.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
        admin = await asyncpg.connect(harness.postgres_url(options.admin_url, name, driver="postgresql"))
        try:
            settings = ("server_version", "synchronous_commit", "fsync", "shared_buffers", "max_connections")
            shown = {setting: await admin.fetchval(f"SHOW {setting}") for setting in settings}
            report["postgres"] = {"version": shown.pop("server_version"), **shown}
            report.update(await measure(options, workdir, env, admin, name, url, people))
        finally:
            await admin.close()
    report["database"]["dropped"] = True
    return report


async def measure(
    options: Options, workdir: Path, env: dict[str, str], admin: Any, name: str, url: str, people: People
) -> dict[str, Any]:
    async with running_server(env, workdir, options, "standard") as ctx:
        ctx.admin, ctx.database = admin, name
        workload = await prepare(ctx.ports[0], people, options)
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
    result: dict[str, Any] = {
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
    what_if_runs: list[dict[str, Any]] = []
    if options.what_if:
        async with running_server(env, workdir, options, "no-pre-ping") as ctx:
            ctx.admin, ctx.database = admin, name
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
    result["server_errors"] = {variant: harness.server_errors(workdir / f"app-{variant}.log") for variant in VARIANTS}
    return result


def print_report(report: dict[str, Any]) -> None:
    def row(kind: str, values: dict[str, Any]) -> str:
        ok = values.get("bookings_per_second", values["requests_per_second"])
        return (
            f"{kind:<11}{values['requests_per_second']:>9.1f}{ok:>9.1f}{values['p50_ms']:>9.2f}{values['p95_ms']:>9.2f}"
            f"{values['p99_ms']:>9.2f}{values['server_cpu_us_per_request']:>11.1f}{values['pg_cpu_us_per_request']:>9.1f}"
        )

    print(f"\n{'':<11}{'req/s':>9}{'ok/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'server µs':>11}{'pg µs':>9}")
    for kind, values in report["summary"].items():
        print(row(kind, values))
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
        for kind, values in what_if["summary"].items():
            print(f"what-if no pre-ping {row(kind, values)}")
        ratio = what_if["distinct_bookings_per_second_vs_standard"]
        print(f"what-if no pre-ping / standard, distinct bookings/s: {ratio}")
    print(f"checks: {json.dumps(report['checks'])}")
    if report.get("profile") and "layers" in report["profile"]:
        for layer in report["profile"]["layers"]:
            print(f"  {layer['share'] * 100:5.1f} %  {layer['us_per_booking']:7.1f} µs  {layer['layer']}")


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, serve=VARIANTS)
    harness.add_load_arguments(parser, duration=8.0, warmup=2.0, rounds=3, connections=64, number=float)
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
    harness.add_output_arguments(parser, harness.RESULTS_DIR / "booking_throughput.json")
    harness.add_ref_argument(parser)
    args = parser.parse_args(argv)
    if harness.check_serve(parser, args):
        serve(args.port, args.workdir, args.serve)
        return 0
    py_spy = shlex.split(args.py_spy) if args.py_spy else None
    options = Options.from_args(args, py_spy=py_spy, what_if=not args.no_what_if)
    options.pinned = options.pinned and args.instances == 1
    harness.postgres_url(options.admin_url, "check")  # loopback only
    import uvloop

    with harness.source_of(args.ref):  # here and, through PYTHONPATH, in the servers
        started = time.monotonic()
        report: dict[str, Any] = {
            "benchmark": "Booking creation throughput on PostgreSQL: distinct slots and contention",
            "generated_at": harness.now_iso(),
            "machine": harness.machine(("sqlalchemy", "asyncpg", "argon2-cffi", "PyJWT", "jinja2"), proc_cpuinfo=True),
            "source": harness.measured_source(SOURCE_FILES),
            "command": harness.command_line("booking_throughput.py", argv),
            "options": {k: v for k, v in vars(options).items() if k not in {"admin_url", "tmp_root", "py_spy"}},
            "load_average_at_start": os.getloadavg(),
        }
        # The load generator on its core; the server goes to the other one.
        with (
            options.this_process_on(options.client_cpu),
            tempfile.TemporaryDirectory(prefix="booking-bench-", dir=options.tmp_root) as tmp,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            report.update(runner.run(benchmark(options, Path(tmp))))
    report["load_average_at_end"] = os.getloadavg()
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    harness.write_json(args.out, report)
    print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
