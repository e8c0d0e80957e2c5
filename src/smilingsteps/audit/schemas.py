"""What the audit log API reads and returns.

`AuditLogQuery` is meant for `Annotated[AuditLogQuery, Query()]` in the admin
router; `AuditFilters` is what the service filters by.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from smilingsteps.audit.models import ACTION_MAX, TARGET_ID_MAX, TARGET_TYPE_MAX, AuditEvent
from smilingsteps.platform.schemas import RequestModel, ResponseModel, UtcDatetime

# `auth.login.failed`: lowercase words joined by dots, at least two of them.
ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
# A filter is an exact action or a prefix ending in a dot (`auth.`).
ACTION_FILTER_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\.?")
LIST_LIMIT_MAX = 200
LIST_LIMIT_DEFAULT = 50


class AuditFilters(RequestModel):
    """Every filter is optional; given filters all apply (AND)."""

    actor_id: uuid.UUID | None = None
    action: str | None = Field(
        default=None,
        max_length=ACTION_MAX,
        description="an exact action (`auth.login.failed`) or a prefix ending in a dot (`auth.`)",
        json_schema_extra={"pattern": f"^{ACTION_FILTER_PATTERN.pattern}$"},
    )
    target_type: str | None = Field(default=None, max_length=TARGET_TYPE_MAX)
    target_id: str | None = Field(default=None, max_length=TARGET_ID_MAX)
    since: UtcDatetime | None = Field(default=None, description="inclusive")
    until: UtcDatetime | None = Field(default=None, description="exclusive")

    @field_validator("action")
    @classmethod
    def _action_shape(cls, value: str | None) -> str | None:
        if value is not None and ACTION_FILTER_PATTERN.fullmatch(value) is None:
            raise ValueError("must be lowercase dotted words, optionally ending in a dot for a prefix (auth.)")
        return value

    @model_validator(mode="after")
    def _ordered_window(self) -> Self:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        return self


class AuditLogQuery(AuditFilters):
    """Filters plus keyset pagination: pass the previous page's `next_before_seq` as `before_seq`."""

    limit: int = Field(default=LIST_LIMIT_DEFAULT, ge=1, le=LIST_LIMIT_MAX)
    before_seq: int | None = Field(default=None, ge=1)

    def filters(self) -> AuditFilters:
        return AuditFilters.model_validate(self.model_dump(exclude={"limit", "before_seq"}))


class AuditEventOut(ResponseModel):
    id: uuid.UUID
    seq: int
    occurred_at: datetime
    actor_id: uuid.UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditLogPage(ResponseModel):
    items: list[AuditEventOut]
    next_before_seq: int | None = Field(description="pass as before_seq for the next (older) page; null on the last")

    @classmethod
    def of(cls, events: list[AuditEvent], *, limit: int) -> AuditLogPage:
        """A page of `list_events(..., limit=limit)` results (newest first)."""
        items = [AuditEventOut.model_validate(event) for event in events]
        return cls(items=items, next_before_seq=events[-1].seq if len(events) == limit and events else None)
