"""Uvicorn with a graceful stop for load-balanced deployments, and bounds on slow or oversized clients.

On SIGTERM/SIGINT readiness flips to 503 at once, the listener keeps serving
for `delay` seconds (so the load balancer notices and stops routing here), then
uvicorn stops accepting, lets in-flight requests finish within its graceful
timeout, runs the lifespan shutdown and the process exits 0. A second signal
stops at once.

Connections are served by `LimitedHttpProtocol` (http_protocol.py): header
size and count, header and body timeouts, keep-alive and concurrency come from
the SERVER_* settings, whatever proxy stands in front.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import cast

import structlog
import uvicorn
from fastapi import FastAPI

from smilingsteps.config import AppEnv, Settings
from smilingsteps.platform.http_protocol import LimitedHttpProtocol, ServerLimits
from smilingsteps.platform.runtime import Runtime
from smilingsteps.platform.security_headers import SecurityHeadersMiddleware

log = structlog.get_logger("smilingsteps.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain: Callable[[], None], delay: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._delay = delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything built at start-up lives as long as the process: move it out
        # of the collector's view so full collections stay short (they paused the
        # loop for ~40 ms under load, enough to trip the Redis timeout).
        gc.collect()
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not calling super(): uvicorn would re-raise the signal after shutdown
        # and the process would end "killed by SIGTERM" instead of exiting 0.
        if self._stopping or self._loop is None:
            self.force_exit = self._stopping
            self.should_exit = True
            self._stopping = True
            return
        self._stopping = True
        # Everything, logging included, happens on the loop, not inside the signal handler.
        self._loop.call_soon_threadsafe(self._begin_drain, signal.Signals(sig).name)

    def _begin_drain(self, signal_name: str) -> None:
        log.info("shutdown_requested", signal=signal_name, readiness_delay_s=self._delay)
        self._drain()
        assert self._loop is not None
        self._loop.call_later(self._delay, self._stop_listening)

    def _stop_listening(self) -> None:
        self.should_exit = True


def readiness_delay(settings: Settings) -> float:
    """Deployed (and test) processes wait for the load balancer; a developer's Ctrl+C does not."""
    return settings.SHUTDOWN_READINESS_DELAY if settings.APP_ENV is not AppEnv.DEVELOPMENT else 0.0


def build_server(app: FastAPI, settings: Settings, *, host: str, port: int) -> DrainingServer:
    """Uvicorn configured for us: no server banner, our access log and logging, graceful drain,
    and the SERVER_* limits on what one client may cost."""
    limits = ServerLimits.from_settings(settings)
    # The answers the server gives by itself carry the headers the app puts on an API response.
    security_headers = SecurityHeadersMiddleware(app, production=settings.is_production).secure((), is_api=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=False,  # TrustedProxyMiddleware decides whom to believe
        server_header=False,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.SHUTDOWN_TIMEOUT),
        http=LimitedHttpProtocol.configured(limits, security_headers=security_headers),
        limit_concurrency=limits.max_connections,
        # Annotated int, used as a delay: fractions work (the protocol reads it from the config).
        timeout_keep_alive=cast(int, limits.keepalive_timeout),
    )

    def drain() -> None:
        runtime = getattr(app.state, "runtime", None)
        if isinstance(runtime, Runtime):
            runtime.start_draining()

    return DrainingServer(config, drain=drain, delay=readiness_delay(settings))
