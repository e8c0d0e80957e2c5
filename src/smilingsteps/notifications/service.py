"""Queueing email: rendered now, written in the caller's transaction, sent after it commits.

The outbox row is part of the same transaction as the change that causes the
message, so a rolled-back change sends nothing and a committed one is sent by
the outbox sender (`smilingsteps worker`, or the app itself in development).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.config import Settings
from smilingsteps.notifications.models import OutboxStatus
from smilingsteps.notifications.repository import OutboxRepository
from smilingsteps.notifications.templates import render_email
from smilingsteps.platform.i18n import DEFAULT_LANGUAGE, Language
from smilingsteps.platform.models import new_id


async def queue_email(
    session: AsyncSession,
    *,
    to: str,
    template: str,
    context: Mapping[str, Any],
    now: datetime,
    language: Language = DEFAULT_LANGUAGE,
) -> uuid.UUID:
    """Render `template` with `context` in the recipient's `language`, write the message in `session`'s
    transaction; its id.

    The row is inserted at once (one INSERT, not a unit-of-work flush), but the
    caller's transaction decides whether the message exists.
    An unknown template, a missing context key or a malformed address raises
    (`EmailTemplateError` / `ValueError`): those are programming errors.
    """
    address = _checked_address(to)
    rendered = render_email(template, context, language)
    outbox_id = new_id()
    await OutboxRepository(session).insert(
        id=outbox_id,
        to_address=address,
        template=template,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
        status=OutboxStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    return outbox_id


def public_link(settings: Settings, path: str, **query: str) -> str:
    """An absolute link for emails: PUBLIC_BASE_URL + `path` + the url-encoded `query`."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"path must start with a single '/': {path!r}")
    link = settings.PUBLIC_BASE_URL + path
    return f"{link}?{urlencode(query)}" if query else link


@functools.lru_cache(maxsize=1024)  # parsing costs ~0.1 ms; the same people are written to again and again
def _checked_address(to: str) -> str:
    address = to.strip()
    try:
        parsed = Address(addr_spec=address)
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError("not an email address") from exc
    if not parsed.username or not parsed.domain or any(char.isspace() or ord(char) < 32 for char in address):
        raise ValueError("not an email address")
    return address
