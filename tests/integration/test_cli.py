"""The process refuses insecure production settings, naming each variable, and
fails start-up with one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.processes import run_cli
from tests.unit.test_config import GOOD_PRODUCTION


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECRET_KEY", ""),
        ("SECRET_KEY", "change-me"),
        ("SECRET_KEY", "only-twenty-bytes-Zq"),
        ("ALLOWED_ORIGINS", "*"),
        ("ALLOWED_ORIGINS", ""),
        ("ALLOWED_ORIGINS", "http://app.smilingsteps.example"),
        ("DATABASE_URL", "sqlite+aiosqlite:///prod.db"),
        ("PUBLIC_BASE_URL", "http://app.smilingsteps.example"),
        ("DB_SSL_MODE", "disable"),
        ("DEBUG", "1"),
    ],
)
def test_serve_refuses_each_insecure_production_setting(tmp_path: Path, variable: str, value: str) -> None:
    result = run_cli(tmp_path, "serve", **{**GOOD_PRODUCTION, variable: value})
    assert result.returncode == 2
    assert f"config error: {variable}:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_invalid_value_stops_with_one_line_per_problem(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", PORT="eighty", DB_POOL_SIZE="-1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("config error: ") and lines[1].startswith("config error: ")
    assert {line.split(":")[1].strip() for line in lines} == {"PORT", "DB_POOL_SIZE"}


def test_check_config_masks_secrets_and_lists_production_problems(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "check-config", SMTP_PASSWORD="smtp-planted", MPESA_PASSKEY="passkey-planted")
    assert result.returncode == 0, result.stderr
    assert "smtp-planted" not in result.stdout and "passkey-planted" not in result.stdout
    assert "SMTP_PASSWORD" in result.stdout and "********" in result.stdout
    assert "production check:" in result.stdout and "SECRET_KEY: missing" in result.stdout


def test_check_config_fails_for_a_refused_production_config(tmp_path: Path) -> None:
    bad = run_cli(tmp_path, "check-config", **{**GOOD_PRODUCTION, "ALLOWED_ORIGINS": "*"})
    assert bad.returncode == 2 and "ALLOWED_ORIGINS" in bad.stdout
    assert GOOD_PRODUCTION["SECRET_KEY"] not in bad.stdout
    good = run_cli(tmp_path, "check-config", **GOOD_PRODUCTION)
    assert good.returncode == 0 and "production check: ok" in good.stdout


def test_startup_failure_is_one_line_and_non_zero(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(tmp_path, "serve", "--port", str(port), APP_ENV="test", LOG_FORMAT="json")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert "address already in use" in (result.stderr + result.stdout).lower()


def test_migrate_command_upgrades_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    assert run_cli(tmp_path, "migrate", DATABASE_URL=url).returncode == 0
    assert run_cli(tmp_path, "migrate", "downgrade", "base", DATABASE_URL=url).returncode == 0
    result = run_cli(tmp_path, "migrate", "upgrade", "head", DATABASE_URL=url)
    assert result.returncode == 0 and "migrations_done" in result.stdout
