"""`smilingsteps serve`'s server with one extra route that keeps the event loop busy,
as a loaded instance's is: the rate limiter must still read Redis's answers as on time."""

from __future__ import annotations

import sys
import time

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform.logging import configure_logging
from smilingsteps.platform.server import build_server

BUSY_MS = 4.0  # CPU each allowed request spends without yielding (serialising, templating…)


def main(port: int) -> None:
    settings = Settings.load()
    configure_logging(settings)
    app = create_app(settings)

    @app.get("/api/v1/_test/busy")
    async def busy() -> dict[str, bool]:
        until = time.perf_counter() + BUSY_MS / 1000
        while time.perf_counter() < until:
            pass
        return {"done": True}

    build_server(app, settings, host="127.0.0.1", port=port).run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
