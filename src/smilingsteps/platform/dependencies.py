"""Typed request dependencies shared by every domain.

They are `async def` although they do not await: FastAPI runs a plain `def`
dependency in a worker thread, which costs tens of microseconds per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.config import Settings
from smilingsteps.platform.runtime import Runtime, runtime_of


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def get_settings(request: Request) -> Settings:
    return runtime_of(request).settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit when the endpoint returns, roll back if it raises.

    Services only flush. Committing happens before the response is sent, so a
    client never sees success for work that was not stored.
    """
    async with runtime_of(request).db.session() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
