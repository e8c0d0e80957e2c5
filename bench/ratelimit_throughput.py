"""Rate limiting: requests per second of a limited endpoint, Redis backend vs limiting off.

Measures three servers of the full app (production server class, ``TRUSTED_PROXIES=127.0.0.1/32``)
under ``wrk`` on ``GET /api/v1``: ``off`` (``RATE_LIMITS_ENABLED=false``), ``redis`` (the local Redis, a
key prefix per run, a quota that never denies) and ``memory`` (the in-process backend), in two
variants: ``one-key`` (every request from 127.0.0.1: one hot limiter key) and ``many-keys`` (a wrk Lua
script sends a random ``X-Forwarded-For`` per request). Interleaved rounds, median rps; the servers on
CPU 0, wrk and redis-server (pinned for the run, then restored) on CPU 1. Checks: every response 200,
the limiter's fallbacks to memory, and that Redis received the keys (counted, then deleted).
``--py-spy`` profiles the live ``off`` and ``redis`` servers and reads batch sizes from a probe server;
``--what-if`` measures changes monkeypatched into one server's process.

Usage (from the repository root; bench/README.md has the details)::

    .venv/bin/python bench/ratelimit_throughput.py                   # the benchmark, under 3 minutes
    .venv/bin/python bench/ratelimit_throughput.py --py-spy PY_SPY   # profile + batch sizes, ~90 s
    .venv/bin/python bench/ratelimit_throughput.py --what-if --duration 6   # monkeypatched what-ifs, ~2.5 min
    .venv/bin/python bench/ratelimit_throughput.py --serve redis --port 8001 --workdir /tmp/x --prefix p

Results: ``bench/results/ratelimit_throughput.json``, ``ratelimit_pyspy.json`` (its µs use the
benchmark's JSON, so run the benchmark first) and ``ratelimit_whatif.json``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import profiling

PATH = "/api/v1"
KINDS = ("off", "redis", "memory")
VARIANTS = ("one-key", "many-keys")
REDIS_URL = "redis://127.0.0.1:6379/0"
TARGET_RATIO = 0.80
TRUSTED_PROXIES = "127.0.0.1/32"
# Never denied, and every key outlives the run so it can be counted (harness.NEVER_DENY). The
# issue's 100000000/1h never denies either, but its keys expire after ~1 ms; the Lua script does
# the same GET + SET PX either way.
DEFAULT_RATE = harness.NEVER_DENY
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


@dataclass
class Options(harness.Load):
    pin_redis: bool = True
    rate: str = DEFAULT_RATE
    prefix: str = field(default_factory=lambda: f"bench-rl-{secrets.token_hex(4)}")


# --------------------------------------------------------------------------
# The servers, and what-ifs patched into one server's process
# --------------------------------------------------------------------------


def install_batch_probe(stats_file: Path) -> None:
    """Record every batch RedisBackend sends (one pipelined round trip each) and every GC pass.

    Used only by the `redis-probe` server, never by the measured ones: a wrapper around
    `RedisBackend._send` (size and duration of each batch) and a `gc.callbacks` timer. On SIGUSR1
    the process writes what it saw since the previous signal to `stats_file` and starts over.
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
WHAT_IF: tuple[tuple[str, ...], ...] = (
    ("no-socket-timeout",),
    ("gc-freeze",),
    ("cached-loop",),
    ("no-socket-timeout", "gc-freeze", "cached-loop"),
)


def applicable(tweak: str) -> bool:
    """Whether the measured source has what `tweak` changes: `no-socket-timeout` needs the redis-py
    client (before 9c43c96, which gave RedisBackend its own RESP client with one timer per batch)."""
    from smilingsteps.platform.ratelimit import redis_backend  # type: ignore[import-untyped, unused-ignore]

    return tweak != "no-socket-timeout" or not hasattr(redis_backend, "RespClient")


def apply_tweaks(tweaks: tuple[str, ...]) -> None:
    import asyncio
    import gc
    import threading

    import uvicorn

    if not all(map(applicable, tweaks)):
        raise SystemExit(f"not applicable to this source: {[t for t in tweaks if not applicable(t)]}")
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


def server_name(kind: str, tweaks: tuple[str, ...] = ()) -> str:
    return "+".join((kind, *tweaks))


def serve(kind: str, port: int, workdir: Path, prefix: str, rate: str, tweaks: tuple[str, ...] = ()) -> None:
    """Run one server in this process until SIGTERM (the production server class)."""
    name = server_name(kind, tweaks)
    if kind == "redis-probe":
        install_batch_probe(workdir / f"{name}-batches.json")
    apply_tweaks(tweaks)
    settings = harness.sqlite_settings(
        workdir / f"{name}.db",
        TRUSTED_PROXIES=TRUSTED_PROXIES,
        RATE_LIMITS_ENABLED=kind != "off",
        REDIS_URL=REDIS_URL if kind in ("redis", "redis-probe") else None,
        REDIS_KEY_PREFIX=prefix,
        RATE_LIMIT_API=rate,
    )
    harness.run_uvicorn(harness.logged_app(settings, workdir / f"{name}-app.log"), port)


def running(
    workdir: Path, options: Options, kinds: tuple[str, ...] = KINDS, tweaked: tuple[tuple[str, ...], ...] = ()
) -> AbstractContextManager[dict[str, harness.Server]]:
    """Servers by name: one per kind, then one `redis` per entry of `tweaked` (a set of what-if tweaks)."""
    tweaks_of = {server_name(kind): () for kind in kinds} | {server_name("redis", t): t for t in tweaked}

    def start(name: str) -> harness.Server:
        tweaks = tweaks_of[name]
        serve_args = [name.split("+", maxsplit=1)[0], "--prefix", options.prefix, "--rate", options.rate]
        serve_args += ["--tweak", ",".join(tweaks)] if tweaks else []
        return harness.start_server(__file__, serve_args, name, workdir, options.taskset(options.server_cpu))

    return harness.running_servers(start, tweaks_of)


def run_wrk(server: harness.Server, variant: str, seconds: float, options: Options) -> dict[str, Any]:
    script = ["-s", str(server.workdir / "xff.lua")] if variant == "many-keys" else []
    return harness.run_wrk(server.url(PATH), seconds, options, *script)


def log_file(server: harness.Server) -> Path:
    return server.workdir / f"{server.name}-app.log"


# --------------------------------------------------------------------------
# Redis: where it runs, what it did, and cleaning up after the run
# --------------------------------------------------------------------------


def redis_cli(*args: str) -> str:
    command = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "-n", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


def redis_info(section: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in redis_cli("INFO", section).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not key.startswith("#"):
            info[key] = value
    return info


def redis_counters() -> dict[str, float]:
    """EVALSHA calls (every client of this Redis), and Redis's own CPU seconds."""
    calls = re.search(r"calls=(\d+)", redis_info("commandstats").get("cmdstat_evalsha", ""))
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
    pid = int(redis_info("server").get("process_id", "0"))
    info: dict[str, Any] = {"pinned": False, "pid": pid}
    comm = Path(f"/proc/{pid}/comm")
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
    subprocess.run(["taskset", "-a", "-p", "-c", str(options.client_cpu), str(pid)], capture_output=True, check=True)
    info.update(pinned=True, cpu=options.client_cpu)
    try:
        yield info
    finally:
        subprocess.run(["taskset", "-a", "-p", original, str(pid)], capture_output=True, check=True)
        info["restored_mask"] = _affinity(pid)


@contextmanager
def scratch(options: Options, prefix: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A scratch directory (with the wrk Lua script) and Redis pinned, for one run."""
    harness.require_tools("wrk", "redis-cli", *(["taskset"] if options.pinned else []))
    if redis_cli("PING").strip() != "PONG":
        raise SystemExit("no Redis answering on 127.0.0.1:6379")
    with tempfile.TemporaryDirectory(prefix=prefix, dir=options.tmp_root) as tmp, redis_pinned(options) as placement:
        (Path(tmp) / "xff.lua").write_text(XFF_LUA, encoding="utf-8")
        yield Path(tmp), placement


def expected_distinct(n: int, space: int = XFF_ADDRESSES) -> float:
    """Expected number of distinct addresses among n uniform draws from `space`."""
    return space * -math.expm1(n * math.log1p(-1 / space))


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def check_responses(servers: dict[str, harness.Server]) -> dict[str, Any]:
    """Each server answers GET /api/v1 with 200; the limited ones add RateLimit headers, `off` does not."""
    seen: dict[str, Any] = {}
    for kind, server in servers.items():
        status, raw, body = harness.request(server.port, "GET", PATH)
        forwarded_status, raw_forwarded, _ = harness.request(
            server.port, "GET", PATH, headers={"X-Forwarded-For": "10.255.255.254"}
        )
        headers = {k.lower(): v for k, v in raw}
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
            "ratelimit_with_forwarded_for": {k.lower(): v for k, v in raw_forwarded}.get("ratelimit"),
        }
    return seen


FALLBACK_METRICS = {
    "checks_decided_in_memory": "smilingsteps_rate_limit_fallback_checks_total",
    "breaker_openings": "smilingsteps_rate_limit_fallbacks_total",
    "overdue_batches": "smilingsteps_rate_limit_redis_overdue_total",
}


def limiter_counters(server: harness.Server) -> dict[str, int]:
    """The limiter's fallback counters from the server's /metrics (absent in older code: -1)."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=5) as response:  # loopback only
        text = response.read().decode()
    found = {
        name: re.search(rf"^{metric} ([0-9.e+]+)$", text, flags=re.MULTILINE)
        for name, metric in FALLBACK_METRICS.items()
    }
    return {name: int(float(match.group(1))) if match else -1 for name, match in found.items()}


def scan_log(path: Path) -> dict[str, Any]:
    """From a server's JSON log: access-log lines by status, denials, and the limiter's
    fallbacks to memory (with the access-log lines written while it was degraded)."""
    statuses: Counter[str] = Counter()
    events: Counter[str] = Counter()
    fallbacks: list[dict[str, Any]] = []
    degraded = False
    with path.open(encoding="utf-8") as lines:
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


def benchmark(options: Options, out: Path) -> dict[str, Any]:
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    warmups: list[dict[str, Any]] = []
    with scratch(options, "ratelimit-bench-") as (workdir, placement):
        try:
            with running(workdir, options) as servers:
                responses = check_responses(servers)
                keys_after_checks = count_keys(options.prefix)
                before = redis_counters()
                for variant in VARIANTS:
                    for kind in KINDS:
                        print(f"warm-up {variant} {kind} {options.warmup} s", flush=True)
                        result = run_wrk(servers[kind], variant, options.warmup, options)
                        warmups.append({"kind": kind, "variant": variant, "round": 0, **result})
                for rnd in range(options.rounds):
                    for variant in VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]:
                        for kind in harness.rotated(KINDS, rnd):
                            result = run_wrk(servers[kind], variant, options.duration, options)
                            runs.append({"kind": kind, "variant": variant, "round": rnd + 1, **result})
                            print(f"round {rnd + 1} {variant:9s} {kind:6s} {result['rps']:9.1f} rps", flush=True)
                after = redis_counters()
                limiter = limiter_counters(servers["redis"])
            logs = {kind: scan_log(workdir / f"{kind}-app.log") for kind in KINDS}
            logs["redis"]["limiter_counters"] = limiter
            keys = count_keys(options.prefix)
        finally:
            deleted = delete_keys(options.prefix)
        redis_report = {
            "url": REDIS_URL,
            "key_prefix": options.prefix,
            "placement": placement,
            "keys_after_response_checks": keys_after_checks,
            "keys_with_prefix_after_run": keys,
            "keys_deleted": deleted,
            "keys_left": count_keys(options.prefix),
            "evalsha_calls_during_load": int(after["evalsha_calls"] - before["evalsha_calls"]),
            "redis_cpu_seconds_during_load": round(after["cpu_seconds"] - before["cpu_seconds"], 2),
        }
    report = summarise(runs, warmups, responses, logs, redis_report, options, time.monotonic() - started)
    harness.write_json(out, report)
    print_table(report)
    return report


def summarise(
    runs: list[dict[str, Any]],
    warmups: list[dict[str, Any]],
    responses: dict[str, Any],
    logs: dict[str, dict[str, Any]],
    redis_report: dict[str, Any],
    options: Options,
    elapsed: float,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        servers: dict[str, Any] = {}
        for kind in KINDS:
            mine = [run for run in runs if run["kind"] == kind and run["variant"] == variant]
            servers[kind] = harness.wrk_summary(mine)
            servers[kind]["non_2xx"] = sum(run["non_2xx"] for run in mine)
            servers[kind]["socket_errors"] = sum(sum(run["socket_errors"].values()) for run in mine)
            servers[kind]["requests"] = sum(run["requests"] for run in mine)
        per_round = []
        for rnd in sorted({run["round"] for run in runs}):
            by_kind = {run["kind"]: run["rps"] for run in runs if run["round"] == rnd and run["variant"] == variant}
            per_round.append(round(by_kind["redis"] / by_kind["off"], 4))
        rps = {kind: servers[kind]["median_rps"] for kind in KINDS}
        us = {kind: servers[kind]["us_per_request"] for kind in KINDS}
        results[variant] = {
            "servers": servers,
            "redis_vs_off_ratio": round(rps["redis"] / rps["off"], 4),
            "memory_vs_off_ratio": round(rps["memory"] / rps["off"], 4),
            "redis_vs_off_ratio_per_round": per_round,
            "redis_check_us": round(us["redis"] - us["off"], 2),
            "memory_check_us": round(us["memory"] - us["off"], 2),
            "target_met": rps["redis"] / rps["off"] >= TARGET_RATIO,
        }
    on_redis = [run for run in [*runs, *warmups] if run["kind"] == "redis"]
    redis_requests = sum(run["requests"] for run in on_redis)
    many_key_requests = sum(run["requests"] for run in on_redis if run["variant"] == "many-keys")
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
    return {
        "benchmark": "Rate limiting: Redis-backed check vs limiting off",
        "generated_at": harness.now_iso(),
        "elapsed_seconds": round(elapsed, 1),
        "machine": machine(),
        "source": harness.measured_source(),
        "method": {
            "host": harness.HOST,
            "path": PATH,
            "uvicorn": harness.UVICORN_SETTINGS,
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
            "pinning": {"servers_cpu": options.server_cpu, "wrk_cpu": options.client_cpu} if options.pinned else "none",
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
            "redis_fallback_to_memory": {
                # Redis is healthy throughout, so every check decided in memory is a false fallback.
                "false_fallbacks": redis_log["limiter_counters"]["checks_decided_in_memory"],
                "target_false_fallbacks": 0,
                **redis_log["limiter_counters"],
                "degraded_events": redis_log["backend_degraded_events"],
                "restored_events": redis_log["backend_restored_events"],
                "access_lines_while_degraded": redis_log["access_lines_while_degraded"],
                "share_of_redis_requests": round(
                    redis_log["access_lines_while_degraded"] / redis_log["access_lines"], 5
                ),
                "note": "requests answered while the limiter counted in memory after a Redis timeout "
                "(access-log lines between a rate_limit_backend_degraded and the next _restored line)",
            },
        },
        "runs": runs,
        "warmups": warmups,
    }


def machine() -> dict[str, Any]:
    facts = harness.machine(("redis", "hiredis"))
    facts["redis_server"] = redis_info("server").get("redis_version", "unknown")
    return facts


def print_table(report: dict[str, Any]) -> None:
    for variant, result in report["results"].items():
        print(f"\n{variant}:")
        harness.print_wrk_table(result["servers"], width=9)
        verdict = "MET" if result["target_met"] else "NOT MET"
        rounds = ", ".join(f"{x:.3f}" for x in result["redis_vs_off_ratio_per_round"])
        print(
            f"redis/off = {result['redis_vs_off_ratio']:.3f} (per round {rounds}; target >= {TARGET_RATIO}: "
            f"{verdict}); memory/off = {result['memory_vs_off_ratio']:.3f}; check cost: redis "
            f"{result['redis_check_us']:+.1f} µs, memory {result['memory_check_us']:+.1f} µs"
        )
    checks = report["checks"]
    redis = checks["redis"]
    print(
        f"\nRedis: {redis['keys_with_prefix_after_run']} keys with prefix {redis['key_prefix']} "
        f"(expected ~{redis['expected_keys_many_keys_variant']} + 2), deleted {redis['keys_deleted']}, "
        f"left {redis['keys_left']}; EVALSHA calls {redis['evalsha_calls_during_load']} for "
        f"{redis['redis_requests_completed_during_load']} completed requests; "
        f"Redis CPU {redis['redis_cpu_us_per_check']} µs per check; placement {redis['placement']}"
    )
    print("all responses 200, none limited:", "yes" if checks["all_200"] else f"NO: {checks['problems']}")
    fallback = checks["redis_fallback_to_memory"]
    print(
        f"redis server fell back to memory {fallback['degraded_events']} times "
        f"(restored {fallback['restored_events']}); {fallback['access_lines_while_degraded']} requests "
        f"({fallback['share_of_redis_requests']:.3%}) answered while degraded; false fallbacks (checks decided "
        f"in memory with Redis healthy) {fallback['false_fallbacks']}, Redis batches overdue "
        f"{fallback['overdue_batches']}"
    )


# --------------------------------------------------------------------------
# Profile: py-spy on the live off and redis servers, and batch sizes from a probe
# --------------------------------------------------------------------------

# Checked per frame, innermost first, before the middleware stack's layers (profiling.LAYERS):
# the first frame that matches anything names the sample's layer.
RL_LAYERS: profiling.Layers = [
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


def read_batches(server: harness.Server, previous: int) -> dict[str, Any]:
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
    measured = harness.previous_result("ratelimit_throughput.json")
    result = profiling.spy_report(
        [py_spy],
        f"py-spy record --rate 250 (blocking) of the event-loop thread while wrk -t1 -c{options.connections} "
        f"runs {seconds} s; each sample goes to the innermost frame naming a layer; us = share x us_per_request "
        "of the unprofiled benchmark (bench/results/ratelimit_throughput.json). Batch sizes: a separate "
        "`redis-probe` server (redis + a recorder around RedisBackend._send and gc.callbacks), not profiled, "
        f"{seconds} s of wrk after a warm-up.",
        measured,
    )
    result.update(source=harness.measured_source(), variants={})
    with scratch(options, "ratelimit-spy-") as (workdir, placement):
        result["redis_placement"] = placement
        try:
            with running(workdir, options, ("off", "redis", "redis-probe")) as servers:
                dumps = 0
                for variant in VARIANTS:

                    def load(server: harness.Server, seconds: float, variant: str = variant) -> dict[str, Any]:
                        return run_wrk(server, variant, seconds, options)

                    entry: dict[str, Any] = {"servers": {}}
                    for kind in ("off", "redis"):
                        entry["servers"][kind] = profiling.spy_on(
                            [py_spy],
                            servers[kind],
                            options,
                            seconds,
                            load,
                            us=measured["results"][variant]["servers"][kind]["us_per_request"] if measured else None,
                            extra=RL_LAYERS,
                            details=RL_DETAILS,
                            seen_details_only=True,
                        )
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
    harness.write_json(out, result)
    for variant, entry in result["variants"].items():
        off, limited = entry["servers"]["off"], entry["servers"]["redis"]
        print(f"\n{variant}: µs/request by innermost layer (off {off['samples']}, redis {limited['samples']} samples)")
        profiling.print_layers(limited, off, ("redis", "off"))
        batches = entry["batches"]
        print(
            f"batches: {batches['mean_checks_per_batch']} checks per batch on average (median "
            f"{batches['median_batch']}, max {batches['max_batch']}, {batches['batches']} batches, "
            f"{batches['share_of_checks_in_batches_of_1']} of checks alone); probe at {batches['probe_rps']:.0f} rps"
        )
        print(f"batch round trips (ms): {batches['round_trip_ms']}; GC passes: {batches['gc']}")
    return result


# --------------------------------------------------------------------------
# What if: the redis server with one change at a time, monkeypatched in its own process
# --------------------------------------------------------------------------


def what_if(options: Options, out: Path) -> dict[str, Any]:
    """`off`, `redis` and `redis` + each tweak set, one-key variant, interleaved rounds."""
    started = time.monotonic()
    rps: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    skipped = sorted({tweak for tweaks in WHAT_IF for tweak in tweaks if not applicable(tweak)})
    sets = dict.fromkeys(t for tweaks in WHAT_IF if (t := tuple(x for x in tweaks if x not in skipped)))
    if skipped:
        print(f"not applicable to this source, so not run: {skipped}", flush=True)
    with scratch(options, "ratelimit-whatif-") as (workdir, placement):
        try:
            with running(workdir, options, ("off", "redis"), tuple(sets)) as servers:
                names = list(servers)
                for name in names:
                    print(f"warm-up {name} {options.warmup} s", flush=True)
                    run_wrk(servers[name], "one-key", options.warmup, options)
                for rnd, name in harness.rounds(names, options.rounds):
                    result = run_wrk(servers[name], "one-key", options.duration, options)
                    if harness.wrk_errors(result):
                        raise RuntimeError(f"{name}: errors during the run: {result}")
                    rps.setdefault(name, []).append(result["rps"])
                    p99.setdefault(name, []).append(result["latency_ms"].get("p99", math.nan))
                    print(f"round {rnd} {name:50s} {result['rps']:9.1f} rps", flush=True)
            fallbacks = {
                name: scan_log(log_file(server))["backend_degraded_events"] for name, server in servers.items()
            }
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
        "generated_at": harness.now_iso(),
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "source": harness.measured_source(),
        "method": f"wrk -t1 -c{options.connections}, {options.rounds} interleaved rounds of {options.duration} s "
        f"after {options.warmup} s of warm-up; same settings as the benchmark; each tweak is a monkeypatch in "
        "that server's process only"
        + "".join(f"; not applicable to this source, so not run: {tweak} ({TWEAKS[tweak]})" for tweak in skipped),
        "redis_placement": placement,
        "servers": rows,
    }
    harness.write_json(out, report)
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
    parser = harness.parser(__doc__, serve=(*KINDS, "redis-probe"))
    parser.add_argument("--tweak", default="", help=f"for --serve: comma-separated what-if tweaks {sorted(TWEAKS)}")
    parser.add_argument(
        "--what-if", action="store_true", help="measure the what-if tweaks on the redis server (one-key)"
    )
    parser.add_argument("--prefix", help="REDIS_KEY_PREFIX (default: a new bench-rl-<random> per run)")
    parser.add_argument("--rate", default=DEFAULT_RATE, help=f"RATE_LIMIT_API (default {DEFAULT_RATE})")
    parser.add_argument("--py-spy", metavar="PATH", help="profile the live off and redis servers with this py-spy")
    parser.add_argument("--spy-seconds", type=int, default=10, help="seconds per profiled wrk run (default 10)")
    harness.add_load_arguments(parser, duration=8, warmup=2, rounds=3, connections=32, what="wrk: ")
    parser.add_argument("--no-pin-redis", action="store_true", help="leave redis-server's CPU affinity alone")
    harness.add_output_arguments(parser, None)
    harness.add_ref_argument(parser)
    args = parser.parse_args(argv)
    if harness.check_serve(parser, args, "prefix"):
        tweaks = tuple(filter(None, args.tweak.split(",")))
        if set(tweaks) - set(TWEAKS):
            parser.error(f"unknown --tweak {sorted(set(tweaks) - set(TWEAKS))}; choose from {sorted(TWEAKS)}")
        serve(args.serve, args.port, args.workdir, args.prefix, args.rate, tweaks)
        return 0
    options = Options.from_args(args, pin_redis=not args.no_pin_redis)
    with harness.source_of(args.ref):
        if args.py_spy:
            sampled_profile(
                args.py_spy, args.spy_seconds, options, args.out or harness.RESULTS_DIR / "ratelimit_pyspy.json"
            )
        elif args.what_if:
            what_if(options, args.out or harness.RESULTS_DIR / "ratelimit_whatif.json")
        else:
            benchmark(options, args.out or harness.RESULTS_DIR / "ratelimit_throughput.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
