"""Therapist profiles, what they offer, and their availability (local wall-clock times in their zone)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ColumnElement, Date, ForeignKey, Index, Integer, String, Text, Time, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from smilingsteps.accounts.models import AccountStatus, Role, TherapistStatus, User
from smilingsteps.platform.models import Base, EnumText, UtcDateTime, new_id, one_of


class TherapistProfile(Base):
    __tablename__ = "therapist_profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    bio: Mapped[str] = mapped_column(Text, default="")
    years_of_practice: Mapped[int] = mapped_column(Integer)
    license_number: Mapped[str] = mapped_column(String(64))
    price_kes: Mapped[int] = mapped_column(Integer)
    session_minutes: Mapped[int] = mapped_column(Integer)
    buffer_minutes: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    # Bumped in the transaction that replaces the rules and exceptions: (therapist, version)
    # names one set of them, which is what lets each instance cache availability.
    availability_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("price_kes > 0", name="price_positive"),
        CheckConstraint("session_minutes BETWEEN 15 AND 180", name="session_length"),
        CheckConstraint("buffer_minutes BETWEEN 0 AND 120", name="buffer_length"),
        Index("ix_therapist_profiles_price_kes", "price_kes"),
    )


class TherapistSpecialty(Base):
    __tablename__ = "therapist_specialties"

    therapist_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("therapist_profiles.user_id", ondelete="CASCADE"), primary_key=True
    )
    specialty: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class TherapistLanguage(Base):
    __tablename__ = "therapist_languages"

    therapist_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("therapist_profiles.user_id", ondelete="CASCADE"), primary_key=True
    )
    language: Mapped[str] = mapped_column(String(8), primary_key=True, index=True)


class AvailabilityRule(Base):
    """Every week on `weekday` (0 = Monday), from `start` to `end`, in the therapist's zone."""

    __tablename__ = "availability_rules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    therapist_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("therapist_profiles.user_id", ondelete="CASCADE"), index=True
    )
    weekday: Mapped[int] = mapped_column(Integer)
    start: Mapped[time] = mapped_column(Time)
    end: Mapped[time] = mapped_column(Time)

    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        CheckConstraint('"end" > start', name="rule_order"),
    )


class ExceptionKind(StrEnum):
    OFF = "off"  # time off: the whole day, or from start to end
    EXTRA = "extra"  # hours added that day, from start to end


class AvailabilityException(Base):
    """A dated change: time off (whole day when no times) or extra hours."""

    __tablename__ = "availability_exceptions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    therapist_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("therapist_profiles.user_id", ondelete="CASCADE"), index=True
    )
    day: Mapped[date] = mapped_column(Date)
    kind: Mapped[ExceptionKind] = mapped_column(EnumText(ExceptionKind, 8))
    start: Mapped[time | None] = mapped_column(Time, default=None)
    end: Mapped[time | None] = mapped_column(Time, default=None)

    __table_args__ = (one_of("kind", ExceptionKind, name="kind_known"),)


# ---- what other domains may join on (read-only) -----------------------------------------

# What makes a therapist appear in the directory and be bookable: a therapist account,
# approved and active (and, by the join, with a profile).
LISTED: tuple[ColumnElement[bool], ...] = (
    User.role == Role.THERAPIST,
    User.therapist_status == TherapistStatus.APPROVED,
    User.status == AccountStatus.ACTIVE,
)


def is_approved(user: User) -> bool:
    """The Python side of `LISTED`'s approval: a therapist account an administrator approved."""
    return user.role == Role.THERAPIST and user.therapist_status == TherapistStatus.APPROVED


def bookable_columns() -> tuple[Any, ...]:
    """A listed therapist's booking terms, labelled with the field names of `schemas.Bookable`
    (select from `User` joined to `TherapistProfile`)."""
    return (
        User.id.label("id"),
        User.full_name.label("full_name"),
        TherapistProfile.timezone.label("timezone"),
        TherapistProfile.price_kes.label("price_kes"),
        TherapistProfile.session_minutes.label("session_minutes"),
        TherapistProfile.buffer_minutes.label("buffer_minutes"),
        TherapistProfile.availability_version.label("availability_version"),
    )
