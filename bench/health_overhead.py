"""GET /health: what the full middleware stack costs per request.

Three servers, each its own process on a free 127.0.0.1 port, with identical
uvicorn settings (httptools + uvloop, one process, no access log, no Server
header, no proxy headers, lifespan on):

* ``full``    - ``smilingsteps.app.create_app`` (every middleware, JSON access log to a file),
* ``fastapi`` - a bare FastAPI app, no middleware, one ``GET /health`` of the same shape,
* ``asgi``    - a raw ASGI callable answering the same JSON bytes (the server's floor).

``wrk`` (1 thread, 32 connections) loads each in interleaved rounds; the server
and ``wrk`` are pinned to different cores. With the server saturated, 1e6/rps
is the server's CPU time per request, so the difference between two servers is
the cost, in microseconds, of whatever one has and the other lacks.

Usage (from the repository root)::

    .venv/bin/python bench/health_overhead.py             # the benchmark, about 1.5 minutes
    .venv/bin/python bench/health_overhead.py --profile   # where the full stack's time goes (in process)
    .venv/bin/python bench/health_overhead.py --serve full --port 8001 --workdir /tmp/x   # one server

Results: ``bench/results/health_overhead.json`` (and ``health_profile.json`` for ``--profile``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import http.client
import json
import os
import platform
import pstats
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

HOST = "127.0.0.1"  # loopback only, always
PATH = "/health"
KINDS = ("full", "fastapi", "asgi")
TARGET_US = 60.0
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Identical for the three servers (and the same choices as `smilingsteps serve`).
UVICORN_SETTINGS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "workers": 1,
    "access_log": False,
    "server_header": False,
    "proxy_headers": False,
    "log_config": None,
    "lifespan": "on",
}


# --------------------------------------------------------------------------
# The three applications
# --------------------------------------------------------------------------


def full_settings(workdir: Path) -> Any:
    from smilingsteps.config import Settings

    return Settings(
        APP_ENV="test",
        DATABASE_URL=f"sqlite+aiosqlite:///{(workdir / 'bench.db').as_posix()}",
        SECRET_KEY=secrets.token_urlsafe(36),  # 48 characters
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        LOG_DIR=None,
    )


def build_full_app(workdir: Path, log_stream: TextIO) -> Any:
    """The real app, logging JSON lines (one access-log line per request) to `log_stream`."""
    from smilingsteps.app import create_app
    from smilingsteps.platform.logging import configure_logging

    settings = full_settings(workdir)
    configure_logging(settings, stream=log_stream)
    return create_app(settings)


def _health_body(started: float, rss: int) -> dict[str, Any]:
    """The same shape (and similar values) as smilingsteps' /health."""
    return {
        "status": "ok",
        "version": "0.1.0",
        "environment": "test",
        "uptime_seconds": round(time.monotonic() - started, 1),
        "memory": {"rss_bytes": rss},
        "database": {"status": "up", "backend": "sqlite", "latency_ms": 1.23, "checked_at": time.time()},
    }


def build_bare_fastapi() -> Any:
    """FastAPI with no middleware: one GET /health, same signature and payload shape as the real one."""
    import psutil
    from fastapi import FastAPI, Request

    process = psutil.Process()
    started = time.monotonic()
    checked_at = time.time()
    app = FastAPI(title="bare", docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        assert request.app is app
        return {
            "status": "ok",
            "version": "0.1.0",
            "environment": "test",
            "uptime_seconds": round(time.monotonic() - started, 1),
            "memory": {"rss_bytes": process.memory_info().rss},
            "database": {"status": "up", "backend": "sqlite", "latency_ms": 1.23, "checked_at": checked_at},
        }

    return app


def build_raw_asgi() -> ASGIApp:
    """No framework: fixed JSON bytes (rendered once at start-up) for GET /health, 404 otherwise."""
    import psutil

    body = json.dumps(
        _health_body(time.monotonic(), psutil.Process().memory_info().rss), separators=(",", ":")
    ).encode()
    ok_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    missing_headers = [(b"content-type", b"text/plain"), (b"content-length", b"9")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
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
        if scope["path"] == PATH and scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": ok_headers})
            await send({"type": "http.response.body", "body": body})
        else:
            await send({"type": "http.response.start", "status": 404, "headers": missing_headers})
            await send({"type": "http.response.body", "body": b"Not Found"})

    return app


def serve(kind: str, port: int, workdir: Path) -> None:
    """Run one server in this process until SIGTERM."""
    import uvicorn

    app: Any
    if kind == "full":
        log_stream = (workdir / "full-app.log").open("a", encoding="utf-8")
        app = build_full_app(workdir, log_stream)
    elif kind == "fastapi":
        app = build_bare_fastapi()
    else:
        app = build_raw_asgi()
    config = uvicorn.Config(app, host=HOST, port=port, **UVICORN_SETTINGS)
    uvicorn.Server(config).run()


# --------------------------------------------------------------------------
# Orchestration: servers, readiness, wrk
# --------------------------------------------------------------------------


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"


@dataclass
class WrkRun:
    kind: str
    round: int
    rps: float
    requests: int
    seconds: float
    latency_ms: dict[str, float]
    non_2xx: int
    socket_errors: dict[str, int]


@dataclass
class Options:
    duration: int = 8
    warmup: int = 2
    rounds: int = 3
    connections: int = 32
    server_cpu: int = 0
    wrk_cpu: int = 1
    pinned: bool = True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int, options: Options) -> list[str]:
    return ["taskset", "-c", str(cpu)] if options.pinned else []


def child_env() -> dict[str, str]:
    """This environment minus every smilingsteps setting, so only the explicit ones apply."""
    from smilingsteps.config import Settings

    names = set(Settings.model_fields)
    return {key: value for key, value in os.environ.items() if key not in names}


def start_server(kind: str, workdir: Path, options: Options) -> Server:
    port = free_port()
    output = workdir / f"{kind}-server.out"
    command = [
        *pin(options.server_cpu, options),
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        kind,
        "--port",
        str(port),
        "--workdir",
        str(workdir),
    ]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=child_env())
    return Server(kind, port, process, output)


def get(port: int, timeout: float = 2.0) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", PATH)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def wait_ready(server: Server, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Poll the port (bounded) until GET /health answers 200."""
    for _ in range(int(timeout / interval)):
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} server exited early:\n{server.output.read_text(errors='replace')}")
        try:
            status, _, _ = get(server.port, timeout=1.0)
        except OSError:
            time.sleep(interval)
            continue
        if status == 200:
            return
        time.sleep(interval)
    raise RuntimeError(f"{server.kind} server not ready on port {server.port} after {timeout} s")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if rps is None or total is None:
        raise RuntimeError(f"could not parse wrk output:\n{text}")
    distribution = re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    latency = {f"p{pct}": _ms(value, unit) for pct, value, unit in distribution}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2), total.group(3)) / 1000,
        "latency_ms": latency,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": dict(
            zip(("connect", "read", "write", "timeout"), (int(x) for x in errors.groups()), strict=True)
        )
        if errors
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }


def run_wrk(server: Server, seconds: int, options: Options) -> dict[str, Any]:
    command = [
        *pin(options.wrk_cpu, options),
        "wrk",
        "-t1",
        f"-c{options.connections}",
        f"-d{seconds}s",
        "--latency",
        server.url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


# --------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import psutil

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "ram_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("uvicorn", "fastapi", "starlette", "httptools", "uvloop", "structlog", "pydantic")
        },
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "unknown",
    }


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


@contextmanager
def running_servers(workdir: Path, options: Options) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        for kind in KINDS:
            servers[kind] = start_server(kind, workdir, options)
        for server in servers.values():
            wait_ready(server)
        yield servers
    finally:
        for server in servers.values():
            stop_server(server)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def check_responses(servers: dict[str, Server]) -> dict[str, Any]:
    """Every server answers 200 with the same JSON shape; record headers and sizes."""
    seen: dict[str, Any] = {}
    for kind, server in servers.items():
        status, headers, body = get(server.port)
        payload = json.loads(body)
        seen[kind] = {
            "status": status,
            "body_bytes": len(body),
            "header_count": len(headers),
            "header_bytes": sum(len(k) + len(v) + 4 for k, v in headers),
            "headers": sorted(name.lower() for name, _ in headers),
            "body": payload,
        }
        if status != 200:
            raise RuntimeError(f"{kind}: GET /health answered {status}")
    shapes = {kind: _shape(info["body"]) for kind, info in seen.items()}
    keys = {kind: json.dumps(_keys(info["body"])) for kind, info in seen.items()}
    if len(set(keys.values())) != 1:
        raise RuntimeError(f"/health shapes differ: {shapes}")
    return seen


def _keys(value: Any) -> Any:
    return {key: _keys(item) for key, item in value.items()} if isinstance(value, dict) else None


def benchmark(options: Options, out: Path) -> dict[str, Any]:
    for tool in ("wrk", *(["taskset"] if options.pinned else [])):
        if shutil.which(tool) is None:
            package = "wrk" if tool == "wrk" else "util-linux"
            raise SystemExit(f"{tool} not found (Debian: apt-get install -y {package})")
    runs: list[WrkRun] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="health-bench-") as tmp:
        workdir = Path(tmp)
        with running_servers(workdir, options) as servers:
            responses = check_responses(servers)
            for kind in KINDS:
                print(f"warm-up {kind} {options.warmup} s", flush=True)
                run_wrk(servers[kind], options.warmup, options)
            for rnd in range(options.rounds):
                order = KINDS[rnd % len(KINDS) :] + KINDS[: rnd % len(KINDS)]  # rotate to spread drift
                for kind in order:
                    result = run_wrk(servers[kind], options.duration, options)
                    run = WrkRun(kind=kind, round=rnd + 1, **result)
                    runs.append(run)
                    print(f"round {rnd + 1} {kind:8s} {run.rps:10.1f} rps", flush=True)
            log_file = workdir / "full-app.log"
            log_lines = log_file.read_text(encoding="utf-8").splitlines() if log_file.exists() else []
        access_lines = [line for line in log_lines if '"logger": "smilingsteps.http"' in line]
    report = summarise(runs, responses, options, access_lines, time.monotonic() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"\nwritten {out.relative_to(BENCH_DIR.parent) if out.is_relative_to(BENCH_DIR.parent) else out}")
    return report


def summarise(
    runs: list[WrkRun], responses: dict[str, Any], options: Options, access_lines: list[str], elapsed: float
) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for kind in KINDS:
        mine = [run for run in runs if run.kind == kind]
        rps = [run.rps for run in mine]
        median_rps = statistics.median(rps)
        servers[kind] = {
            "rounds_rps": rps,
            "median_rps": round(median_rps, 1),
            "min_rps": min(rps),
            "max_rps": max(rps),
            "spread_pct": round((max(rps) - min(rps)) / median_rps * 100, 2),
            "us_per_request": round(1e6 / median_rps, 2),
            "latency_ms_median_of_rounds": {
                pct: round(statistics.median(run.latency_ms[pct] for run in mine), 3)
                for pct in ("p50", "p99")
                if all(pct in run.latency_ms for run in mine)
            },
            "errors": sum(run.non_2xx + sum(run.socket_errors.values()) for run in mine),
            "response": {k: v for k, v in responses[kind].items() if k != "body"},
        }
    us = {kind: 1e6 / statistics.median(run.rps for run in runs if run.kind == kind) for kind in KINDS}
    overhead = {
        "full_vs_fastapi_us": round(us["full"] - us["fastapi"], 2),
        "full_vs_asgi_us": round(us["full"] - us["asgi"], 2),
        "fastapi_vs_asgi_us": round(us["fastapi"] - us["asgi"], 2),
    }
    # Round-by-round overheads show how stable the difference is.
    per_round = []
    for rnd in sorted({run.round for run in runs}):
        by_kind = {run.kind: 1e6 / run.rps for run in runs if run.round == rnd}
        per_round.append(round(by_kind["full"] - by_kind["fastapi"], 2))
    total_requests = sum(run.requests for run in runs if run.kind == "full")
    return {
        "benchmark": "GET /health: middleware overhead",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": round(elapsed, 1),
        "machine": machine(),
        "method": {
            "host": HOST,
            "path": PATH,
            "uvicorn": UVICORN_SETTINGS,
            "wrk": {"threads": 1, "connections": options.connections, "duration_s": options.duration},
            "warmup_s_per_server": options.warmup,
            "rounds": options.rounds,
            "pinning": {"server_cpu": options.server_cpu, "wrk_cpu": options.wrk_cpu} if options.pinned else "none",
            "statistic": "median rps over rounds; us_per_request = 1e6 / median_rps",
            "full_app": "create_app(Settings(APP_ENV=test, sqlite, LOG_FORMAT=json, LOG_LEVEL=info)), "
            "configure_logging(stream=<file>)",
        },
        "servers": servers,
        "overhead": overhead,
        "full_vs_fastapi_us_per_round": per_round,
        "target": {
            "max_full_vs_fastapi_us": TARGET_US,
            "met": overhead["full_vs_fastapi_us"] <= TARGET_US,
        },
        "full_app_access_log": {
            "lines": len(access_lines),
            "requests_sent_in_measured_rounds": total_requests,
            "sample": json.loads(access_lines[-1]) if access_lines else None,
        },
        "runs": [asdict(run) for run in runs],
    }


def print_table(report: dict[str, Any]) -> None:
    servers = report["servers"]
    print()
    print(f"{'server':<10}{'median rps':>12}{'min-max rps':>20}{'µs/request':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for kind in KINDS:
        info = servers[kind]
        lat = info["latency_ms_median_of_rounds"]
        span = f"{info['min_rps']:.0f}-{info['max_rps']:.0f}"
        print(
            f"{kind:<10}{info['median_rps']:>12.1f}{span:>20}{info['us_per_request']:>12.2f}"
            f"{lat.get('p50', float('nan')):>9.2f}{lat.get('p99', float('nan')):>9.2f}"
        )
    overhead = report["overhead"]
    target = report["target"]
    print()
    print(
        f"full vs bare FastAPI: {overhead['full_vs_fastapi_us']:+.2f} µs/request (per round: "
        f"{', '.join(f'{x:+.1f}' for x in report['full_vs_fastapi_us_per_round'])})"
    )
    print(f"full vs raw ASGI:     {overhead['full_vs_asgi_us']:+.2f} µs/request")
    print(f"bare FastAPI vs ASGI: {overhead['fastapi_vs_asgi_us']:+.2f} µs/request")
    verdict = "MET" if target["met"] else "NOT MET"
    print(f"target <= {target['max_full_vs_fastapi_us']:.0f} µs (full vs bare FastAPI): {verdict}")


# --------------------------------------------------------------------------
# Profile (in process): cProfile through httpx, plus a per-middleware ablation
# --------------------------------------------------------------------------


def _uvicorn_like_scope() -> Scope:
    """What uvicorn's httptools protocol hands the app for wrk's `GET /health`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": (HOST, 8000),
        "client": (HOST, 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": [(b"host", f"{HOST}:8000".encode())],
        "state": {},
    }


async def _direct(app: ASGIApp, count: int) -> float:
    """Seconds for `count` requests called straight into the ASGI app (no HTTP, no client)."""
    template = _uvicorn_like_scope()
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(count):
        scope = dict(template)
        scope["state"] = {}
        await app(scope, receive, send)
    elapsed = time.perf_counter() - started
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"non-200 answers while timing: {set(statuses)}")
    return elapsed


async def _time_us(app: ASGIApp, count: int, repeats: int) -> float:
    """Median µs per request over `repeats` batches of `count`."""
    await _direct(app, 500)  # warm caches, route compilation, logger caches
    samples = [await _direct(app, count) / count * 1e6 for _ in range(repeats)]
    return statistics.median(samples)


async def _profile_async(workdir: Path, requests: int, top: int) -> dict[str, Any]:
    import logging

    import httpx
    from starlette.middleware.cors import CORSMiddleware

    from smilingsteps.platform.access_log import AccessLogMiddleware
    from smilingsteps.platform.body_limit import BodyLimitMiddleware
    from smilingsteps.platform.errors import ErrorHandlerMiddleware
    from smilingsteps.platform.logging import ACCESS_LOGGER
    from smilingsteps.platform.proxy import TrustedProxyMiddleware
    from smilingsteps.platform.request_id import RequestIdMiddleware
    from smilingsteps.platform.security_headers import SecurityHeadersMiddleware

    log_stream = (workdir / "profile-app.log").open("a", encoding="utf-8")
    app = build_full_app(workdir, log_stream)
    bare = build_bare_fastapi()
    raw = build_raw_asgi()

    async with app.router.lifespan_context(app):
        # 1. cProfile, 20k requests through httpx's ASGITransport (as the brief asks).
        profiler = cProfile.Profile()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
            for _ in range(500):
                (await client.get(PATH)).raise_for_status()
            profiler.enable()
            for _ in range(requests):
                await client.get(PATH)
            profiler.disable()
        stats = pstats.Stats(profiler)
        functions = _profile_rows(stats, requests)

        # 2. Ablation: the same app with one middleware (or the access-log line) taken away.
        count, repeats = 5000, 7
        original = list(app.user_middleware)
        results: dict[str, float] = {}

        def use(middleware: list[Any]) -> None:
            app.user_middleware = middleware
            app.middleware_stack = None  # rebuilt on the next call

        results["full"] = await _time_us(app, count, repeats)
        names = {
            RequestIdMiddleware: "RequestIdMiddleware",
            TrustedProxyMiddleware: "TrustedProxyMiddleware",
            AccessLogMiddleware: "AccessLogMiddleware (incl. its log line)",
            SecurityHeadersMiddleware: "SecurityHeadersMiddleware",
            CORSMiddleware: "CORSMiddleware",
            BodyLimitMiddleware: "BodyLimitMiddleware",
            ErrorHandlerMiddleware: "ErrorHandlerMiddleware",
        }
        for cls, label in names.items():
            use([m for m in original if m.cls is not cls])
            results[f"without {label}"] = await _time_us(app, count, repeats)
        use(original)
        access = logging.getLogger(ACCESS_LOGGER)
        access.setLevel(logging.WARNING)
        results["full, access-log line filtered out (level WARNING)"] = await _time_us(app, count, repeats)
        access.setLevel(logging.NOTSET)
        use([])
        results["no user middleware (same app, same route)"] = await _time_us(app, count, repeats)
        use(original)
    log_stream.close()

    results["bare FastAPI app"] = await _time_us(bare, count, repeats)
    results["raw ASGI"] = await _time_us(raw, count, repeats)
    full = results["full"]
    ablation = [
        {"variant": name, "us_per_request": round(value, 2), "saved_vs_full_us": round(full - value, 2)}
        for name, value in results.items()
    ]
    return {"requests_profiled": requests, "functions": functions[:top], "ablation": ablation}


def _profile_rows(stats: pstats.Stats, requests: int) -> list[dict[str, Any]]:
    """Rows sorted by own time: µs per request of own and cumulative time, calls per request."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    root = str(BENCH_DIR.parent)
    for (filename, line, name), (_, calls, own, cumulative, _) in raw.items():
        where = filename
        for marker in ("site-packages/", "/src/"):
            if marker in filename:
                where = filename.split(marker, 1)[1]
                break
        where = where.replace(root + "/", "")
        rows.append(
            {
                "function": f"{where}:{line}({name})",
                "calls_per_request": round(calls / requests, 2),
                "own_us_per_request": round(own / requests * 1e6, 2),
                "cumulative_us_per_request": round(cumulative / requests * 1e6, 2),
            }
        )
    rows.sort(key=lambda row: row["own_us_per_request"], reverse=True)
    return rows


def profile(requests: int, top: int, out: Path) -> dict[str, Any]:
    import uvloop

    with (
        tempfile.TemporaryDirectory(prefix="health-profile-") as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        result = runner.run(_profile_async(Path(tmp), requests, top))
    result["generated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result["note"] = (
        "functions: cProfile (deterministic; inflates many-small-call code) over httpx ASGITransport; "
        "ablation: direct ASGI calls with a uvicorn-like scope, median of 7 batches of 5000, uvloop"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"cProfile, {requests} requests, top {top} by own time (µs per request):")
    print(f"{'own':>8}{'cum':>9}{'calls':>7}  function")
    for row in result["functions"]:
        print(
            f"{row['own_us_per_request']:>8.2f}{row['cumulative_us_per_request']:>9.2f}"
            f"{row['calls_per_request']:>7.1f}  {row['function']}"
        )
    print("\nablation (direct ASGI calls, µs per request):")
    for row in result["ablation"]:
        print(f"{row['us_per_request']:>8.2f}  saves {row['saved_vs_full_us']:>7.2f}  {row['variant']}")
    return result


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--serve", choices=KINDS, help="run one server (used by the benchmark itself)")
    parser.add_argument("--port", type=int, help="port for --serve (127.0.0.1 only)")
    parser.add_argument("--workdir", type=Path, help="scratch directory for --serve")
    parser.add_argument("--profile", action="store_true", help="profile the full app in process instead")
    parser.add_argument("--requests", type=int, default=20_000, help="requests to profile (default 20000)")
    parser.add_argument("--top", type=int, default=40, help="functions to list in the profile")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per server (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)

    if args.serve:
        if args.port is None or args.workdir is None:
            parser.error("--serve needs --port and --workdir")
        serve(args.serve, args.port, args.workdir)
        return 0
    if args.profile:
        profile(args.requests, args.top, args.out or RESULTS_DIR / "health_profile.json")
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
    )
    benchmark(options, args.out or RESULTS_DIR / "health_overhead.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
