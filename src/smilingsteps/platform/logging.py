"""The one place that configures logging.

Our events (structlog) and the libraries' (stdlib logging, bridged) go through
one pipeline: request context, level, logger, ISO UTC timestamp, exception
text, then `redact` (secrets, tokens, emails, phone numbers) and
`neutralise_controls` (log injection), and are written as JSON lines (or a
readable console in development) to stdout and, with LOG_DIR, to rotating
`combined.log`, `error.log` and `http.log`.

Our events are written directly, not through stdlib logging records: a line
per request is on the hot path, and the stdlib round trip cost several times
more than the line itself.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from smilingsteps.config import Settings

ACCESS_LOGGER = "smilingsteps.http"
# Libraries whose debug output holds SQL bound values or message contents.
QUIET_DRIVER_LOGGERS = ("aiosqlite", "asyncpg", "aiosmtplib", "mail.log")
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


# One cheap search that every maskable pattern needs to match first.
_MAYBE_SENSITIVE = re.compile(r"@|eyJ|=|\d{9}|(?i:bearer|basic)\s")
# Keys whose values the pipeline itself writes.
_OWN_KEYS = frozenset({"level", "logger", "timestamp", "request_id"})


def mask_text(text: str) -> str:
    """Mask emails, phone numbers, bearer tokens, JWTs, URL passwords and key=secret pairs."""
    if _MAYBE_SENSITIVE.search(text) is None:
        return text
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
    if isinstance(value, Mapping):
        return {k: (REDACTED if _is_sensitive(k) else _redact_value(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item, depth + 1) for item in value]
    return value


@lru_cache(maxsize=4096)
def _is_sensitive_name(key: str) -> bool:
    return key not in _NOT_SENSITIVE_KEYS and _SENSITIVE_KEY.search(key) is not None


def _is_sensitive(key: object) -> bool:
    return isinstance(key, str) and _is_sensitive_name(key)


def redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Processor: nothing sensitive leaves the process in a log line."""
    for key, value in event.items():
        if key in _OWN_KEYS or value is None or isinstance(value, int | float | bool):
            continue
        if _is_sensitive(key):
            event[key] = REDACTED
        else:
            event[key] = _redact_value(value)
    return event


def neutralise_controls(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Processor: escape newlines and other control characters so user input cannot forge log lines."""
    for key, value in event.items():
        if isinstance(value, str) and key != "exception" and _CONTROL.search(value):
            event[key] = _CONTROL.sub(_escape, value)
    return event


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return {"\n": "\\n", "\r": "\\r"}.get(char) or f"\\u{ord(char):04x}"


def drop_color_message(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Uvicorn adds an ANSI-coloured copy of its message; it is noise in our logs."""
    event.pop("color_message", None)
    return event


# ---- request context ------------------------------------------------------

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("smilingsteps_log_context", default=_EMPTY)


@contextlib.contextmanager
def bound_log_context(**values: Any) -> Iterator[None]:
    """Add `values` to every line logged inside the block (this task and its children)."""
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)


def log_context() -> Mapping[str, Any]:
    return _context.get()


def merge_log_context(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    context = _context.get()
    if context:
        for key, value in context.items():
            event.setdefault(key, value)
    return event


def add_logger_name(logger: WrappedLogger, _: str, event: EventDict) -> EventDict:
    event.setdefault("logger", getattr(logger, "name", "root"))
    return event


def add_level(_: WrappedLogger, method: str, event: EventDict) -> EventDict:
    event.setdefault("level", "warning" if method == "warn" else ("error" if method == "exception" else method))
    return event


# ---- outputs --------------------------------------------------------------

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class RotatingFile:
    """A size-rotated append-only file: name, name.1 … name.N (oldest last)."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._file = path.open("a", encoding="utf-8")
        self._size = self._file.tell()

    def write(self, line: str) -> None:
        data = line + "\n"
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += len(data.encode()) if not data.isascii() else len(data)

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        self._file.close()


class _FileOutput:
    def __init__(self, file: RotatingFile, *, min_level: int, only_logger: str | None = None) -> None:
        self.file, self.min_level, self.only_logger = file, min_level, only_logger

    def wants(self, level: int, logger: str) -> bool:
        if level < self.min_level:
            return False
        return self.only_logger is None or logger == self.only_logger or logger.startswith(self.only_logger + ".")


def _json_line(event: EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


class LogOutputs:
    """Where finished events go: the console and the rotating files.

    On the event loop's thread, lines are buffered and written once per loop
    turn (one write and flush for every line that turn produced, instead of one
    per line); anywhere else, and at exit, they are written at once.
    """

    def __init__(
        self, console: TextIO, render_console: Callable[[EventDict], str], files: list[_FileOutput], min_level: int
    ) -> None:
        self.console = console
        self.min_level = min_level
        self.render_console = render_console
        self.files = files
        self.listeners: list[Callable[[EventDict], None]] = []
        # Re-entrant: a signal handler that logs runs on the main thread, possibly
        # while that thread is inside a write; a plain lock would deadlock there.
        self._lock = threading.RLock()
        self._console_lines: list[str] = []
        self._file_lines: list[tuple[RotatingFile, str]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def write(self, event: EventDict) -> None:
        level = _LEVELS.get(str(event.get("level")), 20)
        logger = str(event.get("logger", ""))
        json_line: str | None = None
        with self._lock:
            self._console_lines.append(self.render_console(event))
            for output in self.files:
                if output.wants(level, logger):
                    json_line = json_line or _json_line(event)
                    self._file_lines.append((output.file, json_line))
            self._schedule_flush()
        for listener in self.listeners:
            listener(dict(event))

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flush_loop is loop:
            return
        if self._flush_loop is not None:
            # Scheduled on another (perhaps finished) loop: write now rather than wait on it.
            self.flush()
        self._flush_loop = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            self._flush_loop = None
            lines, self._console_lines = self._console_lines, []
            file_lines, self._file_lines = self._file_lines, []
            if lines:
                self.console.write("\n".join(lines) + "\n")
                self.console.flush()
            for file, line in file_lines:
                file.write(line)

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)
        for output in self.files:
            output.file.close()


_outputs: LogOutputs | None = None


def emit(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Last processor: write the event, then stop structlog from calling a logger."""
    if _outputs is not None:
        _outputs.write(event)
    raise structlog.DropEvent


def log_request(**fields: Any) -> None:
    """The access-log line: the same pipeline as any event, without structlog's dispatch.

    It runs once per request, so it skips what cannot apply to it (exceptions,
    uvicorn's colour copy) and the bound-logger machinery.
    """
    outputs = _outputs
    if outputs is None or outputs.min_level > _LEVELS["info"]:
        return
    event: EventDict = {"event": "request", **fields}
    for key, value in _context.get().items():
        event.setdefault(key, value)
    event["level"] = "info"
    event["logger"] = ACCESS_LOGGER
    event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    outputs.write(neutralise_controls(None, "info", redact(None, "info", event)))


@contextlib.contextmanager
def captured_events() -> Iterator[list[EventDict]]:
    """Every event written inside the block, after redaction (for tests and diagnostics)."""
    events: list[EventDict] = []
    if _outputs is None:
        raise RuntimeError("logging is not configured")
    outputs = _outputs
    outputs.listeners.append(events.append)
    try:
        yield events
    finally:
        outputs.listeners.remove(events.append)


def _pipeline() -> list[Processor]:
    return [
        merge_log_context,
        add_level,
        add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        drop_color_message,
        redact,
        neutralise_controls,
    ]


class _StdlibBridge(logging.Handler):
    """Libraries log through stdlib; their records join our pipeline here."""

    def __init__(self, processors: list[Processor]) -> None:
        super().__init__()
        self.processors = processors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: EventDict = {"event": record.getMessage(), "level": record.levelname.lower(), "logger": record.name}
            if record.exc_info:
                event["exc_info"] = record.exc_info
            if hasattr(record, "color_message"):
                event["color_message"] = None
            for processor in self.processors:
                event = processor(None, event["level"], event)  # type: ignore[assignment]
            if _outputs is not None:
                _outputs.write(event)
        except Exception:
            self.handleError(record)


class _NamedLogger:
    """What structlog wraps: only a name; `emit` does the writing."""

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, *args: Any, **kwargs: Any) -> None:
        return None

    debug = info = warning = warn = error = critical = exception = log = fatal = msg


def _logger_factory(*args: Any) -> _NamedLogger:
    return _NamedLogger(str(args[0]) if args else "root")


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to the console (and rotating files when LOG_DIR is set)."""
    global _outputs
    level = _LEVELS[settings.LOG_LEVEL]
    if settings.log_format == "json":
        render_console: Callable[[EventDict], str] = _json_line
    else:
        pretty = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)

        def render_console(event: EventDict) -> str:
            return str(pretty(None, "", dict(event)))

    files: list[_FileOutput] = []
    if settings.LOG_DIR is not None:
        settings.LOG_DIR.mkdir(parents=True, exist_ok=True)

        def rotating(name: str) -> RotatingFile:
            return RotatingFile(
                settings.LOG_DIR / name,  # type: ignore[operator]
                max_bytes=settings.LOG_FILE_MAX_BYTES,
                backups=settings.LOG_FILE_BACKUP_COUNT,
            )

        files = [
            _FileOutput(rotating("combined.log"), min_level=level),
            _FileOutput(rotating("error.log"), min_level=_LEVELS["error"]),
            _FileOutput(rotating("http.log"), min_level=level, only_logger=ACCESS_LOGGER),
        ]
    previous, _outputs = _outputs, LogOutputs(stream or sys.stdout, render_console, files, level)
    if previous is not None:
        previous.close()

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(_StdlibBridge(_pipeline()))
    root.setLevel(level)
    # Uvicorn's own access log would duplicate ours (and log raw paths).
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Their debug lines carry SQL with its bound values (tokens, emails): never below info.
    for name in QUIET_DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))

    structlog.configure(
        processors=[*_pipeline(), emit],
        logger_factory=_logger_factory,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )


def log_unhandled_loop_exception(logger: Callable[..., Any]) -> Callable[[Any, dict[str, Any]], None]:
    """An asyncio loop exception handler that logs instead of printing to stderr."""

    def handler(_: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        logger("asyncio_unhandled_error", message=context.get("message"), exc_info=exc)

    return handler
