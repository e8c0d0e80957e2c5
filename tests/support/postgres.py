"""A PostgreSQL server for the suite: the configured one if it answers,
otherwise a throwaway cluster started here (installing Debian's postgresql
first when it is missing and we are root). PostgreSQL tests never skip."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class PostgresServer:
    admin_url: str  # a libpq URL to a maintenance database
    data_dir: Path | None = None
    run_as: str | None = None

    def stop(self) -> None:
        if self.data_dir is not None:
            _run_pg(["pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], self.run_as)
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


async def answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _run_pg(argv: list[str], run_as: str | None) -> None:
    binary = _pg_bin(argv[0])
    if binary is None:
        raise RuntimeError(f"{argv[0]} not found")
    command = [binary, *argv[1:]]
    if run_as:
        command = ["runuser", "-u", run_as, "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _ensure_installed() -> None:
    if _pg_bin("initdb") is not None:
        return
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is not reachable and not installed; install postgresql or set TEST_POSTGRES_URL")
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "postgresql"],
        check=True,
        capture_output=True,
        timeout=900,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def start_throwaway() -> PostgresServer:
    """initdb + pg_ctl start on a free loopback port, trust auth; PostgreSQL refuses to run as root."""
    _ensure_installed()
    run_as = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="ss-pg-"))
    data_dir = base / "data"
    data_dir.mkdir()
    if run_as:
        shutil.chown(base, user=run_as)
        shutil.chown(data_dir, user=run_as)
    port = free_port()
    _run_pg(["initdb", "-D", str(data_dir), "-A", "trust", "-U", "postgres", "--no-sync"], run_as)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run_pg(["pg_ctl", "-D", str(data_dir), "-o", options, "-l", str(base / "log"), "-w", "start"], run_as)
    return PostgresServer(
        admin_url=f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir=data_dir, run_as=run_as
    )


async def acquire_server() -> PostgresServer:
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL)
    if await answers(url):
        return PostgresServer(admin_url=url)
    return await asyncio.to_thread(start_throwaway)


def with_database(admin_url: str, database: str, driver: str = "postgresql+asyncpg") -> str:
    parts = urlsplit(admin_url)
    return f"{driver}://{parts.netloc}/{database}"
