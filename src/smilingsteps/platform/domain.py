"""How a domain declares itself, so that one registry (`smilingsteps/domains.py`) wires it.

Each domain package states in its `__init__.py`:

    DOMAIN = Domain(
        name="bookings",
        depends_on=("accounts", "audit", "notifications", "therapists"),
        models="smilingsteps.bookings.models",
        router="smilingsteps.bookings.router:build_router",
        jobs="smilingsteps.bookings.jobs:jobs",
    )

The parts are named, not imported, so that importing a domain's models (Alembic does)
never drags in its router and everything that imports. `create_app`, Alembic's metadata
and `smilingsteps worker` read the registry; nothing else lists domains.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter

    from smilingsteps.config import Settings
    from smilingsteps.platform.clock import Clock
    from smilingsteps.platform.db import Database
    from smilingsteps.platform.jobs import PeriodicJob
    from smilingsteps.platform.runtime import Runtime


def _resolve(target: str) -> Callable[..., Any]:
    """`package.module:function` → the function."""
    module, _, attribute = target.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not callable(found):
        raise TypeError(f"{target} is not callable")
    return found  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Domain:
    name: str
    # The domains this one uses (through their services); the import-graph test holds it to this.
    depends_on: tuple[str, ...] = ()
    # The module defining its tables.
    models: str | None = None
    # `module:function` returning its APIRouter, mounted under /api/v1.
    router: str | None = None
    # `module:function` returning its browser pages' APIRouter, mounted at / and left out of the API document.
    pages: str | None = None
    # `module:function` (settings, db, clock) returning its periodic jobs.
    jobs: str | None = None
    # `module:function` (runtime) installing its part of the runtime (state it keeps for the app's life).
    part: str | None = None

    def load_models(self) -> None:
        if self.models is not None:
            importlib.import_module(self.models)

    def build_router(self) -> APIRouter | None:
        return None if self.router is None else _resolve(self.router)()

    def build_pages(self) -> APIRouter | None:
        return None if self.pages is None else _resolve(self.pages)()

    def build_jobs(self, settings: Settings, db: Database, clock: Clock) -> Sequence[PeriodicJob]:
        return () if self.jobs is None else _resolve(self.jobs)(settings, db, clock)

    def install_part(self, runtime: Runtime) -> None:
        if self.part is not None:
            _resolve(self.part)(runtime)
