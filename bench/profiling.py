"""Profiling helpers shared by the benchmarks (the rest of the harness is ``harness.py``).

* py-spy: the ``record`` command, its raw (collapsed) output read back as stacks, and the layers
  of the app's middleware stack a sample is charged to (``stack_layer``); ``spy_on`` samples a
  live server while a load runs and reports the layers' shares and µs;
* ``FrameSampler``: a sampling profiler inside a server process, writing py-spy's raw format (for
  machines without py-spy);
* in process: a uvicorn-like ASGI scope and direct ASGI calls (``call_asgi``), and cProfile
  statistics by function and by source file.
"""

from __future__ import annotations

import asyncio
import pstats
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import harness

# --------------------------------------------------------------------------
# py-spy: recording and reading back
# --------------------------------------------------------------------------


def py_spy_version(py_spy: Sequence[str]) -> str:
    return subprocess.run([*py_spy, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def py_spy_record(
    py_spy: Sequence[str], pid: int, out: Path, *, rate: int, seconds: float, threads: bool = False
) -> list[str]:
    """`py-spy record` of `pid` (blocking: the process is paused per sample) in raw (collapsed) format."""
    command = [*py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--duration", str(seconds)]
    return [*command, "--format", "raw", *(["--threads"] if threads else []), "--output", str(out)]


def collapsed(path: Path) -> Iterator[tuple[list[str], int]]:
    """(frames outermost first, sample count) per line of py-spy's raw output."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            yield stack.split(";"), int(count)


def normalise(frame: str) -> str:
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


def event_loop_stacks(path: Path) -> Iterator[tuple[list[str], int]]:
    """The event-loop thread's samples of a uvicorn server (normalised frames): other threads, such
    as aiosqlite's idle worker that py-spy cannot tell from a busy one, are left out."""
    for frames, count in collapsed(path):
        if any("Runner.run (asyncio/runners.py" in frame for frame in frames):
            yield [normalise(frame) for frame in frames], count


def shares(counts: Mapping[str, int], total: int, us: float) -> dict[str, dict[str, float]]:
    """Each name's share of `total` samples, and that share of `us` µs, largest first."""
    return {
        name: {"share": round(n / total, 4), "us": round(n / total * us, 1)}
        for name, n in sorted(counts.items(), key=lambda item: -item[1])
    }


class FrameSampler:
    """A sampling profiler inside a server process, for machines without py-spy. A CPU-time interval
    timer (``setitimer(ITIMER_PROF)``, the process's CPU time) raises SIGPROF about `rate` times per
    CPU-second, and its handler, which Python runs in the main thread at the next bytecode boundary,
    records the main thread's Python stack: samples are spread in proportion to CPU time, and an idle
    process is not sampled. `stop()` writes the stacks in py-spy's raw (collapsed) format, so
    ``collapsed`` and ``normalise`` read them. Python frames only: time in C (asyncpg's protocol, json,
    hashing) is charged to the Python frame that called it, as with py-spy without --native. A greenlet's
    frames (SQLAlchemy's async ORM) do not link back to the coroutine that awaits them, as with py-spy.
    Start and stop it in the main thread."""

    def __init__(self, out: Path, rate: int = 200) -> None:
        self.out = out
        self.interval = 1.0 / rate
        self.counts: Counter[tuple[tuple[Any, int], ...]] = Counter()

    def _sample(self, _signum: int, frame: Any) -> None:
        stack: list[tuple[Any, int]] = []
        while frame is not None:
            stack.append((frame.f_code, frame.f_lineno))
            frame = frame.f_back
        self.counts[tuple(reversed(stack))] += 1

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_IGN)
        lines = []
        for stack, count in self.counts.items():
            frames = ";".join(f"{code.co_qualname} ({where(code.co_filename)}:{line})" for code, line in stack)
            lines.append(f"thread (0): MainThread;{frames} {count}")
        self.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# The layers of the app's middleware stack
# --------------------------------------------------------------------------

Layers = Sequence[tuple[str, tuple[str, ...]]]

# Each sample goes to the innermost frame (leaf first) that names a layer, so a
# middleware's send wrapper counts for that middleware and the route's own work
# is not charged to the middleware around it. Any `<Name>Middleware.` frame is a
# layer of its own, so middleware added later shows up without changes here.
LAYERS: Layers = [
    ("uvicorn: write the response (RequestResponseCycle.send)", ("RequestResponseCycle.send (uvicorn/",)),
    ("uvicorn: parse the request", ("HttpToolsProtocol.data_received (uvicorn/",)),
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
OUTSIDE = "uvicorn/uvloop outside the app (event loop, transport, C code)"
# The access-log line: what AccessLogMiddleware.__call__ calls directly in one of these files
# (log_request: build, redact, buffer), plus the buffered write the loop runs once per turn.
LOG_LINE = "access-log line (log_request in AccessLogMiddleware + its share of the per-loop-turn flush)"
_LOGGING_FILES = ("(smilingsteps/platform/logging.py)", "(structlog/", "(logging/__init__.py)")
LOG_FLUSH = "LogOutputs.flush (smilingsteps/platform/logging.py)"


def _named(frame: str, layers: Layers) -> str | None:
    for name, needles in layers:
        if any(needle in frame for needle in needles):
            return name
    return None


def layer_of(frame: str) -> str | None:
    """The layer of the middleware stack this frame belongs to, if any."""
    name = _named(frame, LAYERS)
    if name is not None:
        return name
    found = _MIDDLEWARE_FRAME.match(frame)
    if found:
        cls = found.group(1)
        label = f"{cls} (without its log line)" if cls == "AccessLogMiddleware" else cls
        return FRAMEWORK_MIDDLEWARE.get(cls, label)
    if frame.startswith(("FastAPI.__call__ (", "Starlette.__call__ (")):
        return FRAMEWORK_OUTSIDE
    return None


def log_line_at(frames: Sequence[str]) -> bool:
    """True when the sample is inside the access-log call AccessLogMiddleware.__call__ makes,
    or inside the per-loop-turn flush of the buffered lines."""
    if LOG_FLUSH in frames:
        return True
    for index in range(len(frames) - 2, -1, -1):
        if frames[index].startswith("AccessLogMiddleware.__call__ ("):
            return any(marker in frames[index + 1] for marker in _LOGGING_FILES)
    return False


def stack_layer(frames: Sequence[str], extra: Layers = ()) -> str:
    """The sample's layer: the access-log line, else the innermost frame naming a layer (`extra`
    checked before the stack's own layers), else the server outside the app."""
    if log_line_at(frames):
        return LOG_LINE
    for frame in reversed(frames):
        layer = _named(frame, extra) or layer_of(frame)
        if layer is not None:
            return layer
    return OUTSIDE


def spy_on(
    py_spy: Sequence[str],
    server: harness.Server,
    load: harness.Load,
    seconds: int,
    run: Callable[[harness.Server, float], dict[str, Any]],
    *,
    us: float | None,
    extra: Layers = (),
    details: Mapping[str, tuple[str, ...]],
    seen_details_only: bool = False,
) -> dict[str, Any]:
    """py-spy (250 Hz, event-loop thread) on `server` while `run(server, seconds)` loads it (after a warm-up).

    Layers as `stack_layer`; each detail is the share of samples whose stack holds all its needles
    (inclusive), listed even when no sample has it unless `seen_details_only`. µs are shares of `us`
    (the unprofiled benchmark's µs per request), else of the profiled run's 1e6 / rps."""
    run(server, load.warmup)
    out = server.workdir / f"{server.name}-{time.monotonic_ns()}.collapsed"
    command = py_spy_record(py_spy, server.pid, out, rate=250, seconds=seconds + 1)
    spy = subprocess.Popen(
        [*load.taskset(load.client_cpu), *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    result = run(server, seconds)
    spy.wait(timeout=seconds + 60)
    total = 0
    layers: Counter[str] = Counter()
    found: Counter[str] = Counter()
    for frames, count in event_loop_stacks(out):
        total += count
        layers[stack_layer(frames, extra)] += count
        for name, needles in details.items():
            if all(any(needle in frame for frame in frames) for needle in needles):
                found[name] += count
    basis = us if us is not None else 1e6 / result["rps"]
    detail_shares = shares(found, total, basis)
    return {
        "samples": total,
        "rps_while_profiled": result["rps"],
        "us_per_request_unprofiled": basis,
        "layers": shares(layers, total, basis),
        "details": {
            name: detail_shares.get(name, {"share": 0.0, "us": 0.0})
            for name in details
            if found[name] or not seen_details_only
        },
    }


def spy_report(py_spy: Sequence[str], method: str, benchmark: dict[str, Any] | None) -> dict[str, Any]:
    """The head of a py-spy result: when, which py-spy, how, and the benchmark run its µs come from."""
    return {
        "generated_at": harness.now_iso(),
        "py_spy": py_spy_version(py_spy),
        "method": method,
        "benchmark_used_for_us": {k: benchmark[k] for k in ("generated_at", "source")} if benchmark else None,
    }


def print_layers(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str]) -> None:
    """Two profiled servers side by side: µs per request by layer, their difference, and the total."""
    print(f"{names[0]:>8}{names[1]:>9}{'diff':>8}  layer")
    rows = list(a["layers"]) + [name for name in b["layers"] if name not in a["layers"]]
    for name in rows:
        x, y = a["layers"].get(name, {"us": 0.0})["us"], b["layers"].get(name, {"us": 0.0})["us"]
        print(f"{x:>8.1f}{y:>9.1f}{x - y:>+8.1f}  {name}")
    x, y = a["us_per_request_unprofiled"], b["us_per_request_unprofiled"]
    print(f"{x:>8.1f}{y:>9.1f}{x - y:>+8.1f}  total")
    print(f"details (inclusive, {names[0]}):")
    for name, value in a["details"].items():
        if value["share"] > 0:
            print(f"{value['us']:>8.1f} µs  {name}")


# --------------------------------------------------------------------------
# In process: direct ASGI calls
# --------------------------------------------------------------------------


def asgi_scope(path: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    """What uvicorn's httptools protocol hands the app for wrk's `GET path`."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": (harness.HOST, 8000),
        "client": (harness.HOST, 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", f"{harness.HOST}:8000".encode()), *headers],
        "state": {},
    }


async def call_asgi(app: Any, template: Mapping[str, Any], count: int, expect: bytes = b"") -> tuple[float, float]:
    """(wall µs, CPU µs) per request for `count` direct ASGI calls (no HTTP, no client), a loop turn
    after each as in the server (the buffered access-log line is written then). Every answer must be
    200, and the first body must contain `expect`."""
    statuses: list[int] = []
    bodies: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif message["type"] == "http.response.body" and not bodies:
            bodies.append(message.get("body", b""))

    cpu0 = time.process_time()
    started = time.perf_counter()
    for _ in range(count):
        scope = dict(template)
        scope["state"] = {}
        await app(scope, receive, send)
        await asyncio.sleep(0)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    if any(status != 200 for status in statuses) or expect not in bodies[0]:
        raise RuntimeError(f"{template['path']}: statuses {set(statuses)}, body {bodies[:1]!r}")
    return wall / count * 1e6, cpu / count * 1e6


# --------------------------------------------------------------------------
# cProfile
# --------------------------------------------------------------------------

StatsEntry = tuple[int, int, float, float, dict[tuple[str, int, str], tuple[int, int, float, float]]]


def where(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in filename:
            found = filename.split(marker, 1)[1]
            return found.split("/", 1)[1] if marker == "/lib/python3." else found
    return filename


def by_function(stats: pstats.Stats, requests: int) -> list[dict[str, Any]]:
    """Functions by own time: µs per request of own and cumulative time, calls per request."""
    raw: dict[tuple[str, int, str], StatsEntry] = stats.stats  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    for (filename, line, name), (_, calls, own, cumulative, _) in raw.items():
        rows.append(
            {
                "function": name if filename == "~" else f"{where(filename)}:{line}({name})",
                "calls_per_request": round(calls / requests, 2),
                "own_us_per_request": round(own / requests * 1e6, 2),
                "cumulative_us_per_request": round(cumulative / requests * 1e6, 2),
            }
        )
    rows.sort(key=lambda row: row["own_us_per_request"], reverse=True)
    return rows


def by_module(stats: pstats.Stats, requests: int) -> list[dict[str, Any]]:
    """Own time per source file; a built-in's time goes to the files that called it."""
    raw: dict[tuple[str, int, str], StatsEntry] = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, callers) in raw.items():
        if filename != "~":
            totals[where(filename)] = totals.get(where(filename), 0.0) + own
            continue
        for (caller_file, _, _), (_, _, caller_own, _) in callers.items():
            module = "<built-in, called from outside the app>" if caller_file == "~" else where(caller_file)
            totals[module] = totals.get(module, 0.0) + caller_own
    rows: list[dict[str, Any]] = [
        {"module": module, "own_us_per_request": round(seconds / requests * 1e6, 2)}
        for module, seconds in totals.items()
    ]
    rows.sort(key=lambda row: row["own_us_per_request"], reverse=True)
    return rows
