"""Therapists: profile, availability and slot bodies."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import Field, field_validator, model_validator

from smilingsteps.accounts.models import User
from smilingsteps.platform.schemas import (
    NUMBER,
    CalendarDay,
    LocalTime,
    Multiline,
    RequestModel,
    ResponseModel,
    TimeZoneName,
)
from smilingsteps.therapists.models import ExceptionKind, TherapistProfile, is_approved
from smilingsteps.therapists.vocabulary import Language, Specialty

MAX_RULES = 50
MAX_EXCEPTIONS = 366


@dataclass(frozen=True)
class Therapist:
    """A therapist account with its profile and what it offers, as the service returns it."""

    user: User
    profile: TherapistProfile
    specialties: list[str]
    languages: list[str]


@dataclass(frozen=True)
class Bookable:
    """What booking and slot computation need of a listed therapist (plain values, no ORM objects)."""

    id: uuid.UUID
    full_name: str
    timezone: str
    price_kes: int
    session_minutes: int
    buffer_minutes: int
    availability_version: int

    @classmethod
    def of(cls, therapist: Therapist) -> Bookable:
        user, profile = therapist.user, therapist.profile
        return cls(
            id=user.id,
            full_name=user.full_name,
            timezone=profile.timezone,
            price_kes=profile.price_kes,
            session_minutes=profile.session_minutes,
            buffer_minutes=profile.buffer_minutes,
            availability_version=profile.availability_version,
        )

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Bookable:
        """From a row selected with `models.bookable_columns()` (read by name)."""
        return cls(**{field.name: row[field.name] for field in fields(cls)})


class ProfileIn(RequestModel):
    bio: Annotated[str, Multiline(), Field(max_length=4000)] = ""
    specialties: Annotated[list[Specialty], Field(min_length=1, max_length=10, json_schema_extra={"uniqueItems": True})]
    languages: Annotated[list[Language], Field(min_length=1, max_length=10, json_schema_extra={"uniqueItems": True})]
    years_of_practice: Annotated[int, Field(ge=0, le=70), NUMBER]
    license_number: Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9/\-. ]+$")]
    price_kes: Annotated[int, Field(ge=100, le=1_000_000), NUMBER]
    session_minutes: Annotated[int, Field(ge=15, le=180), NUMBER] = 50
    buffer_minutes: Annotated[int, Field(ge=0, le=120), NUMBER] = 10
    timezone: TimeZoneName = "Africa/Nairobi"

    @field_validator("specialties", "languages")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists each entry once")
        return value


class ProfileOut(ResponseModel):
    id: uuid.UUID
    full_name: str
    bio: str
    specialties: list[str]
    languages: list[str]
    years_of_practice: int
    license_number: str
    price_kes: int
    session_minutes: int
    buffer_minutes: int
    timezone: str
    approved: bool

    @classmethod
    def of(cls, therapist: Therapist) -> ProfileOut:
        user, profile = therapist.user, therapist.profile
        return cls(
            id=user.id,
            full_name=user.full_name,
            bio=profile.bio,
            specialties=therapist.specialties,
            languages=therapist.languages,
            years_of_practice=profile.years_of_practice,
            license_number=profile.license_number,
            price_kes=profile.price_kes,
            session_minutes=profile.session_minutes,
            buffer_minutes=profile.buffer_minutes,
            timezone=profile.timezone,
            approved=is_approved(user),
        )


class RuleIn(RequestModel):
    weekday: Annotated[int, Field(ge=0, le=6, description="0 = Monday … 6 = Sunday"), NUMBER]
    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("end must be after start (split a rule that crosses midnight)")
        return self


class ExceptionIn(RequestModel):
    day: CalendarDay
    kind: ExceptionKind
    start: LocalTime | None = None
    end: LocalTime | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither (a whole day off)")
        if self.kind == "extra" and self.start is None:
            raise ValueError("extra hours need start and end")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class AvailabilityIn(RequestModel):
    rules: Annotated[list[RuleIn], Field(max_length=MAX_RULES)]
    exceptions: Annotated[list[ExceptionIn], Field(default_factory=list, max_length=MAX_EXCEPTIONS)]

    @model_validator(mode="after")
    def _no_overlaps(self) -> Self:
        by_day: dict[int, list[RuleIn]] = {}
        for rule in self.rules:
            by_day.setdefault(rule.weekday, []).append(rule)
        for rules in by_day.values():
            ordered = sorted(rules, key=lambda r: r.start)
            for before, after in itertools.pairwise(ordered):
                if after.start < before.end:
                    raise ValueError(f"rules overlap on weekday {before.weekday}")
        return self


class AvailabilityOut(ResponseModel):
    timezone: str
    rules: list[RuleIn]
    exceptions: list[ExceptionIn]


class SlotOut(ResponseModel):
    start: datetime
    end: datetime
    local_start: str = Field(description="the start in the requested time zone, ISO 8601 with its offset")
    timezone: str


class TherapistPage(ResponseModel):
    items: list[ProfileOut]
    next_cursor: str | None
