"""Client address behind reverse proxies.

X-Forwarded-For is honoured only when the direct peer is a configured trusted
proxy; the client is the right-most address that is not itself trusted, so a
value a client forged at the left end changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


@lru_cache(maxsize=8192)
def _classify(address: str, networks: tuple[IPNetwork, ...]) -> bool | None:
    """None for a malformed address, else whether it is a trusted proxy (cached: parsing is the cost)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return any(ip in network for network in networks)


def resolve_client_ip(peer: str, forwarded_for: str | None, networks: tuple[IPNetwork, ...]) -> str:
    """The address of the real client given the direct peer and its X-Forwarded-For."""
    if not forwarded_for or not _classify(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        trusted = _classify(hop, networks)
        if trusted is None:
            return peer  # A malformed chain is not evidence of anything: keep the peer.
        if not trusted:
            return hop
    return hops[0] if hops else peer


class TrustedProxyMiddleware:
    def __init__(self, app: ASGIApp, *, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks = parse_networks(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks and scope.get("client"):
            forwarded = _header(scope, b"x-forwarded-for")
            if forwarded is not None:
                peer, port = scope["client"]
                scope["client"] = (resolve_client_ip(peer, forwarded, self.networks), port)
                if _classify(peer, self.networks) and _header(scope, b"x-forwarded-proto") == "https":
                    scope["scheme"] = "wss" if scope["type"] == "websocket" else "https"
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]
    return ",".join(values) if values else None
