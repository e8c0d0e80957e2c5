"""`smilingsteps serve`'s server (build_server, the real app) plus routes that take their time,
for the server-limits tests: a slow handler, one that reads its body late, one that reports
what its body did, and a WebSocket echo."""

from __future__ import annotations

import asyncio
import sys

import structlog
from fastapi import Request, WebSocket
from starlette.requests import ClientDisconnect

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform.logging import configure_logging
from smilingsteps.platform.server import build_server


def main(port: int) -> None:
    settings = Settings.load()
    configure_logging(settings)
    app = create_app(settings)
    log = structlog.get_logger("limits")

    @app.get("/_test/slow")
    async def slow(seconds: float) -> dict[str, bool]:
        log.info("slow_request_started")
        await asyncio.sleep(seconds)
        return {"finished": True}

    @app.post("/_test/read-late")
    async def read_late(request: Request, seconds: float) -> dict[str, int]:
        """Reads its body only after `seconds`: the client waits on the server, not the other way round."""
        await asyncio.sleep(seconds)
        return {"bytes": len(await request.body())}

    @app.post("/_test/echo-size")
    async def echo_size(request: Request) -> dict[str, int]:
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
        except ClientDisconnect:
            log.info("body_disconnected", received=received)
            raise
        return {"bytes": received}

    @app.websocket("/_test/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    build_server(app, settings, host="127.0.0.1", port=port).run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
