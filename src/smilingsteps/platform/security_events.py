"""Security events: refused authorisation worth an operator's eye.

A forged, expired or revoked token, a CSRF refusal, a role or second factor the caller lacks:
each is one log line (`security_event`, logger `smilingsteps.security`) with the reason, the
user when known, the request id, the client address and the route template, and is counted
in `/metrics` (`smilingsteps_security_events_total{reason}`) so repeated failures can alert.
Token contents, cookies and headers are never logged.
"""

from __future__ import annotations

import uuid

import structlog
from starlette.requests import HTTPConnection

from smilingsteps.platform.access_log import route_template
from smilingsteps.platform.context import client_ip_of, request_id_of
from smilingsteps.platform.runtime import runtime_of

log = structlog.get_logger("smilingsteps.security")

# Reasons that are part of normal use (an access token running out before the browser refreshes
# it) are logged at info; the others at warning.
ROUTINE = frozenset({"expired_token"})


def security_event(connection: HTTPConnection, reason: str, *, user_id: uuid.UUID | None = None) -> None:
    runtime_of(connection).security_events[reason] += 1
    scope = connection.scope
    fields = {
        "reason": reason,
        "user_id": str(user_id) if user_id else None,
        "request_id": request_id_of(scope),
        "client": client_ip_of(scope),
        "method": scope.get("method", "WS"),
        "route": route_template(scope),
    }
    if reason in ROUTINE:
        log.info("security_event", **fields)
    else:
        log.warning("security_event", **fields)
