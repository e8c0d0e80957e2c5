"""`smilingsteps serve`'s server with one extra slow route, for the drain test."""

from __future__ import annotations

import asyncio
import sys

import structlog

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform.logging import configure_logging
from smilingsteps.platform.server import build_server


def main(port: int) -> None:
    settings = Settings.load()
    configure_logging(settings)
    app = create_app(settings)
    log = structlog.get_logger("slow")

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        log.info("slow_request_started")
        # Long enough to still be running when the listener closes after the readiness delay.
        await asyncio.sleep(settings.SHUTDOWN_READINESS_DELAY + 1.0)
        return {"finished": True}

    server = build_server(app, settings, host="127.0.0.1", port=port)
    server.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
