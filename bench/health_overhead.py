"""GET /health: what the full middleware stack costs per request.

Measures four servers, each its own process on a free 127.0.0.1 port with the harness's uvicorn
settings (httptools + uvloop, one process, no access log, no Server header, no proxy headers,
lifespan on):

* ``full``       - ``smilingsteps.app.create_app`` (every middleware, JSON access log to a file),
* ``full-nolog`` - the same with the access-log call made a no-op (isolates the log line's cost),
* ``fastapi``    - a bare FastAPI app, no middleware, one ``GET /health`` of the same shape,
* ``asgi``       - a raw ASGI callable answering the same JSON bytes (the server's floor).

``wrk`` (1 thread, 32 connections) loads each in interleaved rounds; the server and ``wrk`` are
pinned to different cores. With the server saturated, 1e6/rps is the server's CPU time per
request, so the difference between two servers is the cost, in microseconds, of whatever one
has and the other lacks. ``--py-spy`` charges the live servers' samples to the stack's layers;
``--profile`` measures in process: cProfile, a per-middleware ablation, and one log line's parts.

Usage (from the repository root; bench/README.md has the details)::

    .venv/bin/python bench/health_overhead.py                  # the benchmark, about 2 minutes
    .venv/bin/python bench/health_overhead.py --py-spy PY_SPY  # live servers sampled by py-spy, ~30 s
    .venv/bin/python bench/health_overhead.py --profile        # in process: cProfile, ablation, log line, ~45 s
    .venv/bin/python bench/health_overhead.py --serve full --port 8001 --workdir /tmp/x   # one server

Results go to ``bench/results/``: ``health_overhead.json``, ``health_pyspy.json`` (its µs use the
benchmark's JSON, so run the benchmark first) and ``health_profile.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import pstats
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

# At module level: FastAPI resolves the route's (string) annotations from these globals.
from fastapi import FastAPI, Request

import harness
import profiling

PATH = "/health"
# `full-nolog` is `full` with the access-log line replaced by a no-op: the line's live cost.
KINDS = ("full", "full-nolog", "fastapi", "asgi")
TARGET_US = 60.0


# --------------------------------------------------------------------------
# The four applications
# --------------------------------------------------------------------------


def build_full_app(workdir: Path, log: Path | TextIO) -> Any:
    """The real app, logging JSON lines (one access-log line per request) to `log`."""
    return harness.logged_app(harness.sqlite_settings(workdir / "bench.db"), log)


def _health_body(started: float, rss: int, checked_at: float) -> dict[str, Any]:
    """The same shape (and similar values) as smilingsteps' /health."""
    return {
        "status": "ok",
        "version": "0.1.0",
        "environment": "test",
        "uptime_seconds": round(time.monotonic() - started, 1),
        "memory": {"rss_bytes": rss},
        "database": {"status": "up", "backend": "sqlite", "latency_ms": 1.23, "checked_at": checked_at},
    }


def build_bare_fastapi() -> Any:
    """FastAPI with no middleware: one GET /health, same signature and payload shape as the real one."""
    import psutil

    process = psutil.Process()
    started = time.monotonic()
    checked_at = time.time()
    app = FastAPI(title="bare", docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        assert request.app is app
        return {  # written out, not _health_body(): the baseline pays no extra call
            "status": "ok",
            "version": "0.1.0",
            "environment": "test",
            "uptime_seconds": round(time.monotonic() - started, 1),
            "memory": {"rss_bytes": process.memory_info().rss},
            "database": {"status": "up", "backend": "sqlite", "latency_ms": 1.23, "checked_at": checked_at},
        }

    return app


def build_raw_asgi() -> Any:
    """No framework: fixed JSON bytes (rendered once at start-up) for GET /health, 404 otherwise."""
    import psutil

    body = json.dumps(
        _health_body(time.monotonic(), psutil.Process().memory_info().rss, time.time()), separators=(",", ":")
    ).encode()
    ok_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    missing_headers = [(b"content-type", b"text/plain"), (b"content-length", b"9")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        found = scope["path"] == PATH and scope["method"] == "GET"
        headers = ok_headers if found else missing_headers
        await send({"type": "http.response.start", "status": 200 if found else 404, "headers": headers})
        await send({"type": "http.response.body", "body": body if found else b"Not Found"})

    return app


def serve(kind: str, port: int, workdir: Path) -> None:
    """Run one server in this process until SIGTERM (plain uvicorn.Server, the same for all four)."""
    app: Any
    if kind in ("full", "full-nolog"):
        app = build_full_app(workdir, workdir / f"{kind}-app.log")
        if kind == "full-nolog":
            harness.silence_access_log()  # for the life of this process
    elif kind == "fastapi":
        app = build_bare_fastapi()
    else:
        app = build_raw_asgi()
    harness.run_uvicorn(app, port, draining=False)


def running(workdir: Path, load: harness.Load, kinds: tuple[str, ...] = KINDS) -> Any:
    def start(kind: str) -> harness.Server:
        return harness.start_server(__file__, [kind], kind, workdir, load.taskset(load.server_cpu))

    return harness.running_servers(start, kinds)


def source_info(workdir: Path) -> dict[str, Any]:
    """`measured_source`, and the middleware stack."""
    app = build_full_app(workdir, io.StringIO())
    info = harness.measured_source()
    info["user_middleware_outermost_first"] = [entry.cls.__name__ for entry in app.user_middleware]
    return info


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


def _keys(value: Any) -> Any:
    return {key: _keys(item) for key, item in value.items()} if isinstance(value, dict) else None


def check_responses(servers: dict[str, harness.Server]) -> dict[str, Any]:
    """Every server answers 200 with the same JSON keys; record headers and sizes."""
    seen: dict[str, Any] = {}
    for kind, server in servers.items():
        status, headers, body = harness.request(server.port, "GET", PATH)
        if status != 200:
            raise RuntimeError(f"{kind}: GET /health answered {status}")
        seen[kind] = {
            "status": status,
            "body_bytes": len(body),
            "header_count": len(headers),
            "header_bytes": sum(len(k) + len(v) + 4 for k, v in headers),
            "headers": sorted(name.lower() for name, _ in headers),
        }
        seen[kind]["body"] = json.loads(body)
    if len({json.dumps(_keys(info["body"])) for info in seen.values()}) != 1:
        raise RuntimeError(f"/health shapes differ: { {kind: info['body'] for kind, info in seen.items()} }")
    return seen


def access_lines(log_file: Path) -> list[str]:
    """The full app's access-log lines (logger smilingsteps.http) written so far."""
    if not log_file.exists():
        return []
    return [line for line in log_file.read_text(encoding="utf-8").splitlines() if "smilingsteps.http" in line]


def benchmark(load: harness.Load, out: Path) -> dict[str, Any]:
    harness.require_tools("wrk", *(["taskset"] if load.pinned else []))
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="health-bench-", dir=load.tmp_root) as tmp:
        workdir = Path(tmp)
        log_file = workdir / "full-app.log"
        source = source_info(workdir)
        with running(workdir, load) as servers:
            responses = check_responses(servers)
            for kind in KINDS:
                print(f"warm-up {kind} {load.warmup} s", flush=True)
                harness.run_wrk(servers[kind].url(PATH), load.warmup, load)
            lines_before = len(access_lines(log_file))
            for rnd, kind in harness.rounds(KINDS, load.rounds):
                runs.append(
                    {"kind": kind, "round": rnd, **harness.run_wrk(servers[kind].url(PATH), load.duration, load)}
                )
                print(f"round {rnd} {kind:8s} {runs[-1]['rps']:10.1f} rps", flush=True)
            logged = access_lines(log_file)
        access_log = {
            "lines_during_measured_rounds": len(logged) - lines_before,
            "requests_completed_in_measured_rounds": sum(run["requests"] for run in runs if run["kind"] == "full"),
            "note": "wrk does not count requests still in flight when a run ends (at most 32 per run)",
            "sample": json.loads(logged[-1]) if logged else None,
        }
    report = summarise(runs, responses, load, access_log, source, time.monotonic() - started)
    harness.write_json(out, report)
    print_table(report)
    return report


def summarise(
    runs: list[dict[str, Any]],
    responses: dict[str, Any],
    load: harness.Load,
    access_log: dict[str, Any],
    source: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for kind in KINDS:
        mine = [run for run in runs if run["kind"] == kind]
        servers[kind] = harness.wrk_summary(mine)
        rps = servers[kind]["rounds_rps"]
        servers[kind]["spread_pct"] = round((max(rps) - min(rps)) / statistics.median(rps) * 100, 2)
        servers[kind]["errors"] = sum(harness.wrk_errors(run) for run in mine)
        servers[kind]["response"] = {k: v for k, v in responses[kind].items() if k != "body"}
    us = {kind: 1e6 / statistics.median(servers[kind]["rounds_rps"]) for kind in KINDS}
    overhead = {
        "full_vs_fastapi_us": round(us["full"] - us["fastapi"], 2),
        "full_vs_asgi_us": round(us["full"] - us["asgi"], 2),
        "fastapi_vs_asgi_us": round(us["fastapi"] - us["asgi"], 2),
        "full_vs_full_nolog_us": round(us["full"] - us["full-nolog"], 2),
        "full_nolog_vs_fastapi_us": round(us["full-nolog"] - us["fastapi"], 2),
    }
    per_round = []  # round-by-round overheads show how stable the difference is
    for rnd in sorted({run["round"] for run in runs}):
        by_kind = {run["kind"]: 1e6 / run["rps"] for run in runs if run["round"] == rnd}
        per_round.append(round(by_kind["full"] - by_kind["fastapi"], 2))
    return {
        "benchmark": "GET /health: middleware overhead",
        "generated_at": harness.now_iso(),
        "elapsed_seconds": round(elapsed, 1),
        "machine": harness.machine(),
        "source": source,
        "method": {
            "host": harness.HOST,
            "path": PATH,
            "uvicorn": harness.UVICORN_SETTINGS,
            "wrk": {"threads": 1, "connections": load.connections, "duration_s": load.duration},
            "warmup_s_per_server": load.warmup,
            "rounds": load.rounds,
            "pinning": {"server_cpu": load.server_cpu, "wrk_cpu": load.client_cpu} if load.pinned else "none",
            "statistic": "median rps over rounds; us_per_request = 1e6 / median_rps",
            "scratch_dir_root": load.tmp_root or tempfile.gettempdir(),
            "full_app": "create_app(Settings(APP_ENV=test, sqlite, LOG_FORMAT=json, LOG_LEVEL=info)), "
            "configure_logging(stream=<file>)",
        },
        "servers": servers,
        "overhead": overhead,
        "full_vs_fastapi_us_per_round": per_round,
        "target": {"max_full_vs_fastapi_us": TARGET_US, "met": overhead["full_vs_fastapi_us"] <= TARGET_US},
        "full_app_access_log": access_log,
        "runs": runs,
    }


def print_table(report: dict[str, Any]) -> None:
    print()
    harness.print_wrk_table(report["servers"])
    overhead, target = report["overhead"], report["target"]
    rounds = ", ".join(f"{x:+.1f}" for x in report["full_vs_fastapi_us_per_round"])
    print(f"\nfull vs bare FastAPI: {overhead['full_vs_fastapi_us']:+.2f} µs/request (per round: {rounds})")
    print(f"full vs raw ASGI:     {overhead['full_vs_asgi_us']:+.2f} µs/request")
    print(f"bare FastAPI vs ASGI: {overhead['fastapi_vs_asgi_us']:+.2f} µs/request")
    print(f"access-log line (full vs full-nolog): {overhead['full_vs_full_nolog_us']:+.2f} µs/request")
    print(f"full-nolog vs bare FastAPI:           {overhead['full_nolog_vs_fastapi_us']:+.2f} µs/request")
    verdict = "MET" if target["met"] else "NOT MET"
    print(f"target <= {target['max_full_vs_fastapi_us']:.0f} µs (full vs bare FastAPI): {verdict}")


# --------------------------------------------------------------------------
# Profile (in process): cProfile through httpx, a per-middleware ablation, one log line
# --------------------------------------------------------------------------


def _log_line_breakdown(number: int = 20_000) -> list[dict[str, Any]]:
    """µs for one access-log line as AccessLogMiddleware writes it, and for its parts.

    Call it from a coroutine after configure_logging(): as in the server,
    `log_request` then only buffers the line and `LogOutputs.flush` writes the
    buffer once per loop turn. The flush is timed here once per line (the worst
    case: one request per loop turn); under load a turn often finishes several
    requests and shares one write between them.
    """
    from smilingsteps.platform import logging as app_logging  # type: ignore[import-untyped, unused-ignore]

    outputs = app_logging._outputs  # the configured console/file outputs
    fields: dict[str, Any] = {
        "method": "GET",
        "route": PATH,
        "status": 200,
        "duration_ms": 0.13,
        "client": harness.HOST,
    }

    def per_call(func: Callable[[], object]) -> float:
        func()
        best = min(timeit.repeat(func, number=number, repeat=3)) / number * 1e6
        outputs.flush()  # lines buffered while timing
        return best

    def line_and_flush() -> None:
        app_logging.log_request(**fields)
        outputs.flush()

    with app_logging.bound_log_context(request_id="0" * 32):
        event: dict[str, Any] = {
            "event": "request",
            **fields,
            **app_logging.log_context(),
            "level": "info",
            "logger": app_logging.ACCESS_LOGGER,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        buffered = per_call(lambda: app_logging.log_request(**fields))
        flushed = per_call(line_and_flush)
        parts = {
            "redact": per_call(lambda: app_logging.redact(None, "info", dict(event))),
            "neutralise_controls": per_call(lambda: app_logging.neutralise_controls(None, "info", dict(event))),
            "timestamp (datetime.now(UTC).isoformat())": per_call(
                lambda: datetime.now(UTC).isoformat().replace("+00:00", "Z")
            ),
            "JSON rendering (orjson)": per_call(lambda: app_logging._json_line(event)),
        }
    rest = buffered - sum(parts.values())
    return [
        {"step": "whole line, buffered: log_request(...) as AccessLogMiddleware calls it", "us": round(buffered, 2)},
        *({"step": name, "us": round(value, 2)} for name, value in parts.items()),
        {"step": "rest: event dict, request context, buffering", "us": round(rest, 2)},
        {"step": "LogOutputs.flush per line (write + flush of one line)", "us": round(flushed - buffered, 2)},
        {"step": "whole line with its own flush (one request per loop turn)", "us": round(flushed, 2)},
    ]


async def _profile_async(workdir: Path, requests: int, top: int) -> dict[str, Any]:
    import httpx

    log_stream = (workdir / "profile-app.log").open("a", encoding="utf-8")
    app = build_full_app(workdir, log_stream)
    scope = profiling.asgi_scope(PATH)
    count, repeats = 4000, 7

    async def wall_us(target: Any, batch: int) -> float:
        return (await profiling.call_asgi(target, scope, batch))[0]

    async with app.router.lifespan_context(app):
        # 1. cProfile, 20k requests through httpx's ASGITransport. The profiler runs only
        #    while the app handles a request, so the client's own work stays out of it.
        profiler = cProfile.Profile()

        async def profiled(scope: Any, receive: Any, send: Any) -> None:
            profiler.enable()
            try:
                await app(scope, receive, send)
            finally:
                profiler.disable()

        logging.getLogger("httpx").setLevel(logging.WARNING)  # its per-request INFO line is not the app's
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=profiled), base_url="http://127.0.0.1"
        ) as client:
            for _ in range(500):
                (await client.get(PATH)).raise_for_status()
            profiler = cProfile.Profile()  # forget the warm-up
            for _ in range(requests):
                await client.get(PATH)
        stats = pstats.Stats(profiler)
        functions = profiling.by_function(stats, requests)
        modules = profiling.by_module(stats, requests)

        # 2. Ablation: the same app with one middleware (or the access-log line) taken away.
        #    Every variant's stack is built once; batches of all variants are interleaved.
        original = list(app.user_middleware)

        def stack(middleware: list[Any]) -> Any:
            app.user_middleware = middleware
            return app.build_middleware_stack()

        full_stack = stack(original)
        variants: dict[str, tuple[Any, bool]] = {"full": (full_stack, False)}
        for entry in original:  # whatever create_app installs today, outermost first
            name = entry.cls.__name__ + (" (and its log line)" if entry.cls.__name__ == "AccessLogMiddleware" else "")
            variants[f"without {name}"] = (stack([m for m in original if m is not entry]), False)
        variants["full, access-log call made a no-op"] = (full_stack, True)
        variants["no user middleware (same app, same route)"] = (stack([]), False)
        app.user_middleware = original

        async def timed(name: str, batch: int) -> float:
            stack_app, silent = variants[name]
            app.middleware_stack = stack_app
            restore = harness.silence_access_log() if silent else None
            try:
                return await wall_us(app, batch)
            finally:
                app.middleware_stack = full_stack
                if restore:
                    restore()

        samples: dict[str, list[float]] = {name: [] for name in variants}
        for name in variants:
            await timed(name, 500)  # warm-up
        for _, name in harness.rounds(list(variants), repeats):
            samples[name].append(await timed(name, count))
        results = {name: statistics.median(values) for name, values in samples.items()}
        log_line = _log_line_breakdown()
    await asyncio.sleep(0)  # the lines logged at shutdown are written on the next loop turn
    log_stream.close()

    for name, other in (("bare FastAPI app", build_bare_fastapi()), ("raw ASGI", build_raw_asgi())):
        await wall_us(other, 500)  # warm caches, route compilation
        results[name] = statistics.median([await wall_us(other, count) for _ in range(repeats)])
    ablation = [
        {"variant": name, "us_per_request": round(value, 2), "saved_vs_full_us": round(results["full"] - value, 2)}
        for name, value in results.items()
    ]
    return {
        "requests_profiled": requests,
        "profiled_app_us_per_request_under_cprofile": round(sum(m["own_us_per_request"] for m in modules), 2),
        "modules": modules,
        "functions": functions[:top],
        "ablation": ablation,
        "access_log_line": log_line,
    }


def profile(requests: int, top: int, out: Path) -> dict[str, Any]:
    import uvloop

    with (
        tempfile.TemporaryDirectory(prefix="health-profile-", dir=harness.default_tmp_root()) as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        source = source_info(Path(tmp))
        result = runner.run(_profile_async(Path(tmp), requests, top))
        result["source"] = source
    result["generated_at"] = harness.now_iso()
    result["note"] = (
        "modules/functions: cProfile (deterministic; inflates code made of many small calls) of the app only, "
        "driven through httpx ASGITransport; "
        "ablation: direct ASGI calls with a uvicorn-like scope, median of 7 interleaved batches of 4000, uvloop; "
        "access_log_line: timeit inside the running loop, best of 3 x 20000"
    )
    harness.write_json(out, result)
    print(f"cProfile, {requests} requests, own time by source file (µs per request, built-ins go to their caller):")
    for module in result["modules"][:25]:
        print(f"{module['own_us_per_request']:>8.2f}  {module['module']}")
    print(f"{result['profiled_app_us_per_request_under_cprofile']:>8.2f}  total (under cProfile)\n")
    print(f"top {top} functions by own time (µs per request):\n{'own':>8}{'cum':>9}{'calls':>7}  function")
    for row in result["functions"]:
        print(
            f"{row['own_us_per_request']:>8.2f}{row['cumulative_us_per_request']:>9.2f}"
            f"{row['calls_per_request']:>7.1f}  {row['function']}"
        )
    print("\nablation (direct ASGI calls, µs per request):")
    for row in result["ablation"]:
        print(f"{row['us_per_request']:>8.2f}  saves {row['saved_vs_full_us']:>7.2f}  {row['variant']}")
    print("\none access-log line (µs):")
    for row in result["access_log_line"]:
        print(f"{row['us']:>8.2f}  {row['step']}")
    return result


# --------------------------------------------------------------------------
# Sampled profile of the live servers (py-spy, under the same wrk load)
# --------------------------------------------------------------------------

HANDLER = [
    (
        "/health handler (incl. psutil memory_info)",
        ("health (smilingsteps/platform/health.py)", ".health (health_overhead"),
    )
]
# Inclusive details: share of samples with this frame anywhere on the stack.
DETAILS: dict[str, tuple[str, ...]] = {
    "log line: log_request (event dict, context, timestamp, redact, neutralise, buffer)": (
        "log_request (smilingsteps/",
    ),
    "log line: redact": ("redact (smilingsteps/platform/logging.py)",),
    "log line: neutralise_controls": ("neutralise_controls (smilingsteps/platform/logging.py)",),
    "log line: LogOutputs.write (JSON rendering, buffering)": ("LogOutputs.write (smilingsteps/",),
    "log line: JSON rendering (orjson)": ("_json_line (smilingsteps/platform/logging.py)",),
    "log line: LogOutputs.flush (one write + flush per loop turn)": (profiling.LOG_FLUSH,),
    "RequestIdMiddleware: new request id (prefix + counter)": ("_RequestIds.next (smilingsteps/",),
    "request context: bound_log_context": ("bound_log_context (smilingsteps/platform/logging.py)",),
    "handler result: FastAPI serialize_response (inclusive)": ("serialize_response (fastapi/routing.py)",),
    "psutil Process.memory_info (in both apps' handler)": ("Process.memory_info (psutil/__init__.py)",),
}


def sampled_profile(py_spy: str, seconds: int, load: harness.Load, out: Path) -> dict[str, Any]:
    """py-spy on the live full and bare-FastAPI servers while wrk loads them."""
    measured = harness.previous_result("health_overhead.json")
    result = profiling.spy_report(
        [py_spy],
        f"py-spy record --rate 250 (blocking) of the event-loop thread while wrk -t1 -c{load.connections} runs "
        f"{seconds} s; each sample goes to the innermost matching layer; us = share x us_per_request of the "
        "unprofiled benchmark (bench/results/health_overhead.json)",
        measured,
    )
    result["servers"] = {}
    with tempfile.TemporaryDirectory(prefix="health-spy-", dir=load.tmp_root) as tmp:
        result["source"] = source_info(Path(tmp))
        with running(Path(tmp), load, ("full", "fastapi")) as servers:
            for kind, server in servers.items():
                result["servers"][kind] = profiling.spy_on(
                    [py_spy],
                    server,
                    load,
                    seconds,
                    lambda server, seconds: harness.run_wrk(server.url(PATH), seconds, load),
                    us=measured["servers"][kind]["us_per_request"] if measured else None,
                    extra=HANDLER,
                    details=DETAILS,
                )
    harness.write_json(out, result)
    full, bare = result["servers"]["full"], result["servers"]["fastapi"]
    print(f"\nµs/request by innermost layer (full {full['samples']} samples, fastapi {bare['samples']} samples)")
    profiling.print_layers(full, bare, ("full", "fastapi"))
    return result


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, serve=KINDS)
    parser.add_argument("--profile", action="store_true", help="profile the full app in process instead")
    parser.add_argument("--py-spy", metavar="PATH", help="sample the live full and bare servers with this py-spy")
    parser.add_argument("--requests", type=int, default=20_000, help="requests to profile (default 20000)")
    parser.add_argument("--top", type=int, default=40, help="functions to list in the profile")
    harness.add_load_arguments(parser, duration=8, warmup=2, rounds=3, connections=32, what="wrk: ")
    harness.add_output_arguments(parser, None)
    harness.add_ref_argument(parser)
    args = parser.parse_args(argv)
    if harness.check_serve(parser, args):
        serve(args.serve, args.port, args.workdir)
        return 0
    with harness.source_of(args.ref):
        return run(args)


def run(args: argparse.Namespace) -> int:
    if args.profile:
        profile(args.requests, args.top, args.out or harness.RESULTS_DIR / "health_profile.json")
        return 0
    load = harness.Load.from_args(args)
    if args.py_spy:
        sampled_profile(args.py_spy, 10, load, args.out or harness.RESULTS_DIR / "health_pyspy.json")
    else:
        benchmark(load, args.out or harness.RESULTS_DIR / "health_overhead.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
