"""The typed state `create_app`'s lifespan builds and every dependency reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from starlette.requests import HTTPConnection

from smilingsteps.config import Settings
from smilingsteps.platform.clock import Clock, system_clock, utc_from
from smilingsteps.platform.db import Database
from smilingsteps.platform.ratelimit.limiter import RateLimiter
from smilingsteps.platform.tasks import TaskGroup


@dataclass
class Runtime:
    settings: Settings
    db: Database
    limiter: RateLimiter
    clock: Clock = system_clock
    tasks: TaskGroup = field(default_factory=TaskGroup)
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    draining: bool = False

    def now(self) -> datetime:
        """Aware UTC now, from the runtime's clock (tests move it by hand)."""
        return utc_from(self.clock)

    def start_draining(self) -> None:
        """Readiness answers 503 from now on so the load balancer stops sending traffic."""
        self.draining = True


def runtime_of(connection: HTTPConnection) -> Runtime:
    runtime = getattr(connection.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the application lifespan has not started")
    return runtime
