"""M-Pesa callback handling on PostgreSQL: acknowledged success callbacks per second, with replays, and
exactly one confirmation per payment.

Measures ``POST /api/v1/payments/mpesa/callback/{token}`` (target from issue 14: at least 500
acknowledged callbacks per second on this machine, with zero duplicates) on a fresh PostgreSQL
database (migrated, dropped at the end) and one production server (``create_app`` + ``build_server``,
as ``smilingsteps serve`` runs it; rate limiting on, backed by the local Redis; no in-process jobs)
pinned to CPU 0, loaded by the harness's asyncio load generator on CPU 1. Daraja is the project's
simulator (``DarajaSimulator``) served by this script in a process of its own on loopback (CPU 1),
every seeded push registered in it as decided and successful: the STK query with which the server
verifies a success callback answers ResultCode 0.

Set-up, not measured: therapists and clients and one held booking per payment (SQL), then per booking
a payment attempt through the payments service (``service.start``, then ``service.record_push`` with a
known CheckoutRequestID): pending, its booking pending_payment, its callback token known here.

Phases, in interleaved rounds (order rotating): ``callbacks`` (every payment of the round's batch called
back ``--sends`` times with the same body, shuffled; for a ``--together`` share of the payments two
copies are sent back to back, so two connections deliver them at the same time), then ``smilingsteps
worker`` is started (as deployed, the STK query that confirms a success is the worker's checks job; it
starts after the burst because on this two-core machine it would otherwise share the load generator's
core) and a bounded wait, polling the database, until the batch's verifications (STK query, payment
succeeded, booking confirmed) are done; and ``health`` (``GET /health``, the yardstick: same client and
connections). Once at the end: ``replays`` (callbacks for payments already confirmed: the route alone,
no verification behind it). Checks over everything at the end: one succeeded payment and one confirmed
booking per attempt, one ``booking.confirmed`` and one ``payment.succeeded`` audit row per attempt, two
confirmation emails per booking, no duplicate reminders, every callback stored with its outcome, one STK
query per attempt, no non-200 answer, no error in the server's log. ``--profile``: one more batch on a
second server with a sampling profiler inside (``profiling.FrameSampler``: py-spy is not installed
here): where the server's time goes.

Usage (from the repository root; bench/README.md has the details)::

    .tools/bin/uv run --frozen python bench/payment_callbacks.py              # ~3 min
    .tools/bin/uv run --frozen python bench/payment_callbacks.py --profile    # + a sampled batch
    .tools/bin/uv run --frozen python bench/payment_callbacks.py --serve app --port 8001 --workdir /tmp/x

Results: ``bench/results/payment_callbacks.json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness
import profiling

CALLBACK_PATH = "/api/v1/payments/mpesa/callback/"
ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}
TARGET_CALLBACKS_PER_SECOND = 500.0
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
TZ = "Africa/Nairobi"
PHONE = "254712345670"  # the simulator's "success" number (last digit 0)
PRICE_KES = 2500
SERVE = ("app", "app-sampled", "daraja")
PUSHES_FILE = "pushes.json"
DARAJA_COUNTS_FILE = "daraja-requests.json"
SAMPLES_FILE = "app-sampled.collapsed"
SAMPLE_RATE = 200
SOURCE_FILES = (
    "payments/router.py",
    "payments/service.py",
    "payments/processing.py",
    "payments/repository.py",
    "payments/mpesa/client.py",
    "payments/mpesa/protocol.py",
    "bookings/service.py",
    "audit/service.py",
    "notifications/service.py",
    "platform/db.py",
    "platform/tasks.py",
)
# Where a sample of the server's event-loop thread goes: the innermost frame of a known layer decides.
CATEGORIES: profiling.Layers = [
    ("asyncpg (driver, protocol)", ("asyncpg/",)),
    ("SQLAlchemy (ORM, unit of work, SQL compilation, results)", ("sqlalchemy/",)),
    ("email rendering (jinja2, queue_email)", ("jinja2/", "markupsafe/", "smilingsteps/notifications/")),
    ("audit chain (record, hash)", ("smilingsteps/audit/",)),
    ("pydantic", ("pydantic/", "pydantic_core")),
    ("access log and logging", ("structlog/", "smilingsteps/platform/logging", "smilingsteps/platform/access_log")),
    ("Daraja client (httpx, httpcore, h11, anyio)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("payments code", ("smilingsteps/payments/",)),
    ("other application code (bookings, platform, i18n)", ("smilingsteps/", "babel/")),
    ("FastAPI / Starlette", ("fastapi/", "starlette/")),
    ("uvicorn, httptools, asyncio, uvloop", ("uvicorn/", "httptools", "asyncio/", "uvloop")),
]
OTHER = "other (interpreter, stdlib, GC)"
IDLE = "Runner.run (asyncio/runners.py"
# Inclusive: the share of busy samples with this function on the (coroutine) stack.
INCLUSIVE = {
    "callback route (mpesa_callback)": "build_router.<locals>.mpesa_callback (smilingsteps/payments/router.py",
    "receive_callback": "receive_callback (smilingsteps/payments/callbacks.py",
    "verification (Processor.verify)": "Processor.verify (smilingsteps/payments/processing.py",
    "apply_answer": "apply_answer (smilingsteps/payments/service.py",
    "bookings.confirm": "confirm (smilingsteps/bookings/service.py",
    "_tell_both (2 emails)": "_tell_both (smilingsteps/bookings/service.py",
    "audit record": "record (smilingsteps/audit/service.py",
    "Daraja STK query": "DarajaClient.stk_query (smilingsteps/payments/mpesa/client.py",
    "GET /health": "health (smilingsteps/",
}


@dataclass
class Options(harness.Load):
    payments: int = 1000
    sends: int = 3
    together: float = 0.25
    warmup_payments: int = 200
    therapists: int = 40
    pool_size: int | None = None
    admin_url: str = DEFAULT_ADMIN_URL
    verify_timeout: float = 180.0
    profile: bool = False
    seed: int = 14


@dataclass(frozen=True)
class Payment:
    """A seeded attempt: what the simulator must know of its push, and what its callback says."""

    id: str
    booking_id: str
    token: str
    merchant_request_id: str
    checkout_request_id: str
    receipt: str
    amount: int
    phone: str


# --------------------------------------------------------------------------
# The servers: the app, and the Daraja simulator
# --------------------------------------------------------------------------


def serve_app(port: int, workdir: Path, kind: str) -> None:
    """The app from the environment's settings on the production server class, until SIGTERM;
    `app-sampled` with `profiling.FrameSampler` on its event-loop thread, written at the end."""
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.server import build_server  # type: ignore[import-untyped, unused-ignore]

    settings = Settings()
    app = harness.logged_app(settings, workdir / f"app-{kind}.log")
    server = build_server(app, settings, host=harness.HOST, port=port)
    if kind != "app-sampled":
        server.run()
        return
    sampler = profiling.FrameSampler(workdir / SAMPLES_FILE, rate=SAMPLE_RATE)
    sampler.start()
    try:
        server.run()
    finally:
        sampler.stop()


def serve_daraja(port: int, workdir: Path) -> None:
    """The project's Daraja simulator on 127.0.0.1:`port` with the pushes of `PUSHES_FILE`, all decided
    and successful; at SIGTERM it writes what it was asked (`DARAJA_COUNTS_FILE`)."""
    import uvloop
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from smilingsteps.payments.mpesa import simulator  # type: ignore[import-untyped, unused-ignore]

    async def health(_: Any) -> Any:
        return JSONResponse({"status": "ok", "pushes": len(daraja.pushes)})

    daraja = simulator.DarajaSimulator(delay=0)
    for row in json.loads((workdir / PUSHES_FILE).read_text(encoding="utf-8")):
        daraja.pushes[row["checkout_request_id"]] = simulator.Push(
            merchant_request_id=row["merchant_request_id"],
            checkout_request_id=row["checkout_request_id"],
            phone=row["phone"],
            amount=row["amount"],
            callback_url="",  # the benchmark sends the callbacks itself
            behaviour=simulator.BEHAVIOURS["0"],
            decided_at=0.0,
            receipt=row["receipt"],
        )
    daraja.app.router.routes.append(Route("/health", health, methods=["GET"]))

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with simulator.serving(daraja, host=harness.HOST, port=port):
            await stop.wait()
        queries: dict[str, int] = {}
        paths: dict[str, int] = {}
        for path, body in daraja.requests:
            paths[path] = paths.get(path, 0) + 1
            if path.endswith("/query"):
                key = str(body.get("CheckoutRequestID"))
                queries[key] = queries.get(key, 0) + 1
        counts = {
            "requests_by_path": paths,
            "stk_queries": sum(queries.values()),
            "pushes_queried": len(queries),
            "pushes_queried_more_than_once": sum(1 for n in queries.values() if n > 1),
            "unknown_pushes_queried": sum(1 for key in queries if key not in daraja.pushes),
        }
        (workdir / DARAJA_COUNTS_FILE).write_text(json.dumps(counts), encoding="utf-8")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def settings_env(database_url: str, workdir: Path, options: Options, daraja_url: str) -> dict[str, str]:
    env = {
        "APP_ENV": "test",
        "SECRET_KEY": secrets.token_urlsafe(36),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(workdir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "RATE_LIMITS_ENABLED": "true",  # the callback route is exempt; /health is outside the API classes
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"bench-pay-{secrets.token_hex(4)}",
        "JOBS_IN_PROCESS": "false",  # as deployed: reconciliation and the mail sender run in the worker
        "SHUTDOWN_READINESS_DELAY": "0",
        "MPESA_ENV": "simulator",
        "MPESA_BASE_URL": daraja_url,
        # The seeded payments wait for their callbacks: reconciliation must not find them first (the
        # seeding takes minutes, longer than the default 90 s), or their callbacks are all replays.
        "MPESA_CHECK_AFTER_SECONDS": "3600",
    }
    if options.pool_size is not None:
        env["DB_POOL_SIZE"] = str(options.pool_size)
    return env


@asynccontextmanager
async def working(options: Options, workdir: Path, env: dict[str, str], name: str) -> AsyncIterator[None]:
    """`smilingsteps worker` beside the server, as deployed: its checks job confirms the payments (the STK
    query after a success callback); pinned with the load generator, off the server's CPU."""
    command = [*options.taskset(options.client_cpu), sys.executable, "-m", "smilingsteps.cli", "worker"]
    with (workdir / f"{name}.log").open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=harness.child_env(env))
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


@asynccontextmanager
async def running(
    options: Options, workdir: Path, kind: str, env: dict[str, str] | None = None
) -> AsyncIterator[harness.Server]:
    """One server process: the app pinned to the server's CPU, the simulator to the load generator's."""
    cpu = options.client_cpu if kind == "daraja" else options.server_cpu

    def start(name: str) -> harness.Server:
        return harness.start_server(__file__, [kind], name, workdir, options.taskset(cpu), env)

    with harness.running_servers(start, [kind], timeout=60.0) as servers:
        yield servers[kind]


# --------------------------------------------------------------------------
# Set-up: people, held bookings, pending payments with known tokens
# --------------------------------------------------------------------------


async def seed(url: str, env: dict[str, str], options: Options, count: int) -> list[Payment]:
    """`count` pending payment attempts, each for its own booking (pending_payment), through the
    payments service; therapist i and client i share a time, two hours apart from the next one."""
    from smilingsteps.accounts.models import Role, TherapistStatus, User  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.bookings.models import Booking, BookingStatus  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.payments import service  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.context import AuditContext  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.db import Database  # type: ignore[import-untyped, unused-ignore]

    settings = Settings(**{**env, "DATABASE_URL": url})
    now = dt.datetime.now(dt.UTC)
    people = options.therapists
    run = secrets.token_hex(3)

    def users(role: Any, count: int) -> list[Any]:
        therapist = role is Role.THERAPIST
        return [
            User(
                id=uuid.uuid4(),
                email=f"bench-{run}-{role.value}-{index}@example.com",
                password_hash="x",  # never signs in
                full_name=f"Bench {role.value.title()} {index:04d}",
                phone=PHONE,
                timezone=TZ,
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

    therapists, clients = users(Role.THERAPIST, people), users(Role.CLIENT, people)
    first = (now + dt.timedelta(days=30)).replace(minute=0, second=0, microsecond=0)
    bookings = []
    for index in range(count):
        starts = first + dt.timedelta(hours=2 * (index // people))
        bookings.append(
            Booking(
                id=uuid.uuid4(),
                therapist_id=therapists[index % people].id,
                client_id=clients[index % people].id,
                starts_at=starts,
                ends_at=starts + dt.timedelta(minutes=50),
                blocks_until=starts + dt.timedelta(minutes=60),
                status=BookingStatus.HELD,
                hold_expires_at=now + dt.timedelta(hours=6),
                price_kes=PRICE_KES,
                client_timezone=TZ,
                therapist_timezone=TZ,
                created_at=now,
                updated_at=now,
            )
        )
    db = Database(settings)
    seeded: list[Payment] = []
    try:
        async with db.sessionmaker() as session, session.begin():
            session.add_all([*therapists, *clients])
            await session.flush()
            session.add_all(bookings)
        for offset in range(0, count, 250):
            async with db.sessionmaker() as session, session.begin():
                for booking in bookings[offset : offset + 250]:
                    audit = AuditContext(actor_id=booking.client_id, ip="127.0.0.1", request_id=None)
                    started = await service.start(
                        session,
                        settings,
                        client_id=booking.client_id,
                        booking_id=booking.id,
                        phone=PHONE,
                        now=now,
                        audit=audit,
                    )
                    assert started.push is not None
                    token = started.push.callback_url.rsplit("/", 1)[1]
                    assert service.token_hash(token) == started.attempt.callback_token_hash
                    index = len(seeded)
                    checkout = f"ws_CO_{now:%d%m%Y%H%M%S}{uuid.uuid4().hex[:12]}"
                    merchant = f"{10000 + index % 90000}-{secrets.randbelow(10**8)}-1"
                    await service.record_push(
                        session,
                        settings,
                        started.attempt.id,
                        now=now,
                        merchant_request_id=merchant,
                        checkout_request_id=checkout,
                    )
                    seeded.append(
                        Payment(
                            id=str(started.attempt.id),
                            booking_id=str(booking.id),
                            token=token,
                            merchant_request_id=merchant,
                            checkout_request_id=checkout,
                            receipt=f"SB{run[:2].upper()}{index:06d}",
                            amount=started.attempt.amount_kes,
                            phone=PHONE,
                        )
                    )
    finally:
        await db.engine.dispose()
    return seeded


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


def callback_request(payment: Payment, paid_at: dt.datetime) -> bytes:
    """Daraja's success callback for `payment`, as raw HTTP/1.1 (the same bytes for every copy)."""
    from smilingsteps.payments.mpesa import protocol, simulator  # type: ignore[import-untyped, unused-ignore]

    payload = protocol.callback_payload(
        merchant_request_id=payment.merchant_request_id,
        checkout_request_id=payment.checkout_request_id,
        result_code=0,
        result_desc=simulator.SUCCESS_DESC,
        amount=float(payment.amount),  # Daraja sends 2500.0 as often as 2500
        receipt=payment.receipt,
        phone=payment.phone,
        transaction_date=paid_at,
    )
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"POST {CALLBACK_PATH}{payment.token} HTTP/1.1\r\nHost: {harness.HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def callback_stream(batch: Sequence[Payment], options: Options, rng: random.Random) -> tuple[harness.Stream, int]:
    """Every payment `sends` times, shuffled; for a `together` share, two copies back to back (taken by two
    connections at once: a replay racing the first callback). Returns the stream and that share's size."""
    units: list[list[bytes]] = []
    together = 0
    paid_at = dt.datetime.now(dt.UTC)
    for payment in batch:
        raw = callback_request(payment, paid_at)
        if options.sends >= 2 and rng.random() < options.together:
            together += 1
            units.append([raw, raw])
            units.extend([raw] for _ in range(options.sends - 2))
        else:
            units.extend([raw] for _ in range(options.sends))
    rng.shuffle(units)
    return harness.Stream([(raw, None) for unit in units for raw in unit]), together


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {harness.HOST}\r\n\r\n".encode()


def acknowledged(status: int, body: bytes) -> bool:
    """200 with Daraja's expected acknowledgement, exactly."""
    if status != 200:
        return False
    try:
        return bool(json.loads(body) == ACK)
    except ValueError:
        return False


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------


async def wait_verified(admin: Any, ids: Sequence[str], timeout: float) -> dict[str, Any]:
    """Poll (bounded) until every payment of `ids` is succeeded: the background verifications are done."""
    wanted = [uuid.UUID(i) for i in ids]
    started = time.perf_counter()
    done = 0
    while True:
        done = await admin.fetchval(
            "SELECT count(*) FROM payments WHERE id = ANY($1::uuid[]) AND status = 'succeeded'", wanted
        )
        waited = time.perf_counter() - started
        if done >= len(wanted) or waited > timeout:
            break
        await asyncio.sleep(0.05)
    return {"verified": done, "expected": len(wanted), "seconds": round(waited, 3), "timed_out": done < len(wanted)}


async def callbacks_phase(
    target: harness.Target,
    batch: Sequence[Payment],
    options: Options,
    rng: random.Random,
    worker: Callable[[], AbstractAsyncContextManager[None]],
    *,
    record: bool = True,
) -> dict[str, Any]:
    """One batch's callbacks at `connections`, then the wait for its verifications; CPU of both."""
    stream, together = callback_stream(batch, options, rng)
    sends = len(stream.items)
    server_before = sum(harness.threads_cpu_ns(pid) for pid in target.server_pids)
    started = time.perf_counter()
    phase = await harness.load_phase(
        target, "callbacks", stream, options.connections, 1e9, record=True, check=acknowledged
    )
    server_mid = sum(harness.threads_cpu_ns(pid) for pid in target.server_pids)
    # The worker (the STK queries, the confirmations) starts once the burst is answered: on this
    # two-core machine it would share the load generator's core, which a deployment never does.
    async with worker():
        drain = await wait_verified(target.admin, [p.id for p in batch], options.verify_timeout)
    total_seconds = time.perf_counter() - started
    server_after = sum(harness.threads_cpu_ns(pid) for pid in target.server_pids)
    if not record:
        return {}
    acked = phase["requests"] - phase["failed_check"]
    phase.update(
        {
            "payments": len(batch),
            "sends": sends,
            "sent_together": together,
            "acknowledged": acked,
            "callbacks_per_second": round(acked / phase["seconds"], 1),
            "verification": {
                **drain,
                "seconds_after_last_callback": drain["seconds"],
                "server_cpu_s_after_last_callback": round((server_after - server_mid) / 1e9, 3),
                "payments_verified_per_second": round(len(batch) / total_seconds, 1),
                "server_cpu_us_per_payment": round((server_after - server_before) / 1e3 / len(batch), 1),
                "server_cpu_s_during_callbacks": round((server_mid - server_before) / 1e9, 3),
            },
        }
    )
    return phase


async def health_phase(
    target: harness.Target, options: Options, duration: float, *, record: bool = True
) -> dict[str, Any]:
    stream = harness.Stream([(get_request("/health"), None)], cycle=True)
    return await harness.load_phase(target, "health", stream, options.connections, duration, record=record)


def describe(result: dict[str, Any]) -> str:
    rate = result.get("callbacks_per_second", result["requests_per_second"])
    line = (
        f"{result['kind']:<10}{rate:9.1f}/s  p50 {result['latency_ms']['p50']:7.2f} p99 "
        f"{result['latency_ms']['p99']:7.2f} ms  server {result['server_cpu_us_per_request']:7.1f} "
        f"pg {result['pg_cpu_us_per_request']:7.1f} µs/req  busy {result['server_busy_fraction']:.2f} "
        f"outcomes {result['outcomes']}"
    )
    if "verification" in result:
        verification = result["verification"]
        line += (
            f"\n{'':<10}verified {verification['verified']}/{verification['expected']} "
            f"{verification['seconds_after_last_callback']:.2f} s after the last callback, "
            f"{verification['payments_verified_per_second']:.1f} payments/s end to end, "
            f"server {verification['server_cpu_us_per_payment']:.0f} µs/payment"
        )
    return line


async def measure(
    options: Options, workdir: Path, env: dict[str, str], admin: Any, name: str, payments: list[Payment]
) -> dict[str, Any]:
    rng = random.Random(options.seed)
    warm = payments[: options.warmup_payments]
    batches = [
        payments[options.warmup_payments + r * options.payments : options.warmup_payments + (r + 1) * options.payments]
        for r in range(options.rounds)
    ]
    runs: list[dict[str, Any]] = []

    def worker() -> AbstractAsyncContextManager[None]:
        return working(options, workdir, env, "worker")

    async with running(options, workdir, "app", env) as server:
        target = harness.Target([server.port], [server.pid], admin, name)
        print(f"warm-up: health {options.warmup} s, {len(warm)} payments' callbacks", flush=True)
        await health_phase(target, options, options.warmup, record=False)
        if warm:
            await callbacks_phase(target, warm, options, rng, worker, record=False)
        batch_of_round = iter(batches)
        for rnd, kind in harness.rounds(["callbacks", "health"], options.rounds):
            if kind == "callbacks":
                result = await callbacks_phase(target, next(batch_of_round), options, rng, worker)
            else:
                result = await health_phase(target, options, options.duration)
            result["round"] = rnd
            runs.append(result)
            print(f"round {rnd} {describe(result)}", flush=True)
        replays = batches[0] if batches else warm
        replay_options = Options(**{**asdict(options), "sends": 1, "together": 0.0})
        stream, _ = callback_stream(replays, replay_options, rng)
        replay = await harness.load_phase(
            target, "replays", stream, options.connections, 1e9, record=True, check=acknowledged
        )
        replay["callbacks_per_second"] = round((replay["requests"] - replay["failed_check"]) / replay["seconds"], 1)
        print(f"once      {describe(replay)}", flush=True)
    profile = None
    if options.profile:
        batch = payments[options.warmup_payments + options.rounds * options.payments :]
        profile = await profiled(options, workdir, env, admin, name, batch, rng)
    return {"runs": runs, "replays": replay, "profile": profile}


async def profiled(
    options: Options,
    workdir: Path,
    env: dict[str, str],
    admin: Any,
    name: str,
    batch: Sequence[Payment],
    rng: random.Random,
) -> dict[str, Any]:
    """One batch on a server sampled from inside: the layers its busy event-loop thread was in."""
    print(f"sampling profile: {len(batch)} payments on a second server", flush=True)
    async with running(options, workdir, "app-sampled", env) as server:
        target = harness.Target([server.port], [server.pid], admin, name)
        phase = await callbacks_phase(target, batch, options, rng, lambda: working(options, workdir, env, "worker-2"))
    print(f"sampled   {describe(phase)}", flush=True)
    layers: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    roots: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    idle = busy = 0
    for raw, count in profiling.collapsed(workdir / SAMPLES_FILE):
        frames = [profiling.normalise(frame) for frame in raw[1:]]  # raw[0] is the thread
        if not frames or IDLE in frames[-1]:
            idle += count
            continue
        busy += count
        layers[categorise(frames)] += count
        roots[frames[0]] += count
        leaves[frames[-1]] += count
        for label, needle in INCLUSIVE.items():
            if any(needle in frame for frame in frames):
                inclusive[label] += count
    us = phase["verification"]["server_cpu_us_per_payment"]

    def rows(counts: Counter[str], key: str, top: int | None = None) -> list[dict[str, Any]]:
        return [
            {key: k, "share": round(n / max(1, busy), 4), "us_per_payment": round(us * n / max(1, busy), 1)}
            for k, n in counts.most_common(top)
        ]

    return {
        "method": "profiling.FrameSampler in the server process (SIGPROF every "
        f"{1000 // SAMPLE_RATE} ms of CPU, main thread), for one batch on a second server (the whole "
        "batch: callbacks and their verifications, no warm-up: the "
        "first renders compile the email templates). Samples whose innermost frame is the event loop's "
        "Runner.run are idle and left out; each busy sample goes to the "
        "innermost frame of a known layer. us_per_payment = share x this batch's server CPU per payment "
        f"(one payment = {options.sends} callbacks + one verification). SQLAlchemy's ORM work runs in "
        "greenlets whose frames do not link back to the coroutine awaiting them, so `inclusive` leaves most "
        "ORM work out of the functions that caused it (see roots).",
        "phase": phase,
        "samples": {"busy": busy, "idle": idle},
        "layers": rows(layers, "layer"),
        "inclusive": rows(inclusive, "frame"),
        "roots": rows(roots, "frame", 12),
        "top_leaf_frames": rows(leaves, "frame", 25),
    }


def categorise(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        for label, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return label
    return OTHER


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


async def checks(admin: Any, payments: Sequence[Payment], sends: int, daraja: dict[str, Any]) -> dict[str, Any]:
    """What the database (and the simulator) hold at the end, against what was sent."""

    async def pairs(sql: str) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in await admin.fetch(sql)}

    async def value(sql: str) -> int:
        return int(await admin.fetchval(sql))

    seeded = len(payments)
    payments_by_status = await pairs("SELECT status, count(*) FROM payments GROUP BY 1 ORDER BY 1")
    bookings_by_status = await pairs("SELECT status, count(*) FROM bookings GROUP BY 1 ORDER BY 1")
    audit = await pairs(
        "SELECT action, count(*) FROM audit_events WHERE action LIKE 'payment.%' OR action LIKE 'booking.%' "
        "GROUP BY 1 ORDER BY 1"
    )
    duplicates = {
        "bookings_with_more_than_one_succeeded_payment": await value(
            "SELECT count(*) FROM (SELECT booking_id FROM payments WHERE status = 'succeeded' "
            "GROUP BY 1 HAVING count(*) > 1) AS d"
        ),
        "booking_confirmed_audit_rows_beyond_one_per_booking": await value(
            "SELECT count(*) - count(DISTINCT target_id) FROM audit_events WHERE action = 'booking.confirmed'"
        ),
        "payment_succeeded_audit_rows_beyond_one_per_payment": await value(
            "SELECT count(*) - count(DISTINCT target_id) FROM audit_events WHERE action = 'payment.succeeded'"
        ),
        "confirmation_emails_beyond_two_per_confirmed_booking": await value(
            "SELECT count(*) FROM email_outbox WHERE template = 'booking_confirmed'"
        )
        - 2 * await value("SELECT count(*) FROM bookings WHERE status = 'confirmed'"),
        "duplicate_reminders": await value(
            "SELECT count(*) FROM (SELECT booking_id, kind FROM booking_reminders GROUP BY 1, 2 "
            "HAVING count(*) > 1) AS d"
        ),
        "stk_queries_beyond_one_per_payment": int(daraja.get("stk_queries", 0)) - int(daraja.get("pushes_queried", 0)),
    }
    callbacks_by_outcome = await pairs("SELECT outcome, count(*) FROM mpesa_callbacks GROUP BY 1 ORDER BY 1")
    stored = sum(callbacks_by_outcome.values())
    result: dict[str, Any] = {
        "payments_seeded": seeded,
        "payments_by_status": payments_by_status,
        "bookings_by_status": bookings_by_status,
        "audit_rows": audit,
        "callbacks_sent": sends,
        "callbacks_stored": stored,
        "callbacks_by_outcome": callbacks_by_outcome,
        "daraja": daraja,
        "duplicates": duplicates,
    }
    result["exactly_one_succeeded_payment_per_attempt"] = payments_by_status == {"succeeded": seeded}
    result["exactly_one_confirmed_booking_per_attempt"] = bookings_by_status == {"confirmed": seeded}
    result["booking_confirmed_audit_rows_equal_attempts"] = audit.get("booking.confirmed") == seeded
    result["every_callback_stored"] = stored == sends
    result["one_awaiting_check_per_attempt"] = callbacks_by_outcome.get("awaiting_check") == seeded
    result["zero_duplicates"] = all(n == 0 for n in duplicates.values())
    return result


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


def summarise(found: dict[str, Any]) -> dict[str, Any]:
    runs = found["runs"]
    callbacks = [r for r in runs if r["kind"] == "callbacks"]
    health = [r for r in runs if r["kind"] == "health"]
    per_round = [r["callbacks_per_second"] for r in callbacks]
    health_rps = [r["requests_per_second"] for r in health]
    cps = statistics.median(per_round)
    hps = statistics.median(health_rps)
    verification = [r["verification"] for r in callbacks]
    non_200 = sum(n for r in [*runs, found["replays"]] for k, n in r["outcomes"].items() if k != "200")
    return {
        "callbacks": {
            **harness.phase_summary(callbacks),
            "callbacks_per_second": round(cps, 1),
            "rounds_callbacks_per_second": per_round,
            "failed_check": sum(r["failed_check"] for r in callbacks),
        },
        "verification": {
            "seconds_after_last_callback": [v["seconds_after_last_callback"] for v in verification],
            "payments_verified_per_second": [v["payments_verified_per_second"] for v in verification],
            "server_cpu_us_per_payment": [v["server_cpu_us_per_payment"] for v in verification],
            "timed_out": any(v["timed_out"] for v in verification),
        },
        "health": harness.phase_summary(health),
        "replays": {
            "callbacks_per_second": found["replays"]["callbacks_per_second"],
            "server_cpu_us_per_request": found["replays"]["server_cpu_us_per_request"],
            "pg_cpu_us_per_request": found["replays"]["pg_cpu_us_per_request"],
            "latency_ms": found["replays"]["latency_ms"],
            "server_busy_fraction": found["replays"]["server_busy_fraction"],
        },
        "callbacks_per_health_request": round(cps / hps, 4),
        "non_200_answers": non_200,
        "target": {
            "callbacks_per_second": TARGET_CALLBACKS_PER_SECOND,
            "measured": round(cps, 1),
            "met": cps >= TARGET_CALLBACKS_PER_SECOND,
        },
    }


async def benchmark(options: Options, workdir: Path) -> dict[str, Any]:
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    from smilingsteps.platform import migrate  # type: ignore[import-untyped, unused-ignore]

    report: dict[str, Any] = {}
    total = options.warmup_payments + options.payments * (options.rounds + (1 if options.profile else 0))
    async with harness.scratch_database(options.admin_url, "bench_payments") as name:
        report["database"] = {"name": name, "dropped": False}
        url = harness.postgres_url(options.admin_url, name)
        await asyncio.to_thread(migrate.upgrade, url)
        started = time.monotonic()
        print(f"seeding {total} pending payments", flush=True)
        payments = await seed(url, settings_env(url, workdir, options, "http://127.0.0.1:9"), options, total)
        report["setup"] = {"payments": len(payments), "seconds": round(time.monotonic() - started, 1)}
        pushes = [{k: v for k, v in asdict(p).items() if k not in {"id", "booking_id", "token"}} for p in payments]
        (workdir / PUSHES_FILE).write_text(json.dumps(pushes), encoding="utf-8")
        admin = await asyncpg.connect(harness.postgres_url(options.admin_url, name, driver="postgresql"))
        try:
            shown = {
                s: await admin.fetchval(f"SHOW {s}")
                for s in ("server_version", "synchronous_commit", "fsync", "shared_buffers", "max_connections")
            }
            report["postgres"] = {"version": shown.pop("server_version"), **shown}
            async with running(options, workdir, "daraja") as daraja:
                env = settings_env(url, workdir, options, f"http://{harness.HOST}:{daraja.port}")
                report["server_settings"] = {k: v for k, v in env.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
                found = await measure(options, workdir, env, admin, name, payments)
            counts_file = workdir / DARAJA_COUNTS_FILE
            daraja_counts = json.loads(counts_file.read_text(encoding="utf-8")) if counts_file.exists() else {}
            sends = sum(r["requests"] for r in found["runs"] if r["kind"] == "callbacks")
            sends += found["replays"]["requests"] + options.warmup_payments * options.sends
            if found["profile"]:
                sends += found["profile"]["phase"]["requests"]
            report["summary"] = summarise(found)
            report["checks"] = await checks(admin, payments, sends, daraja_counts)
            report["server_log"] = {
                kind: {
                    "errors": harness.server_errors(workdir / f"app-{kind}.log"),
                    "warnings": harness.server_errors(workdir / f"app-{kind}.log", "warning"),
                }
                for kind in ("app", "app-sampled")
                if (workdir / f"app-{kind}.log").exists()
            }
            report["profile"] = found["profile"]
            report["runs"] = found["runs"]
            report["replays"] = found["replays"]
        finally:
            await admin.close()
    report["database"]["dropped"] = True
    return report


def print_report(report: dict[str, Any]) -> None:
    summary = report["summary"]
    callbacks, health = summary["callbacks"], summary["health"]
    print(
        f"\ncallbacks: {callbacks['callbacks_per_second']:.1f}/s (rounds {callbacks['rounds_callbacks_per_second']}), "
        f"p50 {callbacks['p50_ms']:.2f} ms p99 {callbacks['p99_ms']:.2f} ms, server "
        f"{callbacks['server_cpu_us_per_request']:.0f} µs pg {callbacks['pg_cpu_us_per_request']:.0f} µs per callback"
    )
    print(f"health: {health['requests_per_second']:.1f}/s (rounds {health['rounds_requests_per_second']})")
    print(f"ratio callbacks/health: {summary['callbacks_per_health_request']}")
    print(f"replays only: {summary['replays']['callbacks_per_second']:.1f}/s")
    print(f"verification: {summary['verification']}")
    target = summary["target"]
    print(
        f"target >= {target['callbacks_per_second']:.0f}/s: {target['measured']:.1f} "
        f"({'MET' if target['met'] else 'NOT MET'})"
    )
    checks = report["checks"]
    print(f"non-200 answers: {summary['non_200_answers']}, failed ack checks: {callbacks['failed_check']}")
    print(f"checks: {json.dumps({k: v for k, v in checks.items() if k not in {'daraja'}})}")
    print(f"daraja: {checks['daraja']}")
    for kind, log in report["server_log"].items():
        print(f"server log {kind}: {log['errors']['lines']} errors, warnings {log['warnings'].get('by_event', {})}")
    profile = report.get("profile")
    if profile:
        print(f"sampled profile ({profile['samples']}), µs per payment:")
        for row in profile["layers"]:
            print(f"  {row['share'] * 100:5.1f} %  {row['us_per_payment']:8.1f}  {row['layer']}")
        print("  inclusive:")
        for row in profile["inclusive"]:
            print(f"  {row['share'] * 100:5.1f} %  {row['us_per_payment']:8.1f}  {row['frame']}")


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, serve=SERVE)
    harness.add_load_arguments(
        parser, duration=8.0, warmup=2.0, rounds=3, connections=64, number=float, what="health: "
    )
    parser.add_argument("--payments", type=int, default=1000, help="payments per callbacks round (default 1000)")
    parser.add_argument("--sends", type=int, default=3, help="callbacks per payment, replays included (default 3)")
    parser.add_argument(
        "--together", type=float, default=0.25, help="share of payments with two copies sent at once (default 0.25)"
    )
    parser.add_argument("--warmup-payments", type=int, default=200, help="payments of the warm-up (default 200)")
    parser.add_argument("--therapists", type=int, default=40, help="therapists, and clients (default 40)")
    parser.add_argument("--pool-size", type=int, default=None, help="DB_POOL_SIZE of the server (default: the app's)")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="libpq URL of a maintenance database")
    parser.add_argument("--verify-timeout", type=float, default=180.0, help="bound on the wait for verifications")
    parser.add_argument("--profile", action="store_true", help="one more batch on a server sampled from inside")
    parser.add_argument("--live-tree", action="store_true", help="import src/ as it is, not a copy taken at start")
    harness.add_output_arguments(parser, harness.RESULTS_DIR / "payment_callbacks.json")
    harness.add_ref_argument(parser)
    args = parser.parse_args(argv)
    if harness.check_serve(parser, args):
        if args.serve == "daraja":
            serve_daraja(args.port, args.workdir)
        else:
            serve_app(args.port, args.workdir, args.serve)
        return 0
    options = Options.from_args(args)
    harness.postgres_url(options.admin_url, "check")  # loopback only
    import uvloop

    with harness.source_of(args.ref, snapshot=not args.live_tree):  # here and, through PYTHONPATH, in the servers
        started = time.monotonic()
        report: dict[str, Any] = {
            "benchmark": "M-Pesa success callbacks on PostgreSQL, replays mixed in, against GET /health",
            "generated_at": harness.now_iso(),
            "machine": harness.machine(("sqlalchemy", "asyncpg", "httpx", "redis"), proc_cpuinfo=True),
            "source": harness.measured_source(SOURCE_FILES),
            "command": harness.command_line("payment_callbacks.py", argv),
            "options": {k: v for k, v in vars(options).items() if k not in {"admin_url", "tmp_root"}},
            "load_average_at_start": os.getloadavg(),
        }
        with (
            options.this_process_on(options.client_cpu),
            tempfile.TemporaryDirectory(prefix="payment-bench-", dir=options.tmp_root) as tmp,
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
