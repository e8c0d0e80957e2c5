"""GET /health: what the full middleware stack costs per request.

Servers, each its own process on a free 127.0.0.1 port, with identical
uvicorn settings (httptools + uvloop, one process, no access log, no Server
header, no proxy headers, lifespan on):

* ``full``       - ``smilingsteps.app.create_app`` (every middleware, JSON access log to a file),
* ``full-nolog`` - the same with the access-log call made a no-op (isolates the log line's cost),
* ``fastapi``    - a bare FastAPI app, no middleware, one ``GET /health`` of the same shape,
* ``asgi``       - a raw ASGI callable answering the same JSON bytes (the server's floor).

``wrk`` (1 thread, 32 connections) loads each in interleaved rounds; the server
and ``wrk`` are pinned to different cores. With the server saturated, 1e6/rps
is the server's CPU time per request, so the difference between two servers is
the cost, in microseconds, of whatever one has and the other lacks.

Usage (from the repository root; bench/README.md has the details)::

    .venv/bin/python bench/health_overhead.py                  # the benchmark, about 2 minutes
    .venv/bin/python bench/health_overhead.py --py-spy PY_SPY  # live servers sampled by py-spy, ~30 s
    .venv/bin/python bench/health_overhead.py --profile        # in process: cProfile, ablation, log line, ~45 s
    .venv/bin/python bench/health_overhead.py --serve full --port 8001 --workdir /tmp/x   # one server

Results go to ``bench/results/``: ``health_overhead.json``, ``health_pyspy.json``
(its µs use the benchmark's JSON, so run the benchmark first) and ``health_profile.json``.

smilingsteps ships no ``py.typed`` marker, so its imports here carry
``type: ignore[import-untyped, unused-ignore]`` (the second code keeps
``mypy --strict`` quiet once it does ship one).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import hashlib
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
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

# At module level: FastAPI resolves the route's (string) annotations from these globals.
from fastapi import FastAPI, Request

HOST = "127.0.0.1"  # loopback only, always
PATH = "/health"
# `full-nolog` is `full` with the access-log line replaced by a no-op: the line's live cost.
KINDS = ("full", "full-nolog", "fastapi", "asgi")
TARGET_US = 60.0
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
# Set by --ref: a `git archive` of that ref's src/, imported instead of the working tree.
SOURCE: dict[str, Any] = {"ref": None, "src": None}

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


def _ignore(*_: Any, **__: Any) -> None:
    return None


def silence_access_log() -> Callable[[], None]:
    """Make the access-log line a no-op; returns the undo.

    AccessLogMiddleware looks `log_request` up in its module's globals on every
    request, so replacing it there removes the whole line: building the event,
    redaction, rendering, and the buffered per-loop-turn write.
    """
    from smilingsteps.platform import access_log  # type: ignore[import-untyped, unused-ignore]

    original = access_log.log_request
    access_log.log_request = _ignore

    def restore() -> None:
        access_log.log_request = original

    return restore


@contextmanager
def access_log_silenced() -> Iterator[None]:
    restore = silence_access_log()
    try:
        yield
    finally:
        restore()


def full_settings(workdir: Path) -> Any:
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

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
    from smilingsteps.app import create_app  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.logging import configure_logging  # type: ignore[import-untyped, unused-ignore]

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
    if kind in ("full", "full-nolog"):
        log_stream = (workdir / f"{kind}-app.log").open("a", encoding="utf-8")
        app = build_full_app(workdir, log_stream)
        if kind == "full-nolog":
            silence_access_log()  # for the life of this process
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

    @property
    def label(self) -> str:
        return self.kind


class ServerProcess(Protocol):
    """What `wait_ready` and `stop_server` need of a benchmark server (both scripts' `Server`)."""

    port: int
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def label(self) -> str: ...


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
    tmp_root: str | None = None


def default_tmp_root() -> str | None:
    """tmpfs when there is one: the full app writes ~20 MB of log per run, and disk
    write-back (its interrupts and kworkers) otherwise lands on random cores mid-run."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pin(cpu: int, options: Options) -> list[str]:
    return ["taskset", "-c", str(cpu)] if options.pinned else []


def child_env() -> dict[str, str]:
    """This environment minus every smilingsteps setting, so only the explicit ones apply."""
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

    names = set(Settings.model_fields)
    env = {key: value for key, value in os.environ.items() if key not in names}
    if SOURCE["src"] is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE["src"], env.get("PYTHONPATH", "")]))
    return env


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def use_ref(ref: str, into: Path) -> None:
    """Export `ref`'s src/ into `into` and import smilingsteps from there (here and in the servers)."""
    import io
    import tarfile

    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "src"], cwd=BENCH_DIR.parent, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    SOURCE.update(ref=ref, src=str(into / "src"))
    sys.path.insert(0, SOURCE["src"])


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


def wait_ready(server: ServerProcess, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Poll the port (bounded) until GET /health answers 200."""
    for _ in range(int(timeout / interval)):
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.label} server exited early:\n{server.output.read_text(errors='replace')}")
        connection = http.client.HTTPConnection(HOST, server.port, timeout=1.0)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(interval)
    raise RuntimeError(f"{server.label} server not ready on port {server.port} after {timeout} s")


def stop_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
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
            for name in ("uvicorn", "fastapi", "starlette", "httptools", "uvloop", "structlog", "pydantic", "orjson")
        },
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "unknown",
    }


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


@contextmanager
def running_servers(workdir: Path, options: Options, kinds: tuple[str, ...] = KINDS) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        for kind in kinds:
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
    with tempfile.TemporaryDirectory(prefix="health-bench-", dir=options.tmp_root) as tmp:
        workdir = Path(tmp)
        log_file = workdir / "full-app.log"
        source = source_info(workdir)
        with running_servers(workdir, options) as servers:
            responses = check_responses(servers)
            for kind in KINDS:
                print(f"warm-up {kind} {options.warmup} s", flush=True)
                run_wrk(servers[kind], options.warmup, options)
            lines_before = len(access_lines(log_file))
            for rnd in range(options.rounds):
                order = KINDS[rnd % len(KINDS) :] + KINDS[: rnd % len(KINDS)]  # rotate to spread drift
                for kind in order:
                    result = run_wrk(servers[kind], options.duration, options)
                    run = WrkRun(kind=kind, round=rnd + 1, **result)
                    runs.append(run)
                    print(f"round {rnd + 1} {kind:8s} {run.rps:10.1f} rps", flush=True)
            logged = access_lines(log_file)
        access_log = {
            "lines_during_measured_rounds": len(logged) - lines_before,
            "requests_completed_in_measured_rounds": sum(run.requests for run in runs if run.kind == "full"),
            "note": "wrk does not count requests still in flight when a run ends (at most 32 per run)",
            "sample": json.loads(logged[-1]) if logged else None,
        }
    report = summarise(runs, responses, options, access_log, source, time.monotonic() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"\nwritten {out.relative_to(BENCH_DIR.parent) if out.is_relative_to(BENCH_DIR.parent) else out}")
    return report


def measured_source(files: Sequence[str] = ()) -> dict[str, Any]:
    """Which code a benchmark measured: the package it imported, the commit (or --ref), whether
    src/ had local changes, and short hashes of `files` (paths inside the package)."""
    import smilingsteps  # type: ignore[import-untyped, unused-ignore]

    package = Path(smilingsteps.__file__).parent
    info: dict[str, Any] = {"imported_from": str(package)}
    if SOURCE["ref"] is not None:
        info["ref"] = SOURCE["ref"]
        info["commit"] = _git("rev-parse", "--short", SOURCE["ref"]) or "unknown"
        info["src_differs_from_commit"] = False
    else:
        info["commit"] = _git("rev-parse", "--short", "HEAD") or "unknown"
        changed = _git("status", "--porcelain", "--", "src")
        info["src_differs_from_commit"] = bool(changed)
        if changed:
            info["src_changes"] = changed.splitlines()
    if files:
        info["files_sha256"] = {
            name: hashlib.sha256((package / name).read_bytes()).hexdigest()[:16]
            for name in files
            if (package / name).exists()
        }
    return info


def source_info(workdir: Path) -> dict[str, Any]:
    """`measured_source`, and the middleware stack."""
    import io

    app = build_full_app(workdir, io.StringIO())
    info = measured_source()
    info["user_middleware_outermost_first"] = [entry.cls.__name__ for entry in app.user_middleware]
    return info


def access_lines(log_file: Path) -> list[str]:
    """The full app's access-log lines (logger smilingsteps.http) written so far."""
    if not log_file.exists():
        return []
    return [line for line in log_file.read_text(encoding="utf-8").splitlines() if "smilingsteps.http" in line]


def summarise(
    runs: list[WrkRun],
    responses: dict[str, Any],
    options: Options,
    access_log: dict[str, Any],
    source: dict[str, Any],
    elapsed: float,
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
        "full_vs_full_nolog_us": round(us["full"] - us["full-nolog"], 2),
        "full_nolog_vs_fastapi_us": round(us["full-nolog"] - us["fastapi"], 2),
    }
    # Round-by-round overheads show how stable the difference is.
    per_round = []
    for rnd in sorted({run.round for run in runs}):
        by_kind = {run.kind: 1e6 / run.rps for run in runs if run.round == rnd}
        per_round.append(round(by_kind["full"] - by_kind["fastapi"], 2))
    return {
        "benchmark": "GET /health: middleware overhead",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": round(elapsed, 1),
        "machine": machine(),
        "source": source,
        "method": {
            "host": HOST,
            "path": PATH,
            "uvicorn": UVICORN_SETTINGS,
            "wrk": {"threads": 1, "connections": options.connections, "duration_s": options.duration},
            "warmup_s_per_server": options.warmup,
            "rounds": options.rounds,
            "pinning": {"server_cpu": options.server_cpu, "wrk_cpu": options.wrk_cpu} if options.pinned else "none",
            "statistic": "median rps over rounds; us_per_request = 1e6 / median_rps",
            "scratch_dir_root": options.tmp_root or tempfile.gettempdir(),
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
        "full_app_access_log": access_log,
        "runs": [asdict(run) for run in runs],
    }


def print_table(report: dict[str, Any]) -> None:
    servers = report["servers"]
    print()
    print(f"{'server':<12}{'median rps':>12}{'min-max rps':>20}{'µs/request':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for kind in KINDS:
        info = servers[kind]
        lat = info["latency_ms_median_of_rounds"]
        span = f"{info['min_rps']:.0f}-{info['max_rps']:.0f}"
        print(
            f"{kind:<12}{info['median_rps']:>12.1f}{span:>20}{info['us_per_request']:>12.2f}"
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
    print(f"access-log line (full vs full-nolog): {overhead['full_vs_full_nolog_us']:+.2f} µs/request")
    print(f"full-nolog vs bare FastAPI:           {overhead['full_nolog_vs_fastapi_us']:+.2f} µs/request")
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
        await asyncio.sleep(0)  # a loop turn per request, as in the server: the buffered log line is written
    elapsed = time.perf_counter() - started
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"non-200 answers while timing: {set(statuses)}")
    return elapsed


async def _time_us(app: ASGIApp, count: int, repeats: int) -> float:
    """Median µs per request over `repeats` batches of `count`."""
    await _direct(app, 500)  # warm caches, route compilation, logger caches
    samples = [await _direct(app, count) / count * 1e6 for _ in range(repeats)]
    return statistics.median(samples)


def _log_line_breakdown(number: int = 20_000) -> list[dict[str, Any]]:
    """µs for one access-log line as AccessLogMiddleware writes it, and for its parts.

    Call it from a coroutine after configure_logging(): as in the server,
    `log_request` then only buffers the line and `LogOutputs.flush` writes the
    buffer once per loop turn. The flush is timed here once per line (the worst
    case: one request per loop turn); under load a turn often finishes several
    requests and shares one write between them.
    """
    import timeit
    from datetime import UTC, datetime

    from smilingsteps.platform import logging as app_logging  # type: ignore[import-untyped, unused-ignore]

    outputs = app_logging._outputs  # the configured console/file outputs
    fields: dict[str, Any] = {"method": "GET", "route": PATH, "status": 200, "duration_ms": 0.13, "client": HOST}

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
    import logging

    import httpx

    log_stream = (workdir / "profile-app.log").open("a", encoding="utf-8")
    app = build_full_app(workdir, log_stream)
    bare = build_bare_fastapi()
    raw = build_raw_asgi()

    async with app.router.lifespan_context(app):
        # 1. cProfile, 20k requests through httpx's ASGITransport. The profiler runs only
        #    while the app handles a request, so the client's own work stays out of it.
        profiler = cProfile.Profile()

        async def profiled(scope: Scope, receive: Receive, send: Send) -> None:
            profiler.enable()
            try:
                await app(scope, receive, send)
            finally:
                profiler.disable()

        logging.getLogger("httpx").setLevel(logging.WARNING)  # its per-request INFO line is not the app's
        transport = httpx.ASGITransport(app=profiled)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
            for _ in range(500):
                (await client.get(PATH)).raise_for_status()
            profiler = cProfile.Profile()  # forget the warm-up
            for _ in range(requests):
                await client.get(PATH)
        stats = pstats.Stats(profiler)
        functions = _profile_rows(stats, requests)
        modules = _by_module(stats, requests)

        # 2. Ablation: the same app with one middleware (or the access-log line) taken away.
        #    Every variant's stack is built once; batches of all variants are interleaved.
        original = list(app.user_middleware)

        def stack(middleware: list[Any]) -> Any:
            app.user_middleware = middleware
            return app.build_middleware_stack()

        full_stack = stack(original)
        variants: list[tuple[str, Any, bool]] = [("full", full_stack, False)]
        for entry in original:  # whatever create_app installs today, outermost first
            name = entry.cls.__name__
            label = name + (" (and its log line)" if name == "AccessLogMiddleware" else "")
            variants.append((f"without {label}", stack([m for m in original if m is not entry]), False))
        variants.append(("full, access-log call made a no-op", full_stack, True))
        variants.append(("no user middleware (same app, same route)", stack([]), False))
        app.user_middleware = original

        async def timed(stack_app: Any, silent: bool, count: int) -> float:
            app.middleware_stack = stack_app
            try:
                if silent:
                    with access_log_silenced():
                        return await _direct(app, count) / count * 1e6
                return await _direct(app, count) / count * 1e6
            finally:
                app.middleware_stack = full_stack

        count, repeats = 4000, 7
        samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for _, stack_app, silent in variants:
            await timed(stack_app, silent, 500)  # warm-up
        for rnd in range(repeats):
            for name, stack_app, silent in variants[rnd % len(variants) :] + variants[: rnd % len(variants)]:
                samples[name].append(await timed(stack_app, silent, count))
        results = {name: statistics.median(values) for name, values in samples.items()}
        log_line = _log_line_breakdown()
    await asyncio.sleep(0)  # the lines logged at shutdown are written on the next loop turn
    log_stream.close()

    results["bare FastAPI app"] = await _time_us(bare, count, repeats)
    results["raw ASGI"] = await _time_us(raw, count, repeats)
    full = results["full"]
    ablation = [
        {"variant": name, "us_per_request": round(value, 2), "saved_vs_full_us": round(full - value, 2)}
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


StatsEntry = tuple[int, int, float, float, dict[tuple[str, int, str], tuple[int, int, float, float]]]


def _where(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in filename:
            where = filename.split(marker, 1)[1]
            return where.split("/", 1)[1] if marker == "/lib/python3." else where
    return filename


def _profile_rows(stats: pstats.Stats, requests: int) -> list[dict[str, Any]]:
    """Functions by own time: µs per request of own and cumulative time, calls per request."""
    raw: dict[tuple[str, int, str], StatsEntry] = stats.stats  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    for (filename, line, name), (_, calls, own, cumulative, _) in raw.items():
        label = name if filename == "~" else f"{_where(filename)}:{line}({name})"
        rows.append(
            {
                "function": label,
                "calls_per_request": round(calls / requests, 2),
                "own_us_per_request": round(own / requests * 1e6, 2),
                "cumulative_us_per_request": round(cumulative / requests * 1e6, 2),
            }
        )
    rows.sort(key=lambda row: row["own_us_per_request"], reverse=True)
    return rows


def _by_module(stats: pstats.Stats, requests: int) -> list[dict[str, Any]]:
    """Own time per source file; a built-in's time goes to the files that called it."""
    raw: dict[tuple[str, int, str], StatsEntry] = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, callers) in raw.items():
        if filename != "~":
            totals[_where(filename)] = totals.get(_where(filename), 0.0) + own
            continue
        for (caller_file, _, _), (_, _, caller_own, _) in callers.items():
            module = "<built-in, called from outside the app>" if caller_file == "~" else _where(caller_file)
            totals[module] = totals.get(module, 0.0) + caller_own
    rows: list[dict[str, Any]] = [
        {"module": module, "own_us_per_request": round(seconds / requests * 1e6, 2)}
        for module, seconds in totals.items()
    ]
    rows.sort(key=lambda row: row["own_us_per_request"], reverse=True)
    return rows


def profile(requests: int, top: int, out: Path) -> dict[str, Any]:
    import uvloop

    with (
        tempfile.TemporaryDirectory(prefix="health-profile-", dir=default_tmp_root()) as tmp,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        source = source_info(Path(tmp))
        result = runner.run(_profile_async(Path(tmp), requests, top))
        result["source"] = source
    result["generated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result["note"] = (
        "modules/functions: cProfile (deterministic; inflates code made of many small calls) of the app only, "
        "driven through httpx ASGITransport; "
        "ablation: direct ASGI calls with a uvicorn-like scope, median of 7 interleaved batches of 4000, uvloop; "
        "access_log_line: timeit inside the running loop, best of 3 x 20000"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"cProfile, {requests} requests, own time by source file (µs per request, built-ins go to their caller):")
    for module in result["modules"][:25]:
        print(f"{module['own_us_per_request']:>8.2f}  {module['module']}")
    total = result["profiled_app_us_per_request_under_cprofile"]
    print(f"{total:>8.2f}  total (under cProfile)\n")
    print(f"top {top} functions by own time (µs per request):")
    print(f"{'own':>8}{'cum':>9}{'calls':>7}  function")
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

# Each sample goes to the innermost frame (leaf first) that names a layer, so a
# middleware's send wrapper counts for that middleware and the route's own work
# is not charged to the middleware around it. Any `<Name>Middleware.` frame is a
# layer of its own, so middleware added later shows up without changes here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("uvicorn: write the response (RequestResponseCycle.send)", ("RequestResponseCycle.send (uvicorn/",)),
    ("uvicorn: parse the request", ("HttpToolsProtocol.data_received (uvicorn/",)),
    (
        "/health handler (incl. psutil memory_info)",
        ("health (smilingsteps/platform/health.py)", ".health (health_overhead"),
    ),
]
FRAMEWORK_INSIDE = "framework inside the user middleware (exceptions, routing, request/response, serialisation)"
FRAMEWORK_OUTSIDE = "framework outside the user middleware (FastAPI/Starlette __call__, ServerError, telemetry)"
FRAMEWORK_MIDDLEWARE = {
    "ExceptionMiddleware": FRAMEWORK_INSIDE,
    "AsyncExitStackMiddleware": FRAMEWORK_INSIDE,
    "ServerErrorMiddleware": FRAMEWORK_OUTSIDE,
    "ExceptionTelemetryMiddleware": FRAMEWORK_OUTSIDE,
}
_MIDDLEWARE_FRAME = re.compile(r"(\w+Middleware)\.")


def _layer_of(frame: str) -> str | None:
    for name, needles in LAYERS:
        if any(needle in frame for needle in needles):
            return name
    found = _MIDDLEWARE_FRAME.match(frame)
    if found:
        cls = found.group(1)
        label = f"{cls} (without its log line)" if cls == "AccessLogMiddleware" else cls
        return FRAMEWORK_MIDDLEWARE.get(cls, label)
    if frame.startswith(("FastAPI.__call__ (", "Starlette.__call__ (")):
        return FRAMEWORK_OUTSIDE
    return None


OUTSIDE = "uvicorn/uvloop outside the app (event loop, transport, C code)"
# The access-log line: what AccessLogMiddleware.__call__ calls directly in one of these files
# (log_request: build, redact, buffer), plus the buffered write the loop runs once per turn.
LOG_LINE = "access-log line (log_request in AccessLogMiddleware + its share of the per-loop-turn flush)"
_LOGGING_FILES = ("(smilingsteps/platform/logging.py)", "(structlog/", "(logging/__init__.py)")
_LOG_FLUSH = "LogOutputs.flush (smilingsteps/platform/logging.py)"
# Inclusive details: share of samples with this frame anywhere on the stack (listed when seen).
DETAILS: dict[str, str] = {
    "log line: log_request (event dict, context, timestamp, redact, neutralise, buffer)": "log_request (smilingsteps/",
    "log line: redact": "redact (smilingsteps/platform/logging.py)",
    "log line: neutralise_controls": "neutralise_controls (smilingsteps/platform/logging.py)",
    "log line: LogOutputs.write (JSON rendering, buffering)": "LogOutputs.write (smilingsteps/",
    "log line: JSON rendering (orjson)": "_json_line (smilingsteps/platform/logging.py)",
    "log line: LogOutputs.flush (one write + flush per loop turn)": _LOG_FLUSH,
    "RequestIdMiddleware: new request id (prefix + counter)": "_RequestIds.next (smilingsteps/",
    "request context: bound_log_context": "bound_log_context (smilingsteps/platform/logging.py)",
    "handler result: FastAPI serialize_response (inclusive)": "serialize_response (fastapi/routing.py)",
    "psutil Process.memory_info (in both apps' handler)": "Process.memory_info (psutil/__init__.py)",
}


def _normalise(frame: str) -> str:
    """'func (/any/where/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)'."""
    func, _, where = frame.partition(" (")
    path = re.sub(r":\d+\)$", "", where).rstrip(")")
    for marker in ("site-packages/", "/src/smilingsteps/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/src/smilingsteps/":
                path = "smilingsteps/" + path
            elif marker == "/lib/python3.":
                path = path.split("/", 1)[1]
            break
    return f"{func} ({path})"


def _log_line_at(frames: list[str]) -> bool:
    """True when the sample is inside the access-log call AccessLogMiddleware.__call__ makes,
    or inside the per-loop-turn flush of the buffered lines."""
    if _LOG_FLUSH in frames:
        return True
    for index in range(len(frames) - 2, -1, -1):
        if frames[index].startswith("AccessLogMiddleware.__call__ ("):
            return any(marker in frames[index + 1] for marker in _LOGGING_FILES)
    return False


def _collapsed_main_thread(path: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """Event-loop thread samples: total, by innermost layer, and per frame (inclusive)."""
    total = 0
    layers: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, text = line.rpartition(" ")
        if "Runner.run (asyncio/runners.py" not in stack:
            continue  # other threads (aiosqlite's worker is idle but py-spy cannot tell)
        count = int(text)
        total += count
        frames = [_normalise(frame) for frame in stack.split(";")]
        if _log_line_at(frames):
            layer = LOG_LINE
        else:
            layer = next((name for name in map(_layer_of, reversed(frames)) if name is not None), OUTSIDE)
        layers[layer] = layers.get(layer, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    return total, layers, inclusive


def sampled_profile(py_spy: str, seconds: int, options: Options, out: Path) -> dict[str, Any]:
    """py-spy on the live full and bare-FastAPI servers while wrk loads them."""
    bench_json = RESULTS_DIR / "health_overhead.json"
    measured = json.loads(bench_json.read_text()) if bench_json.exists() else None
    result: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "py_spy": subprocess.run([py_spy, "--version"], capture_output=True, text=True, check=True).stdout.strip(),
        "method": f"py-spy record --rate 250 (blocking) of the event-loop thread while wrk -t1 "
        f"-c{options.connections} runs {seconds} s; each sample goes to the innermost matching layer; "
        "us = share x us_per_request of the unprofiled benchmark (bench/results/health_overhead.json)",
        "benchmark_used_for_us": {k: measured[k] for k in ("generated_at", "source")} if measured else None,
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="health-spy-", dir=options.tmp_root) as tmp:
        workdir = Path(tmp)
        result["source"] = source_info(workdir)
        with running_servers(workdir, options, ("full", "fastapi")) as servers:
            for kind, server in servers.items():
                run_wrk(server, options.warmup, options)
                collapsed = workdir / f"{kind}.collapsed"
                record = ["record", "--pid", str(server.process.pid), "--rate", "250", "--duration", str(seconds + 1)]
                spy = subprocess.Popen(
                    [*pin(options.wrk_cpu, options), py_spy, *record, "--format", "raw", "-o", str(collapsed)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                wrk = run_wrk(server, seconds, options)
                spy.wait(timeout=seconds + 60)
                total, layers, inclusive = _collapsed_main_thread(collapsed)
                us = measured["servers"][kind]["us_per_request"] if measured else 1e6 / wrk["rps"]
                result["servers"][kind] = {
                    "samples": total,
                    "rps_while_profiled": wrk["rps"],
                    "us_per_request_unprofiled": us,
                    "layers": {
                        name: {
                            "share": round(layers.get(name, 0) / total, 4),
                            "us": round(layers.get(name, 0) / total * us, 1),
                        }
                        for name in sorted(layers, key=lambda name: -layers[name])
                    },
                    "details": {
                        name: {
                            "share": round(sum(n for f, n in inclusive.items() if needle in f) / total, 4),
                            "us": round(sum(n for f, n in inclusive.items() if needle in f) / total * us, 1),
                        }
                        for name, needle in DETAILS.items()
                    },
                }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    full, bare = result["servers"]["full"], result["servers"]["fastapi"]
    print(f"\nµs/request by innermost layer (full {full['samples']} samples, fastapi {bare['samples']} samples)")
    print(f"{'full':>8}{'fastapi':>9}{'diff':>8}  layer")
    for name in full["layers"]:
        a, b = full["layers"][name]["us"], bare["layers"].get(name, {"us": 0.0})["us"]
        print(f"{a:>8.1f}{b:>9.1f}{a - b:>+8.1f}  {name}")
    print(
        f"{full['us_per_request_unprofiled']:>8.1f}{bare['us_per_request_unprofiled']:>9.1f}"
        f"{full['us_per_request_unprofiled'] - bare['us_per_request_unprofiled']:>+8.1f}  total"
    )
    print("\ndetails (inclusive, full app):")
    for name, value in full["details"].items():
        if value["share"] > 0:
            print(f"{value['us']:>8.1f} µs  {name}")
    return result


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--serve", choices=KINDS, help="run one server (used by the benchmark itself)")
    parser.add_argument("--port", type=int, help="port for --serve (127.0.0.1 only)")
    parser.add_argument("--workdir", type=Path, help="scratch directory for --serve")
    parser.add_argument("--profile", action="store_true", help="profile the full app in process instead")
    parser.add_argument("--py-spy", metavar="PATH", help="sample the live full and bare servers with this py-spy")
    parser.add_argument("--requests", type=int, default=20_000, help="requests to profile (default 20000)")
    parser.add_argument("--top", type=int, default=40, help="functions to list in the profile")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per server (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--tmp-root",
        default=default_tmp_root(),
        help="where the scratch directory (SQLite file, app log) goes (default: /dev/shm when present)",
    )
    parser.add_argument(
        "--ref",
        help="measure this git ref's src/ (exported with git archive) instead of the working tree, e.g. HEAD",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)

    if args.serve:
        if args.port is None or args.workdir is None:
            parser.error("--serve needs --port and --workdir")
        serve(args.serve, args.port, args.workdir)
        return 0
    with tempfile.TemporaryDirectory(prefix="health-src-") as snapshot:
        if args.ref:
            use_ref(args.ref, Path(snapshot))
        return run(args)


def run(args: argparse.Namespace) -> int:
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
        tmp_root=args.tmp_root,
    )
    if args.py_spy:
        sampled_profile(args.py_spy, 10, options, args.out or RESULTS_DIR / "health_pyspy.json")
        return 0
    benchmark(options, args.out or RESULTS_DIR / "health_overhead.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
