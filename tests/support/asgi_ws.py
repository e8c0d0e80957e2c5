"""Drive a WebSocket handshake straight through an ASGI app (no server, no extra client library)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message


async def websocket_handshake(
    app: ASGIApp, path: str, *, client: tuple[str, int] = ("127.0.0.1", 5000), http_denial: bool = False
) -> list[Message]:
    """Connect, collect everything the app sends until it closes or accepts and speaks, then disconnect."""
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    sent: list[Message] = []
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": client,
        "server": ("testserver", 80),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if http_denial else {},
    }

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] in ("websocket.close", "websocket.http.response.body"):
            await incoming.put({"type": "websocket.disconnect", "code": 1000})

    await app(scope, incoming.get, send)
    return sent
