"""A therapist's pages: the application's status, the profile editor, weekly hours and time
off, and their sessions. Weekly hours are up to three ranges a day; time off and extra hours
are dated rows, removable, with blank rows to add more (no JavaScript needed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from smilingsteps.accounts.models import Role, User
from smilingsteps.admin import service as admin
from smilingsteps.bookings import listing
from smilingsteps.platform.dependencies import DbSession, Now
from smilingsteps.platform.errors import AppError
from smilingsteps.platform.i18n import gettext_in
from smilingsteps.platform.timezones import sorted_zone_names
from smilingsteps.therapists import service as therapists
from smilingsteps.therapists.models import ExceptionKind
from smilingsteps.therapists.schemas import AvailabilityIn, ExceptionIn, ProfileIn, RuleIn, Therapist
from smilingsteps.therapists.vocabulary import Language as SessionLanguage
from smilingsteps.therapists.vocabulary import Specialty
from smilingsteps.web import vocabulary
from smilingsteps.web.booking_pages import status_words, upcoming_and_past
from smilingsteps.web.forms import N_, FormErrors, explain, text, texts, validate, whole_numbers
from smilingsteps.web.rendering import Pages
from smilingsteps.web.routing import PagesDep, page_router, posted, see_other, undoable, with_notice
from smilingsteps.web.viewer import Viewer, ViewerDep, require_role

RANGES_PER_DAY = 3
NEW_EXCEPTION_ROWS = 2
MAX_EXCEPTION_ROWS = 200


def build_pages() -> APIRouter:
    router = page_router()
    _overview(router)
    _profile(router)
    _availability(router)
    return router


def _overview(router: APIRouter) -> None:
    @router.get("/practice")
    async def practice(*, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        application = await admin.therapist_application(session, user.id)
        return pages.page(request, viewer, "practice.html", application=application)

    @router.get("/practice/sessions")
    async def sessions(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now
    ) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        found = await listing.mine(session, user.id, status=None, limit=100, offset=0)
        upcoming, past = upcoming_and_past(found, now)
        words = status_words(viewer.language)
        return pages.page(request, viewer, "bookings.html", upcoming=upcoming, past=past, words=words, now=now)


def _profile_values(found: Therapist | None) -> dict[str, Any]:
    if found is None:
        return {"specialties": [], "languages": [], "session_minutes": "50", "buffer_minutes": "10"}
    profile = found.profile
    return {
        "bio": profile.bio,
        "specialties": list(found.specialties),
        "languages": list(found.languages),
        "years_of_practice": str(profile.years_of_practice),
        "license_number": profile.license_number,
        "price_kes": str(profile.price_kes),
        "session_minutes": str(profile.session_minutes),
        "buffer_minutes": str(profile.buffer_minutes),
        "timezone": profile.timezone,
    }


def _profile_page(
    request: Request, viewer: Viewer, pages: Pages, values: Mapping[str, Any], errors: FormErrors, *, status: int = 200
) -> Response:
    return pages.page(
        request,
        viewer,
        "practice_profile.html",
        values=values,
        errors=errors,
        status=status,
        specialties=vocabulary.specialties(viewer.language),
        session_languages=vocabulary.session_languages(viewer.language),
        zones=[(name, name) for name in sorted_zone_names()],
    )


def _profile(router: APIRouter) -> None:
    @router.get("/practice/profile")
    async def profile_form(*, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        found = await admin.therapist_application(session, user.id)
        values = _profile_values(found.therapist)
        values.setdefault("timezone", user.timezone)
        return _profile_page(request, viewer, pages, values, FormErrors())

    @router.post("/practice/profile")
    async def save_profile(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, now: Now
    ) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        data = await posted(request, viewer)
        values: dict[str, Any] = {
            name: text(data, name)
            for name in (
                "bio",
                "years_of_practice",
                "license_number",
                "price_kes",
                "session_minutes",
                "buffer_minutes",
                "timezone",
            )
        }
        values["specialties"] = [v for v in texts(data, "specialties") if v in set(Specialty)][:10]
        values["languages"] = [v for v in texts(data, "languages") if v in set(SessionLanguage)][:10]
        numbers = whole_numbers(dict(values), "years_of_practice", "price_kes", "session_minutes", "buffer_minutes")
        parsed = validate(ProfileIn, numbers, gettext_in(viewer.language))
        if isinstance(parsed, FormErrors):
            return _profile_page(request, viewer, pages, values, parsed, status=422)
        await therapists.save_profile(session, user.id, user.role, parsed, now=now)
        return see_other(with_notice("/practice", "profile-saved"))


# ---- weekly hours and time off ---------------------------------------------------------------------------


def _rules_from(data: Mapping[str, Any], gettext: Callable[[str], str], errors: FormErrors) -> list[RuleIn]:
    rules: list[RuleIn] = []
    for weekday in range(7):
        for index in range(RANGES_PER_DAY):
            name = f"rule-{weekday}-{index}"
            start, end = text(data, f"{name}-start"), text(data, f"{name}-end")
            if not start and not end:
                continue
            try:
                rules.append(RuleIn.model_validate({"weekday": weekday, "start": start, "end": end}))
            except ValidationError as exc:
                errors.add(name, _row_message(exc, gettext))
    return rules


def _exceptions_from(data: Mapping[str, Any], gettext: Callable[[str], str], errors: FormErrors) -> list[ExceptionIn]:
    found: list[ExceptionIn] = []
    for index in range(MAX_EXCEPTION_ROWS):
        name = f"exc-{index}"
        day = text(data, f"{name}-day")
        if f"{name}-day" not in data:
            break
        if not day or text(data, f"{name}-remove") == "yes":
            continue
        row = {
            "day": day,
            "kind": text(data, f"{name}-kind") or ExceptionKind.OFF.value,
            "start": text(data, f"{name}-start") or None,
            "end": text(data, f"{name}-end") or None,
        }
        try:
            found.append(ExceptionIn.model_validate(row))
        except ValidationError as exc:
            errors.add(name, _row_message(exc, gettext))
    return found


def _row_message(exc: ValidationError, gettext: Callable[[str], str]) -> str:
    explained = explain(exc, gettext)
    if any(item.get("type") == "value_error" for item in exc.errors()):
        return gettext(N_("Check the times: the end must be after the start, and extra hours need both."))
    return next(iter(explained.fields.values()), gettext(N_("Check this row.")))


def _availability_page(
    request: Request,
    viewer: Viewer,
    pages: Pages,
    user: User,
    *,
    zone: str,
    rules: list[RuleIn],
    exceptions: list[ExceptionIn],
    errors: FormErrors,
    status: int = 200,
) -> Response:
    by_day: dict[int, list[RuleIn]] = {day: [] for day in range(7)}
    for rule in rules:
        by_day[rule.weekday].append(rule)
    gettext = gettext_in(viewer.language)
    day_names = [gettext(name) for name in WEEKDAYS]
    return pages.page(
        request,
        viewer,
        "availability.html",
        zone=zone,
        by_day=by_day,
        exceptions=exceptions,
        errors=errors,
        status=status,
        ranges=RANGES_PER_DAY,
        new_rows=NEW_EXCEPTION_ROWS,
        day_names=day_names,
        account=user,
    )


WEEKDAYS = (N_("Monday"), N_("Tuesday"), N_("Wednesday"), N_("Thursday"), N_("Friday"), N_("Saturday"), N_("Sunday"))


def _availability(router: APIRouter) -> None:
    @router.get("/practice/availability")
    async def availability_form(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession
    ) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        try:
            zone, rules, exceptions = await therapists.availability(session, user.id)
        except AppError:
            return see_other(with_notice("/practice/profile", "profile-first"))
        return _availability_page(
            request, viewer, pages, user, zone=zone, rules=rules, exceptions=exceptions, errors=FormErrors()
        )

    @router.post("/practice/availability")
    async def save_availability(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession
    ) -> Response:
        user = require_role(request, viewer, Role.THERAPIST)
        data = await posted(request, viewer)
        gettext = gettext_in(viewer.language)
        errors = FormErrors()
        rules = _rules_from(data, gettext, errors)
        exceptions = _exceptions_from(data, gettext, errors)
        parsed: AvailabilityIn | None = None
        if not errors:
            try:
                parsed = AvailabilityIn(rules=rules, exceptions=exceptions)
            except ValidationError:
                errors.general.append(gettext(N_("Two ranges on the same day overlap. Join them or move one.")))
        if parsed is None:
            zone = text(data, "zone") or user.timezone
            return _availability_page(
                request, viewer, pages, user, zone=zone, rules=rules, exceptions=exceptions, errors=errors, status=422
            )
        try:
            await undoable(session, therapists.set_availability(session, user.id, parsed))
        except AppError:
            return see_other(with_notice("/practice/profile", "profile-first"))
        return see_other(with_notice("/practice/availability", "availability-saved"))
