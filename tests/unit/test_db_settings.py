"""Database connection settings: TLS verification and pool configuration."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy import exc as sa_exc

from smilingsteps.config import Settings
from smilingsteps.platform.db import Database, _ssl_context, build_engine, is_transient, is_unavailable
from tests.conftest import TEST_SECRET

PG = "postgresql+asyncpg://app@db.internal:5432/app"


def settings(**overrides: object) -> Settings:
    return Settings(**{"SECRET_KEY": TEST_SECRET, "DATABASE_URL": PG, **overrides})  # type: ignore[arg-type]


def test_production_verifies_the_database_certificate_and_host() -> None:
    context = _ssl_context(settings(APP_ENV="production"))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname is True


@pytest.mark.parametrize(
    ("mode", "verify", "hostname"),
    [
        ("verify-full", ssl.CERT_REQUIRED, True),
        ("verify-ca", ssl.CERT_REQUIRED, False),
        ("require", ssl.CERT_NONE, False),
    ],
)
def test_ssl_modes(mode: str, verify: ssl.VerifyMode, hostname: bool) -> None:
    context = _ssl_context(settings(DB_SSL_MODE=mode))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is verify and context.check_hostname is hostname


def test_development_default_is_plain() -> None:
    assert _ssl_context(settings()) is False


async def test_pool_settings_come_from_config() -> None:
    engine = build_engine(settings(DB_POOL_SIZE=7, DB_MAX_OVERFLOW=3, DB_POOL_TIMEOUT=4))
    pool = engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (7, 3, 4)  # type: ignore[attr-defined]
    assert engine.sync_engine.hide_parameters is True
    await engine.dispose()


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "transient", "unavailable"),
    [
        ("40001", True, False),
        ("40P01", True, False),
        ("08006", False, True),
        ("57P01", False, True),
        ("23505", False, False),
    ],
)
def test_error_classification(sqlstate: str, transient: bool, unavailable: bool) -> None:
    error = sa_exc.OperationalError("SELECT 1", None, _DriverError(sqlstate))
    assert is_transient(error) is transient
    assert is_unavailable(error) is unavailable


async def test_classify_marks_the_database_down_only_for_outages() -> None:
    db = Database(settings())
    db.status.available = True
    assert db.classify(ValueError("bug")) is None
    assert db.status.available is True
    assert db.classify(sa_exc.IntegrityError("INSERT", None, _DriverError("23505"))) is None
    assert db.classify(ConnectionRefusedError("an HTTP call, not the database")) is None
    assert db.status.available is True
    try:
        async with db.engine.connect():
            pass
    except OSError as exc:  # the unresolvable host fails inside the driver
        problem = db.classify(exc)
    else:
        pytest.fail("connecting to db.internal should fail here")
    assert problem is not None and problem.status == 503
    assert db.status.available is False
    await db.dispose()
