"""Building therapists and clients straight in the database, and signing them in over HTTP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import httpx
import pyotp
from fastapi import FastAPI

from smilingsteps.accounts.models import Role, TherapistStatus, User
from smilingsteps.audit.service import AuditContext
from smilingsteps.bookings import service as bookings
from smilingsteps.bookings.paying import Payment
from smilingsteps.therapists import service as therapists
from smilingsteps.therapists.schemas import AvailabilityIn, ExceptionIn, ProfileIn, RuleIn
from tests.support.accounts import ORIGIN, PASSWORD, auth_kit, new_email, runtime

WEEKDAYS_9_TO_5 = [RuleIn(weekday=day, start=time(9), end=time(17)) for day in range(5)]


@dataclass
class Person:
    user_id: uuid.UUID
    email: str
    http: httpx.AsyncClient

    @property
    def id(self) -> str:
        return str(self.user_id)

    def csrf(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.http.cookies.get("ss_csrf") or ""}

    async def renew(self) -> None:
        """Sign in again (after the test moved the clock past the session's idle timeout)."""
        response = await self.http.post("/api/v1/auth/login", json={"email": self.email, "password": PASSWORD})
        assert response.status_code == 200, response.text

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.post(path, headers=self.csrf(), **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.put(path, headers=self.csrf(), **kwargs)


async def make_user(
    app: FastAPI,
    *,
    role: Role,
    verified: bool = True,
    therapist_status: TherapistStatus | None = None,
    full_name: str = "Test Person",
    timezone: str = "Africa/Nairobi",
) -> User:
    now = runtime(app).now()
    user = User(
        id=uuid.uuid4(),
        email=new_email(role.value),
        password_hash=await auth_kit(app).hasher.hash(PASSWORD),
        full_name=full_name,
        phone="254712345678",
        timezone=timezone,
        role=role.value,
        status="active",
        therapist_status=therapist_status.value if therapist_status else None,
        email_verified_at=now if verified else None,
        password_changed_at=now,
        created_at=now,
        updated_at=now,
    )
    async with runtime(app).db.session() as session:
        session.add(user)
    return user


def _browser(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(f"10.1.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}", 1))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers={"Origin": ORIGIN})


async def sign_in(app: FastAPI, user: User) -> Person:
    http = _browser(app)
    response = await http.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return Person(user.id, user.email, http)


async def user_row(app: FastAPI, user_id: uuid.UUID) -> User:
    """A stored account (to sign in as it)."""
    async with runtime(app).db.session() as session:
        found = await session.get(User, user_id)
    assert found is not None
    return found


async def admin_person(app: FastAPI) -> Person:
    """An administrator with TOTP on, signed in with both steps (the admin API refuses a session without MFA)."""
    user = await make_user(app, role=Role.ADMIN, full_name="Grace Admin")
    secret = pyotp.random_base32()
    async with runtime(app).db.session() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        stored.mfa_secret = auth_kit(app).encryptor.encrypt(secret)
        stored.mfa_enabled_at = runtime(app).now()
    http = _browser(app)
    first = await http.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert first.json()["mfa_required"] is True, first.text
    code = pyotp.TOTP(secret).at(runtime(app).now())
    second = await http.post("/api/v1/auth/login/mfa", json={"mfa_token": first.json()["mfa_token"], "code": code})
    assert second.status_code == 200, second.text
    return Person(user.id, user.email, http)


async def client_person(app: FastAPI, **options: Any) -> Person:
    return await sign_in(app, await make_user(app, role=Role.CLIENT, **options))


async def therapist_user(
    app: FastAPI,
    *,
    approved: bool = True,
    tz: str = "Africa/Nairobi",
    rules: list[RuleIn] | None = None,
    exceptions: list[ExceptionIn] | None = None,
    price_kes: int = 2500,
    session_minutes: int = 50,
    buffer_minutes: int = 10,
    specialties: tuple[str, ...] = ("anxiety",),
    languages: tuple[str, ...] = ("en", "sw"),
    full_name: str = "Dr Wanjiru Kamau",
) -> User:
    """A therapist with a profile and availability (Mon-Fri 09:00-17:00 local unless told)."""
    status = TherapistStatus.APPROVED if approved else TherapistStatus.PENDING
    user = await make_user(app, role=Role.THERAPIST, therapist_status=status, full_name=full_name, timezone=tz)
    profile = ProfileIn(
        bio="Warm, practical support.",
        specialties=list(specialties),  # type: ignore[arg-type]
        languages=list(languages),  # type: ignore[arg-type]
        years_of_practice=8,
        license_number="KCPB-12345",
        price_kes=price_kes,
        session_minutes=session_minutes,
        buffer_minutes=buffer_minutes,
        timezone=tz,
    )
    now = runtime(app).now()
    async with runtime(app).db.session() as session:
        await therapists.save_profile(session, user.id, Role.THERAPIST, profile, now=now)
        await therapists.set_availability(
            session, user.id, AvailabilityIn(rules=rules or WEEKDAYS_9_TO_5, exceptions=exceptions or [])
        )
    return user


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


async def confirm(app: FastAPI, booking_id: str, *, paid_kes: int = 0) -> None:
    """Confirm as an administrator does, or (with `paid_kes`) as a confirmed M-Pesa payment does."""
    async with runtime(app).db.session() as session:
        await bookings.confirm(
            session,
            runtime(app).settings,
            uuid.UUID(booking_id),
            now=runtime(app).now(),
            audit=AuditContext(actor_id=None, ip=None, request_id=None),
            paid=Payment(amount_kes=paid_kes, receipt="SGR7T3X9QA") if paid_kes else None,
        )
