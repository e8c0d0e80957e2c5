"""Authentication: argon2 cost, login latency end to end, and what cookie authentication adds per request.

Measures three parts, each against a baseline in the same run:

* ``argon2`` - CPU and wall time of one hash and one verify (a login) with the ``Settings`` defaults
  and a few alternatives, interleaved, in this process.
* ``login``  - ``POST /api/v1/auth/login`` on a real server: right password, wrong password, no such
  account, interleaved; latency and the server's CPU per login. Wrong-password and no-account must
  cost the same (no account enumeration by timing); so must a password-reset request.
* ``cookie`` - the full app plus bench-only routes: ``anon`` (a constant), ``whoami`` (``CurrentUser``)
  and the what-if ``whoami-async`` (``authenticate()`` in one ``async def`` dependency), with and
  without the session cookies. whoami - anon is the cost of authenticating a request; measured in
  process (direct ASGI calls) and over HTTP (``wrk``: 1e6/rps and the server's CPU per request), with
  micro-costs of the parts.

Usage (from the repository root; bench/README.md has the details)::

    .tools/bin/uv run --frozen python bench/auth_cost.py                  # everything, ~5 minutes
    .tools/bin/uv run --frozen python bench/auth_cost.py --part argon2    # one part (login, cookie)
    .tools/bin/uv run --frozen python bench/auth_cost.py --serve login --port 8001 --workdir /tmp/x

Results: ``bench/results/auth_cost.json`` (a partial run replaces only its parts).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

# At module level: FastAPI resolves the bench routes' (string) annotations from these globals.
from fastapi import Depends, Request

import harness
import profiling
from smilingsteps.accounts.auth import (  # type: ignore[import-untyped, unused-ignore]
    CurrentUser,
    Principal,
    authenticate,
)

API = "/api/v1"
REGISTER_PATH = f"{API}/auth/register"
LOGIN_PATH = f"{API}/auth/login"
RESET_PATH = f"{API}/auth/password-reset/request"
ANON_PATH = f"{API}/_bench/anon"
WHOAMI_PATH = f"{API}/_bench/whoami"
WHOAMI_ASYNC_PATH = f"{API}/_bench/whoami-async"
LOGIN_KINDS = ("correct", "wrong-password", "no-account")
LOGIN_CPU_TARGET_MS = (50.0, 250.0)
COOKIE_TARGET_US = 100.0
# Passes the password policy: long, not common, without the name or the email's local part.
PASSWORD = "tangerine orbit lantern 4127"
WRONG_PASSWORD = "tangerine orbit lantern 4128"
ATTEMPTS_PER_EMAIL = 50  # failures per email in the window stay below LOGIN_MAX_FAILURES=100
# (label, time_cost, memory_kib, parallelism); the defaults come from Settings() at run time.
ALTERNATIVES: list[tuple[str, int, int, int]] = [
    ("OWASP minimum: m=19 MiB, t=2", 2, 19456, 1),
    ("OWASP: m=46 MiB, t=1", 1, 47104, 1),
    ("m=64 MiB, t=2", 2, 65536, 1),
    ("RFC 9106 option 2: m=64 MiB, t=3, p=4", 3, 65536, 4),
    ("m=128 MiB, t=3", 3, 131072, 1),
]
PARTS = ("argon2", "login", "cookie")
SOURCE_FILES = (
    "accounts/auth.py",
    "accounts/tokens.py",
    "accounts/passwords.py",
    "accounts/service.py",
    "app.py",
    "platform/ratelimit/middleware.py",
)


@dataclass
class Options(harness.Load):
    runs: int = 30
    logins: int = 40
    batch: int = 4000
    repeats: int = 9


# --------------------------------------------------------------------------
# The application: settings, bench-only routes, the server process
# --------------------------------------------------------------------------


def build_app(kind: str, workdir: Path) -> Any:
    """The full app on a migrated SQLite file, JSON logs to a file, the bench routes. `login`: rate
    limiting off, failure limits raised. `cookie`: the production stack, quotas that never deny."""
    from smilingsteps.platform import migrate  # type: ignore[import-untyped, unused-ignore]

    fields: dict[str, Any] = (
        {"RATE_LIMITS_ENABLED": False, "LOGIN_MAX_FAILURES": 100, "LOGIN_IP_MAX_FAILURES": 10000}
        if kind == "login"
        else {"RATE_LIMITS_ENABLED": True, "RATE_LIMIT_API": harness.NEVER_DENY, "RATE_LIMIT_AUTH": harness.NEVER_DENY}
    )
    # The run is far shorter; the TTLs only keep a slow run from meeting an expired token.
    settings = harness.sqlite_settings(
        workdir / f"{kind}.db", ACCESS_TOKEN_TTL_MINUTES=60, SESSION_IDLE_TIMEOUT_MINUTES=60, **fields
    )
    migrate.upgrade(settings.database_url)  # runs its own event loop: call it outside one
    app = harness.logged_app(settings, workdir / f"{kind}-app.log")
    add_bench_routes(app)
    return app


async def current_user_async(request: Request) -> Principal:
    """Comparison: `authenticate()` in one dependency, the kit read inline instead of through a
    dependency of its own. (Before the dependencies were made `async def`, this was the what-if that
    showed their threadpool hops; now it shows what the remaining dependency plumbing costs.)"""
    return authenticate(request, harness.auth_kit(request.app))


AsyncUser = Annotated[Principal, Depends(current_user_async)]
ANON_ID = "00000000-0000-0000-0000-000000000000"  # same length as a user id: same body size


def add_bench_routes(app: Any) -> None:
    """GET /api/v1/_bench/{anon,whoami,whoami-async}, with the route class every /api router uses."""
    from fastapi import APIRouter

    from smilingsteps.platform.routing import ApiRoute  # type: ignore[import-untyped, unused-ignore]

    router = APIRouter(prefix=f"{API}/_bench", route_class=ApiRoute, include_in_schema=False)

    @router.get("/anon")
    async def anon() -> dict[str, str]:
        return {"user_id": ANON_ID}

    @router.get("/whoami")
    async def whoami(user: CurrentUser) -> dict[str, str]:
        return {"user_id": str(user.user_id)}

    @router.get("/whoami-async")
    async def whoami_async(user: AsyncUser) -> dict[str, str]:
        return {"user_id": str(user.user_id)}

    app.include_router(router)


def running_server(kind: str, workdir: Path, options: Options) -> Any:
    def start(name: str) -> harness.Server:
        return harness.start_server(__file__, [name], name, workdir, options.taskset(options.server_cpu))

    return harness.running_servers(start, [kind], timeout=60.0)


def register(client: harness.Client, email: str) -> None:
    body = {"email": email, "password": PASSWORD, "full_name": "Bench Person", "phone": "0712345678"}
    status, _, answer = client.request("POST", REGISTER_PATH, body)
    if status != 201:
        raise RuntimeError(f"register {email}: {status} {answer[:300]!r}")


def login_cookie(client: harness.Client, email: str) -> str:
    """All three session cookies, as a browser sends them to a same-site GET."""
    status, headers, body = client.request("POST", LOGIN_PATH, {"email": email, "password": PASSWORD})
    if status != 200:
        raise RuntimeError(f"login {email}: {status} {body[:300]!r}")
    cookies = [value.split(";", 1)[0] for name, value in headers if name.lower() == "set-cookie"]
    return "; ".join(cookies)


# --------------------------------------------------------------------------
# Part 1: argon2 cost
# --------------------------------------------------------------------------


@dataclass
class Usage:
    wall: float
    cpu: float
    user: float
    sys: float
    minflt: int


def measured(func: Callable[[], object]) -> Usage:
    """Wall and CPU of one call; CPU is the whole process, so argon2's own threads (p > 1) count."""
    wall0, cpu0, ru0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    func()
    wall1, cpu1, ru1 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    return Usage(
        wall=wall1 - wall0,
        cpu=cpu1 - cpu0,
        user=ru1.ru_utime - ru0.ru_utime,
        sys=ru1.ru_stime - ru0.ru_stime,
        minflt=ru1.ru_minflt - ru0.ru_minflt,
    )


def argon2_part(options: Options) -> dict[str, Any]:
    from smilingsteps.accounts.passwords import HashParameters, PasswordHasher  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

    fields = Settings.model_fields  # the code's defaults, whatever this shell's environment says
    default = (
        "production default",
        *(fields[f"ARGON2_{name}"].default for name in ("TIME_COST", "MEMORY_KIB", "PARALLELISM")),
    )
    sets = [default, *(alt for alt in ALTERNATIVES if alt[1:] != default[1:])]
    hashers = {label: PasswordHasher(HashParameters(t, m, p)) for label, t, m, p in sets}
    stored = {label: hasher.hash_sync(PASSWORD) for label, hasher in hashers.items()}
    ops: dict[tuple[str, str], Callable[[], object]] = {}
    for label, hasher in hashers.items():
        ops[(label, "hash")] = functools.partial(hasher.hash_sync, PASSWORD)
        ops[(label, "verify")] = functools.partial(hasher._verify, stored[label], PASSWORD)
    # Login's other two outcomes, with the production parameters: a wrong password, and no account
    # (the dummy hash). Verify must cost the same whatever the outcome.
    prod = hashers[default[0]]
    ops[(default[0], "verify, wrong password")] = functools.partial(prod._verify, stored[default[0]], WRONG_PASSWORD)
    ops[(default[0], "verify, no account (dummy hash)")] = functools.partial(prod._verify, None, PASSWORD)
    # One warm-up call each (first-touch of the allocator's pages, code paths), then interleaved runs.
    samples = harness.interleaved(
        {key: functools.partial(measured, func) for key, func in ops.items()}, options.runs, 1, progress="argon2"
    )
    low, high = LOGIN_CPU_TARGET_MS
    rows: list[dict[str, Any]] = []
    for label, t, m, p in sets:
        for op in ("hash", "verify", "verify, wrong password", "verify, no account (dummy hash)"):
            if (label, op) not in samples:
                continue
            mine = samples[(label, op)]
            row = {
                "parameters": label,
                "time_cost": t,
                "memory_kib": m,
                "parallelism": p,
                "operation": op,
                "cpu_ms": harness.summary([s.cpu * 1e3 for s in mine], 1),
                "wall_ms": harness.summary([s.wall * 1e3 for s in mine], 1),
                "user_ms_median": round(statistics.median(s.user * 1e3 for s in mine), 1),
                "sys_ms_median": round(statistics.median(s.sys * 1e3 for s in mine), 1),
                "minor_page_faults_median": int(statistics.median(s.minflt for s in mine)),
            }
            if op == "verify":
                row["login_cpu_in_target"] = low <= row["cpu_ms"]["median"] <= high
            rows.append(row)
    verify_default = next(r for r in rows if r["parameters"] == default[0] and r["operation"] == "verify")
    return {
        "generated_at": harness.now_iso(),
        "method": f"{options.runs} interleaved runs of each operation in this process (not pinned), after one "
        "warm-up call each; CPU = time.process_time() (all threads), user/sys/faults = getrusage(RUSAGE_SELF); "
        "a login costs one verify",
        "defaults": {"time_cost": default[1], "memory_kib": default[2], "parallelism": default[3]},
        "rows": rows,
        "target_login_cpu_ms": [low, high],
        "default_login_cpu_ms_median": verify_default["cpu_ms"]["median"],
        "default_login_cpu_ms_p95": verify_default["cpu_ms"]["p95"],
        "default_in_target": verify_default["login_cpu_in_target"],
        "parallelism_1_sets_in_target": [
            r["parameters"]
            for r in rows
            if r["operation"] == "verify" and r["login_cpu_in_target"] and r["parallelism"] == 1
        ],
    }


def print_argon2(result: dict[str, Any]) -> None:
    print(f"\n{'parameters':<40}{'operation':<33}{'CPU ms':>8}{'p95':>8}{'wall ms':>9}{'sys ms':>8}{'faults':>8}")
    for row in result["rows"]:
        print(
            f"{row['parameters']:<40}{row['operation']:<33}{row['cpu_ms']['median']:>8.1f}{row['cpu_ms']['p95']:>8.1f}"
            f"{row['wall_ms']['median']:>9.1f}{row['sys_ms_median']:>8.1f}{row['minor_page_faults_median']:>8}"
        )
    low, high = result["target_login_cpu_ms"]
    print(f"login (one verify) with the defaults: {result['default_login_cpu_ms_median']:.1f} ms CPU ")
    print(f"target {low:.0f}-{high:.0f} ms CPU per login: {'MET' if result['default_in_target'] else 'NOT MET'}")


# --------------------------------------------------------------------------
# Part 2: login latency end to end
# --------------------------------------------------------------------------


def login_part(options: Options, workdir: Path) -> dict[str, Any]:
    emails_needed = math.ceil((options.logins + 3) / ATTEMPTS_PER_EMAIL)
    right = "bench-right@example.com"
    wrong = [f"bench-wrong-{i}@example.com" for i in range(emails_needed)]
    nobody = [f"bench-nobody-{i}@example.com" for i in range(emails_needed)]
    with running_server("login", workdir, options) as servers, options.this_process_on(options.client_cpu):
        server = servers["login"]
        client = harness.Client(server.port)
        for email in (right, *wrong):
            register(client, email)
        counters = dict.fromkeys(LOGIN_KINDS, 0)

        def attempt(kind: str) -> tuple[int, bytes, float, float]:
            index = counters[kind] // ATTEMPTS_PER_EMAIL
            counters[kind] += 1
            email, password = {
                "correct": (right, PASSWORD),
                "wrong-password": (wrong[index], WRONG_PASSWORD),
                "no-account": (nobody[index], PASSWORD),
            }[kind]
            cpu0 = harness.threads_cpu_ns(server.pid)
            started = time.perf_counter()
            status, _, payload = client.request("POST", LOGIN_PATH, {"email": email, "password": password})
            elapsed = time.perf_counter() - started
            return status, payload, elapsed * 1e3, (harness.threads_cpu_ns(server.pid) - cpu0) / 1e6

        for _ in range(3):  # warm-up (counted in the failure limits, not in the results)
            for kind in LOGIN_KINDS:
                attempt(kind)
        latency: dict[str, list[float]] = {kind: [] for kind in LOGIN_KINDS}
        cpu: dict[str, list[float]] = {kind: [] for kind in LOGIN_KINDS}
        statuses: dict[str, dict[str, int]] = {kind: {} for kind in LOGIN_KINDS}
        bodies: dict[str, Any] = {}
        for _, kind in harness.rounds(LOGIN_KINDS, options.logins):
            status, payload, ms, cpu_ms = attempt(kind)
            latency[kind].append(ms)
            cpu[kind].append(cpu_ms)
            statuses[kind][str(status)] = statuses[kind].get(str(status), 0) + 1
            bodies.setdefault(kind, payload)
        reset = reset_request_timing(client, wrong[0], nobody[0], options.logins)
        client.close()
        threads = len(list(Path(f"/proc/{server.pid}/task").iterdir()))
    expected = {"correct": "200", "wrong-password": "401", "no-account": "401"}
    for kind, seen in statuses.items():
        if set(seen) != {expected[kind]}:
            raise RuntimeError(f"login {kind}: statuses {seen}, expected only {expected[kind]}")
    failure_bodies = {kind: _without_request_ids(json.loads(bodies[kind])) for kind in ("wrong-password", "no-account")}
    return {
        "generated_at": harness.now_iso(),
        "method": f"one server process (settings 'login': APP_ENV=test, SQLite on tmpfs, RATE_LIMITS_ENABLED=false, "
        f"LOGIN_MAX_FAILURES=100, LOGIN_IP_MAX_FAILURES=10000, argon2 defaults) pinned to CPU {options.server_cpu}; "
        f"client: http.client keep-alive on CPU {options.client_cpu}; {options.logins} logins of each kind, "
        "interleaved (order rotates), after 3 warm-ups each; latency at the client; server CPU = "
        f"sum over its threads of /proc/<pid>/task/*/schedstat around each request; at most {ATTEMPTS_PER_EMAIL} "
        "failures per email",
        "statuses": statuses,
        "latency_ms": {kind: harness.summary(values) for kind, values in latency.items()},
        "server_cpu_ms": {kind: harness.summary(values) for kind, values in cpu.items()},
        "wrong_minus_no_account_ms": harness.median_difference(latency["wrong-password"], latency["no-account"]),
        "wrong_minus_no_account_server_cpu_ms": harness.median_difference(cpu["wrong-password"], cpu["no-account"]),
        "correct_minus_wrong_ms": round(
            statistics.median(latency["correct"]) - statistics.median(latency["wrong-password"]), 2
        ),
        "failure_bodies_identical_apart_from_request_ids": failure_bodies["wrong-password"]
        == failure_bodies["no-account"],
        "failure_body": failure_bodies["no-account"],
        "server_threads_at_end": threads,
        "password_reset_request": reset,
    }


def reset_request_timing(client: harness.Client, existing: str, missing: str, count: int) -> dict[str, Any]:
    """Side check: POST /auth/password-reset/request for an existing and a missing account, interleaved."""
    latency: dict[str, list[float]] = {"existing": [], "no-account": []}
    statuses: dict[str, set[int]] = {"existing": set(), "no-account": set()}
    for rnd, kind in harness.rounds(("existing", "no-account"), count + 3):
        started = time.perf_counter()
        status, _, _ = client.request("POST", RESET_PATH, {"email": existing if kind == "existing" else missing})
        if rnd > 3:  # the first three of each are the warm-up
            latency[kind].append((time.perf_counter() - started) * 1e3)
        statuses[kind].add(status)
    low, high = harness.median_diff_ci(latency["existing"], latency["no-account"])
    return {
        "statuses": {kind: sorted(seen) for kind, seen in statuses.items()},
        "latency_ms": {kind: harness.summary(values) for kind, values in latency.items()},
        "existing_minus_no_account_ms": round(
            statistics.median(latency["existing"]) - statistics.median(latency["no-account"]), 2
        ),
        "bootstrap_95pct_interval": [round(low, 2), round(high, 2)],
    }


def _without_request_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in ("request_id", "trace_id")}


def print_login(result: dict[str, Any]) -> None:
    print(f"\n{'login':<16}{'median ms':>10}{'p95':>8}{'min':>8}{'max':>8}{'server CPU ms':>15}")
    for kind in LOGIN_KINDS:
        lat, cpu = result["latency_ms"][kind], result["server_cpu_ms"][kind]
        print(
            f"{kind:<16}{lat['median']:>10.1f}{lat['p95']:>8.1f}{lat['min']:>8.1f}{lat['max']:>8.1f}{cpu['median']:>15.1f}"
        )
    for label, key in (("", "wrong_minus_no_account_ms"), ("server CPU, ", "wrong_minus_no_account_server_cpu_ms")):
        diff = result[key]
        low, high = diff["bootstrap_95pct_interval"]
        print(
            f"{label}wrong-password - no-account: {diff['median_difference']:+.2f} ms "
            f"(95 % interval {low:+.2f} .. {high:+.2f}), ratio {diff['ratio']:.3f}"
        )
    print(f"failure bodies identical: {result['failure_bodies_identical_apart_from_request_ids']}")
    reset = result["password_reset_request"]
    low, high = reset["bootstrap_95pct_interval"]
    print(
        f"password-reset request: existing {reset['latency_ms']['existing']['median']:.2f} ms, "
        f"no account {reset['latency_ms']['no-account']['median']:.2f} ms, "
        f"difference {reset['existing_minus_no_account_ms']:+.2f} ms (95 % interval {low:+.2f} .. {high:+.2f}), "
        f"statuses {reset['statuses']}"
    )


# --------------------------------------------------------------------------
# Part 3: cookie authentication cost
# --------------------------------------------------------------------------

# Variants of the cookie part: (path, sends the session cookies).
VARIANTS: dict[str, tuple[str, bool]] = {
    "anon-nocookie": (ANON_PATH, False),
    "anon": (ANON_PATH, True),
    "whoami": (WHOAMI_PATH, True),
    "whoami-async": (WHOAMI_ASYNC_PATH, True),
}
# (variant, baseline, what the difference is)
COMPARISONS: list[tuple[str, str, str]] = [
    ("whoami", "anon", "CurrentUser on top of the stack, both with the cookie (the target)"),
    ("whoami-async", "anon", "what-if: the same check behind an async def dependency (no threadpool hops)"),
    ("anon", "anon-nocookie", "the cookie on a route that does not authenticate (rate-limit identity, parsing)"),
    ("whoami", "anon-nocookie", "the cookie + CurrentUser against a request without a cookie"),
]


def _noop() -> None:
    return None


async def threadpool_hop_us(count: int) -> tuple[float, float]:
    """(wall µs, CPU µs) of one `run_in_threadpool` round trip, as FastAPI makes for each `def` dependency."""
    from starlette.concurrency import run_in_threadpool

    for _ in range(200):
        await run_in_threadpool(_noop)
    cpu0 = time.process_time()
    started = time.perf_counter()
    for _ in range(count):
        await run_in_threadpool(_noop)
    return (time.perf_counter() - started) / count * 1e6, (time.process_time() - cpu0) / count * 1e6


def _alphabet_check(segments: list[bytes]) -> bool:
    """What PyJWT 2.15's `_decode_base64url_segment` does per segment (a generator over every byte)."""
    from jwt import api_jws

    alphabet: frozenset[int] = getattr(api_jws, "_BASE64URL_ALPHABET", frozenset())
    bad = False
    for segment in segments:  # every segment is checked, as PyJWT does
        bad = any(character not in alphabet for character in segment) or bad
    return bad


def _hs256(token: str, key: bytes) -> Any:
    """HMAC-SHA256 over header.payload, constant-time compare, JSON payload: the cryptographic floor."""
    import base64
    import hmac

    header, payload, signature = token.split(".")
    mac = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(base64.urlsafe_b64encode(mac).rstrip(b"=").decode(), signature):
        raise ValueError("bad signature")
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def rate_limit_identify(app: Any) -> Callable[[dict[str, Any]], object] | None:
    """The `identify` callable create_app gave RateLimitMiddleware, if any (it decodes the access token)."""
    for entry in app.user_middleware:
        if entry.cls.__name__ == "RateLimitMiddleware":
            identify: Callable[[dict[str, Any]], object] | None = entry.kwargs.get("identify")
            return identify
    return None


def scope_for(path: str, cookie: str | None) -> dict[str, Any]:
    return profiling.asgi_scope(path, [(b"cookie", cookie.encode())] if cookie else [])


def micro_costs(app: Any, token: str, cookie: str, number: int = 20_000) -> list[dict[str, Any]]:
    """Best of 5 x `number` (timeit) for the parts of authentication, in µs. Every call gets a fresh
    `scope["state"]`, so nothing decoded by an earlier call (the per-request claims cache) is reused."""
    import jwt
    from jwt.algorithms import HMACAlgorithm
    from starlette.requests import Request as StarletteRequest

    from smilingsteps.accounts import tokens  # type: ignore[import-untyped, unused-ignore]

    kit = harness.auth_kit(app)
    codec = kit.codec
    runtime = harness.app_runtime(app)
    now = runtime.now()
    template = {**scope_for(WHOAMI_PATH, cookie), "app": app}

    def fresh() -> dict[str, Any]:
        return {**template, "state": {}}

    jwt_options: Any = {"require": tokens._REQUIRED, "verify_exp": False, "verify_iat": False}
    steps: list[tuple[str, Callable[[], object]]] = [
        ("TokenCodec.decode_access (jwt.decode + claim checks + 2 UUIDs)", lambda: codec.decode_access(token, now=now)),
        (
            "  of which jwt.decode (HS256 verify, audience, issuer, required claims)",
            lambda: jwt.decode(
                token,
                codec._key,
                algorithms=[tokens.ALGORITHM],
                audience=tokens.AUDIENCE,
                issuer=codec.issuer,
                options=jwt_options,
            ),
        ),
        (
            "    of which PyJWT's per-character base64url alphabet check of the 3 segments",
            functools.partial(_alphabet_check, [part.encode() for part in token.split(".")]),
        ),
        (
            "    of which PyJWT's HMAC prepare_key (PEM/SSH-key pattern checks of the key, every decode)",
            functools.partial(HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key, codec._key),
        ),
        (
            "hand-rolled HS256 check + JSON parse of the payload, for comparison",
            functools.partial(_hs256, token, codec._key),
        ),
        ("runtime_of(request).now() (the injected clock)", runtime.now),
        ("Request(scope).cookies (parse the Cookie header, 3 cookies)", lambda: StarletteRequest(fresh()).cookies),
        (
            "authenticate(Request(scope), kit): the whole check, cookie parse included",
            lambda: authenticate(StarletteRequest(fresh()), kit),
        ),
        ("Request(scope) with a fresh state alone (subtract from the line above)", lambda: StarletteRequest(fresh())),
    ]
    identify = rate_limit_identify(app)
    if identify is not None:
        steps.append(
            (
                "RateLimitMiddleware identify(scope): finds the cookie, decodes the token, caches the claims",
                lambda: identify(fresh()),
            )
        )
        steps.append(("fresh scope copy alone (subtract from the line above)", fresh))

    def best(func: Callable[[], object]) -> float:
        func()
        return min(timeit.repeat(func, number=number, repeat=5)) / number * 1e6

    return [{"step": name, "us": round(best(func), 2)} for name, func in steps]


def in_process(options: Options, workdir: Path) -> dict[str, Any]:
    """Direct ASGI calls into the full app (cookie settings) on uvloop, pinned to the server CPU."""
    import logging

    import httpx
    import uvloop

    app = build_app("cookie", workdir / "inproc")

    async def run() -> dict[str, Any]:
        async with app.router.lifespan_context(app):
            logging.getLogger("httpx").setLevel(logging.WARNING)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{harness.HOST}:8000") as client:
                email = "bench-cookie@example.com"
                registered = await client.post(
                    REGISTER_PATH,
                    json={"email": email, "password": PASSWORD, "full_name": "Bench Person", "phone": "0712345678"},
                )
                registered.raise_for_status()
                user_id = registered.json()["id"]
                signed_in = await client.post(LOGIN_PATH, json={"email": email, "password": PASSWORD})
                signed_in.raise_for_status()
                cookies = dict(signed_in.cookies)
            cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
            templates = {name: scope_for(path, cookie if sent else None) for name, (path, sent) in VARIANTS.items()}
            expect = {name: (user_id if "whoami" in name else ANON_ID).encode() for name in VARIANTS}
            for name in VARIANTS:
                await profiling.call_asgi(app, templates[name], 500, expect[name])  # warm-up
            wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
            cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _, name in harness.rounds(list(VARIANTS), options.repeats):
                w, c = await profiling.call_asgi(app, templates[name], options.batch, expect[name])
                wall[name].append(w)
                cpu[name].append(c)
            hop = await threadpool_hop_us(options.batch)
            micro = micro_costs(app, cookies["ss_access"], cookie)
        await asyncio.sleep(0)
        return {"wall": wall, "cpu": cpu, "hop": hop, "micro": micro, "cookie_bytes": len(cookie)}

    with options.this_process_on(options.server_cpu), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        raw = runner.run(run())
    wall, cpu = raw["wall"], raw["cpu"]
    return {
        "method": f"direct ASGI calls into create_app(cookie settings) + bench routes, uvloop, one loop turn per "
        f"request, this process pinned to CPU {options.server_cpu}; {options.repeats} interleaved batches of "
        f"{options.batch} per variant (order rotates); statistic: median of batches (wall); CPU = process_time "
        "(all threads) per batch",
        "cookie_header_bytes": raw["cookie_bytes"],
        "rate_limit_identity_installed": rate_limit_identify(app) is not None,
        "routes": {
            name: {
                "wall_us_median": round(statistics.median(wall[name]), 2),
                "wall_us_batches": [round(x, 2) for x in wall[name]],
                "cpu_us_median": round(statistics.median(cpu[name]), 2),
            }
            for name in VARIANTS
        },
        "differences_wall": harness.differences(wall, COMPARISONS),
        "differences_cpu": harness.differences(cpu, COMPARISONS),
        "threadpool_hop": {"wall_us": round(raw["hop"][0], 2), "cpu_us": round(raw["hop"][1], 2)},
        "micro_us": raw["micro"],
    }


def sequential_us(client: harness.Client, path: str, cookie: str | None, count: int) -> float:
    """Fallback without wrk: median latency (µs) of `count` sequential keep-alive requests."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        status, _, _ = client.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        samples.append((time.perf_counter() - started) * 1e6)
        if status != 200:
            raise RuntimeError(f"{path}: {status}")
    return statistics.median(samples)


def over_http(options: Options, workdir: Path) -> dict[str, Any]:
    names = list(VARIANTS)
    use_wrk = shutil.which("wrk") is not None
    with running_server("cookie", workdir, options) as servers:
        server = servers["cookie"]
        client = harness.Client(server.port)
        email = "bench-cookie@example.com"
        register(client, email)
        cookie = login_cookie(client, email)
        sent = {name: cookie if with_cookie else None for name, (_, with_cookie) in VARIANTS.items()}
        checks: dict[str, Any] = {}
        for name, (path, _) in VARIANTS.items():
            status, headers, body = client.request("GET", path, headers={"Cookie": cookie} if sent[name] else {})
            checks[name] = {"status": status, "body": json.loads(body), "header_count": len(headers)}
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:300]!r}")
        if checks["whoami"]["body"] != checks["whoami-async"]["body"]:
            raise RuntimeError(f"whoami and whoami-async disagree: {checks}")

        def once(name: str, seconds: float, count: int) -> tuple[int, dict[str, Any]]:
            """(requests, result) of one run: wrk for `seconds`, or without wrk `count` sequential requests."""
            path, cookie_sent = VARIANTS[name][0], sent[name]
            if not use_wrk:
                return count, {"us_per_request": sequential_us(client, path, cookie_sent, count)}
            result = harness.run_wrk(
                server.url(path), seconds, options, *(["-H", f"Cookie: {cookie_sent}"] if cookie_sent else [])
            )
            return result["requests"], {"us_per_request": 1e6 / result["rps"], **result}

        runs: list[dict[str, Any]] = []
        with options.this_process_on(options.client_cpu) if not use_wrk else contextlib.nullcontext():
            for name in names:
                print(f"warm-up {name} {options.warmup} s", flush=True)
                once(name, options.warmup, 300)
            for rnd, name in harness.rounds(names, options.rounds):
                cpu0 = harness.threads_cpu_ns(server.pid)
                requests, result = once(name, options.duration, 2000)
                cpu_us = (harness.threads_cpu_ns(server.pid) - cpu0) / 1e3 / requests
                us = result.pop("us_per_request")
                runs.append({"route": name, "round": rnd, "us_per_request": us, "cpu_us_per_request": cpu_us, **result})
                print(f"round {rnd} {name:14s} {us:10.1f} µs", flush=True)
        client.close()
    # Every access-log line of the bench routes, read once the server has stopped.
    statuses = harness.log_statuses(workdir / "cookie-app.log", '"smilingsteps.http"', "/_bench/")
    by_round = {name: [r["us_per_request"] for r in runs if r["route"] == name] for name in names}
    cpu_by_round = {name: [r["cpu_us_per_request"] for r in runs if r["route"] == name] for name in names}
    routes: dict[str, Any] = {}
    for name in names:
        mine = [r for r in runs if r["route"] == name]
        routes[name] = {
            "us_per_request": round(statistics.median(by_round[name]), 2),
            "server_cpu_us_per_request": round(statistics.median(cpu_by_round[name]), 2),
        }
        if use_wrk:
            routes[name].update(
                {
                    "median_rps": round(statistics.median(r["rps"] for r in mine), 1),
                    "rounds_rps": [r["rps"] for r in mine],
                    "p50_ms_median": round(statistics.median(r["latency_ms"]["p50"] for r in mine), 3),
                    "p99_ms_median": round(statistics.median(r["latency_ms"]["p99"] for r in mine), 3),
                    "errors": sum(harness.wrk_errors(r) for r in mine),
                }
            )
    method = (
        f"one server (settings 'cookie': the full middleware stack, rate limiting on with quotas that never "
        f"deny, JSON access log to a file) pinned to CPU {options.server_cpu}; wrk -t1 -c{options.connections} "
        f"on CPU {options.client_cpu}, with the three session cookies except for anon-nocookie; "
        f"{options.warmup} s warm-up per variant, {options.rounds} interleaved rounds of {options.duration} s; "
        "us_per_request = median over rounds of 1e6 / rps (the server is saturated: its time per request, "
        "if it has its core to itself); server_cpu_us_per_request = CPU of all the server's threads "
        "(/proc/<pid>/task/*/schedstat) / requests completed, median over rounds: robust to other load"
        if use_wrk
        else "wrk not installed: sequential http.client keep-alive requests, median latency of 2000 per round; "
        "server_cpu_us_per_request = CPU of all the server's threads / 2000"
    )
    return {
        "tool": "wrk" if use_wrk else "http.client (sequential)",
        "method": method,
        "response_checks": checks,
        "access_log_statuses": statuses,
        "routes": routes,
        "differences_server_cpu": harness.differences(cpu_by_round, COMPARISONS),
        "differences_throughput": harness.differences(by_round, COMPARISONS),
        "runs": runs,
    }


def cookie_part(options: Options, workdir: Path) -> dict[str, Any]:
    (workdir / "inproc").mkdir(exist_ok=True)
    print("cookie: in process", flush=True)
    inproc = in_process(options, workdir)
    print("cookie: over HTTP", flush=True)
    http_result = over_http(options, workdir)
    key, whole = "whoami - anon", "whoami - anon-nocookie"
    inproc_us = inproc["differences_cpu"][key]["us"]
    http_us = http_result["differences_server_cpu"][key]["us"]
    throughput_us = http_result["differences_throughput"][key]["us"]
    return {
        "generated_at": harness.now_iso(),
        "rate_limit_identity_installed": inproc["rate_limit_identity_installed"],
        "in_process": inproc,
        "http": http_result,
        "target": {
            "max_auth_overhead_us": COOKIE_TARGET_US,
            "measure": f"{key}: CPU µs per request (in process: process_time; over HTTP: the server's threads)",
            "in_process_us": inproc_us,
            "http_us": http_us,
            "met_in_process": inproc_us < COOKIE_TARGET_US,
            "met_over_http": http_us < COOKIE_TARGET_US,
            "http_throughput_us": throughput_us,
            "met_over_http_throughput": throughput_us < COOKIE_TARGET_US,
            "whole_cookie_cost": {
                "measure": whole,
                "in_process_us": inproc["differences_cpu"][whole]["us"],
                "http_us": http_result["differences_server_cpu"][whole]["us"],
            },
        },
    }


def print_cookie(result: dict[str, Any]) -> None:
    inproc, http_result = result["in_process"], result["http"]
    print(f"\nin process (median of batches){'wall µs':>12}{'CPU µs':>10}")
    for name, row in inproc["routes"].items():
        print(f"  {name:<28}{row['wall_us_median']:>12.2f}{row['cpu_us_median']:>10.2f}")
    for name, row in inproc["differences_wall"].items():
        cpu = inproc["differences_cpu"][name]["us"]
        print(f"  {name:<26}{row['us']:>+9.2f} µs wall {cpu:>+9.2f} µs CPU  ratio {row['ratio']:.3f}")
    hop = inproc["threadpool_hop"]
    print(f"  one run_in_threadpool round trip: {hop['wall_us']:.2f} µs wall, {hop['cpu_us']:.2f} µs CPU")
    for row in inproc["micro_us"]:
        print(f"  {row['us']:>8.2f} µs  {row['step']}")
    print(f"\nover HTTP ({http_result['tool']})\n  {'':<14}{'1e6/rps µs':>11}{'CPU µs':>9}")
    for name, row in http_result["routes"].items():
        extra = f"{row['median_rps']:>10.1f} rps  p99 {row['p99_ms_median']:.2f} ms" if "median_rps" in row else ""
        print(f"  {name:<14}{row['us_per_request']:>11.2f}{row['server_cpu_us_per_request']:>9.2f} {extra}")
    for label, key in (("server CPU", "differences_server_cpu"), ("1e6/rps", "differences_throughput")):
        for name, row in http_result[key].items():
            rounds = ", ".join(f"{x:+.1f}" for x in row["us_per_round"])
            print(f"  {label:<11}{name:<24}{row['us']:>+9.2f} µs (per round: {rounds}), ratio {row['ratio']:.3f}")
    target = result["target"]

    def verdict(met: bool) -> str:
        return "MET" if met else "NOT MET"

    print(
        f"target < {target['max_auth_overhead_us']:.0f} µs ({target['measure']}): in process "
        f"{target['in_process_us']:+.1f} ({verdict(target['met_in_process'])}), over HTTP "
        f"{target['http_us']:+.1f} CPU ({verdict(target['met_over_http'])}), "
        f"{target['http_throughput_us']:+.1f} by 1e6/rps ({verdict(target['met_over_http_throughput'])})"
    )


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, serve=("login", "cookie"))
    parser.add_argument("--part", choices=PARTS, action="append", help="run only this part (repeatable)")
    parser.add_argument("--runs", type=int, default=30, help="argon2: runs per operation (default 30)")
    parser.add_argument("--logins", type=int, default=40, help="login: requests per kind (default 40)")
    parser.add_argument("--batch", type=int, default=4000, help="cookie, in process: requests per batch (4000)")
    parser.add_argument("--repeats", type=int, default=9, help="cookie, in process: batches per route (9)")
    harness.add_load_arguments(parser, duration=6, warmup=2, rounds=5, connections=32, what="cookie, HTTP: ")
    harness.add_output_arguments(parser, harness.RESULTS_DIR / "auth_cost.json")
    args = parser.parse_args(argv)
    if harness.check_serve(parser, args):
        harness.run_uvicorn(build_app(args.serve, args.workdir), args.port)
        return 0
    options = Options.from_args(args)
    parts = args.part or list(PARTS)
    out: Path = args.out
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() and args.part else {}
    started = time.monotonic()
    report.update(
        {
            "benchmark": "Authentication: argon2 cost, login latency, cookie authentication per request",
            "generated_at": harness.now_iso(),
            "machine": harness.machine(
                ("argon2-cffi", "argon2-cffi-bindings", "PyJWT", "anyio", "aiosqlite"), proc_cpuinfo=True
            ),
            "source": harness.measured_source(SOURCE_FILES),
            "command": harness.command_line("auth_cost.py", argv),
        }
    )
    with tempfile.TemporaryDirectory(prefix="auth-bench-", dir=options.tmp_root) as tmp:
        report["load_average_at_start"] = os.getloadavg()
        if "argon2" in parts:
            report["argon2"] = argon2_part(options)
            print_argon2(report["argon2"])
        if "login" in parts:
            print("\nlogin: end to end", flush=True)
            report["login"] = login_part(options, Path(tmp))
            print_login(report["login"])
        if "cookie" in parts:
            print("\ncookie authentication", flush=True)
            report["cookie"] = cookie_part(options, Path(tmp))
            print_cookie(report["cookie"])
    report["load_average_at_end"] = os.getloadavg()
    report["elapsed_seconds_last_run"] = round(time.monotonic() - started, 1)
    harness.write_json(out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
