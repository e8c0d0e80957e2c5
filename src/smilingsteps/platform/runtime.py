"""The one typed state object of an application: `create_app` builds it, the lifespan
starts and stops it, and every dependency reads it (`runtime_of`).

It holds the platform's shared parts (settings, database, rate limiter, clock,
data encryption, background tasks) and one part per domain that keeps state for
the life of the app (the accounts toolkit, say), looked up by type.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from starlette.requests import HTTPConnection

from smilingsteps.config import Settings
from smilingsteps.platform.clock import Clock, system_clock, utc_from
from smilingsteps.platform.crypto import Encryptor
from smilingsteps.platform.db import Database
from smilingsteps.platform.errors import ErrorPage
from smilingsteps.platform.jobs import JobRunner
from smilingsteps.platform.ratelimit.limiter import RateLimiter
from smilingsteps.platform.tasks import TaskGroup

P = TypeVar("P")


class Part(Protocol):
    """What a domain keeps for the life of the app; `start` runs in the lifespan before traffic, `stop` after it."""

    async def start(self, runtime: Runtime) -> None: ...

    async def stop(self) -> None: ...


def build_encryptor(settings: Settings) -> Encryptor:
    """Data at rest (TOTP secrets, session notes): ENCRYPTION_KEYS, or in development a key from SECRET_KEY."""
    keys = settings.encryption_keys
    return Encryptor(keys) if keys else Encryptor.from_secret(settings.secret_key)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    limiter: RateLimiter
    encryptor: Encryptor
    clock: Clock = system_clock
    tasks: TaskGroup = field(default_factory=TaskGroup)
    parts: dict[type[Any], Part] = field(default_factory=dict)
    # Refused authorisations by reason (`security_events`), for /metrics.
    security_events: Counter[str] = field(default_factory=Counter)
    # The periodic jobs this process runs itself (development), while the lifespan runs.
    jobs: JobRunner | None = None
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    draining: bool = False
    # How errors look to a browser (the web domain's pages); None answers problem+json to everyone.
    error_page: ErrorPage | None = None

    def now(self) -> datetime:
        """Aware UTC now, from the runtime's clock (tests move it by hand)."""
        return utc_from(self.clock)

    def add_part(self, part: Part) -> None:
        if type(part) in self.parts:
            raise ValueError(f"a {type(part).__name__} is already installed")
        self.parts[type(part)] = part

    def part(self, kind: type[P]) -> P:
        """The installed part of this type (a domain's state), or RuntimeError when the domain is not wired."""
        found = self.parts.get(kind)
        if not isinstance(found, kind):
            raise RuntimeError(f"no {kind.__name__} is installed: is its domain registered?")
        return found

    def mark_started(self) -> None:
        """Called by the lifespan: uptime counts from here, and a restarted app is not draining."""
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self.draining = False

    def start_draining(self) -> None:
        """Readiness answers 503 from now on so the load balancer stops sending traffic."""
        self.draining = True


def runtime_of(connection: HTTPConnection) -> Runtime:
    return runtime_of_app(connection.app)


def runtime_of_app(app: Any) -> Runtime:
    runtime = getattr(app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("not a Smiling Steps application (create_app installs the runtime)")
    return runtime
