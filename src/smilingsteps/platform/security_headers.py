"""Security headers on every HTTP response, errors included.

The policy is fixed here; the one per-route hook is Permissions-Policy, which a
route may widen (the call page needs camera and microphone) by setting the
header itself, typically through `permissions_policy()`.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "media-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)
DENIED_FEATURES = ("camera", "microphone", "geolocation", "payment", "usb", "display-capture")
HSTS = "max-age=63072000; includeSubDomains"


def permissions_policy(**allowed: str) -> str:
    """A Permissions-Policy value denying every feature except those named, e.g. camera="self"."""
    parts = []
    for feature in DENIED_FEATURES:
        origin = allowed.get(feature.replace("-", "_"))
        parts.append(f"{feature}=({origin})" if origin else f"{feature}=()")
    return ", ".join(parts)


def content_security_policy(*, upgrade_insecure: bool) -> str:
    """The one policy, for every response (the API docs included: their assets are self-hosted)."""
    return CONTENT_SECURITY_POLICY + ("; upgrade-insecure-requests" if upgrade_insecure else "")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, production: bool) -> None:
        self.app = app
        fixed = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            "X-Permitted-Cross-Domain-Policies": "none",
        }
        if production:
            fixed["Strict-Transport-Security"] = HSTS
        # Raw (lower-case bytes) forms, appended straight to the ASGI message:
        # this runs on every response, and MutableHeaders rescans per header.
        self._raw_fixed = [(name.lower().encode(), value.encode()) for name, value in fixed.items()]
        self._fixed_names = frozenset(name for name, _ in self._raw_fixed) | {b"server"}
        self._raw_csp = (b"content-security-policy", content_security_policy(upgrade_insecure=production).encode())
        self._raw_permissions = (b"permissions-policy", permissions_policy().encode())
        self._raw_no_store = (b"cache-control", b"no-store")

    def secure(self, raw_headers: Iterable[tuple[bytes, bytes]], *, is_api: bool) -> list[tuple[bytes, bytes]]:
        """Response headers with the policy applied."""
        headers = list(raw_headers)
        names = {name.lower() for name, _ in headers}
        if not names.isdisjoint(self._fixed_names):
            headers = [(name, value) for name, value in headers if name.lower() not in self._fixed_names]
        headers.extend(self._raw_fixed)
        # Routes may narrow the CSP (the docs page adds a nonce) or widen
        # Permissions-Policy; everything else above is not negotiable.
        if b"content-security-policy" not in names:
            headers.append(self._raw_csp)
        if b"permissions-policy" not in names:
            headers.append(self._raw_permissions)
        if is_api and b"cache-control" not in names:
            headers.append(self._raw_no_store)
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self.secure(message.get("headers", ()), is_api=is_api)
            await send(message)

        await self.app(scope, receive, send_with_headers)
