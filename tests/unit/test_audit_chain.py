"""The audit chain's canonical form, input rules and verifier, without a database."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from smilingsteps.audit.schemas import AuditFilters, AuditLogQuery
from smilingsteps.audit.service import (
    GENESIS_HASH,
    ChainAnchor,
    ChainBreak,
    ChainVerifier,
    canonical_bytes,
    clean_details,
    compute_hash,
    looks_secret,
)

EVENT_ID = uuid.UUID("6f1c1c8e-2d4b-4c1e-9a57-3f2b9d1e0a11")
ACTOR_ID = uuid.UUID("0b8f6a52-9c3e-4d7f-8e21-5a6b7c8d9e0f")


def fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": EVENT_ID,
        "seq": 1,
        "occurred_at": datetime(2026, 11, 24, 8, 30, 5, 123, tzinfo=UTC),
        "actor_id": ACTOR_ID,
        "action": "auth.login.succeeded",
        "target_type": "user",
        "target_id": str(ACTOR_ID),
        "ip": "203.0.113.7",
        "request_id": "req-1",
        "details": {"method": "password", "mfa": True},
        "prev_hash": GENESIS_HASH,
    }
    values.update(overrides)
    return values


def chain(length: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq in range(1, length + 1):
        row = fields(id=uuid.uuid4(), seq=seq, prev_hash=prev, details={"n": seq})
        row["hash"] = prev = compute_hash(row)
        rows.append(row)
    return rows


def first_break(rows: list[dict[str, Any]], anchor: ChainAnchor | None = None) -> tuple[int, ChainBreak] | None:
    verifier = ChainVerifier(anchor)
    for row in rows:
        broken = verifier.check(row)
        if broken is not None:
            return broken.seq, broken.reason
    broken = verifier.finish()
    return None if broken is None else (broken.seq, broken.reason)


def test_canonical_form_is_sorted_compact_json_with_utc_microseconds() -> None:
    expected = (
        '{"action":"auth.login.succeeded","actor_id":"0b8f6a52-9c3e-4d7f-8e21-5a6b7c8d9e0f",'
        '"details":{"method":"password","mfa":true},"id":"6f1c1c8e-2d4b-4c1e-9a57-3f2b9d1e0a11",'
        '"ip":"203.0.113.7","occurred_at":"2026-11-24T08:30:05.000123Z",'
        f'"prev_hash":"{GENESIS_HASH}","request_id":"req-1","seq":1,'
        '"target_id":"0b8f6a52-9c3e-4d7f-8e21-5a6b7c8d9e0f","target_type":"user"}'
    ).encode()
    assert canonical_bytes(fields()) == expected
    assert compute_hash(fields()) == hashlib.sha256(expected).hexdigest()


def test_hash_ignores_timezone_spelling_and_key_order_but_not_content() -> None:
    nairobi = timezone(timedelta(hours=3))
    same_instant = datetime(2026, 11, 24, 11, 30, 5, 123, tzinfo=nairobi)
    assert compute_hash(fields(occurred_at=same_instant, details={"mfa": True, "method": "password"})) == compute_hash(
        fields()
    )
    assert compute_hash(fields(details={"method": "password", "mfa": False})) != compute_hash(fields())
    assert compute_hash(fields(prev_hash="1" * 64)) != compute_hash(fields())
    assert compute_hash(fields(occurred_at=datetime(2026, 11, 24, 8, 30, 5, 124, tzinfo=UTC))) != compute_hash(fields())


def test_hash_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        compute_hash(fields(occurred_at=datetime(2026, 11, 24, 8, 30)))


@pytest.mark.parametrize(
    "key",
    ["password", "new_password", "refreshToken", "access-token", "mfa_code", "code", "client_secret", "API_KEY", "otp"],
)
def test_secret_looking_detail_keys_are_refused(key: str) -> None:
    assert looks_secret(key)
    with pytest.raises(ValueError, match="secret"):
        clean_details({key: "x"})
    with pytest.raises(ValueError, match="secret"):
        clean_details({"nested": [{"fine": 1, key: "x"}]})


@pytest.mark.parametrize("key", ["reason", "role", "from_role", "family_id", "email_domain", "attempts", "method"])
def test_ordinary_detail_keys_are_kept(key: str) -> None:
    assert not looks_secret(key)
    assert clean_details({key: "x"}) == {key: "x"}


@pytest.mark.parametrize(
    ("details", "message"),
    [
        ({1: "x"}, "keys must be strings"),
        ({"ratio": float("nan")}, "NaN"),
        ({"when": datetime.now(UTC)}, "not a JSON value"),
        ({"a": {"b": {"c": {"d": {"e": 1}}}}}, "nested deeper"),
        ({"blob": "x" * 5000}, "bytes serialised"),
        ({"nul": "a\x00b"}, "NUL"),
    ],
)
def test_details_that_are_not_a_small_json_object_are_refused(details: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clean_details(details)


def test_details_are_normalised_to_what_a_json_round_trip_returns() -> None:
    assert clean_details({"roles": ("client", "therapist"), "n": 2, "x": 0.1, "none": None}) == {
        "roles": ["client", "therapist"],
        "n": 2,
        "x": 0.1,
        "none": None,
    }
    assert clean_details(None) == {}


def test_an_intact_chain_verifies() -> None:
    assert first_break(chain(5)) is None
    assert first_break([]) is None


def test_an_edited_row_fails_its_content_hash() -> None:
    rows = chain(5)
    rows[2]["action"] = "auth.login.failed"
    assert first_break(rows) == (3, ChainBreak.CONTENT_HASH_MISMATCH)


def test_a_rehashed_edited_row_breaks_the_next_rows_link() -> None:
    rows = chain(5)
    rows[2]["details"] = {"n": 99}
    rows[2]["hash"] = compute_hash(rows[2])
    assert first_break(rows) == (4, ChainBreak.PREV_HASH_MISMATCH)


def test_a_removed_row_is_a_gap() -> None:
    rows = chain(5)
    del rows[1]
    assert first_break(rows) == (3, ChainBreak.SEQUENCE_GAP)
    assert first_break(chain(3)[1:]) == (2, ChainBreak.SEQUENCE_GAP)


def test_an_anchor_catches_a_rewritten_or_truncated_tail() -> None:
    rows = chain(5)
    anchor = ChainAnchor(4, rows[3]["hash"])
    assert first_break(rows, anchor) is None
    assert first_break(rows[:3], anchor) == (4, ChainBreak.ANCHOR_MISMATCH)
    rewritten = chain(5)  # same seqs, different content, internally consistent
    assert first_break(rewritten, anchor) == (4, ChainBreak.ANCHOR_MISMATCH)


@pytest.mark.parametrize("value", ["", "12", "0:" + "a" * 64, "x:" + "a" * 64, "3:" + "A" * 64, "3:abc"])
def test_malformed_anchor_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="SEQ:HASH"):
        ChainAnchor.parse(value)


def test_anchor_parses_what_verify_prints() -> None:
    assert ChainAnchor.parse(f"12:{'ab' * 32}") == ChainAnchor(12, "ab" * 32)


@pytest.mark.parametrize("action", ["auth.", "auth.login.failed", "auth"])
def test_action_filter_takes_an_exact_action_or_a_dotted_prefix(action: str) -> None:
    assert AuditFilters(action=action).action == action


@pytest.mark.parametrize("action", ["Auth.", "auth..x", "auth.%", ".auth", "auth_%"])
def test_malformed_action_filter_is_refused(action: str) -> None:
    with pytest.raises(ValueError, match="lowercase dotted"):
        AuditFilters(action=action)


def test_query_keeps_filters_apart_from_paging() -> None:
    query = AuditLogQuery.model_validate({"action": "auth.", "limit": "10", "before_seq": "7"})
    assert query.filters() == AuditFilters(action="auth.")
    with pytest.raises(ValueError, match="since must be earlier"):
        AuditFilters(since=datetime(2026, 1, 2, tzinfo=UTC), until=datetime(2026, 1, 1, tzinfo=UTC))
