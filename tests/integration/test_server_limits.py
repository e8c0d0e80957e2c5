"""The server's own limits against hostile clients, on the real process (`smilingsteps serve`,
or build_server with a few slow test routes), with raw sockets on loopback as the clients.

Oversized headers get 431 before they are buffered (memory stays flat), slow or silent clients
are closed (408 when they sent part of a request) within the configured timeouts, malformed HTTP
gets a problem+json 400, and none of it touches keep-alive clients, slow handlers, slow-but-steady
uploads or WebSockets. Measured numbers are printed (`pytest -s`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import websockets

from tests.support.live_server import HOST, Answer, LiveServer, read_response, read_until_closed
from tests.support.postgres import free_port
from tests.support.processes import cli_command

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 0.5
MAX_HEADER_BYTES = 32_768  # the defaults
MAX_HEADERS = 100
# How late a close may come: the server runs hundreds of timers and log lines at once on a small machine.
MARGIN = 1.0
EARLY = 0.05  # how early: a close before the deadline would be something else than the timer

ENV = {
    "APP_ENV": "test",
    "SECRET_KEY": "k" * 48,
    "LOG_FORMAT": "json",
    "SERVER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "SERVER_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "SERVER_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
    "SHUTDOWN_READINESS_DELAY": "0",  # stop at once after the tests
}
LIMITS_SERVER = Path(__file__).resolve().parent.parent / "support" / "limits_server.py"
MIB = 1024 * 1024


def _start(command: list[str], tmp_path: Path, port: int, **env: str) -> LiveServer:
    server = LiveServer(command, tmp_path, port, **{**ENV, **env})
    try:
        server.wait_for("Uvicorn running on")  # listening (after the lifespan's startup)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`smilingsteps serve` with short timeouts."""
    port = free_port()
    server = _start(cli_command("serve", "--port", str(port)), tmp_path_factory.mktemp("serve"), port)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The same server with slow test routes (tests/support/limits_server.py)."""
    port = free_port()
    command = [sys.executable, str(LIMITS_SERVER), str(port)]
    server = _start(command, tmp_path_factory.mktemp("scripted"), port)
    yield server
    assert server.stop() == 0


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


async def exchange(port: int, request: bytes, *, timeout: float = 10.0) -> Answer:
    """Send `request` at once; whatever comes back until the server closes."""
    since = time.monotonic()  # before connecting: the server's clock cannot start earlier
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_until_closed(reader, since=since, timeout=timeout)
    finally:
        await _close(writer)


async def get_health(port: int) -> Answer:
    return await exchange(port, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")


async def monitor_health(port: int, stop: asyncio.Event) -> list[Answer]:
    """A well-behaved client: GET /health on a new connection every 0.1 s until `stop`."""
    answers = []
    while not stop.is_set():
        answers.append(await get_health(port))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return answers


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def stream_big_header(port: int, *, total: int = 8 * MIB, chunk: int = 64 * 1024) -> tuple[Answer, int]:
    """One header line of `total` bytes, streamed as fast as the server takes it, never finished.
    Returns what came back and how many bytes the client got rid of before that."""
    since = time.monotonic()  # before connecting: the server's clock cannot start earlier
    reader, writer = await asyncio.open_connection(HOST, port)
    answer = asyncio.create_task(read_until_closed(reader, since=since, timeout=30))
    block = b"a" * chunk
    sent = 0
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        while sent < total and not answer.done():
            writer.write(block)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(block)
    except ConnectionError:
        pass  # the server closed while we were still sending
    result = await answer
    await _close(writer)
    return result, sent


async def slow_headers(port: int, *, pause: float) -> Answer:
    """Slowloris: the request line and headers one byte every `pause` seconds."""
    since = time.monotonic()  # before connecting: the server's clock cannot start earlier
    reader, writer = await asyncio.open_connection(HOST, port)
    answer = asyncio.create_task(read_until_closed(reader, since=since, timeout=HEADER_TIMEOUT + 10))
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    try:
        for byte in request:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait([answer], timeout=pause)  # the client's pace, cut short by the answer
    except ConnectionError:
        pass
    result = await answer
    await _close(writer)
    return result


async def silent(port: int) -> Answer:
    """Connects and sends nothing."""
    since = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        return await read_until_closed(reader, since=since, timeout=HEADER_TIMEOUT + 10)
    finally:
        await _close(writer)


async def slow_body(port: int, path: str, *, length: int, pause: float, first: bytes = b"") -> Answer:
    """Whole headers at once, then `first`, then one body byte every `pause` seconds.
    The answer's `elapsed` counts from the last piece the client sent."""
    reader, writer = await asyncio.open_connection(HOST, port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    writer.write(head + first)
    await writer.drain()
    last_piece = since = time.monotonic()
    answer = asyncio.create_task(read_until_closed(reader, since=since, timeout=length * pause + BODY_TIMEOUT + 10))
    try:
        for _ in range(length - len(first)):
            await asyncio.wait([answer], timeout=pause)  # the client's pace, cut short by the answer
            if answer.done():
                break
            writer.write(b"1")
            await writer.drain()
            last_piece = time.monotonic()
    except ConnectionError:
        pass
    result = await answer
    await _close(writer)
    return Answer(result.data, result.closed, result.ended - last_piece, result.ended)


def problem(answer: Answer) -> dict[str, object]:
    assert answer.header("content-type") == "application/problem+json", answer.data[:500]
    assert answer.header("connection") == "close"
    assert answer.header("x-content-type-options") == "nosniff"
    assert answer.header("cache-control") == "no-store"
    body = json.loads(answer.body)
    assert isinstance(body, dict)
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == answer.status
    return body


def server_connections(server: LiveServer) -> int:
    """TCP connections the server process holds on its listening port."""
    return sum(
        1
        for connection in psutil.Process(server.pid).net_connections(kind="tcp")
        if connection.laddr and connection.laddr.port == server.port and connection.status != psutil.CONN_LISTEN
    )


# --------------------------------------------------------------------------
# 1. Oversized headers
# --------------------------------------------------------------------------


async def test_ten_unfinished_8mb_headers_get_431_early_and_memory_stays_flat(served: LiveServer) -> None:
    """Ten connections at a time, each streaming an 8 MiB header line; they reconnect and start over
    until a normal client has been served 20 times in the middle of it."""
    port = served.port
    process = psutil.Process(served.pid)
    # Warm-up: the first requests and the first refusal import and allocate what later ones reuse.
    assert (await get_health(port)).status == 200
    assert (await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)).status == 431
    baseline = process.memory_info().rss

    stop = asyncio.Event()
    peak = [baseline]
    served_during: list[Answer] = []

    async def sample_rss() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)

    async def normal_client() -> None:
        while len(served_during) < 20:
            served_during.append(await get_health(port))
        stop.set()

    async def attacker() -> list[tuple[Answer, int]]:
        results = [await stream_big_header(port)]
        while not stop.is_set():
            results.append(await stream_big_header(port))
        return results

    sampler = asyncio.create_task(sample_rss())
    started = time.monotonic()
    first_wave, *_ = await asyncio.gather(asyncio.gather(*(attacker() for _ in range(10))), normal_client())
    took = time.monotonic() - started
    await sampler
    after = process.memory_info().rss
    final = await get_health(port)

    attempts = [result for results in first_wave for result in results]
    answers = [answer for answer, _ in attempts]
    sent = [count for _, count in attempts]
    refused = sum(answer.status == 431 for answer in answers)
    latencies = sorted(answer.elapsed for answer in served_during)
    print(
        f"\n[431] {len(attempts)} unfinished 8 MiB headers over {took:.2f} s, 10 at a time: {refused} answered 431, "
        f"the rest reset; client bytes sent before the close: max {max(sent) / 1024:.0f} KiB, "
        f"mean {sum(sent) / len(sent) / 1024:.0f} KiB; server RSS baseline {baseline / MIB:.1f} MiB, "
        f"peak {peak[0] / MIB:.1f} MiB (+{(peak[0] - baseline) / MIB:.2f}), "
        f"after {after / MIB:.1f} MiB (+{(after - baseline) / MIB:.2f}); /health meanwhile: "
        f"{len(served_during)} x {sorted({a.status for a in served_during})}, max {latencies[-1] * 1000:.0f} ms"
    )
    for answer in answers:
        assert answer.closed
        assert answer.status == 431 or answer.data == b"", answer.data[:200]
        if answer.status == 431:
            assert problem(answer)["type"] == "/problems/request-header-fields-too-large"
    assert refused >= len(answers) // 2
    # What a client manages to push is the server's budget plus the kernel's socket buffers, not 8 MiB.
    assert max(sent) <= 4 * MIB
    assert peak[0] - baseline <= 4 * MIB
    assert after - baseline <= 4 * MIB
    assert all(answer.status == 200 for answer in served_during)
    assert final.status == 200
    served.wait_for('"reason":"header_bytes"', count=1 + len(attempts))
    assert "X-Big" not in served.output() and "aaaa" not in served.output()  # no header contents logged


async def test_headers_up_to_the_byte_limit_are_served_one_more_byte_is_431(served: LiveServer) -> None:
    def request(size: int) -> bytes:
        start = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Pad: "
        end = b"\r\n\r\n"
        return start + b"a" * (size - len(start) - len(end)) + end

    assert (await exchange(served.port, request(MAX_HEADER_BYTES))).status == 200
    assert (await exchange(served.port, request(MAX_HEADER_BYTES + 1))).status == 431


# --------------------------------------------------------------------------
# 2. Slow and silent clients
# --------------------------------------------------------------------------


async def test_slowloris_silent_and_slow_body_clients_are_closed_in_time(served: LiveServer) -> None:
    port = served.port
    before = server_connections(served)
    stop = asyncio.Event()
    health = asyncio.create_task(monitor_health(port, stop))
    started = time.monotonic()
    loris, quiet, bodies = await asyncio.gather(
        asyncio.gather(*(slow_headers(port, pause=0.25) for _ in range(300))),
        asyncio.gather(*(silent(port) for _ in range(50))),
        asyncio.gather(*(slow_body(port, "/api/v1/bookings", length=100, pause=1.5, first=b"{") for _ in range(30))),
    )
    took = time.monotonic() - started
    stop.set()
    during = await health
    assert (await get_health(port)).status == 200  # a round trip: the server has handled the closes
    after = server_connections(served)

    def spread(answers: list[Answer]) -> str:
        times = sorted(answer.elapsed for answer in answers)
        return f"min {times[0]:.2f} s, median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s"

    latencies = sorted(answer.elapsed for answer in during)
    print(
        f"\n[slow] 300 slowloris (1 byte / 0.25 s): {sum(a.status == 408 for a in loris)} got 408, connected "
        f"{spread(loris)}; 50 silent: closed after {spread(quiet)}; 30 slow bodies (1 byte / 1.5 s): "
        f"{sum(a.status == 408 for a in bodies)} got 408, closed {spread(bodies)} after their last byte; "
        f"all done in {took:.2f} s; /health during: {len(during)} x {sorted({a.status for a in during})}, "
        f"max {latencies[-1] * 1000:.0f} ms; server connections before {before}, after {after}"
    )
    for answer in loris:
        assert answer.closed and answer.status == 408, answer
        assert HEADER_TIMEOUT - EARLY <= answer.elapsed <= HEADER_TIMEOUT + MARGIN
        assert problem(answer)["type"] == "/problems/request-timeout"
    for answer in quiet:
        assert answer.closed and answer.data == b""  # nothing was asked, nothing is answered
        assert HEADER_TIMEOUT - EARLY <= answer.elapsed <= HEADER_TIMEOUT + MARGIN
    for answer in bodies:
        assert answer.closed and answer.status == 408, answer
        assert BODY_TIMEOUT - EARLY <= answer.elapsed <= BODY_TIMEOUT + MARGIN
        assert problem(answer)["type"] == "/problems/request-timeout"
    assert during and all(answer.status == 200 for answer in during)
    assert after <= before
    served.wait_for('"reason":"header_timeout"', count=300)
    served.wait_for('"reason":"body_timeout"', count=30)


# --------------------------------------------------------------------------
# 3. Header lines and malformed requests
# --------------------------------------------------------------------------


async def test_more_header_lines_than_allowed_get_431(served: LiveServer) -> None:
    def request(lines: int) -> bytes:  # Host and Connection count too
        extra = b"".join(b"X-Line-%d: 1\r\n" % index for index in range(lines - 2))
        return b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra + b"\r\n"

    assert (await exchange(served.port, request(MAX_HEADERS))).status == 200
    answer = await exchange(served.port, request(MAX_HEADERS + 1))
    assert answer.status == 431
    body = problem(answer)
    assert body["type"] == "/problems/request-header-fields-too-large"
    assert "header lines" in str(body["detail"])
    served.wait_for('"reason":"header_count"')


@pytest.mark.parametrize(
    "request_bytes",
    [b"THIS IS NOT HTTP\r\n\r\n", b"GET /health HTTP/1.1 trailing\r\nHost: x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n"],
    ids=["garbage", "extra-token", "nul-in-target"],
)
async def test_a_malformed_request_gets_a_problem_400(served: LiveServer, request_bytes: bytes) -> None:
    answer = await exchange(served.port, request_bytes)
    assert answer.closed and answer.status == 400, answer.data[:300]
    body = problem(answer)
    assert body == {
        "type": "/problems/bad-request",
        "title": "Bad request",
        "status": 400,
        "detail": "The request is not valid HTTP/1.1.",
    }
    served.wait_for('"reason":"malformed"')


# --------------------------------------------------------------------------
# 4. What the limits must not touch
# --------------------------------------------------------------------------


async def test_keep_alive_requests_in_a_row_are_served_then_idle_closes(served: LiveServer) -> None:
    reader, writer = await asyncio.open_connection(HOST, served.port)
    try:
        started = time.monotonic()
        for _ in range(6):
            writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, headers, _ = await read_response(reader)
            assert status == 200 and headers.get("connection") != "close"
            # The client's pace: under the idle timeout each time, longer than the header timeout in all.
            await asyncio.sleep(KEEPALIVE_TIMEOUT * 0.6)
        assert time.monotonic() - started > HEADER_TIMEOUT
        # Pipelined: three requests in one write, three answers in order.
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n" * 3)
        for _ in range(3):
            assert (await read_response(reader))[0] == 200
        idle = await read_until_closed(reader, since=time.monotonic(), timeout=KEEPALIVE_TIMEOUT + 10)
    finally:
        await _close(writer)
    took = time.monotonic() - started
    print(f"\n[keep-alive] 9 requests on one connection over {took:.2f} s; idle close after {idle.elapsed:.2f} s")
    assert idle.closed and idle.data == b""  # an idle keep-alive connection is closed without a word
    assert KEEPALIVE_TIMEOUT - EARLY <= idle.elapsed <= KEEPALIVE_TIMEOUT + MARGIN


async def test_a_slow_handler_is_not_cut(scripted: LiveServer) -> None:
    seconds = HEADER_TIMEOUT + BODY_TIMEOUT + 0.5
    request = f"GET /_test/slow?seconds={seconds} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(HOST, scripted.port)
    try:
        started = time.monotonic()
        writer.write(request)
        status, _, body = await read_response(reader, timeout=seconds + 10)
        took = time.monotonic() - started
        # And the connection is still good for the next request.
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await read_response(reader))[0] == 200
    finally:
        await _close(writer)
    assert (status, json.loads(body)) == (200, {"finished": True})
    assert took >= seconds


async def test_a_handler_that_reads_its_large_body_late_is_not_cut(scripted: LiveServer) -> None:
    """The server stops reading once 64 KiB wait for the app: the client is not stalling, we are."""
    seconds = BODY_TIMEOUT * 2.5
    body = b"x" * (512 * 1024)
    head = f"POST /_test/read-late?seconds={seconds} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
    reader, writer = await asyncio.open_connection(HOST, scripted.port)
    try:
        writer.write(head.encode() + body)
        status, _, answer = await read_response(reader, timeout=seconds + 10)
    finally:
        await _close(writer)
    assert (status, json.loads(answer)) == (200, {"bytes": len(body)})


async def test_expect_100_continue_waits_for_the_app_without_a_timeout(scripted: LiveServer) -> None:
    seconds = BODY_TIMEOUT * 2.5
    body = b"0123456789"
    head = (
        f"POST /_test/read-late?seconds={seconds} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(HOST, scripted.port)
    try:
        started = time.monotonic()
        writer.write(head.encode())
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), seconds + 10)
        waited = time.monotonic() - started
        writer.write(body)
        status, _, answer = await read_response(reader, timeout=10)
    finally:
        await _close(writer)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert waited >= seconds  # the app asked for the body only then
    assert (status, json.loads(answer)) == (200, {"bytes": len(body)})


async def test_a_slow_but_steady_upload_is_not_cut(scripted: LiveServer) -> None:
    """Each pause is under the body timeout; the whole upload takes several times longer."""
    length = 8
    started = time.monotonic()
    answer = await slow_body(scripted.port, "/_test/echo-size", length=length, pause=BODY_TIMEOUT * 0.5)
    assert time.monotonic() - started > 3 * BODY_TIMEOUT
    assert answer.status == 200, answer.data[:300]
    assert json.loads(answer.body) == {"bytes": length}


async def test_a_stalled_body_ends_the_apps_receive_and_gets_408(scripted: LiveServer) -> None:
    answer = await slow_body(scripted.port, "/_test/echo-size", length=100, pause=30, first=b"0123456789")
    assert answer.status == 408 and answer.closed
    assert BODY_TIMEOUT - EARLY <= answer.elapsed <= BODY_TIMEOUT + MARGIN
    assert problem(answer)["detail"] == "The request body stopped arriving."
    # The handler's receive() returned http.disconnect (Starlette raised ClientDisconnect) after 10 bytes.
    scripted.wait_for('"received":10,"event":"body_disconnected"')


async def test_websockets_upgrade_and_outlive_every_timer(scripted: LiveServer) -> None:
    async with websockets.connect(f"ws://{HOST}:{scripted.port}/_test/ws") as socket:
        await socket.send("hello")
        assert await asyncio.wait_for(socket.recv(), 10) == "hello"
        # The client's pace: quiet for longer than every HTTP timer.
        await asyncio.sleep(HEADER_TIMEOUT + BODY_TIMEOUT + KEEPALIVE_TIMEOUT)
        await socket.send("still here")
        assert await asyncio.wait_for(socket.recv(), 10) == "still here"


# --------------------------------------------------------------------------
# 5. Connections over the limit
# --------------------------------------------------------------------------


async def test_connections_over_the_limit_get_a_problem_503(tmp_path: Path) -> None:
    port = free_port()
    server = _start(cli_command("serve", "--port", str(port)), tmp_path, port, SERVER_MAX_CONNECTIONS="10")
    try:
        # Nine idle connections and the asking one make ten: the limit counts the asker.
        idle = [await asyncio.open_connection(HOST, port) for _ in range(9)]
        over = await get_health(port)
        # The header timeout frees the slots: each idle connection is closed...
        closes = await asyncio.gather(
            *(read_until_closed(reader, since=time.monotonic(), timeout=HEADER_TIMEOUT + 10) for reader, _ in idle)
        )
        for _, writer in idle:
            await _close(writer)
        assert all(close.closed for close in closes)
        # ...and a request is served again.
        assert (await get_health(port)).status == 200
    finally:
        assert server.stop() == 0
    assert over.status == 503
    assert problem(over)["type"] == "/problems/service-unavailable"
    assert over.header("retry-after") == "5"
    assert '"reason":"overloaded"' in server.output()
