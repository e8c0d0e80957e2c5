"""Security headers on every HTTP response, errors included.

The policy is fixed here; the one per-route hook is Permissions-Policy, which a
route may widen (the call page needs camera and microphone) by setting the
header itself, typically through `permissions_policy()`.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
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


def content_security_policy(*, upgrade_insecure: bool, script_nonce: str | None = None, extra_sources: str = "") -> str:
    policy = CONTENT_SECURITY_POLICY
    if script_nonce or extra_sources:
        nonce = f" 'nonce-{script_nonce}'" if script_nonce else ""
        extra = f" {extra_sources}" if extra_sources else ""
        policy = policy.replace("script-src 'self'", f"script-src 'self'{nonce}{extra}")
        policy = policy.replace("style-src 'self'", f"style-src 'self'{extra}")
        policy = policy.replace("img-src 'self' data:", f"img-src 'self' data:{extra}")
    return policy + ("; upgrade-insecure-requests" if upgrade_insecure else "")


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
        self.fixed = tuple(fixed.items())
        self.csp = content_security_policy(upgrade_insecure=production)
        self.permissions = permissions_policy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.fixed:
                    headers[name] = value
                # Routes may narrow the CSP (the docs page adds a nonce) or widen
                # Permissions-Policy; everything else above is not negotiable.
                headers.setdefault("Content-Security-Policy", self.csp)
                headers.setdefault("Permissions-Policy", self.permissions)
                if is_api:
                    headers.setdefault("Cache-Control", "no-store")
                if "server" in headers:
                    del headers["server"]
            await send(message)

        await self.app(scope, receive, send_with_headers)
