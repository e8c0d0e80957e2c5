"""`smilingsteps create-admin` as an operator runs it: the password is read, never an argument."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from smilingsteps.accounts.models import User
from tests.support.processes import clean_env, cli_command, run_cli

STRONG = "granite kestrel orbit 7"


def create_admin(tmp_path: Path, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 (callers assert on the exit code)
        cli_command(
            "create-admin", "--email", "Root@Example.com", "--name", "Grace Admin", "--phone", "0722000000", *extra
        ),
        env=clean_env(tmp_path, APP_ENV="development"),
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    result = run_cli(tmp_path, "migrate", APP_ENV="development")
    assert result.returncode == 0, result.stderr
    return tmp_path


async def stored_admin(tmp_path: Path) -> User | None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'smilingsteps.db'}")
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(select(User).where(User.email == "root@example.com"))).first()
            return None if row is None else User(**row._mapping)
    finally:
        await engine.dispose()


async def test_creates_a_verified_admin_from_the_password_on_stdin(migrated: Path) -> None:
    result = create_admin(migrated, f"{STRONG}\n{STRONG}\n")
    assert result.returncode == 0, result.stderr
    assert "administrator created: root@example.com" in result.stdout
    assert STRONG not in result.stdout + result.stderr
    admin = await stored_admin(migrated)
    assert admin is not None and admin.role == "admin" and admin.email_verified_at is not None
    assert admin.password_hash.startswith("$argon2id$")
    again = create_admin(migrated, f"{STRONG}\n{STRONG}\n")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize(
    ("stdin", "message"),
    [(f"{STRONG}\nsomething else 12\n", "differ"), ("password1234\npassword1234\n", "too common")],
)
async def test_refuses_mismatched_or_weak_passwords(migrated: Path, stdin: str, message: str) -> None:
    result = create_admin(migrated, stdin)
    assert result.returncode == 2 and message in result.stderr
    assert await stored_admin(migrated) is None


def test_the_password_cannot_be_given_as_an_argument(migrated: Path) -> None:
    result = create_admin(migrated, "", "--password", STRONG)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
