"""Public pages: home, privacy notice, the language switch, the therapist directory and a
therapist's profile with their next free slots in the visitor's time zone, and the
static assets."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from smilingsteps.accounts import service as accounts
from smilingsteps.accounts.schemas import AccountUpdateIn
from smilingsteps.bookings import service as bookings
from smilingsteps.platform.dependencies import Client, DbSession, Now, SettingsDep
from smilingsteps.platform.errors import AppError, NotFoundError
from smilingsteps.platform.i18n import gettext_in, language_or_none
from smilingsteps.platform.ratelimit.policies import rate_limited
from smilingsteps.platform.timezones import is_iana_zone, sorted_zone_names
from smilingsteps.therapists import service as therapists
from smilingsteps.therapists.vocabulary import Language as SessionLanguage
from smilingsteps.therapists.vocabulary import Specialty
from smilingsteps.web import vocabulary
from smilingsteps.web.forms import FormErrors, explain, text
from smilingsteps.web.routing import PagesDep, kit_of, page_router, posted, see_other
from smilingsteps.web.viewer import LANGUAGE_COOKIE, ZONE_COOKIE, ViewerDep, remember, safe_next

API = rate_limited("api")  # pages that read the directory cost what the API's reads cost
PAGE_SIZE = 12
SLOT_DAYS = 14


def build_pages() -> APIRouter:
    router = page_router()

    @router.get("/static/{path:path}")
    async def static(*, request: Request, pages: PagesDep, path: str) -> Response:
        return pages.assets.response(request.url.path)

    @router.get("/")
    async def home(*, request: Request, viewer: ViewerDep, pages: PagesDep) -> Response:
        return pages.page(request, viewer, "home.html", specialties=vocabulary.specialties(viewer.language)[:8])

    @router.get("/privacy")
    async def privacy(*, request: Request, viewer: ViewerDep, pages: PagesDep) -> Response:
        return pages.page(request, viewer, "privacy.html")

    @router.post("/language")
    async def choose_language(
        *, request: Request, viewer: ViewerDep, session: DbSession, now: Now, client: Client
    ) -> Response:
        data = await posted(request, viewer)
        chosen = language_or_none(text(data, "language")) or viewer.language
        response = see_other(safe_next(text(data, "next")))
        remember(response, kit_of(request), LANGUAGE_COOKIE, chosen.value)
        if viewer.user is not None and viewer.user.language is not chosen:
            update = AccountUpdateIn(language=chosen)
            await accounts.update_account(session, viewer.user.id, update, now=now, client=client)
        return response

    _directory(router)
    _profile(router)
    return router


class DirectoryQuery(BaseModel):
    """The directory's filters as a form sends them: empty fields mean 'any'."""

    model_config = ConfigDict(extra="ignore")

    specialty: Specialty | None = None
    language: SessionLanguage | None = None
    max_price: Annotated[int | None, Field(ge=0, le=1_000_000)] = None
    available_by: date | None = None
    cursor: Annotated[str | None, Field(max_length=400, pattern=therapists.CURSOR_PATTERN)] = None


def _directory(router: APIRouter) -> None:
    @router.get("/therapists", openapi_extra=API)
    async def directory(
        *, request: Request, viewer: ViewerDep, pages: PagesDep, session: DbSession, settings: SettingsDep, now: Now
    ) -> Response:
        raw = {key: value for key, value in request.query_params.items() if value.strip()}
        errors = FormErrors()
        try:
            query = DirectoryQuery.model_validate(raw)
        except ValidationError as exc:
            errors = explain(exc, gettext_in(viewer.language))
            query = DirectoryQuery()
        try:
            found, next_cursor = await bookings.directory(
                session,
                settings,
                specialty=query.specialty,
                language=query.language,
                min_price=None,
                max_price=query.max_price,
                available_by=query.available_by,
                cursor=query.cursor,
                limit=PAGE_SIZE,
                now=now,
            )
        except AppError as error:
            if error.status >= 500:
                raise
            errors.general.append(gettext_in(viewer.language)(error.detail))
            found, next_cursor = [], None
        filters = {key: value for key, value in raw.items() if key != "cursor"}
        return pages.page(
            request,
            viewer,
            "directory.html",
            therapists=found,
            next_cursor=next_cursor,
            filters=filters,
            errors=errors,
            specialties=vocabulary.specialties(viewer.language),
            session_languages=vocabulary.session_languages(viewer.language),
            today=now.date().isoformat(),
            status=422 if errors.fields else 200,
        )


def _slot_days(starts: list[datetime], zone: ZoneInfo) -> OrderedDict[date, list[datetime]]:
    days: OrderedDict[date, list[datetime]] = OrderedDict()
    for start in starts:
        days.setdefault(start.astimezone(zone).date(), []).append(start)
    return days


def _profile(router: APIRouter) -> None:
    @router.get("/therapists/{therapist_id}", openapi_extra=API)
    async def profile(
        *,
        request: Request,
        viewer: ViewerDep,
        pages: PagesDep,
        session: DbSession,
        settings: SettingsDep,
        now: Now,
        therapist_id: str,
        tz: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        try:
            wanted = uuid.UUID(therapist_id)
        except ValueError:
            raise NotFoundError("No such therapist.") from None
        zone_name = tz if tz and is_iana_zone(tz) else viewer.timezone
        therapist = await therapists.listed(session, wanted)
        _, starts = await bookings.free_slots(session, settings, wanted, now, now + timedelta(days=SLOT_DAYS), now=now)
        zone = ZoneInfo(zone_name)
        response = pages.page(
            request,
            viewer,
            "therapist.html",
            therapist=therapist,
            days=_slot_days(starts, zone),
            zone=zone_name,
            zones=sorted_zone_names(),
            zone_known=bool(tz) or viewer.signed_in or ZONE_COOKIE in request.cookies,
            slot_days=SLOT_DAYS,
        )
        if tz and is_iana_zone(tz) and not viewer.signed_in:
            remember(response, kit_of(request), ZONE_COOKIE, tz)
        return response
