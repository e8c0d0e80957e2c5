"""Admin API bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from smilingsteps.accounts.schemas import UserOut
from smilingsteps.platform.schemas import RequestModel, ResponseModel


class UserPage(ResponseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class UserUpdateIn(RequestModel):
    """One change at a time, each audited: suspend/reactivate, or approve/reject a therapist."""

    status: Literal["active", "suspended"] | None = None
    therapist_status: Literal["approved", "rejected"] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None
