"""Planted secrets never reach log output; user input cannot forge log lines;
files rotate into error/combined/http when LOG_DIR is set."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from smilingsteps.config import Settings
from smilingsteps.platform.logging import ACCESS_LOGGER, configure_logging, mask_text
from tests.conftest import TEST_SECRET

PLANTED = {
    "password": "Tr0ub4dor&3-planted",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXBsYW50ZWQ",
    "passkey": "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
    "cookie": "refresh=planted-refresh-token-value",
    "email": "wanjiku.kamau@example.co.ke",
    "phone": "254712345678",
}


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"APP_ENV": "test", "SECRET_KEY": TEST_SECRET, "LOG_FORMAT": "json"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(settings(LOG_LEVEL="debug"), stream=stream)
    yield stream
    configure_logging(settings(LOG_LEVEL="debug"))


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def assert_nothing_planted(output: str) -> None:
    for name, value in PLANTED.items():
        assert value not in output, f"planted {name} leaked"
    assert "712345678" not in output and "wanjiku.kamau" not in output


def test_sensitive_keys_are_redacted_anywhere_in_the_event(captured: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info(
        "login",
        password=PLANTED["password"],
        headers={"Authorization": f"Bearer {PLANTED['jwt']}", "Cookie": PLANTED["cookie"]},
        mpesa={"Passkey": PLANTED["passkey"], "nested": [{"refresh_token": "x-planted"}]},
        user_email=PLANTED["email"],
        msisdn=PLANTED["phone"],
    )
    output = captured.getvalue()
    assert_nothing_planted(output)
    assert "x-planted" not in output
    event = lines(captured)[-1]
    assert event["password"] == "[REDACTED]"
    assert event["user_email"] == "w***@example.co.ke"


def test_secrets_inside_free_text_and_tracebacks_are_masked(captured: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.warning(f"callback from {PLANTED['phone']} for {PLANTED['email']} with token={PLANTED['passkey']}")
    try:
        raise ValueError(f"could not connect with password={PLANTED['password']} as {PLANTED['email']}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("library").error("Authorization: Bearer %s", PLANTED["jwt"])
    assert_nothing_planted(captured.getvalue())
    assert "Traceback" in captured.getvalue()


@pytest.mark.parametrize("spelling", ["254712345678", "+254712345678", "0712345678", "0112345678", "+447911123456"])
def test_phone_numbers_in_every_spelling_are_masked(spelling: str) -> None:
    masked = mask_text(f"pay from {spelling} now")
    assert spelling not in masked and masked.endswith(f"{spelling[-3:]} now")


def test_newlines_in_user_input_cannot_forge_log_lines(captured: io.StringIO) -> None:
    structlog.get_logger("test").info("search", query='x\n{"level": "critical", "event": "forged"}\r\u2028')
    events = lines(captured)
    assert len(events) == 1
    assert events[0]["query"] == 'x\\n{"level": "critical", "event": "forged"}\\r\\u2028'


def test_console_format_also_escapes_newlines() -> None:
    stream = io.StringIO()
    configure_logging(settings(LOG_FORMAT="console"), stream=stream)
    try:
        structlog.get_logger("test").info("search", query="a\nforged line")
    finally:
        configure_logging(settings())
    assert stream.getvalue().count("\n") == 1


def test_lines_are_json_with_iso_utc_timestamp_level_and_logger(captured: io.StringIO) -> None:
    structlog.get_logger("smilingsteps.test").warning("something", count=3)
    event = lines(captured)[-1]
    assert event["level"] == "warning" and event["logger"] == "smilingsteps.test" and event["count"] == 3
    assert str(event["timestamp"]).endswith("Z") and "T" in str(event["timestamp"])


def test_level_filters_lower_events() -> None:
    stream = io.StringIO()
    configure_logging(settings(LOG_LEVEL="warning"), stream=stream)
    try:
        structlog.get_logger("test").info("hidden")
        structlog.get_logger("test").warning("shown")
    finally:
        configure_logging(settings())
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()


def test_log_dir_writes_rotating_error_combined_and_http_files(tmp_path: Path) -> None:
    configure_logging(
        settings(LOG_DIR=tmp_path, LOG_FILE_MAX_BYTES=2048, LOG_FILE_BACKUP_COUNT=2), stream=io.StringIO()
    )
    try:
        structlog.get_logger(ACCESS_LOGGER).info("request", route="/health", status=200)
        structlog.get_logger("smilingsteps.test").error("broken", password=PLANTED["password"])
        combined_before_rotation = (tmp_path / "combined.log").read_text()
        for index in range(100):
            structlog.get_logger("smilingsteps.test").info("filler", index=index, padding="p" * 40)
    finally:
        configure_logging(settings())
    http = (tmp_path / "http.log").read_text()
    error = (tmp_path / "error.log").read_text()
    assert "request" in http and "broken" not in http and "filler" not in http
    assert "broken" in error and "request" not in error
    assert "broken" in combined_before_rotation and "request" in combined_before_rotation
    assert PLANTED["password"] not in combined_before_rotation
    assert (tmp_path / "combined.log.1").exists() and not (tmp_path / "combined.log.3").exists()
    for file in tmp_path.iterdir():
        assert PLANTED["password"] not in file.read_text()


async def test_database_drivers_never_log_bound_values_even_at_debug(captured: io.StringIO, tmp_path: Path) -> None:
    import aiosqlite

    secret_value = "reset-token-planted-in-a-query"
    async with aiosqlite.connect(tmp_path / "x.db") as connection:
        await connection.execute("CREATE TABLE t (v TEXT)")
        await connection.execute("INSERT INTO t VALUES (?)", (secret_value,))
    assert secret_value not in captured.getvalue()
