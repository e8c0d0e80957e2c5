"""Per-request values kept in the ASGI scope, readable by any layer."""

from __future__ import annotations

from starlette.types import Scope

REQUEST_ID_KEY = "request_id"
CLIENT_IP_KEY = "client_ip"


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


def client_ip_of(scope: Scope) -> str | None:
    """The client address after trusted-proxy resolution."""
    client = scope.get("client")
    return client[0] if client else None
