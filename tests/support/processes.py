"""Running `smilingsteps` as a real process, the way an operator does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from smilingsteps.config import Settings


def clean_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """The inherited environment minus our variables, plus `env`, rooted in tmp_path."""
    base = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    base.update({"DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"})
    base.update(env)
    return base


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "smilingsteps.cli", *args]


def run_cli(tmp_path: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 (callers assert on the exit code)
        cli_command(*args),
        env=clean_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_line(process: subprocess.Popen[str], needle: str, seen: list[str]) -> None:
    """Read the process's output until a line contains `needle` (it says when it is ready)."""
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never printed; output:\n{''.join(seen)}")


def start_server(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    """`smilingsteps serve` on a loopback port, output piped for `wait_for_line`."""
    return subprocess.Popen(
        cli_command("serve", "--port", str(port)),
        env=clean_env(tmp_path, **env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_server(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.terminate()
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return code
