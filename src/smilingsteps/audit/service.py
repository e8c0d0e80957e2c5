"""The audit log: record security-relevant actions, list them, prove nobody changed them.

Each row's `hash` is SHA-256 over a canonical serialisation of every other
column, `prev_hash` included, so changing, removing or inserting a row breaks
the chain at that row or the next. The canonical form depends only on values
(never on the backend), so PostgreSQL and SQLite produce the same hash.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smilingsteps.audit import repository
from smilingsteps.audit.models import (
    ACTION_MAX,
    IP_MAX,
    REQUEST_ID_MAX,
    TARGET_ID_MAX,
    TARGET_TYPE_MAX,
    AuditEvent,
)
from smilingsteps.audit.schemas import ACTION_PATTERN, LIST_LIMIT_MAX, AuditFilters
from smilingsteps.platform.context import AuditContext
from smilingsteps.platform.db import Database
from smilingsteps.platform.models import new_id

__all__ = [
    "GENESIS_HASH",
    "AuditContext",
    "AuditFilters",
    "BrokenLink",
    "ChainAnchor",
    "ChainBreak",
    "ChainReport",
    "ChainVerifier",
    "canonical_bytes",
    "clean_details",
    "compute_hash",
    "fields_of",
    "list_events",
    "record",
    "verify_chain",
]

log = structlog.get_logger("smilingsteps.audit")

GENESIS_HASH = "0" * 64
HASHED_FIELDS = (
    "id",
    "seq",
    "occurred_at",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "ip",
    "request_id",
    "details",
    "prev_hash",
)
DETAILS_MAX_BYTES = 4096
DETAILS_MAX_DEPTH = 4
DETAILS_KEY_MAX = 64

# Words that make a details key look like it holds a secret. Matched per word of
# the key (`mfa_code`, `refreshToken`, `new-password`), so `code` and `token`
# refuse e.g. `error_code` too: better a renamed key than a secret in a log
# that can never be edited.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "passcode",
        "pwd",
        "secret",
        "token",
        "code",
        "otp",
        "totp",
        "pin",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "signature",
    }
)
_SECRET_JOINED = ("password", "passwd", "secret", "apikey", "privatekey", "accesstoken", "refreshtoken")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # PostgreSQL text refuses NUL; UTF-8 refuses lone surrogates


class ChainBreak(enum.StrEnum):
    CONTENT_HASH_MISMATCH = "content hash mismatch"
    PREV_HASH_MISMATCH = "prev-hash link broken"
    SEQUENCE_GAP = "gap in sequence"
    ANCHOR_MISMATCH = "anchor mismatch"


@dataclass(frozen=True)
class ChainAnchor:
    """A (seq, hash) an operator copied elsewhere; verify fails unless that row still has that hash."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, value: str) -> ChainAnchor:
        """`SEQ:HASH`, as `smilingsteps audit verify` prints the head."""
        seq, sep, digest = value.strip().partition(":")
        if not sep or not seq.isdigit() or int(seq) < 1 or re.fullmatch(r"[0-9a-f]{64}", digest) is None:
            raise ValueError("an anchor is SEQ:HASH, e.g. 1234:<64 lowercase hex digits>")
        return cls(int(seq), digest)


@dataclass(frozen=True)
class BrokenLink:
    """The first row where the chain does not hold. `id` is None when the row is missing."""

    seq: int
    id: uuid.UUID | None
    reason: ChainBreak
    detail: str

    def describe(self) -> str:
        return f"seq={self.seq} id={self.id or '-'}: {self.reason.value} ({self.detail})"


@dataclass(frozen=True)
class ChainReport:
    """`checked` rows were read; `head_*` is the last row that verified (None for an empty log)."""

    ok: bool
    checked: int
    head_seq: int | None
    head_hash: str | None
    first_broken: BrokenLink | None


# --- canonical form ----------------------------------------------------------


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime: audit times must be aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "occurred_at":
        return _timestamp(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """Sorted-key compact JSON of every hashed field: UTC times with microseconds, UUIDs as strings."""
    document = {name: _canonical_value(name, fields[name]) for name in HASHED_FIELDS}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def compute_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 hex of `canonical_bytes(fields)`."""
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()


def fields_of(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in HASHED_FIELDS}


# --- input rules -------------------------------------------------------------


def looks_secret(key: str) -> bool:
    words = {word.lower() for word in _WORDS.findall(key)}
    joined = re.sub(r"[^a-z0-9]", "", key.lower())
    return bool(words & _SECRET_WORDS) or any(part in joined for part in _SECRET_JOINED)


def _check_text(where: str, value: str) -> None:
    if _UNSTORABLE.search(value):
        raise ValueError(f"{where}: contains a NUL or lone surrogate character")


def _clean_value(path: str, value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"details{path}: NaN and infinity are not JSON")
        return value
    if isinstance(value, str):
        _check_text(f"details{path}", value)
        return value
    if depth >= DETAILS_MAX_DEPTH:
        raise ValueError(f"details{path}: nested deeper than {DETAILS_MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"details{path}: keys must be strings, got {type(key).__name__}")
            if not key or len(key) > DETAILS_KEY_MAX:
                raise ValueError(f"details{path}: keys must be 1-{DETAILS_KEY_MAX} characters")
            _check_text(f"details{path}", key)
            if looks_secret(key):
                raise ValueError(f"details{path}.{key}: looks like a secret; the audit log never stores secrets")
            cleaned[key] = _clean_value(f"{path}.{key}", item, depth + 1)
        return cleaned
    if isinstance(value, list | tuple):
        return [_clean_value(f"{path}[{index}]", item, depth + 1) for index, item in enumerate(value)]
    raise ValueError(f"details{path}: {type(value).__name__} is not a JSON value")


def clean_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plain, size-bounded JSON object with no secret-looking keys, or ValueError saying why not.

    Tuples become lists, so the value stored (and read back) is the value hashed.
    """
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise ValueError("details must be a JSON object")
    cleaned: dict[str, Any] = _clean_value("", details, 0)
    size = len(json.dumps(cleaned, separators=(",", ":"), ensure_ascii=False).encode())
    if size > DETAILS_MAX_BYTES:
        raise ValueError(f"details is {size} bytes serialised; at most {DETAILS_MAX_BYTES} are kept")
    return cleaned


def _label(name: str, value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if not value or len(value) > limit:
        raise ValueError(f"{name}: must be 1-{limit} characters")
    _check_text(name, value)
    return value


def _client_ip(value: str | None) -> str | None:
    # Request context is recorded, never refused: a security event must not be
    # lost over an odd peer address. Valid addresses get their canonical spelling.
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return _UNSTORABLE.sub("", value)[:IP_MAX] or None


def _request_id(value: str | None) -> str | None:
    return None if value is None else (_UNSTORABLE.sub("", value)[:REQUEST_ID_MAX] or None)


# --- writing and reading -----------------------------------------------------


async def record(
    session: AsyncSession,
    *,
    action: str,
    context: AuditContext,
    now: datetime,
    target_type: str | None = None,
    target_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction (flushes, never commits).

    The row exists only if the caller's transaction commits; a rollback leaves no
    row and no gap. Concurrent writers are serialised from here to the end of
    their transactions (keep those short). ValueError for a malformed action,
    an over-long target, a naive `now`, or details that are not a small JSON
    object or have a secret-looking key.
    """
    if ACTION_PATTERN.fullmatch(action) is None or len(action) > ACTION_MAX:
        raise ValueError(f"action {action!r}: must be lowercase dotted words (auth.login.failed), at most 64 chars")
    if now.tzinfo is None:
        raise ValueError("now: naive datetime; pass an aware UTC time")
    event = AuditEvent(
        id=new_id(),
        occurred_at=now.astimezone(UTC),
        actor_id=context.actor_id,
        action=action,
        target_type=_label("target_type", target_type, TARGET_TYPE_MAX),
        target_id=_label("target_id", target_id, TARGET_ID_MAX),
        ip=_client_ip(context.ip),
        request_id=_request_id(context.request_id),
        details=clean_details(details),
    )
    await repository.lock_chain(session)
    head = await repository.chain_head(session)
    event.seq, event.prev_hash = (1, GENESIS_HASH) if head is None else (head[0] + 1, head[1])
    event.hash = compute_hash(fields_of(event))
    await repository.add(session, event)
    return event


async def list_events(
    session: AsyncSession, filters: AuditFilters, *, limit: int, before_seq: int | None = None
) -> list[AuditEvent]:
    """Events matching every given filter, newest first, at most `limit`, older than `before_seq` if given."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit: must be 1-{LIST_LIMIT_MAX}")
    return await repository.list_events(session, filters, limit=limit, before_seq=before_seq)


# --- verification ------------------------------------------------------------


class ChainVerifier:
    """Checks rows fed in seq order; keeps only the previous row, so memory is constant."""

    def __init__(self, anchor: ChainAnchor | None = None) -> None:
        self.anchor = anchor
        self.checked = 0
        self.head: tuple[int, str] | None = None

    def check(self, row: Mapping[Any, Any]) -> BrokenLink | None:
        """None if `row` (a mapping of column name to value) extends the chain so far; otherwise why not."""
        seq, row_id, stored = int(row["seq"]), row["id"], str(row["hash"])
        self.checked += 1
        expected_seq, expected_prev = (1, GENESIS_HASH) if self.head is None else (self.head[0] + 1, self.head[1])
        if seq != expected_seq:
            return BrokenLink(seq, row_id, ChainBreak.SEQUENCE_GAP, f"expected seq {expected_seq}, found {seq}")
        if row["prev_hash"] != expected_prev:
            return BrokenLink(
                seq, row_id, ChainBreak.PREV_HASH_MISMATCH, f"prev_hash does not match the hash of seq {seq - 1}"
            )
        try:
            computed = compute_hash({name: row[name] for name in HASHED_FIELDS})
        except (TypeError, ValueError) as exc:
            return BrokenLink(seq, row_id, ChainBreak.CONTENT_HASH_MISMATCH, f"row cannot be hashed: {exc}")
        if computed != stored:
            return BrokenLink(seq, row_id, ChainBreak.CONTENT_HASH_MISMATCH, "stored hash differs from the content")
        if self.anchor is not None and seq == self.anchor.seq and stored != self.anchor.hash:
            return BrokenLink(seq, row_id, ChainBreak.ANCHOR_MISMATCH, "hash differs from the anchored hash")
        self.head = (seq, stored)
        return None

    def finish(self) -> BrokenLink | None:
        """After the last row: the anchored row must have been seen (the tail was not cut off)."""
        if self.anchor is not None and (self.head is None or self.head[0] < self.anchor.seq):
            return BrokenLink(
                self.anchor.seq, None, ChainBreak.ANCHOR_MISMATCH, "the anchored row is missing: the log was truncated"
            )
        return None

    def report(self, broken: BrokenLink | None) -> ChainReport:
        head_seq, head_hash = self.head if self.head is not None else (None, None)
        return ChainReport(
            ok=broken is None, checked=self.checked, head_seq=head_seq, head_hash=head_hash, first_broken=broken
        )


async def verify_chain(
    database: Database | async_sessionmaker[AsyncSession],
    *,
    batch_size: int = 1000,
    anchor: ChainAnchor | None = None,
) -> ChainReport:
    """Walk the whole log in seq order, `batch_size` rows per short read, and report the first break.

    Detects edited rows (content hash), removed rows (gap), rows whose hash was
    recomputed after an edit (the next row's link) and, given an `anchor`, a
    rewritten or truncated tail. Each batch is its own read, so no long
    transaction is held and memory stays constant however large the log is.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    sessions = database.sessionmaker if isinstance(database, Database) else database
    verifier = ChainVerifier(anchor)
    after: int | None = None
    broken: BrokenLink | None = None
    while broken is None:
        async with sessions() as session:
            rows = await repository.chain_batch(session, after_seq=after, limit=batch_size)
        for row in rows:
            broken = verifier.check(row)
            if broken is not None:
                break
        if broken is None and len(rows) < batch_size:
            broken = verifier.finish()
            break
        if rows:
            after = int(rows[-1]["seq"])
    report = verifier.report(broken)
    if report.first_broken is not None:
        log.error(
            "audit_chain_broken",
            checked=report.checked,
            seq=report.first_broken.seq,
            row_id=str(report.first_broken.id) if report.first_broken.id else None,
            reason=report.first_broken.reason.value,
            detail=report.first_broken.detail,
        )
    else:
        log.info("audit_chain_verified", checked=report.checked, head_seq=report.head_seq, head_hash=report.head_hash)
    return report
