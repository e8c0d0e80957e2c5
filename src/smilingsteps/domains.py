"""The registry: every domain, in dependency order. Adding a domain is one line here.

`create_app` mounts their routers and installs their runtime parts, Alembic reads their
tables, and `smilingsteps worker` (or the development server) runs their periodic jobs,
all from this list. Each domain only depends on domains listed before it
(`tests/unit/test_architecture.py` holds the code to what each one declares).
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import MetaData

from smilingsteps import accounts, admin, audit, bookings, notifications, payments, therapists, web
from smilingsteps.config import Settings
from smilingsteps.platform.clock import Clock, system_clock
from smilingsteps.platform.db import Database
from smilingsteps.platform.domain import Domain
from smilingsteps.platform.jobs import PeriodicJob
from smilingsteps.platform.models import Base
from smilingsteps.platform.runtime import Runtime

DOMAINS: tuple[Domain, ...] = (
    notifications.DOMAIN,
    audit.DOMAIN,
    accounts.DOMAIN,
    therapists.DOMAIN,
    bookings.DOMAIN,
    payments.DOMAIN,
    admin.DOMAIN,
    web.DOMAIN,
)


def load_all_models() -> MetaData:
    """Every domain's tables on the shared metadata (Alembic, and tests that compare it with migrations)."""
    for domain in DOMAINS:
        domain.load_models()
    return Base.metadata


def api_routers() -> list[APIRouter]:
    return [router for domain in DOMAINS if (router := domain.build_router()) is not None]


def page_routers() -> list[APIRouter]:
    return [router for domain in DOMAINS if (router := domain.build_pages()) is not None]


def install_parts(runtime: Runtime) -> None:
    for domain in DOMAINS:
        domain.install_part(runtime)


def periodic_jobs(settings: Settings, db: Database, clock: Clock = system_clock) -> list[PeriodicJob]:
    """Every domain's periodic jobs, in registry order."""
    return [job for domain in DOMAINS for job in domain.build_jobs(settings, db, clock)]
