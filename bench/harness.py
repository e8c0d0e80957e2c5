"""The benchmarks' shared harness: everything that is not specific to one benchmark.

* where the app's state is reached (``app_runtime``, ``auth_kit``: the only two places),
  the benchmark apps' settings, logging and uvicorn set-up, silencing the access log;
* server processes: a free ``127.0.0.1`` port, the ``--serve`` command line, readiness,
  stopping, CPU pinning (``taskset``) and the CPU time of a process's threads;
* the measured source: ``--ref`` (a commit's ``src/`` exported with ``git archive``),
  ``measured_source()`` (commit, local changes, file hashes), and the machine's facts;
* load: ``wrk`` runs and their parsing, a keep-alive HTTP client, a raw HTTP/1.1 connection
  for asyncio load generators, a scratch PostgreSQL database;
* rounds and statistics: rotated interleaved rounds, medians, summaries, bootstrap
  intervals, paired differences; and writing a result's JSON.

Profiling (py-spy, collapsed stacks, cProfile, direct ASGI calls) is in ``profiling.py``.

smilingsteps ships no ``py.typed`` marker, so its imports carry
``type: ignore[import-untyped, unused-ignore]`` (the second code keeps ``mypy --strict``
quiet once it does ship one).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import http.client
import io
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TextIO, TypeVar
from urllib.parse import urlsplit, urlunsplit

HOST = "127.0.0.1"  # loopback only, always
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# Set by --ref: a `git archive` of that ref's src/, imported instead of the working tree.
SOURCE: dict[str, Any] = {"ref": None, "src": None}
# Identical for every uvicorn server of every benchmark (and the same choices as `smilingsteps serve`).
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
# A rate-limit quota GCRA never denies (a burst of up to 1e8 is allowed), with an emission interval
# (345.6 s) long enough that every key Redis stores can still be counted after a run.
NEVER_DENY = "100000000/400000d"

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")


# --------------------------------------------------------------------------
# The app's state: the only places a benchmark reaches into it
# --------------------------------------------------------------------------


def app_runtime(app: Any) -> Any:
    """The app's one typed state (settings, database, clock, domain parts), built by create_app."""
    from smilingsteps.platform.runtime import runtime_of_app  # type: ignore[import-untyped, unused-ignore]

    return runtime_of_app(app)


def auth_kit(app: Any) -> Any:
    """The app's accounts toolkit (token codec, revocations, cookies): the accounts part of its runtime."""
    from smilingsteps.accounts.security import auth_kit_of  # type: ignore[import-untyped, unused-ignore]

    return auth_kit_of(app_runtime(app))


# --------------------------------------------------------------------------
# The benchmark apps: settings, logging, the uvicorn server
# --------------------------------------------------------------------------


def sqlite_settings(db_file: Path, **fields: Any) -> Any:
    """`Settings` for a benchmark app on SQLite, JSON log at info level; `fields` add or override."""
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

    base: dict[str, Any] = {
        "APP_ENV": "test",
        "DATABASE_URL": f"sqlite+aiosqlite:///{db_file.as_posix()}",
        "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "LOG_DIR": None,
    }
    return Settings(**{**base, **fields})


def logged_app(settings: Any, log: Path | TextIO) -> Any:
    """`create_app(settings)`, its JSON log lines (one access-log line per request) going to `log`."""
    from smilingsteps.app import create_app  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform.logging import configure_logging  # type: ignore[import-untyped, unused-ignore]

    configure_logging(settings, stream=log.open("a", encoding="utf-8") if isinstance(log, Path) else log)
    return create_app(settings)


def run_uvicorn(app: Any, port: int, *, draining: bool = True) -> None:
    """Serve `app` on 127.0.0.1:`port` until SIGTERM with UVICORN_SETTINGS: on the production server
    class (graceful drain, gc.freeze after start-up), or on plain `uvicorn.Server`."""
    import uvicorn

    config = uvicorn.Config(app, host=HOST, port=port, **UVICORN_SETTINGS)
    if not draining:
        uvicorn.Server(config).run()
        return
    from smilingsteps.platform.server import DrainingServer  # type: ignore[import-untyped, unused-ignore]

    DrainingServer(config, drain=lambda: None, delay=0).run()


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


def log_statuses(log_file: Path, *needles: str) -> dict[str, int]:
    """Access-log lines (event "request") containing every needle, counted by status."""
    counts: dict[str, int] = {}
    if not log_file.exists():
        return counts
    with log_file.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"event":"request"' in line and all(needle in line for needle in needles):
                found = re.search(r'"status":\s*(\d+)', line)
                key = found.group(1) if found else "?"
                counts[key] = counts.get(key, 0) + 1
    return counts


def server_errors(log_file: Path, level: str = "error") -> dict[str, Any]:
    """`level` lines (error by default) of a server's JSON log: counted by event and exception, the first
    few kept."""
    if not log_file.exists():
        return {"lines": 0}
    counts: Counter[str] = Counter()
    examples: list[str] = []
    with log_file.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if f'"level":"{level}"' not in line.replace(" ", ""):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                counts["unparsed"] += 1
                continue
            text = str(event.get("exception", "")).strip()
            counts[f"{event.get('event')}: {text.splitlines()[-1][:200] if text else ''}"] += 1
            if len(examples) < 2:
                examples.append(str(event.get("exception", ""))[-4000:])
    return {"lines": sum(counts.values()), "by_event": dict(counts.most_common()), "examples": examples}


# --------------------------------------------------------------------------
# Options, CPUs and the command line
# --------------------------------------------------------------------------


@dataclass
class Load:
    """What every load benchmark is told: its rounds and where its processes run."""

    duration: float = 8
    warmup: float = 2
    rounds: int = 3
    connections: int = 32
    server_cpu: int = 0
    client_cpu: int = 1  # the load generator (wrk, or the benchmark's own)
    pinned: bool = True
    tmp_root: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, **fields: Any) -> Self:
        """Every field with an argument of the same name that is not None (`add_load_arguments`,
        `--tmp-root`, a subclass's own), the CPUs, and `fields`. With two CPUs or more, the server
        gets the first and the load generator the second."""
        cpus = sorted(os.sched_getaffinity(0))
        found = {
            f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None
        }
        cpu_plan = {"server_cpu": cpus[0], "client_cpu": cpus[1] if len(cpus) > 1 else cpus[0], "pinned": len(cpus) > 1}
        return cls(**{**found, **cpu_plan, **fields})

    def taskset(self, cpu: int) -> list[str]:
        """The command prefix that pins a child process to `cpu` (nothing when not pinning)."""
        return ["taskset", "-c", str(cpu)] if self.pinned and shutil.which("taskset") else []

    @contextmanager
    def this_process_on(self, cpu: int) -> Iterator[None]:
        """Run this process on `cpu` for a while (a client on its core, or in-process timing)."""
        before = os.sched_getaffinity(0)
        if self.pinned:
            os.sched_setaffinity(0, {cpu})
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


def default_tmp_root() -> str | None:
    """tmpfs when there is one: the apps write many MB of log per run, and disk write-back
    (its interrupts and kworkers) otherwise lands on random cores mid-run."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def parser(doc: str | None, serve: Sequence[str] = ()) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of `doc`; with `serve`, the
    `--serve KIND --port N --workdir DIR` arguments that run one server (`serve_args`)."""
    result = argparse.ArgumentParser(description=doc.split("\n\n", 1)[0] if doc else None)
    if serve:
        result.add_argument("--serve", choices=serve, help="run one server (used by the benchmark itself)")
        result.add_argument("--port", type=int, help="port for --serve (127.0.0.1 only)")
        result.add_argument("--workdir", type=Path, help="scratch directory for --serve")
    return result


def check_serve(parser: argparse.ArgumentParser, args: argparse.Namespace, *more: str) -> bool:
    """True when this process is to run one server; `more` names further arguments it needs."""
    if not args.serve:
        return False
    needed = ("port", "workdir", *more)
    if any(getattr(args, name) is None for name in needed):
        parser.error("--serve needs " + ", ".join(f"--{name}" for name in needed))
    return True


def add_load_arguments(
    parser: argparse.ArgumentParser,
    *,
    duration: float,
    warmup: float,
    rounds: int,
    connections: int,
    number: type[int] | type[float] = int,
    what: str = "",
) -> None:
    """--duration, --warmup, --rounds, --connections (`what` prefixes their help)."""
    parser.add_argument("--duration", type=number, default=duration, help=f"{what}seconds per run (default {duration})")
    parser.add_argument("--warmup", type=number, default=warmup, help=f"{what}warm-up seconds (default {warmup})")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"{what}interleaved rounds (default {rounds})")
    parser.add_argument(
        "--connections", type=int, default=connections, help=f"{what}concurrent connections (default {connections})"
    )


def add_output_arguments(parser: argparse.ArgumentParser, out: Path | None) -> None:
    """--tmp-root (the scratch directory's root) and --out (the JSON written)."""
    parser.add_argument(
        "--tmp-root", default=default_tmp_root(), help="scratch directory root (default: /dev/shm when present)"
    )
    where = out.relative_to(REPO_DIR) if out else "bench/results/, the file of the mode run"
    parser.add_argument("--out", type=Path, default=out, help=f"JSON output path (default: {where})")


def add_ref_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ref", help="measure this commit's src/ (git archive), not the working tree (which others may be editing)"
    )


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How this run was started, for the JSON."""
    return " ".join(
        [f".tools/bin/uv run --frozen python bench/{script}", *(argv if argv is not None else sys.argv[1:])]
    )


# --------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    output: Path
    workdir: Path

    @property
    def label(self) -> str:
        return self.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment minus every smilingsteps setting (so only explicit ones apply), the --ref
    source on PYTHONPATH, and `extra`."""
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

    names = set(Settings.model_fields)
    env = {key: value for key, value in os.environ.items() if key not in names}
    if SOURCE["src"] is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE["src"], env.get("PYTHONPATH", "")]))
    return {**env, **(extra or {})}


def start_server(
    script: str,
    serve: Sequence[str],
    name: str,
    workdir: Path,
    pin: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Server:
    """`python SCRIPT --serve ... --port P --workdir DIR` in its own process (after `pin`, a taskset
    prefix), its output in `DIR/NAME-server.out`."""
    port = free_port()
    output = workdir / f"{name}-server.out"
    command = [*pin, sys.executable, str(Path(script).resolve()), "--serve", *serve]
    command += ["--port", str(port), "--workdir", str(workdir)]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=child_env(env))
    return Server(name, port, process, output, workdir)


def wait_ready(server: Server, timeout: float = 20.0, interval: float = 0.05) -> None:
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


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@contextmanager
def running_servers(
    start: Callable[[str], Server], names: Iterable[str], timeout: float = 20.0
) -> Iterator[dict[str, Server]]:
    """`start(name)` for every name, then wait until all are ready; all are stopped at the end."""
    servers: dict[str, Server] = {}
    try:
        for name in names:
            servers[name] = start(name)
        for server in servers.values():
            wait_ready(server, timeout)
        yield servers
    finally:
        for server in servers.values():
            stop_server(server)


def threads_cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far (ns): the event loop and any worker threads."""
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


def process_cpu_ns(pids: Iterable[int]) -> dict[int, int]:
    """CPU time (ns) of each process's main thread, for those still there."""
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


# --------------------------------------------------------------------------
# The measured source and the machine
# --------------------------------------------------------------------------


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def use_ref(ref: str, into: Path) -> None:
    """Export `ref`'s src/ into `into` and import smilingsteps from there (here and in the servers)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "src"], cwd=REPO_DIR, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    SOURCE.update(ref=ref, src=str(into / "src"))
    sys.path.insert(0, SOURCE["src"])


def use_worktree_snapshot(into: Path) -> None:
    """Copy the working tree's src/ (local changes and untracked files included) into `into` and import
    smilingsteps from there (here and in the servers): a long run measures the tree as it was when it
    started, whatever others edit meanwhile (and what `--ref` cannot export: files not committed yet)."""
    shutil.copytree(REPO_DIR / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    SOURCE.update(src=str(into / "src"), snapshot=True)
    sys.path.insert(0, SOURCE["src"])


@contextmanager
def source_of(ref: str | None, *, snapshot: bool = False) -> Iterator[None]:
    """Measure `ref`'s src/ (exported for the duration), or the working tree when `ref` is None: as it
    is, or with `snapshot` a copy of it taken now (`use_worktree_snapshot`)."""
    if ref is None and not snapshot:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="bench-src-") as copy:
        if ref is None:
            use_worktree_snapshot(Path(copy))
        else:
            use_ref(ref, Path(copy))
        yield


def sha256_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def measured_source(files: Sequence[str] = ()) -> dict[str, Any]:
    """Which code a benchmark measured: the package it imported, the commit (or --ref), whether
    src/ had local changes, and short hashes of `files` (paths inside the package)."""
    import smilingsteps  # type: ignore[import-untyped, unused-ignore]

    package = Path(smilingsteps.__file__).parent
    info: dict[str, Any] = {"imported_from": str(package)}
    if SOURCE["ref"] is not None:
        info["ref"] = SOURCE["ref"]
        info["commit"] = git("rev-parse", "--short", SOURCE["ref"]) or "unknown"
        info["src_differs_from_commit"] = False
    else:
        info["commit"] = git("rev-parse", "--short", "HEAD") or "unknown"
        changed = git("status", "--porcelain", "--", "src")
        info["src_differs_from_commit"] = bool(changed)
        if SOURCE.get("snapshot"):
            info["working_tree_snapshot"] = (
                "src/ copied when the run started, local changes and untracked files included"
            )
        if changed:
            info["src_changes"] = changed.splitlines()
    if files:
        info["files_sha256"] = {name: sha256_prefix(package / name) for name in files if (package / name).exists()}
    return info


def version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(distribution)
    except PackageNotFoundError:
        return "not installed"


def cpu_model_proc_cpuinfo() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_model() -> str:
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    model = cpu_model_proc_cpuinfo()
    return model if model != "unknown" else platform.processor() or "unknown"


WEB_STACK = ("uvicorn", "fastapi", "starlette", "httptools", "uvloop", "structlog", "pydantic", "orjson")


def machine(versions: Sequence[str] = (), *, proc_cpuinfo: bool = False) -> dict[str, Any]:
    """CPUs, RAM, kernel, Python, wrk, and the versions of the web stack plus `versions`."""
    import psutil

    wrk = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        if shutil.which("wrk")
        else None
    )
    wrk_text = (wrk.stdout or wrk.stderr) if wrk else ""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "ram_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in (*WEB_STACK, *versions)},
        "wrk": wrk_text.splitlines()[0] if wrk_text else "unknown",
    }
    if proc_cpuinfo:
        info["cpu_model_proc_cpuinfo"] = cpu_model_proc_cpuinfo()
    return info


# --------------------------------------------------------------------------
# Load: wrk, HTTP clients, a scratch PostgreSQL database
# --------------------------------------------------------------------------


def require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            package = {"taskset": "util-linux", "redis-cli": "redis-tools"}.get(tool, tool)
            raise SystemExit(f"{tool} not found (Debian: apt-get install -y {package})")


def run_wrk(url: str, seconds: float, load: Load, *args: str) -> dict[str, Any]:
    """`wrk -t1 -cN -dSs --latency ARGS URL` on the load generator's CPU, parsed."""
    command = [*load.taskset(load.client_cpu), "wrk", "-t1", f"-c{load.connections}", f"-d{seconds}s", "--latency"]
    done = subprocess.run([*command, *args, url], capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if rps is None or total is None:
        raise RuntimeError(f"could not parse wrk output:\n{text}")
    distribution = re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    counts = (int(x) for x in errors.groups()) if errors else (0, 0, 0, 0)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2), total.group(3)) / 1000,
        "latency_ms": {f"p{pct}": _ms(value, unit) for pct, value, unit in distribution},
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"), counts, strict=True)),
    }


def wrk_errors(run: Mapping[str, Any]) -> int:
    return int(run["non_2xx"]) + sum(int(n) for n in run["socket_errors"].values())


def wrk_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rounds of one server: rps per round, median/min/max, µs per request (1e6 / median rps:
    the server's time per request while saturated), and the median of the rounds' p50 and p99."""
    rps = [run["rps"] for run in runs]
    median_rps = statistics.median(rps)
    return {
        "rounds_rps": rps,
        "median_rps": round(median_rps, 1),
        "min_rps": min(rps),
        "max_rps": max(rps),
        "us_per_request": round(1e6 / median_rps, 2),
        "latency_ms_median_of_rounds": {
            pct: round(statistics.median(run["latency_ms"][pct] for run in runs), 3)
            for pct in ("p50", "p99")
            if all(pct in run["latency_ms"] for run in runs)
        },
    }


def print_wrk_table(servers: Mapping[str, Mapping[str, Any]], width: int = 12) -> None:
    print(f"{'server':<{width}}{'median rps':>12}{'min-max rps':>20}{'µs/request':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for name, info in servers.items():
        lat = info["latency_ms_median_of_rounds"]
        span = f"{info['min_rps']:.0f}-{info['max_rps']:.0f}"
        print(
            f"{name:<{width}}{info['median_rps']:>12.1f}{span:>20}{info['us_per_request']:>12.2f}"
            f"{lat.get('p50', float('nan')):>9.2f}{lat.get('p99', float('nan')):>9.2f}"
        )


class Client:
    """Keep-alive HTTP/1.1 to 127.0.0.1:`port` (reconnects once if the server closed the connection)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.connection = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json"} if payload is not None else {}
        all_headers.update(headers or {})
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=payload, headers=all_headers)
                response = self.connection.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


def request(
    port: int, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request on a connection of its own."""
    client = Client(port, timeout)
    try:
        return client.request(method, path, body, headers)
    finally:
        client.close()


CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Connection:
    """One raw keep-alive HTTP/1.1 connection over asyncio streams, for a load generator in this process
    (much cheaper per request than an HTTP library). Responses must carry Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Self:
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


# --------------------------------------------------------------------------
# An asyncio load generator with CPU accounting (for requests wrk cannot make, e.g. each with its
# own body): the server's threads, a PostgreSQL database's backends and shared processes, this
# process, and how busy each core was
# --------------------------------------------------------------------------

PROBLEM_TYPE = re.compile(rb'"type"\s*:\s*"[^"]*/([a-z0-9-]+)"')
PG_APPLICATION = "smilingsteps"  # the application_name of the app's database connections


@dataclass
class Ledger:
    """The tags of the requests a stream handed out, and of those answered 201."""

    attempted: set[Any] = field(default_factory=set)
    successes: list[Any] = field(default_factory=list)


class Stream:
    """Raw requests (with a tag each) handed out in order, each once, or round and round with `cycle`."""

    def __init__(self, items: list[tuple[bytes, Any]], *, cycle: bool = False, ledger: Ledger | None = None) -> None:
        self.items = items
        self.cycle = cycle
        self.ledger = ledger
        self.next_index = 0

    def take(self) -> tuple[bytes, Any] | None:
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


@dataclass
class Target:
    """What a load phase sends to and accounts for."""

    ports: list[int]  # one per server instance; connections are spread over them in turn, like a load balancer
    server_pids: list[int]
    admin: Any = None  # asyncpg connection to the cluster (pg_stat_activity)
    database: str = ""


def outcome(status: int, body: bytes) -> str:
    """The status, and for an error the problem type's last path segment (RFC 9457 bodies)."""
    if status < 400:
        return str(status)
    found = PROBLEM_TYPE.search(body)
    return f"{status} {found.group(1).decode() if found else '?'}"


async def _pg_processes(target: Target) -> tuple[list[int], list[int]]:
    """The database's backends, and PostgreSQL's shared processes (WAL writer, checkpointer, ...)."""
    rows = await target.admin.fetch(
        "SELECT pid, datname, application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    )
    mine = [r["pid"] for r in rows if r["datname"] == target.database and r["application_name"] == PG_APPLICATION]
    return mine, [r["pid"] for r in rows if r["datname"] is None]


def _cpu_snapshot(target: Target, backends: list[int], shared: list[int]) -> dict[str, Any]:
    return {
        "server": sum(threads_cpu_ns(pid) for pid in target.server_pids),
        "client": time.process_time(),
        "backends": process_cpu_ns(backends),
        "shared": process_cpu_ns(shared),
        "cores": cores_busy(),
    }


def _cpu_between(before: dict[str, Any], after: dict[str, Any], backends_after: list[int]) -> dict[str, Any]:
    """Seconds of CPU used between two snapshots; backends that appeared meanwhile count from their start."""
    backends = process_cpu_ns(backends_after) | after["backends"]
    cores = {}
    for name, (busy, total) in after["cores"].items():
        busy0, total0 = before["cores"].get(name, (busy, total))
        cores[name] = round((busy - busy0) / max(1, total - total0), 3)
    return {
        "server_s": (after["server"] - before["server"]) / 1e9,
        "client_s": after["client"] - before["client"],
        "pg_backends_s": sum(ns - before["backends"].get(pid, 0) for pid, ns in backends.items()) / 1e9,
        "pg_backends": len(backends),
        "pg_shared_s": sum(ns - before["shared"].get(pid, ns) for pid, ns in after["shared"].items()) / 1e9,
        "core_busy_fraction": cores,
    }


async def load_phase(
    target: Target,
    kind: str,
    stream: Stream,
    connections: int,
    duration: float,
    *,
    record: bool = True,
    success: str | None = None,
    check: Callable[[int, bytes], bool] | None = None,
) -> dict[str, Any]:
    """`connections` workers send requests from `stream` until `duration` has passed (or it runs dry).

    Reports requests and 2xx per second, outcomes, latency percentiles, CPU per request (server, the
    database's backends, PostgreSQL's shared processes, this process), busy fractions, and the load
    from outside the run. With `success` (e.g. "booking"), 201s per second and CPU per 201 as well.
    With `check(status, body)`, the responses it refuses are counted (`failed_check`)."""
    conns = [await Connection.open(target.ports[i % len(target.ports)]) for i in range(connections)]
    backends, shared = await _pg_processes(target)
    latencies: list[int] = []
    outcomes: Counter[str] = Counter()
    failed_check = 0
    ledger = stream.ledger
    before = _cpu_snapshot(target, backends, shared)
    started = time.perf_counter()
    deadline = started + duration
    last_done = started

    async def worker(conn: Connection) -> None:
        nonlocal last_done, failed_check
        while time.perf_counter() < deadline:
            item = stream.take()
            if item is None:
                return
            raw, tag = item
            sent = time.perf_counter_ns()
            status, body = await conn.send(raw)
            latencies.append(time.perf_counter_ns() - sent)
            outcomes[outcome(status, body)] += 1
            if check is not None and not check(status, body):
                failed_check += 1
            if status == 201 and ledger is not None and tag is not None:
                ledger.successes.append(tag)
            last_done = time.perf_counter()

    await asyncio.gather(*(worker(conn) for conn in conns))
    after = _cpu_snapshot(target, backends, shared)
    backends_after, _ = await _pg_processes(target)
    for conn in conns:
        await conn.close()
    if not record:
        return {}
    elapsed = last_done - started
    requests = len(latencies)
    cpu = _cpu_between(before, after, backends_after)

    def per(seconds: float, count: int) -> float:
        return round(seconds * 1e6 / max(1, count), 1)

    result: dict[str, Any] = {
        "kind": kind,
        "connections": connections,
        "seconds": round(elapsed, 3),
        "requests": requests,
        "requests_per_second": round(requests / elapsed, 1),
        "ok_per_second": round(sum(n for key, n in outcomes.items() if key.startswith("2")) / elapsed, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "latency_ms": percentiles(latencies),
        "cpu_s": {key: round(value, 4) if isinstance(value, float) else value for key, value in cpu.items()},
        "server_cpu_us_per_request": per(cpu["server_s"], requests),
        "pg_cpu_us_per_request": per(cpu["pg_backends_s"], requests),
        "pg_shared_cpu_us_per_request": per(cpu["pg_shared_s"], requests),
        "client_cpu_us_per_request": per(cpu["client_s"], requests),
        "server_busy_fraction": round(cpu["server_s"] / elapsed, 3),
        # Cores busy with anything but the server, the database's backends, PostgreSQL's shared processes
        # and this load generator: other work on the (shared) machine; about 0 in a clean run.
        "other_load_cores": round(
            cpu["core_busy_fraction"].get("cpu", 0.0) * (len(cpu["core_busy_fraction"]) - 1)
            - (cpu["server_s"] + cpu["pg_backends_s"] + cpu["pg_shared_s"] + cpu["client_s"]) / elapsed,
            3,
        ),
        "pg_busy_fraction": round(cpu["pg_backends_s"] / elapsed, 3),
    }
    if check is not None:
        result["failed_check"] = failed_check
    if success:
        successes = outcomes.get("201", 0)
        result[f"{success}s_per_second"] = round(successes / elapsed, 1)
        result[f"server_cpu_us_per_{success}"] = per(cpu["server_s"], successes)
        result[f"pg_cpu_us_per_{success}"] = per(cpu["pg_backends_s"], successes)
    return result


def phase_summary(runs: Sequence[Mapping[str, Any]], success: str | None = None) -> dict[str, Any]:
    """The rounds of one kind of `load_phase`: medians over rounds (latency: of the rounds' percentiles)."""

    def median_of(rows: Sequence[Mapping[str, Any]], key: str, digits: int = 1) -> float:
        values = [r[key] for r in rows if key in r]
        return round(round(statistics.median(values), 1), digits) if values else float("nan")

    latencies = [r["latency_ms"] for r in runs]
    cpu = ("server_cpu_us_per_request", "pg_cpu_us_per_request", "pg_shared_cpu_us_per_request")
    summary: dict[str, Any] = {
        "rounds": len(runs),
        "requests_per_second": median_of(runs, "requests_per_second"),
        "rounds_requests_per_second": [r["requests_per_second"] for r in runs],
        **{f"{p}_ms": median_of(latencies, p, 2) for p in ("p50", "p95", "p99")},
        **{key: median_of(runs, key) for key in cpu},
        **{
            key: median_of(runs, key)
            for key in ("client_cpu_us_per_request", "server_busy_fraction", "pg_busy_fraction")
        },
        "other_load_cores_max": max((r["other_load_cores"] for r in runs), default=float("nan")),
        "outcomes": dict(sum((Counter(r["outcomes"]) for r in runs), Counter())),
    }
    if success and any(f"{success}s_per_second" in r for r in runs):
        summary[f"{success}s_per_second"] = median_of(runs, f"{success}s_per_second")
        summary[f"rounds_{success}s_per_second"] = [r[f"{success}s_per_second"] for r in runs]
        summary[f"server_cpu_us_per_{success}"] = median_of(runs, f"server_cpu_us_per_{success}")
        summary[f"pg_cpu_us_per_{success}"] = median_of(runs, f"pg_cpu_us_per_{success}")
    return summary


def postgres_url(admin_url: str, database: str, *, driver: str = "postgresql+asyncpg") -> str:
    """`admin_url` pointed at `database`; refuses anything but a loopback server."""
    parts = urlsplit(admin_url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"--admin-url must point at a loopback address, not {parts.hostname!r}")
    return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))


@asynccontextmanager
async def scratch_database(admin_url: str, prefix: str) -> AsyncIterator[str]:
    """A new database `PREFIX_<random>` on the (loopback) server, dropped at the end, also after a failure."""
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    postgres_url(admin_url, "check")
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    print(f"database {name}", flush=True)
    try:
        yield name
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        print(f"dropped {name}", flush=True)


# --------------------------------------------------------------------------
# Rounds and statistics
# --------------------------------------------------------------------------


def rotated(items: Sequence[K], shift: int) -> list[K]:
    """`items` starting at `shift` (mod len): round k of interleaved rounds runs them in this order,
    so a drift of the machine spreads over all of them."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def rounds(names: Sequence[K], count: int) -> Iterator[tuple[int, K]]:
    """(round, name) for `count` interleaved rounds (numbered from 1), the order rotating each round."""
    for index in range(count):
        for name in rotated(names, index):
            yield index + 1, name


def interleaved(
    cases: Mapping[K, Callable[[], S]], runs: int, warmup: int = 0, progress: str | None = None
) -> dict[K, list[S]]:
    """Each case's sample (what it returns) once per round, the order rotating; the first `warmup`
    rounds are discarded. With `progress`, a line every 10 measured rounds."""
    names = list(cases)
    samples: dict[K, list[S]] = {name: [] for name in names}
    for index in range(warmup + runs):
        for name in rotated(names, index):
            sample = cases[name]()
            if index >= warmup:
                samples[name].append(sample)
        done = index + 1 - warmup
        if progress and done > 0 and done % 10 == 0:
            print(f"{progress}: {done}/{runs} runs", flush=True)
    return samples


def summary(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """n, median, p95, mean, stdev, min, max."""
    ordered = sorted(values)
    p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18] if len(ordered) > 1 else ordered[0]
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), digits),
        "p95": round(p95, digits),
        "mean": round(statistics.fmean(ordered), digits),
        "stdev": round(statistics.stdev(ordered), digits) if len(ordered) > 1 else 0.0,
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
    }


def median_diff_ci(a: Sequence[float], b: Sequence[float], iterations: int = 4000) -> tuple[float, float]:
    """Bootstrap 95 % interval of median(a) - median(b) (fixed seed: the same data gives the same interval)."""
    rng = random.Random(20261124)
    diffs = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
        for _ in range(iterations)
    )
    return diffs[int(0.025 * iterations)], diffs[int(0.975 * iterations) - 1]


def median_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """median(a) - median(b), its bootstrap interval, and the ratio of medians."""
    low, high = median_diff_ci(a, b)
    return {
        "median_difference": round(statistics.median(a) - statistics.median(b), 2),
        "bootstrap_95pct_interval": [round(low, 2), round(high, 2)],
        "ratio": round(statistics.median(a) / statistics.median(b), 4),
    }


def differences(values: Mapping[str, Sequence[float]], comparisons: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """Each (variant, baseline, meaning): difference of medians, the per-round paired differences, ratio."""
    result: dict[str, Any] = {}
    for name, base, meaning in comparisons:
        paired = [a - b for a, b in zip(values[name], values[base], strict=True)]
        result[f"{name} - {base}"] = {
            "meaning": meaning,
            "us": round(statistics.median(values[name]) - statistics.median(values[base]), 2),
            "us_per_round": [round(x, 2) for x in paired],
            "ratio": round(statistics.median(values[name]) / statistics.median(values[base]), 3),
        }
    return result


def percentiles(latencies_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p95/p99, max and mean in ms."""
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


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def previous_result(name: str) -> dict[str, Any] | None:
    """A committed result (bench/results/NAME), e.g. the benchmark whose µs a profile uses."""
    path = RESULTS_DIR / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_json(out: Path, report: Mapping[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwritten {out.relative_to(REPO_DIR) if out.is_relative_to(REPO_DIR) else out}")
