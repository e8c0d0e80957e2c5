"""Redis for the suite: the configured one if it answers, else a throwaway
redis-server (installing Debian's redis-server first when missing and root).
Also starts private servers that tests may stop, stall and restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.postgres import free_port

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("Redis is not reachable and redis-server is not installed; install it or set TEST_REDIS_URL")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "redis-server"], check=True, capture_output=True, timeout=900, env=env
    )
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server did not install")
    return found


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port; tests may stop, stall and restart it."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ss-redis-")))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            _redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:  # the server says when it is ready
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError("redis-server exited before it was ready")
        # Keep draining its log so the server never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
                self.process.wait(timeout=20)
            if self.process.stdout is not None:
                self.process.stdout.close()
        self.process = None

    def stall(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def acquire_url() -> tuple[str, RedisServer | None]:
    """The shared test Redis: TEST_REDIS_URL (default 127.0.0.1:6379) or a throwaway one."""
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_URL)
    if answers(url):
        return url, None
    server = RedisServer()
    server.start()
    return server.url, server
