"""The one place that configures logging.

structlog renders every line (ours and the libraries' through stdlib logging):
JSON lines, or a readable console in development. Every event passes through
`redact` (secrets, tokens, emails, phone numbers) and `neutralise_controls`
(log injection) before it is written anywhere.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from smilingsteps.config import Settings

ACCESS_LOGGER = "smilingsteps.http"
REDACTED = "[REDACTED]"

_SENSITIVE_KEY = re.compile(
    r"pass(word|wd|phrase|key)?$|secret|token|authori[sz]ation|cookie|api[_-]?key|credential|private[_-]?key|^otp$|^pin$|"
    r"^code$|signature|session[_-]?id",
    re.IGNORECASE,
)
_NOT_SENSITIVE_KEYS = frozenset({"event", "logger", "level", "timestamp", "request_id", "token_type", "exception"})
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# Kenyan MSISDNs in every common spelling, and other long digit runs that look like phone numbers.
_PHONE = re.compile(r"(?<![\w.])(\+?254|0)(7|1)\d{8}(?!\d)|(?<![\w.])\+\d{10,14}(?!\d)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SECRET_PAIR = re.compile(
    r"(?i)\b(password|passwd|passkey|secret|token|access_token|refresh_token|api_key|apikey|code|otp)=([^&\s\"']+)"
)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):[^@\s]+@")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def mask_text(text: str) -> str:
    """Mask emails, phone numbers, bearer tokens, JWTs, URL passwords and key=secret pairs."""
    if "@" in text:
        text = _EMAIL.sub(r"\1***@\2", text)
        text = _URL_CREDENTIALS.sub(r"\1:" + REDACTED + "@", text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "=" in text:
        text = _SECRET_PAIR.sub(r"\1=" + REDACTED, text)
    text = _BEARER.sub(r"\1 " + REDACTED, text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    digits = match.group(0)
    return digits[:4] + "*" * (len(digits) - 7) + digits[-3:]


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if depth > 6:
        return value
    if isinstance(value, MutableMapping):
        return {k: (REDACTED if _is_sensitive(k) else _redact_value(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item, depth + 1) for item in value]
    return value


def _is_sensitive(key: object) -> bool:
    return isinstance(key, str) and key not in _NOT_SENSITIVE_KEYS and _SENSITIVE_KEY.search(key) is not None


def drop_color_message(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Uvicorn adds an ANSI-coloured copy of its message; it is noise in our logs."""
    event.pop("color_message", None)
    return event


def redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """structlog processor: nothing sensitive leaves the process in a log line."""
    for key, value in event.items():
        if _is_sensitive(key):
            event[key] = REDACTED
        elif value is not None and not isinstance(value, int | float | bool):
            event[key] = _redact_value(value)
    return event


def neutralise_controls(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Escape newlines and other control characters so user input cannot forge log lines."""
    for key, value in event.items():
        if isinstance(value, str) and key != "exception" and _CONTROL.search(value):
            event[key] = _CONTROL.sub(_escape, value)
    return event


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return {"\n": "\\n", "\r": "\\r"}.get(char) or f"\\u{ord(char):04x}"


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        drop_color_message,
        redact,
        neutralise_controls,
    ]


def _formatter(renderer: Processor) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


class _OnlyLogger(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.prefix = name

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == self.prefix or record.name.startswith(self.prefix + ".")


def _file_handler(path: Path, settings: Settings, level: int) -> logging.Handler:
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=settings.LOG_FILE_MAX_BYTES, backupCount=settings.LOG_FILE_BACKUP_COUNT, encoding="utf-8"
    )
    handler.setLevel(level)
    handler.setFormatter(_formatter(structlog.processors.JSONRenderer()))
    return handler


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Route structlog and stdlib logging to stdout (and rotating files when LOG_DIR is set)."""
    level = logging.getLevelName(settings.LOG_LEVEL.upper())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    console = logging.StreamHandler(stream or sys.stdout)
    console.setFormatter(_formatter(renderer))
    handlers: list[logging.Handler] = [console]
    if settings.LOG_DIR is not None:
        settings.LOG_DIR.mkdir(parents=True, exist_ok=True)
        handlers.append(_file_handler(settings.LOG_DIR / "combined.log", settings, level))
        handlers.append(_file_handler(settings.LOG_DIR / "error.log", settings, logging.ERROR))
        http = _file_handler(settings.LOG_DIR / "http.log", settings, level)
        http.addFilter(_OnlyLogger(ACCESS_LOGGER))
        handlers.append(http)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    # Uvicorn's own access log would duplicate ours (and log raw paths); its
    # error logger flows through the handlers above.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def log_unhandled_loop_exception(logger: Callable[..., Any]) -> Callable[[Any, dict[str, Any]], None]:
    """An asyncio loop exception handler that logs instead of printing to stderr."""

    def handler(_: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        logger("asyncio_unhandled_error", message=context.get("message"), exc_info=exc)

    return handler
