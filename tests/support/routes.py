"""Test-only routes that exercise the platform the way later domains will."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Response
from pydantic import Field
from sqlalchemy import text

from smilingsteps.platform.dependencies import DbSession
from smilingsteps.platform.errors import RateLimitedError
from smilingsteps.platform.routing import ApiRoute
from smilingsteps.platform.schemas import Multiline, RequestModel
from smilingsteps.platform.security_headers import permissions_policy
from smilingsteps.platform.versioning import deprecated

SECRET_IN_EXCEPTION = "db-password=hunter2-internal"


class EchoIn(RequestModel):
    name: str = Field(max_length=50)
    note: Annotated[str, Multiline()] = ""
    tags: list[str] = Field(default_factory=list, max_length=5)
    count: int = 0


def build_test_router(write_table: str | None = None) -> APIRouter:
    router = APIRouter(prefix="/api/v1/_test", route_class=ApiRoute)

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"unexpected failure with {SECRET_IN_EXCEPTION}")

    @router.post("/echo")
    async def echo(body: EchoIn) -> EchoIn:
        return body

    @router.get("/limited")
    async def limited() -> None:
        raise RateLimitedError("Too many attempts for policy 'test'.", headers={"Retry-After": "42"})

    @router.get("/db")
    async def db(session: DbSession) -> dict[str, int]:
        value = (await session.execute(text("SELECT 1"))).scalar_one()
        return {"value": int(value)}

    @router.get(
        "/old",
        deprecated=True,
        dependencies=[
            deprecated(
                deprecated_at=datetime(2026, 1, 1, tzinfo=UTC),
                sunset_at=datetime(2027, 1, 1, tzinfo=UTC),
                successor="/api/v2/_test/new",
            )
        ],
    )
    async def old() -> dict[str, str]:
        return {"version": "old"}

    @router.get("/call-page")
    async def call_page(response: Response) -> dict[str, str]:
        response.headers["Permissions-Policy"] = permissions_policy(camera="self", microphone="self")
        return {"page": "call"}

    if write_table is not None:

        @router.post("/write")
        async def write(session: DbSession, value: str, fail: bool = False) -> dict[str, str]:
            await session.execute(text(f"INSERT INTO {write_table} (value) VALUES (:v)"), {"v": value})
            await session.flush()
            if fail:
                raise RuntimeError("failure after the write")
            return {"stored": value}

    return router


def add_test_routes(app: FastAPI, write_table: str | None = None) -> FastAPI:
    app.include_router(build_test_router(write_table))
    return app
