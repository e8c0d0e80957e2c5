"""Admin API bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from smilingsteps.accounts.models import AccountStatus, TherapistStatus
from smilingsteps.accounts.schemas import UserOut
from smilingsteps.platform.schemas import OneOf, RequestModel, ResponseModel


class UserPage(ResponseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


# What an administrator decides about a therapist's application.
Decision = Annotated[TherapistStatus, OneOf(TherapistStatus.APPROVED, TherapistStatus.REJECTED)]


class UserUpdateIn(RequestModel):
    """One change at a time, each audited: suspend/reactivate, or approve/reject a therapist."""

    exactly_one = ("status", "therapist_status")

    status: AccountStatus | None = None
    therapist_status: Decision | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None
