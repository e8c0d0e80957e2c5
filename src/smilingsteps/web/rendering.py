"""Rendering pages: one Jinja environment per language (gettext installed), the helpers
templates use (assets with integrity, dates in the viewer's zone, shillings), and the
friendly error pages a browser gets instead of problem+json.

The web domain's part of the runtime (`Runtime.part(Pages)`); installing it also makes
it the runtime's error page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Scope

from smilingsteps.platform import i18n
from smilingsteps.platform.context import request_id_of
from smilingsteps.platform.errors import AppError
from smilingsteps.platform.i18n import LANGUAGE_NAMES, Language
from smilingsteps.platform.runtime import Runtime
from smilingsteps.web import payment_views, vocabulary
from smilingsteps.web.assets import Assets
from smilingsteps.web.viewer import CSRF_FIELD, Viewer, language_of_request

log = structlog.get_logger("smilingsteps.web")
HTML = "text/html; charset=utf-8"


def _script(assets: Assets) -> Callable[[str], Markup]:
    def script(name: str) -> Markup:
        asset = assets[name]
        return Markup('<script type="module" src="{}" integrity="{}"></script>').format(asset.url, asset.integrity)

    return script


def _stylesheet(assets: Assets) -> Callable[[str], Markup]:
    def stylesheet(name: str) -> Markup:
        asset = assets[name]
        return Markup('<link rel="stylesheet" href="{}" integrity="{}">').format(asset.url, asset.integrity)

    return stylesheet


def _environment(language: Language, assets: Assets) -> Environment:
    env = Environment(
        loader=PackageLoader("smilingsteps.web", "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates ship inside the package: no file-date check on every render.
        auto_reload=False,
    )
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(
        lang=language.value,
        language_names=LANGUAGE_NAMES,
        languages=list(Language),
        script=_script(assets),
        stylesheet=_stylesheet(assets),
        asset_url=lambda name: assets[name].url,
        csrf_field=CSRF_FIELD,
    )
    env.filters.update(
        when=lambda moment, zone: i18n.when(moment, zone, language),
        clock=lambda moment, zone: i18n.clock_time(moment, zone, language),
        day=lambda value: i18n.day(value, language),
        kes=lambda amount: i18n.kes(amount, language),
        number=lambda value: i18n.number(value, language),
        specialty=vocabulary.specialty_namer(language),
        session_language=vocabulary.language_namer(language),
        iso=lambda value: value.isoformat() if isinstance(value, datetime | date) else str(value),
        local_phone=payment_views.local_phone,
        masked_phone=payment_views.masked_phone,
    )
    return env


class Pages:
    """Templates and assets for the life of the app."""

    def __init__(self, assets: Assets | None = None) -> None:
        self.assets = assets or Assets()
        self._environments = {language: _environment(language, self.assets) for language in Language}

    async def start(self, runtime: Runtime) -> None:
        """Compile every template now, so a broken one fails the start, not a visitor's request."""
        for environment in self._environments.values():
            for name in environment.list_templates(extensions=["html"]):
                environment.get_template(name)

    async def stop(self) -> None:
        """Nothing to release."""

    def render(self, name: str, language: Language, context: Mapping[str, Any]) -> str:
        return self._environments[language].get_template(name).render(context)

    def page(
        self,
        request: Request,
        viewer: Viewer,
        name: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Response:
        """A whole page for `viewer`: the layout's needs (who, language switch, CSRF token) filled in."""
        body = self.render(
            name,
            viewer.language,
            {
                "viewer": viewer,
                "user": viewer.user,
                "csrf_token": viewer.csrf_token,
                "path": _here(request),
                "request_id": request_id_of(request.scope),
                "notice": request.query_params.get("notice", "")[:40],
                **context,
            },
        )
        response = HTMLResponse(body, status_code=status, headers=dict(headers or {}))
        # Pages show a person's own data: never stored by a shared cache or the browser's disk.
        response.headers.setdefault("Cache-Control", "no-store" if viewer.signed_in else "no-cache")
        return viewer.finish(response)

    def error_page(self, error: AppError, scope: Scope) -> Response:
        """The friendly page for an error a browser ran into; it needs no database (it may be down)."""
        request = Request(scope)
        language = language_of_request(request)
        retry_after = _retry_after(error)
        body = self.render(
            "error.html",
            language,
            {
                "viewer": None,
                "user": None,
                "csrf_token": "",
                "path": _here(request),
                "notice": "",
                "status": error.status,
                "error": error,
                "retry_after": retry_after,
                "retry_minutes": math.ceil(retry_after / 60) if retry_after else None,
                "request_id": request_id_of(scope),
            },
        )
        headers = {**error.headers, "Cache-Control": "no-store"}
        return HTMLResponse(body, status_code=error.status, headers=headers, media_type=HTML)


def _retry_after(error: AppError) -> int | None:
    value = error.headers.get("Retry-After")
    return int(value) if value and value.isdigit() else None


def _here(request: Request) -> str:
    """This page's path and query, for the language switch to come back to."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def pages_of(runtime: Runtime) -> Pages:
    return runtime.part(Pages)


def install(runtime: Runtime) -> Pages:
    pages = Pages()
    runtime.add_part(pages)
    runtime.error_page = pages.error_page
    return pages
