"""Rate limiting: requests per second of a limited endpoint, Redis backend vs limiting off.

Three servers run the full app (``smilingsteps.app.create_app``), each in its own
process on a free 127.0.0.1 port, with the health benchmark's uvicorn settings
(httptools + uvloop, one process, no access log, no Server header, lifespan on):

* ``off``    - ``RATE_LIMITS_ENABLED=false``: no RateLimitMiddleware at all,
* ``redis``  - ``REDIS_URL=redis://127.0.0.1:6379/0``, a unique ``REDIS_KEY_PREFIX``
  per run and a quota so large that nothing is ever denied,
* ``memory`` - the in-process backend (no ``REDIS_URL``), same quota, for reference.

All three set ``TRUSTED_PROXIES=127.0.0.1/32``, so ``X-Forwarded-For`` from wrk
names the client. ``wrk`` (1 thread, 32 connections) loads ``GET /api/v1`` (the
API index, class ``api``) in two variants:

* ``one-key``   - plain wrk: every request comes from 127.0.0.1, so all of them
  hit ONE limiter key (the worst case for a single hot key),
* ``many-keys`` - a wrk Lua script sends ``X-Forwarded-For: 10.x.y.z`` with a new
  random address per request, so nearly every request has its own key.

Rounds are interleaved; the statistic is the median rps. The servers are pinned
to CPU 0; wrk and redis-server share CPU 1 (redis-server's affinity is set with
``taskset -a -p`` for the run and restored afterwards; ``--no-pin-redis`` leaves
it alone). The run checks that every response was 200 (wrk and the servers'
access logs), how often the Redis server fell back to memory, and that Redis
really received the keys (counted with ``redis-cli --scan`` and then deleted).

Usage (from the repository root; bench/README.md has the details)::

    .venv/bin/python bench/ratelimit_throughput.py                   # the benchmark, under 3 minutes
    .venv/bin/python bench/ratelimit_throughput.py --py-spy PY_SPY   # profile + batch sizes, ~90 s
    .venv/bin/python bench/ratelimit_throughput.py --what-if --duration 6   # monkeypatched what-ifs, ~2.5 min
    .venv/bin/python bench/ratelimit_throughput.py --serve redis --port 8001 --workdir /tmp/x --prefix p

Results: ``bench/results/ratelimit_throughput.json``, ``ratelimit_pyspy.json`` (its µs
use the benchmark's JSON, so run the benchmark first) and ``ratelimit_whatif.json``.

smilingsteps ships no ``py.typed`` marker, so its imports here carry
``type: ignore[import-untyped, unused-ignore]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import health_overhead as common  # bench/health_overhead.py: uvicorn settings, wrk parsing, machine facts

HOST = common.HOST  # loopback only, always
PATH = "/api/v1"
KINDS = ("off", "redis", "memory")
VARIANTS = ("one-key", "many-keys")
REDIS_URL = "redis://127.0.0.1:6379/0"
TARGET_RATIO = 0.80
TRUSTED_PROXIES = "127.0.0.1/32"
# 1e8 requests per ~1096 years: GCRA never denies (a burst of up to 1e8 is allowed), and the
# emission interval is 345.6 s, so every key Redis stores lives (TTL) long enough to be counted
# after the run. 100000000/1h never denies either, but its keys expire after ~1 ms. The Lua
# script does the same GET + SET PX either way.
DEFAULT_RATE = "100000000/400000d"
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
STATS_SIGNAL = signal.SIGUSR1  # asks the batch probe to write its counters

# A different client per request: X-Forwarded-For 10.x.y.z (x, y in 0..255, z in 1..254).
XFF_LUA = """
math.randomseed(os.time())
local random, format = math.random, string.format
request = function()
  local ip = format("10.%d.%d.%d", random(0, 255), random(0, 255), random(1, 254))
  return wrk.format("GET", nil, { ["X-Forwarded-For"] = ip })
end
"""
XFF_ADDRESSES = 256 * 256 * 254


# --------------------------------------------------------------------------
# The servers
# --------------------------------------------------------------------------


def server_name(kind: str, tweaks: tuple[str, ...] = ()) -> str:
    return "+".join((kind, *tweaks))


def settings_for(kind: str, workdir: Path, prefix: str, rate: str, name: str) -> Any:
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

    limited = kind != "off"
    return Settings(
        APP_ENV="test",
        DATABASE_URL=f"sqlite+aiosqlite:///{(workdir / f'{name}.db').as_posix()}",
        SECRET_KEY=secrets.token_urlsafe(36),  # 48 characters
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        LOG_DIR=None,
        TRUSTED_PROXIES=TRUSTED_PROXIES,
        RATE_LIMITS_ENABLED=limited,
        REDIS_URL=REDIS_URL if kind in ("redis", "redis-probe") else None,
        REDIS_KEY_PREFIX=prefix,
        RATE_LIMIT_API=rate,
    )


def install_batch_probe(stats_file: Path) -> None:
    """Record every batch RedisBackend sends (one pipelined round trip each) and every GC pass.

    Used only by the `redis-probe` server, never by the measured ones: a wrapper
    around `RedisBackend._send` (size and duration of each batch) and a
    `gc.callbacks` timer. On SIGUSR1 the process writes what it saw since the
    previous signal to `stats_file` and starts over.
    """
    import gc

    from smilingsteps.platform.ratelimit.redis_backend import (  # type: ignore[import-untyped, unused-ignore]
        RedisBackend,
    )

    sizes: Counter[int] = Counter()
    round_trips: list[float] = []
    pauses: list[tuple[int, float]] = []
    gc_started = [0.0]
    dumps = 0
    original = RedisBackend._send

    async def recording_send(self: Any, batch: list[Any]) -> None:
        started = time.perf_counter()
        sizes[len(batch)] += 1
        await original(self, batch)
        round_trips.append(time.perf_counter() - started)

    def gc_timer(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            pauses.append((int(info["generation"]), time.perf_counter() - gc_started[0]))

    def dump(_signum: int, _frame: object) -> None:
        nonlocal dumps
        dumps += 1
        trips = sorted(round_trips)
        data = {
            "dump": dumps,
            "sizes": {str(size): count for size, count in sorted(sizes.items())},
            "round_trip_ms": {
                "p50": round(trips[len(trips) // 2] * 1e3, 2) if trips else None,
                "p99": round(trips[int(len(trips) * 0.99)] * 1e3, 2) if trips else None,
                "max": round(trips[-1] * 1e3, 2) if trips else None,
                "over_50ms": sum(1 for trip in trips if trip > 0.05),
            },
            "gc": {
                f"gen{generation}": {
                    "passes": len(mine),
                    "max_ms": round(max(mine) * 1e3, 2),
                    "total_ms": round(sum(mine) * 1e3, 1),
                }
                for generation in (0, 1, 2)
                if (mine := [pause for gen, pause in pauses if gen == generation])
            },
            "tracked_objects": len(gc.get_objects()),
        }
        sizes.clear()
        round_trips.clear()
        pauses.clear()
        stats_file.with_suffix(".tmp").write_text(json.dumps(data), encoding="utf-8")
        stats_file.with_suffix(".tmp").replace(stats_file)

    RedisBackend._send = recording_send
    gc.callbacks.append(gc_timer)
    signal.signal(STATS_SIGNAL, dump)


# What-if changes, applied by monkeypatching one server process (never src/), to measure
# what a change in the app would gain before anyone makes it (`--what-if`).
TWEAKS: dict[str, str] = {
    "no-socket-timeout": "the Redis client without socket_timeout: redis-py then wraps no asyncio.timeout "
    "around each reply it reads; each batch keeps RedisBackend's own asyncio.timeout",
    "gc-freeze": "gc.collect() + gc.freeze() once uvicorn has started: the objects of start-up leave the "
    "collector's view, so full (gen2) collections scan only what requests created",
    "cached-loop": "asyncio.get_running_loop() answered from a per-thread cache; on Python 3.11 each call "
    "makes a getpid() system call (3.12 dropped it, cpython#100363)",
}


def apply_tweaks(tweaks: tuple[str, ...]) -> None:
    import asyncio
    import gc
    import threading

    import uvicorn

    if "no-socket-timeout" in tweaks:
        from smilingsteps.platform.ratelimit import redis_backend  # type: ignore[import-untyped, unused-ignore]

        original_init = redis_backend.RedisBackend.__init__

        def init_without_read_timeouts(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            self.client.connection_pool.connection_kwargs["socket_timeout"] = None

        redis_backend.RedisBackend.__init__ = init_without_read_timeouts
    if "gc-freeze" in tweaks:
        original_startup = uvicorn.Server.startup

        async def startup_then_freeze(self: uvicorn.Server, sockets: Any = None) -> None:
            await original_startup(self, sockets)
            gc.collect()
            gc.freeze()

        uvicorn.Server.startup = startup_then_freeze  # type: ignore[method-assign]
    if "cached-loop" in tweaks:
        real = asyncio.events.get_running_loop
        cache: dict[int, asyncio.AbstractEventLoop] = {}

        def cached_running_loop() -> asyncio.AbstractEventLoop:
            loop = cache.get(threading.get_ident())
            if loop is None or not loop.is_running():
                loop = cache[threading.get_ident()] = real()
            return loop

        asyncio.get_running_loop = cached_running_loop
        asyncio.events.get_running_loop = cached_running_loop


def serve(kind: str, port: int, workdir: Path, prefix: str, rate: str, tweaks: tuple[str, ...] = ()) -> None:
    """Run one server in this process until SIGTERM."""
    import uvicorn

    from smilingsteps.app import create_app  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.logging import configure_logging  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.server import DrainingServer  # type: ignore[import-untyped, unused-ignore]

    name = server_name(kind, tweaks)
    settings = settings_for(kind, workdir, prefix, rate, name)
    configure_logging(settings, stream=(workdir / f"{name}-app.log").open("a", encoding="utf-8"))
    if kind == "redis-probe":
        install_batch_probe(workdir / f"{name}-batches.json")
    apply_tweaks(tweaks)
    app = create_app(settings)
    # The production server class (graceful drain, gc.freeze after start-up), with
    # the same uvicorn settings for every variant.
    config = uvicorn.Config(app, host=HOST, port=port, **common.UVICORN_SETTINGS)
    DrainingServer(config, drain=lambda: None, delay=0).run()


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------


@dataclass
class Options:
    duration: int = 8
    warmup: int = 2
    rounds: int = 3
    connections: int = 32
    server_cpu: int = 0
    wrk_cpu: int = 1
    pinned: bool = True
    pin_redis: bool = True
    rate: str = DEFAULT_RATE
    tmp_root: str | None = None
    prefix: str = field(default_factory=lambda: f"bench-rl-{secrets.token_hex(4)}")


@dataclass
class Server:
    kind: str
    name: str  # the kind, plus any what-if tweaks
    port: int
    process: subprocess.Popen[bytes]
    output: Path
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    @property
    def label(self) -> str:
        return self.name

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}-app.log"


@dataclass
class WrkRun:
    kind: str
    variant: str
    round: int
    rps: float
    requests: int
    seconds: float
    latency_ms: dict[str, float]
    non_2xx: int
    socket_errors: dict[str, int]


def pin(cpu: int, options: Options) -> list[str]:
    return ["taskset", "-c", str(cpu)] if options.pinned else []


def start_server(kind: str, workdir: Path, options: Options, tweaks: tuple[str, ...] = ()) -> Server:
    port = common.free_port()
    name = server_name(kind, tweaks)
    output = workdir / f"{name}-server.out"
    command = [
        *pin(options.server_cpu, options),
        sys.executable,
        str(Path(__file__).resolve()),
        *("--serve", kind, "--port", str(port), "--workdir", str(workdir)),
        *("--prefix", options.prefix, "--rate", options.rate),
        *(("--tweak", ",".join(tweaks)) if tweaks else ()),
    ]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=common.child_env())
    return Server(kind, name, port, process, output, workdir)


def get(port: int, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        connection.request("GET", PATH, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@contextmanager
def running_servers(
    workdir: Path, options: Options, kinds: tuple[str, ...] = KINDS, tweaked: tuple[tuple[str, ...], ...] = ()
) -> Iterator[dict[str, Server]]:
    """Servers by name: one per kind, then one `redis` per entry of `tweaked` (a set of what-if tweaks)."""
    servers: dict[str, Server] = {}
    try:
        for kind in kinds:
            servers[kind] = start_server(kind, workdir, options)
        for tweaks in tweaked:
            servers[server_name("redis", tweaks)] = start_server("redis", workdir, options, tweaks)
        for server in servers.values():
            common.wait_ready(server)
        yield servers
    finally:
        for server in servers.values():
            common.stop_server(server)


def run_wrk(server: Server, variant: str, seconds: int, options: Options) -> dict[str, Any]:
    script = ["-s", str(server.workdir / "xff.lua")] if variant == "many-keys" else []
    command = [
        *pin(options.wrk_cpu, options),
        *("wrk", "-t1", f"-c{options.connections}", f"-d{seconds}s", "--latency", *script, server.url),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return common.parse_wrk(done.stdout)


# --------------------------------------------------------------------------
# Redis: where it runs, what it did, and cleaning up after the run
# --------------------------------------------------------------------------


def redis_cli(*args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "-n", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def redis_info(section: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in redis_cli("INFO", section).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not key.startswith("#"):
            info[key] = value
    return info


def redis_counters() -> dict[str, float]:
    """EVALSHA calls (every client of this Redis), and Redis's own CPU seconds."""
    stats = redis_info("commandstats").get("cmdstat_evalsha", "")
    calls = re.search(r"calls=(\d+)", stats)
    cpu = redis_info("cpu")
    return {
        "evalsha_calls": float(calls.group(1)) if calls else 0.0,
        "cpu_seconds": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    }


def count_keys(prefix: str) -> int:
    """`redis-cli --scan --pattern 'PREFIX:*'`, counted."""
    return len(redis_cli("--scan", "--pattern", f"{prefix}:*").split())


def delete_keys(prefix: str) -> int:
    """UNLINK every key with this run's prefix; returns how many went."""
    keys = redis_cli("--scan", "--pattern", f"{prefix}:*").split()
    for start in range(0, len(keys), 1000):
        redis_cli("UNLINK", *keys[start : start + 1000])
    return len(keys)


def _affinity(pid: int) -> str:
    done = subprocess.run(["taskset", "-p", str(pid)], capture_output=True, text=True, check=True)
    return done.stdout.rsplit(":", 1)[1].strip()


@contextmanager
def redis_pinned(options: Options) -> Iterator[dict[str, Any]]:
    """Pin the local redis-server (all its threads) to wrk's CPU for the run, then restore its mask.

    Only a local process is touched: its pid comes from INFO server and must be a
    redis-server in /proc; anything else (or --no-pin-redis) leaves Redis where it is.
    """
    info: dict[str, Any] = {"pinned": False}
    pid = int(redis_info("server").get("process_id", "0"))
    comm = Path(f"/proc/{pid}/comm")
    info["pid"] = pid
    if not (options.pin_redis and options.pinned and pid > 0 and comm.exists()):
        info["note"] = "left where it was"
        yield info
        return
    if comm.read_text().strip() != "redis-server":
        info["note"] = f"pid {pid} is not a local redis-server; left alone"
        yield info
        return
    original = _affinity(pid)
    info["original_mask"] = original
    subprocess.run(["taskset", "-a", "-p", "-c", str(options.wrk_cpu), str(pid)], capture_output=True, check=True)
    info.update(pinned=True, cpu=options.wrk_cpu)
    try:
        yield info
    finally:
        subprocess.run(["taskset", "-a", "-p", original, str(pid)], capture_output=True, check=True)
        info["restored_mask"] = _affinity(pid)


def expected_distinct(n: int, space: int = XFF_ADDRESSES) -> float:
    """Expected number of distinct addresses among n uniform draws from `space`."""
    return space * -math.expm1(n * math.log1p(-1 / space))


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def check_responses(servers: dict[str, Server]) -> dict[str, Any]:
    """Each server answers GET /api/v1 with 200; the limited ones add RateLimit headers, `off` does not."""
    seen: dict[str, Any] = {}
    for kind, server in servers.items():
        status, headers, body = get(server.port)
        forwarded_status, forwarded, _ = get(server.port, {"X-Forwarded-For": "10.255.255.254"})
        limited = "ratelimit" in headers
        if status != 200 or forwarded_status != 200:
            raise RuntimeError(f"{kind}: GET {PATH} answered {status} / {forwarded_status}")
        if limited != (kind != "off"):
            raise RuntimeError(f"{kind}: RateLimit header {'present' if limited else 'missing'}")
        seen[kind] = {
            "status": status,
            "body_bytes": len(body),
            "header_count": len(headers),
            "headers": sorted(headers),
            "ratelimit": headers.get("ratelimit"),
            "ratelimit_policy": headers.get("ratelimit-policy"),
            "ratelimit_with_forwarded_for": forwarded.get("ratelimit"),
        }
    return seen


def scan_log(log_file: Path) -> dict[str, Any]:
    """From a server's JSON log: access-log lines by status, denials, and the limiter's
    fallbacks to memory (with the access-log lines written while it was degraded)."""
    statuses: Counter[str] = Counter()
    events: Counter[str] = Counter()
    fallbacks: list[dict[str, Any]] = []
    degraded = False
    with log_file.open(encoding="utf-8") as lines:
        for line in lines:
            if '"event":"request"' in line:
                found = re.search(r'"status":(\d+)', line)
                statuses[found.group(1) if found else "?"] += 1
                if degraded:
                    fallbacks[-1]["access_lines_while_degraded"] += 1
                continue
            found = re.search(r'"event":"([^"]+)"', line)
            event = found.group(1) if found else "?"
            events[event] += 1
            if event == "rate_limit_backend_degraded":
                degraded = True
                fallbacks.append({"at": json.loads(line).get("timestamp"), "access_lines_while_degraded": 0})
                fallbacks[-1]["error"] = json.loads(line).get("error")
            elif event == "rate_limit_backend_restored" and degraded:
                degraded = False
                fallbacks[-1]["restored_at"] = json.loads(line).get("timestamp")
    return {
        "access_lines": sum(statuses.values()),
        "status_200": statuses["200"],
        "status_other": sum(count for status, count in statuses.items() if status != "200"),
        "rate_limited_events": events["rate_limited"],
        "backend_degraded_events": events["rate_limit_backend_degraded"],
        "backend_restored_events": events["rate_limit_backend_restored"],
        "access_lines_while_degraded": sum(entry["access_lines_while_degraded"] for entry in fallbacks),
        "fallbacks": fallbacks[:50],
    }


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


def source_info() -> dict[str, Any]:
    return common.measured_source()


def machine() -> dict[str, Any]:
    facts = common.machine()
    facts["versions"].update({name: common._version(name) for name in ("redis", "hiredis")})
    facts["redis_server"] = redis_info("server").get("redis_version", "unknown")
    return facts


def require_tools(options: Options) -> None:
    for tool in ("wrk", "redis-cli", *(["taskset"] if options.pinned else [])):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: apt-get install -y wrk redis-tools util-linux)")
    if redis_cli("PING").strip() != "PONG":
        raise SystemExit("no Redis answering on 127.0.0.1:6379")


def benchmark(options: Options, out: Path) -> dict[str, Any]:
    require_tools(options)
    started = time.monotonic()
    runs: list[WrkRun] = []
    warmups: list[WrkRun] = []
    with (
        tempfile.TemporaryDirectory(prefix="ratelimit-bench-", dir=options.tmp_root) as tmp,
        redis_pinned(options) as redis_placement,
    ):
        workdir = Path(tmp)
        (workdir / "xff.lua").write_text(XFF_LUA, encoding="utf-8")
        try:
            with running_servers(workdir, options) as servers:
                responses = check_responses(servers)
                keys_after_checks = count_keys(options.prefix)
                before = redis_counters()
                for variant in VARIANTS:
                    for kind in KINDS:
                        print(f"warm-up {variant} {kind} {options.warmup} s", flush=True)
                        result = run_wrk(servers[kind], variant, options.warmup, options)
                        warmups.append(WrkRun(kind=kind, variant=variant, round=0, **result))
                for rnd in range(options.rounds):
                    variants = VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]
                    for variant in variants:
                        order = KINDS[rnd % len(KINDS) :] + KINDS[: rnd % len(KINDS)]  # rotate to spread drift
                        for kind in order:
                            result = run_wrk(servers[kind], variant, options.duration, options)
                            run = WrkRun(kind=kind, variant=variant, round=rnd + 1, **result)
                            runs.append(run)
                            print(f"round {rnd + 1} {variant:9s} {kind:6s} {run.rps:9.1f} rps", flush=True)
                after = redis_counters()
            logs = {kind: scan_log(workdir / f"{kind}-app.log") for kind in KINDS}
            keys = count_keys(options.prefix)
        finally:
            deleted = delete_keys(options.prefix)
        redis_report = {
            "url": REDIS_URL,
            "key_prefix": options.prefix,
            "placement": redis_placement,
            "keys_after_response_checks": keys_after_checks,
            "keys_with_prefix_after_run": keys,
            "keys_deleted": deleted,
            "keys_left": count_keys(options.prefix),
            "evalsha_calls_during_load": int(after["evalsha_calls"] - before["evalsha_calls"]),
            "redis_cpu_seconds_during_load": round(after["cpu_seconds"] - before["cpu_seconds"], 2),
        }
    report = summarise(runs, warmups, responses, logs, redis_report, options, time.monotonic() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"\nwritten {out.relative_to(BENCH_DIR.parent) if out.is_relative_to(BENCH_DIR.parent) else out}")
    return report


def summarise(
    runs: list[WrkRun],
    warmups: list[WrkRun],
    responses: dict[str, Any],
    logs: dict[str, dict[str, int]],
    redis_report: dict[str, Any],
    options: Options,
    elapsed: float,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        servers: dict[str, Any] = {}
        for kind in KINDS:
            mine = [run for run in runs if run.kind == kind and run.variant == variant]
            rps = [run.rps for run in mine]
            median_rps = statistics.median(rps)
            servers[kind] = {
                "rounds_rps": rps,
                "median_rps": round(median_rps, 1),
                "min_rps": min(rps),
                "max_rps": max(rps),
                "us_per_request": round(1e6 / median_rps, 2),
                "latency_ms_median_of_rounds": {
                    pct: round(statistics.median(run.latency_ms[pct] for run in mine), 3)
                    for pct in ("p50", "p99")
                    if all(pct in run.latency_ms for run in mine)
                },
                "non_2xx": sum(run.non_2xx for run in mine),
                "socket_errors": sum(sum(run.socket_errors.values()) for run in mine),
                "requests": sum(run.requests for run in mine),
            }
        off = servers["off"]["median_rps"]
        per_round = []
        for rnd in sorted({run.round for run in runs}):
            by_kind = {run.kind: run.rps for run in runs if run.round == rnd and run.variant == variant}
            per_round.append(round(by_kind["redis"] / by_kind["off"], 4))
        results[variant] = {
            "servers": servers,
            "redis_vs_off_ratio": round(servers["redis"]["median_rps"] / off, 4),
            "memory_vs_off_ratio": round(servers["memory"]["median_rps"] / off, 4),
            "redis_vs_off_ratio_per_round": per_round,
            "redis_check_us": round(servers["redis"]["us_per_request"] - servers["off"]["us_per_request"], 2),
            "memory_check_us": round(servers["memory"]["us_per_request"] - servers["off"]["us_per_request"], 2),
            "target_met": servers["redis"]["median_rps"] / off >= TARGET_RATIO,
        }
    redis_requests = sum(run.requests for run in [*runs, *warmups] if run.kind == "redis")
    many_key_requests = sum(
        run.requests for run in [*runs, *warmups] if run.kind == "redis" and run.variant == "many-keys"
    )
    redis_report["redis_requests_completed_during_load"] = redis_requests
    redis_report["expected_keys_many_keys_variant"] = round(expected_distinct(many_key_requests))
    redis_report["redis_cpu_us_per_check"] = round(
        redis_report["redis_cpu_seconds_during_load"] / redis_requests * 1e6, 2
    )
    problems = [
        f"{variant}/{kind}: {info['non_2xx']} non-2xx, {info['socket_errors']} socket errors"
        for variant in VARIANTS
        for kind, info in results[variant]["servers"].items()
        if info["non_2xx"] or info["socket_errors"]
    ]
    problems += [
        f"{kind}: {log['status_other']} non-200 access-log lines" for kind, log in logs.items() if log["status_other"]
    ]
    problems += [
        f"{kind}: {log['rate_limited_events']} rate_limited events"
        for kind, log in logs.items()
        if log["rate_limited_events"]
    ]
    redis_log = logs["redis"]
    fallback = {
        "degraded_events": redis_log["backend_degraded_events"],
        "restored_events": redis_log["backend_restored_events"],
        "access_lines_while_degraded": redis_log["access_lines_while_degraded"],
        "share_of_redis_requests": round(redis_log["access_lines_while_degraded"] / redis_log["access_lines"], 5),
        "note": "requests answered while the limiter counted in memory after a Redis timeout "
        "(access-log lines between a rate_limit_backend_degraded and the next _restored line)",
    }
    return {
        "benchmark": "Rate limiting: Redis-backed check vs limiting off",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": round(elapsed, 1),
        "machine": machine(),
        "source": source_info(),
        "method": {
            "host": HOST,
            "path": PATH,
            "uvicorn": common.UVICORN_SETTINGS,
            "settings": {
                "APP_ENV": "test",
                "DATABASE_URL": "sqlite+aiosqlite:///<tmp>/<kind>.db",
                "LOG_FORMAT": "json (to a file in the scratch directory)",
                "TRUSTED_PROXIES": TRUSTED_PROXIES,
                "RATE_LIMIT_API": options.rate,
                "off": "RATE_LIMITS_ENABLED=false",
                "redis": f"REDIS_URL={REDIS_URL}, REDIS_KEY_PREFIX={options.prefix}",
                "memory": "no REDIS_URL",
            },
            "wrk": {"threads": 1, "connections": options.connections, "duration_s": options.duration},
            "variants": {
                "one-key": "plain wrk: every request from 127.0.0.1, one limiter key",
                "many-keys": "wrk Lua script: X-Forwarded-For 10.x.y.z, random per request",
            },
            "wrk_lua": XFF_LUA.strip(),
            "warmup_s_per_server_and_variant": options.warmup,
            "rounds": options.rounds,
            "pinning": {"servers_cpu": options.server_cpu, "wrk_cpu": options.wrk_cpu} if options.pinned else "none",
            "statistic": "median rps over rounds; us_per_request = 1e6 / median_rps; ratio = median rps / median rps",
            "scratch_dir_root": options.tmp_root or tempfile.gettempdir(),
        },
        "target": {"min_redis_vs_off_ratio": TARGET_RATIO},
        "results": results,
        "checks": {
            "responses": responses,
            "server_logs": logs,
            "redis": redis_report,
            "problems": problems,
            "all_200": not problems,
            "redis_fallback_to_memory": fallback,
        },
        "runs": [asdict(run) for run in runs],
        "warmups": [asdict(run) for run in warmups],
    }


def print_table(report: dict[str, Any]) -> None:
    for variant, result in report["results"].items():
        print(f"\n{variant}:")
        print(f"{'server':<9}{'median rps':>12}{'min-max rps':>18}{'µs/request':>12}{'p50 ms':>9}{'p99 ms':>9}")
        for kind, info in result["servers"].items():
            lat = info["latency_ms_median_of_rounds"]
            span = f"{info['min_rps']:.0f}-{info['max_rps']:.0f}"
            print(
                f"{kind:<9}{info['median_rps']:>12.1f}{span:>18}{info['us_per_request']:>12.2f}"
                f"{lat.get('p50', float('nan')):>9.2f}{lat.get('p99', float('nan')):>9.2f}"
            )
        verdict = "MET" if result["target_met"] else "NOT MET"
        rounds = ", ".join(f"{x:.3f}" for x in result["redis_vs_off_ratio_per_round"])
        print(
            f"redis/off = {result['redis_vs_off_ratio']:.3f} (per round {rounds}; "
            f"target >= {TARGET_RATIO}: {verdict}); "
            f"memory/off = {result['memory_vs_off_ratio']:.3f}; "
            f"check cost: redis {result['redis_check_us']:+.1f} µs, memory {result['memory_check_us']:+.1f} µs"
        )
    checks = report["checks"]
    redis_report = checks["redis"]
    print(
        f"\nRedis: {redis_report['keys_with_prefix_after_run']} keys with prefix {redis_report['key_prefix']} "
        f"(expected ~{redis_report['expected_keys_many_keys_variant']} + 2), deleted {redis_report['keys_deleted']}, "
        f"left {redis_report['keys_left']}; EVALSHA calls {redis_report['evalsha_calls_during_load']} for "
        f"{redis_report['redis_requests_completed_during_load']} completed requests; "
        f"Redis CPU {redis_report['redis_cpu_us_per_check']} µs per check; placement {redis_report['placement']}"
    )
    print("all responses 200, none limited:", "yes" if checks["all_200"] else f"NO: {checks['problems']}")
    fallback = checks["redis_fallback_to_memory"]
    print(
        f"redis server fell back to memory {fallback['degraded_events']} times "
        f"(restored {fallback['restored_events']}); {fallback['access_lines_while_degraded']} requests "
        f"({fallback['share_of_redis_requests']:.3%}) answered while degraded"
    )


# --------------------------------------------------------------------------
# Profile: py-spy on the live off and redis servers, and batch sizes from a probe
# --------------------------------------------------------------------------

# Checked per frame, innermost first, before the health benchmark's layers: the first
# frame that matches anything names the sample's layer.
RL_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("limiter: hashing the key (sha256)", ("hashed (smilingsteps/platform/ratelimit/limiter.py)",)),
    ("limiter: rate_limit_headers (header values)", ("rate_limit_headers (smilingsteps/",)),
    ("limiter: RateLimiter.check/_decide/key", ("RateLimiter.",)),
    ("limiter: memory backend (GCRA in Python)", ("MemoryBackend.", "gcra (smilingsteps/")),
    ("limiter: RedisBackend.hit (future, enqueue, call_soon)", ("RedisBackend.hit (",)),
    ("redis-py: reading + parsing replies (hiredis)", ("(redis/_parsers/", "read_response (redis/asyncio/conn")),
    ("redis-py: packing commands", ("pack_command", "(redis/_parsers/encoders.py")),
    ("redis-py: socket write/read (asyncio streams)", ("send_packed_command (", "(asyncio/streams.py")),
    ("redis-py: connection pool", ("ConnectionPool.",)),
    (
        "redis-py: pipeline (queue EVALSHA, execute, retry, observability, reset)",
        ("(redis/asyncio/client.py)", "(redis/commands/", "(redis/asyncio/", "(redis/observability/", "(redis/"),
    ),
    ("limiter: RedisBackend flush/_send/_evaluate (task per batch, Decisions, set_result)", ("RedisBackend.",)),
    ("asyncio: timeout, tasks, futures (Python parts)", ("(asyncio/timeouts.py)", "(asyncio/tasks.py)")),
    (
        "RateLimitMiddleware (policy, identity, send wrapper + MutableHeaders)",
        ("RateLimitMiddleware.", "PolicyResolver."),
    ),
    ("TrustedProxyMiddleware (X-Forwarded-For)", ("TrustedProxyMiddleware.", "resolve_client_ip (", "_is_trusted (")),
    ("endpoint: api_index", ("api_index (",)),
]


# Inclusive details: share of samples whose stack holds every one of these frames.
RL_DETAILS: dict[str, tuple[str, ...]] = {
    "RateLimiter.check up to the await (key, hash, hit)": ("RateLimiter.check (",),
    "hashing the key (sha256)": ("hashed (smilingsteps/",),
    "RedisBackend.hit (future, enqueue, call_soon)": ("RedisBackend.hit (",),
    "RedisBackend._send: one batch, all of it (task, timeout, redis-py, Decisions)": ("RedisBackend._send (",),
    "redis-py Pipeline.execute (pack, pool, write, read, parse, reset)": ("Pipeline.execute (redis/",),
    "redis-py: an asyncio.timeout per reply (read_response with socket_timeout)": (
        "AbstractConnection.read_response (redis/",
        "(asyncio/timeouts.py)",
    ),
    "redis-py: reading + parsing replies": ("Redis.parse_response (redis/",),
    "RateLimitMiddleware: MutableHeaders.__setitem__ (5 headers)": (
        "RateLimitMiddleware.__call__.<locals>.send_with_headers (",
        "MutableHeaders.__setitem__ (",
    ),
    "rate_limit_headers (header values)": ("rate_limit_headers (smilingsteps/",),
}


def layer_of_stack(frames: list[str]) -> str:
    if common._log_line_at(frames):
        return common.LOG_LINE
    for frame in reversed(frames):
        for name, needles in RL_LAYERS:
            if any(needle in frame for needle in needles):
                return name
        layer = common._layer_of(frame)
        if layer is not None:
            return layer
    return common.OUTSIDE


def collapsed_layers(path: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """Event-loop thread samples: total, by innermost layer, and per RL_DETAILS entry."""
    total = 0
    layers: Counter[str] = Counter()
    details: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "Runner.run (asyncio/runners.py" not in stack:
            continue  # other threads (aiosqlite's worker)
        count = int(count_text)
        total += count
        frames = [common._normalise(frame) for frame in stack.split(";")]
        layers[layer_of_stack(frames)] += count
        for name, needles in RL_DETAILS.items():
            if all(any(needle in frame for frame in frames) for needle in needles):
                details[name] += count
    return total, dict(layers), dict(details)


def read_batches(server: Server, previous: int) -> dict[str, Any]:
    """Ask the probe for its cumulative batch counters and wait (bounded) for the new dump."""
    stats_file = server.workdir / f"{server.name}-batches.json"
    server.process.send_signal(STATS_SIGNAL)
    for _ in range(200):
        if stats_file.exists():
            data: dict[str, Any] = json.loads(stats_file.read_text(encoding="utf-8"))
            if data["dump"] > previous:
                return data
        time.sleep(0.025)
    raise RuntimeError("the batch probe did not answer")


def batch_summary(window: dict[str, Any]) -> dict[str, Any]:
    sizes = Counter({int(k): v for k, v in window["sizes"].items()})
    batches = sum(sizes.values())
    checks = sum(size * count for size, count in sizes.items())
    expanded = sorted(sizes.elements())
    return {
        "batches": batches,
        "checks": checks,
        "mean_checks_per_batch": round(checks / batches, 2) if batches else None,
        "median_batch": statistics.median(expanded) if expanded else None,
        "max_batch": max(expanded) if expanded else None,
        "share_of_checks_in_batches_of_1": round(sizes[1] / checks, 4) if checks else None,
        "histogram": {str(size): count for size, count in sorted(sizes.items())},
        "round_trip_ms": window["round_trip_ms"],
        "gc": window["gc"],
        "tracked_objects": window["tracked_objects"],
    }


def sampled_profile(py_spy: str, seconds: int, options: Options, out: Path) -> dict[str, Any]:
    """py-spy on the live `off` and `redis` servers under wrk, per variant; batch sizes from `redis-probe`."""
    require_tools(options)
    bench_json = RESULTS_DIR / "ratelimit_throughput.json"
    measured = json.loads(bench_json.read_text()) if bench_json.exists() else None
    result: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "py_spy": subprocess.run([py_spy, "--version"], capture_output=True, text=True, check=True).stdout.strip(),
        "method": f"py-spy record --rate 250 (blocking) of the event-loop thread while wrk -t1 -c{options.connections} "
        f"runs {seconds} s; each sample goes to the innermost frame naming a layer; us = share x us_per_request "
        "of the unprofiled benchmark (bench/results/ratelimit_throughput.json). Batch sizes: a separate "
        "`redis-probe` server (redis + a recorder around RedisBackend._send and gc.callbacks), not profiled, "
        f"{seconds} s of wrk after a warm-up.",
        "benchmark_used_for_us": {k: measured[k] for k in ("generated_at", "source")} if measured else None,
        "source": source_info(),
        "variants": {},
    }
    with (
        tempfile.TemporaryDirectory(prefix="ratelimit-spy-", dir=options.tmp_root) as tmp,
        redis_pinned(options) as placement,
    ):
        workdir = Path(tmp)
        (workdir / "xff.lua").write_text(XFF_LUA, encoding="utf-8")
        result["redis_placement"] = placement
        try:
            with running_servers(workdir, options, ("off", "redis", "redis-probe")) as servers:
                dumps = 0
                for variant in VARIANTS:
                    entry: dict[str, Any] = {"servers": {}}
                    for kind in ("off", "redis"):
                        server = servers[kind]
                        run_wrk(server, variant, options.warmup, options)
                        collapsed = workdir / f"{variant}-{kind}.collapsed"
                        record = ["record", "--pid", str(server.process.pid), "--rate", "250"]
                        spy = subprocess.Popen(
                            [
                                *pin(options.wrk_cpu, options),
                                *(py_spy, *record, "--duration", str(seconds + 1), "--format", "raw"),
                                *("-o", str(collapsed)),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        wrk = run_wrk(server, variant, seconds, options)
                        spy.wait(timeout=seconds + 60)
                        total, layers, details = collapsed_layers(collapsed)
                        us = (
                            measured["results"][variant]["servers"][kind]["us_per_request"]
                            if measured
                            else 1e6 / wrk["rps"]
                        )
                        entry["servers"][kind] = {
                            "samples": total,
                            "rps_while_profiled": wrk["rps"],
                            "us_per_request_unprofiled": us,
                            "layers": {
                                name: {"share": round(n / total, 4), "us": round(n / total * us, 1)}
                                for name, n in sorted(layers.items(), key=lambda item: -item[1])
                            },
                            "details": {
                                name: {"share": round(n / total, 4), "us": round(n / total * us, 1)}
                                for name, n in details.items()
                            },
                        }
                    probe = servers["redis-probe"]
                    run_wrk(probe, variant, options.warmup, options)
                    dumps = read_batches(probe, dumps)["dump"]  # forget the warm-up
                    probe_wrk = run_wrk(probe, variant, seconds, options)
                    window = read_batches(probe, dumps)
                    dumps = window["dump"]
                    entry["batches"] = {**batch_summary(window), "probe_rps": probe_wrk["rps"]}
                    result["variants"][variant] = entry
        finally:
            result["keys_deleted"] = delete_keys(options.prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_profile(result)
    return result


def print_profile(result: dict[str, Any]) -> None:
    for variant, entry in result["variants"].items():
        off, limited = entry["servers"]["off"], entry["servers"]["redis"]
        print(f"\n{variant}: µs/request by innermost layer (off {off['samples']}, redis {limited['samples']} samples)")
        print(f"{'redis':>8}{'off':>8}{'diff':>8}  layer")
        names = list(limited["layers"]) + [name for name in off["layers"] if name not in limited["layers"]]
        for name in names:
            a = limited["layers"].get(name, {"us": 0.0})["us"]
            b = off["layers"].get(name, {"us": 0.0})["us"]
            print(f"{a:>8.1f}{b:>8.1f}{a - b:>+8.1f}  {name}")
        a, b = limited["us_per_request_unprofiled"], off["us_per_request_unprofiled"]
        print(f"{a:>8.1f}{b:>8.1f}{a - b:>+8.1f}  total")
        print("details (inclusive, redis server):")
        for name, value in limited["details"].items():
            print(f"{value['us']:>8.1f} µs  {name}")
        batches = entry["batches"]
        print(
            f"batches: {batches['mean_checks_per_batch']} checks per batch on average (median "
            f"{batches['median_batch']}, max {batches['max_batch']}, {batches['batches']} batches, "
            f"{batches['share_of_checks_in_batches_of_1']} of checks alone); probe at {batches['probe_rps']:.0f} rps"
        )
        print(f"batch round trips (ms): {batches['round_trip_ms']}; GC passes: {batches['gc']}")


# --------------------------------------------------------------------------
# What if: the redis server with one change at a time, monkeypatched in its own process
# --------------------------------------------------------------------------

WHAT_IF: tuple[tuple[str, ...], ...] = (
    ("no-socket-timeout",),
    ("gc-freeze",),
    ("cached-loop",),
    ("no-socket-timeout", "gc-freeze", "cached-loop"),
)


def what_if(options: Options, out: Path) -> dict[str, Any]:
    """`off`, `redis` and `redis` + each tweak set, one-key variant, interleaved rounds."""
    require_tools(options)
    started = time.monotonic()
    rps: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="ratelimit-whatif-", dir=options.tmp_root) as tmp,
        redis_pinned(options) as placement,
    ):
        workdir = Path(tmp)
        try:
            with running_servers(workdir, options, ("off", "redis"), WHAT_IF) as servers:
                names = list(servers)
                for name in names:
                    print(f"warm-up {name} {options.warmup} s", flush=True)
                    run_wrk(servers[name], "one-key", options.warmup, options)
                for rnd in range(options.rounds):
                    for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                        result = run_wrk(servers[name], "one-key", options.duration, options)
                        if result["non_2xx"] or sum(result["socket_errors"].values()):
                            raise RuntimeError(f"{name}: errors during the run: {result}")
                        rps.setdefault(name, []).append(result["rps"])
                        p99.setdefault(name, []).append(result["latency_ms"].get("p99", math.nan))
                        print(f"round {rnd + 1} {name:50s} {result['rps']:9.1f} rps", flush=True)
            fallbacks = {name: scan_log(server.log_file)["backend_degraded_events"] for name, server in servers.items()}
        finally:
            delete_keys(options.prefix)
    us = {name: 1e6 / statistics.median(values) for name, values in rps.items()}
    rows = {
        name: {
            "tweaks": {tweak: TWEAKS[tweak] for tweak in name.split("+")[1:]},
            "rounds_rps": values,
            "median_rps": round(statistics.median(values), 1),
            "us_per_request": round(us[name], 2),
            "saves_vs_redis_us": round(us["redis"] - us[name], 2) if name != "off" else None,
            "ratio_vs_off": round(us["off"] / us[name], 4),
            "p99_ms_median": round(statistics.median(p99[name]), 2),
            "fallbacks_to_memory": fallbacks[name] if name != "off" else None,
        }
        for name, values in rps.items()
    }
    report = {
        "benchmark": "Rate limiting: what-if changes on the Redis-backed server (one-key variant)",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "source": source_info(),
        "method": f"wrk -t1 -c{options.connections}, {options.rounds} interleaved rounds of {options.duration} s "
        f"after {options.warmup} s of warm-up; same settings as the benchmark; each tweak is a monkeypatch in "
        "that server's process only",
        "redis_placement": placement,
        "servers": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'server':<50}{'median rps':>11}{'µs/req':>9}{'saves µs':>10}{'/off':>7}{'p99 ms':>8}{'fallbacks':>10}")
    for name, row in rows.items():
        saves = "" if row["saves_vs_redis_us"] is None else f"{row['saves_vs_redis_us']:+.1f}"
        print(
            f"{name:<50}{row['median_rps']:>11.1f}{row['us_per_request']:>9.1f}{saves:>10}"
            f"{row['ratio_vs_off']:>7.3f}{row['p99_ms_median']:>8.1f}{row['fallbacks_to_memory'] or 0:>10}"
        )
    return report


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--serve", choices=(*KINDS, "redis-probe"), help="run one server (used by the benchmark)")
    parser.add_argument("--port", type=int, help="port for --serve (127.0.0.1 only)")
    parser.add_argument("--workdir", type=Path, help="scratch directory for --serve")
    parser.add_argument("--tweak", default="", help=f"for --serve: comma-separated what-if tweaks {sorted(TWEAKS)}")
    parser.add_argument(
        "--what-if", action="store_true", help="measure the what-if tweaks on the redis server (one-key), ~2 minutes"
    )
    parser.add_argument("--prefix", help="REDIS_KEY_PREFIX (default: a new bench-rl-<random> per run)")
    parser.add_argument("--rate", default=DEFAULT_RATE, help=f"RATE_LIMIT_API (default {DEFAULT_RATE})")
    parser.add_argument("--py-spy", metavar="PATH", help="profile the live off and redis servers with this py-spy")
    parser.add_argument("--spy-seconds", type=int, default=10, help="seconds per profiled wrk run (default 10)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per server and variant (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--no-pin-redis", action="store_true", help="leave redis-server's CPU affinity alone")
    parser.add_argument("--tmp-root", default=common.default_tmp_root(), help="scratch root (default /dev/shm)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)

    if args.serve:
        if args.port is None or args.workdir is None or args.prefix is None:
            parser.error("--serve needs --port, --workdir and --prefix")
        tweaks = tuple(filter(None, args.tweak.split(",")))
        unknown = set(tweaks) - set(TWEAKS)
        if unknown:
            parser.error(f"unknown --tweak {sorted(unknown)}; choose from {sorted(TWEAKS)}")
        serve(args.serve, args.port, args.workdir, args.prefix, args.rate, tweaks)
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        connections=args.connections,
        server_cpu=cpus[0],
        wrk_cpu=cpus[1] if len(cpus) > 1 else cpus[0],
        pinned=len(cpus) > 1,
        pin_redis=not args.no_pin_redis,
        rate=args.rate,
        tmp_root=args.tmp_root,
    )
    if args.prefix:
        options.prefix = args.prefix
    if args.py_spy:
        sampled_profile(args.py_spy, args.spy_seconds, options, args.out or RESULTS_DIR / "ratelimit_pyspy.json")
    elif args.what_if:
        what_if(options, args.out or RESULTS_DIR / "ratelimit_whatif.json")
    else:
        benchmark(options, args.out or RESULTS_DIR / "ratelimit_throughput.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
