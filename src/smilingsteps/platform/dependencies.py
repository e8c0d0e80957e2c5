"""Typed request dependencies shared by every domain: the runtime, settings, the
request's transaction, the clock and who is calling from where.

They are `async def` although they do not await: FastAPI runs a plain `def`
dependency in a worker thread, which costs tens of microseconds per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from smilingsteps.config import Settings
from smilingsteps.platform.context import USER_AGENT_MAX, ClientInfo, client_ip_of, request_id_of
from smilingsteps.platform.crypto import Encryptor
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


async def now_of(request: Request) -> datetime:
    """Aware UTC now from the runtime's clock (tests move it by hand)."""
    return runtime_of(request).now()


async def client_info(request: Request) -> ClientInfo:
    return ClientInfo(
        ip=client_ip_of(request.scope),
        user_agent=request.headers.get("user-agent", "")[:USER_AGENT_MAX],
        request_id=request_id_of(request.scope),
    )


async def encryptor_of(request: Request) -> Encryptor:
    return runtime_of(request).encryptor


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
Now = Annotated[datetime, Depends(now_of)]
Client = Annotated[ClientInfo, Depends(client_info)]
EncryptorDep = Annotated[Encryptor, Depends(encryptor_of)]
