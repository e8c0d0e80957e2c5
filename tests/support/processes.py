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
