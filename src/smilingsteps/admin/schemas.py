"""Admin API bodies, and what the admin service returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import Field

from smilingsteps.accounts.models import AccountStatus, TherapistStatus, User
from smilingsteps.accounts.schemas import UserOut
from smilingsteps.platform.schemas import OneOf, RequestModel, ResponseModel
from smilingsteps.therapists.schemas import ProfileOut, Therapist


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


@dataclass(frozen=True)
class Application:
    """A therapist account under review: the account, its profile (None before one is written), the last decision."""

    user: User
    therapist: Therapist | None
    reviewed_at: datetime | None
    rejection_reason: str | None


class TherapistApplicationOut(ResponseModel):
    """What an administrator reads before approving or rejecting a therapist."""

    account: UserOut
    profile: ProfileOut | None = Field(
        description="the full profile, licence number included; null until the therapist has written one"
    )
    submitted_at: datetime | None = Field(description="when the therapist first saved their profile")
    profile_updated_at: datetime | None = Field(description="when the therapist last changed their profile")
    reviewed_at: datetime | None = Field(description="when an administrator last approved or rejected the application")
    rejection_reason: str | None = Field(
        description="the reason given with the rejection while the application stands rejected; null if none was given"
    )

    @classmethod
    def of(cls, application: Application) -> TherapistApplicationOut:
        therapist = application.therapist
        return cls(
            account=UserOut.of(application.user),
            profile=None if therapist is None else ProfileOut.of(therapist),
            submitted_at=None if therapist is None else therapist.profile.created_at,
            profile_updated_at=None if therapist is None else therapist.profile.updated_at,
            reviewed_at=application.reviewed_at,
            rejection_reason=application.rejection_reason,
        )
