"""Schemathesis against the real server on PostgreSQL: every operation of the OpenAPI document,
every phase (examples, coverage, fuzzing, stateful) and every check, as an anonymous caller and as
a signed-in client, therapist and administrator (with MFA). A fixed seed and a bounded number of
examples keep it to a few minutes; any failure fails the suite.

What is adjusted, and why, is in tests/fuzz/schemathesis.toml (statuses a schema-valid request may
still get, for rules a schema cannot state) and in EXCLUDED below (operations a role must not run).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path

import asyncpg
import httpx
import pyotp
import pytest

from smilingsteps.accounts.models import AccountStatus, Role, TherapistStatus, User
from smilingsteps.accounts.security import build_auth_kit
from smilingsteps.config import Settings
from smilingsteps.platform import migrate
from smilingsteps.platform.db import Database
from smilingsteps.platform.runtime import build_encryptor
from smilingsteps.therapists import service as therapists
from smilingsteps.therapists.schemas import AvailabilityIn, ProfileIn, RuleIn
from tests.support.postgres import PostgresServer, free_port, with_database
from tests.support.processes import clean_env, cli_command, stop_server, wait_for_line

pytestmark = pytest.mark.postgres_only

CONFIG = Path(__file__).resolve().parent.parent / "fuzz" / "schemathesis.toml"
SEED = 20261126
MAX_EXAMPLES = 6
PASSWORD = "quartz meadow lantern 58"
SECRET = "f" * 48
# Operations a signed-in role skips: POST /auth/logout would end the very session the run
# uses (it is fuzzed anonymously, and the tests cover it). Nothing else is excluded.
EXCLUDED = ("/api/v1/auth/logout",)


@dataclass(frozen=True)
class Caller:
    name: str
    token: str | None


@pytest.fixture
async def fuzz_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, migrated database the fuzzer may fill with anything."""
    name = f"ss_fuzz_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_server.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server.admin_url, name)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def server_env(database_url: str) -> dict[str, str]:
    return {
        "APP_ENV": "test",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "RATE_LIMITS_ENABLED": "false",  # the fuzzer's thousands of requests would all be 429s
        "LOG_FORMAT": "json",
        "SHUTDOWN_READINESS_DELAY": "0",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "64",
    }


@pytest.fixture
def server(tmp_path: Path, fuzz_database: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        cli_command("serve", "--port", str(port)),
        env=clean_env(tmp_path, **server_env(fuzz_database)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_line(process, "Application startup complete", [])
        threading.Thread(target=process.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


async def seed(database_url: str) -> str:
    """A verified client, an approved therapist with a profile and hours, an admin with TOTP; the TOTP secret."""
    settings = Settings(**{**server_env(database_url), "DATA_DIR": "/nonexistent"})  # type: ignore[arg-type]
    kit = build_auth_kit(settings, build_encryptor(settings))
    db = Database(settings)
    assert await db.connect_with_retry(max_retries=0)
    now = datetime.now(UTC)
    totp_secret = pyotp.random_base32()
    password_hash = await kit.hasher.hash(PASSWORD)
    try:
        async with db.session() as session:
            for role in Role:
                user = User(
                    id=uuid.uuid4(),
                    email=f"fuzz-{role.value}@example.com",
                    password_hash=password_hash,
                    full_name=f"Fuzz {role.value.title()}",
                    phone="254712345678",
                    timezone="Africa/Nairobi",
                    role=role,
                    status=AccountStatus.ACTIVE,
                    therapist_status=TherapistStatus.APPROVED if role is Role.THERAPIST else None,
                    email_verified_at=now,
                    password_changed_at=now,
                    created_at=now,
                    updated_at=now,
                )
                if role is Role.ADMIN:
                    user.mfa_secret = kit.encryptor.encrypt(totp_secret)
                    user.mfa_enabled_at = now
                session.add(user)
                await session.flush()
                if role is Role.THERAPIST:
                    profile = ProfileIn.model_validate(
                        {
                            "specialties": ["anxiety"],
                            "languages": ["en"],
                            "years_of_practice": 5,
                            "license_number": "KCPB-1",
                            "price_kes": 2500,
                        }
                    )
                    await therapists.save_profile(session, user.id, Role.THERAPIST, profile, now=now)
                    rules = [RuleIn(weekday=day, start=time(8), end=time(18)) for day in range(7)]
                    await therapists.set_availability(session, user.id, AvailabilityIn(rules=rules, exceptions=[]))
    finally:
        await db.dispose()
    return totp_secret


async def sign_in(base: str, role: Role, totp_secret: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        body = {"email": f"fuzz-{role.value}@example.com", "password": PASSWORD, "client": "native"}
        answer = (await http.post("/api/v1/auth/login", json=body)).json()
        if answer["mfa_required"]:
            code = pyotp.TOTP(totp_secret).now()
            step = {"mfa_token": answer["mfa_token"], "code": code, "client": "native"}
            answer = (await http.post("/api/v1/auth/login/mfa", json=step)).json()
        token = answer["access_token"]
        assert isinstance(token, str), answer
        return token


def fuzz(base: str, role: Caller, report: Path) -> tuple[int, str]:
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/api/v1/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    if role.token is not None:
        command += ["--header", f"Authorization: Bearer {role.token}"]
        for path in EXCLUDED:
            command += ["--exclude-path", path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    return done.returncode, done.stdout + done.stderr


def generated(output: str) -> int:
    found = re.search(r"(\d+) generated", output)
    return int(found.group(1)) if found else 0


async def test_the_api_holds_its_document_for_every_role(server: str, fuzz_database: str, tmp_path: Path) -> None:
    totp_secret = await seed(fuzz_database)
    # The administrator last: an admin may suspend the others' accounts.
    roles = [Caller("anonymous", None)]
    for role in (Role.CLIENT, Role.THERAPIST, Role.ADMIN):
        roles.append(Caller(role.value, await sign_in(server, role, totp_secret)))
    results: dict[str, dict[str, object]] = {}
    failures = []
    # Two at a time: Schemathesis itself is what takes the CPU (one core each), not the server.
    for pair in (roles[:2], roles[2:]):
        runs = await asyncio.gather(*(asyncio.to_thread(fuzz, server, r, tmp_path / f"{r.name}.xml") for r in pair))
        for role, (code, output) in zip(pair, runs, strict=True):
            results[role.name] = {"exit_code": code, "generated_cases": generated(output)}
            if code != 0:
                failures.append(f"---- {role.name} ----\n{output[-6000:]}")
    print(json.dumps(results))  # the number of cases per role, for the record
    assert not failures, "\n".join(failures)
    assert all(int(str(result["generated_cases"])) > 100 for result in results.values()), results
