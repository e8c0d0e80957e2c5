"""Per-request values kept in the ASGI scope, readable by any layer, and who is asking from where."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from starlette.types import Scope

REQUEST_ID_KEY = "request_id"
CLIENT_IP_KEY = "client_ip"
ROUTE_TEMPLATE_KEY = "route_template"
USER_AGENT_MAX = 256  # characters of a User-Agent kept (sessions list, audit)


def _state(scope: Scope) -> dict[str, object]:
    state = scope.get("state")
    if state is None:
        state = {}
        scope["state"] = state
    return state


def set_request_id(scope: Scope, request_id: str) -> None:
    _state(scope)[REQUEST_ID_KEY] = request_id


def request_id_of(scope: Scope) -> str | None:
    value = (scope.get("state") or {}).get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


def set_route_template(scope: Scope, template: str) -> None:
    """For a request answered before routing (a 429): the route it would have reached, for the access log."""
    _state(scope)[ROUTE_TEMPLATE_KEY] = template


def route_template_of(scope: Scope) -> str | None:
    value = (scope.get("state") or {}).get(ROUTE_TEMPLATE_KEY)
    return value if isinstance(value, str) else None


def client_ip_of(scope: Scope) -> str | None:
    """The client address after trusted-proxy resolution."""
    client = scope.get("client")
    return client[0] if client else None


@dataclass(frozen=True)
class AuditContext:
    """Who is acting and from where; built once per request, written with every audit row."""

    actor_id: uuid.UUID | None
    ip: str | None
    request_id: str | None


SYSTEM = AuditContext(actor_id=None, ip=None, request_id=None)


@dataclass(frozen=True)
class ClientInfo:
    """The caller's address (after trusted-proxy resolution), user agent and request id."""

    ip: str | None
    user_agent: str
    request_id: str | None

    def audit(self, actor_id: uuid.UUID | None) -> AuditContext:
        return AuditContext(actor_id=actor_id, ip=self.ip, request_id=self.request_id)
