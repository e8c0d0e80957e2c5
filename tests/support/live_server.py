"""A real server process whose output a thread reads as it comes (the pipe never fills),
with waits on that output that time out instead of sleeping; and raw-socket HTTP clients."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import clean_env

HOST = "127.0.0.1"  # the only address these clients ever connect to


class LiveServer:
    def __init__(self, command: list[str], tmp_path: Path, port: int, **env: str) -> None:
        self.port = port
        self.process = subprocess.Popen(
            command,
            env=clean_env(tmp_path, **env),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, needle: str, *, timeout: float = 30.0, count: int = 1) -> None:
        """Until `count` lines contain `needle`; fails after `timeout` seconds or if the process ends."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(needle in line for line in self.lines) < count:
                left = deadline - time.monotonic()
                ended = self.lines and self.lines[-1] == ""
                if left <= 0 or ended:
                    raise AssertionError(f"{needle!r} x{count} never printed; output:\n{''.join(self.lines)}")
                self._changed.wait(left)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


@dataclass
class Answer:
    """What a connection received before the server closed it (or before we stopped waiting)."""

    data: bytes
    closed: bool  # EOF or reset seen
    elapsed: float  # seconds from `since` to the close (or to giving up)
    ended: float  # time.monotonic() then

    @property
    def status(self) -> int | None:
        if not self.data.startswith(b"HTTP/1.1 "):
            return None
        return int(self.data[9:12])

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]

    def header(self, name: str) -> str | None:
        head = self.data.partition(b"\r\n\r\n")[0].decode("latin-1")
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


async def read_until_closed(reader: asyncio.StreamReader, *, since: float, timeout: float) -> Answer:
    """Everything the server sends until it closes the connection, for at most `timeout` seconds."""
    data = bytearray()
    deadline = since + timeout

    def answer(*, closed: bool) -> Answer:
        now = time.monotonic()
        return Answer(bytes(data), closed=closed, elapsed=now - since, ended=now)

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return answer(closed=False)
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return answer(closed=False)
        except ConnectionError:
            chunk = b""
        if not chunk:
            return answer(closed=True)
        data += chunk


async def read_response(reader: asyncio.StreamReader, *, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body, from a kept-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout)
    return int(lines[0].split()[1]), headers, body
