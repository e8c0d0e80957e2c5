"""What every page route shares: its route class (redirects, expired forms, the viewer's
cookies on every answer), the typed dependencies, and small answer helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from smilingsteps.accounts.security import AuthKit, auth_kit_of
from smilingsteps.platform.errors import AppError, InternalError, from_validation_error, problem_response
from smilingsteps.platform.runtime import runtime_of
from smilingsteps.web.forms import read_form
from smilingsteps.web.rendering import Pages, pages_of
from smilingsteps.web.viewer import CSRF_FIELD, FormExpiredError, Redirect, Viewer, check_form

T = TypeVar("T")
log = structlog.get_logger("smilingsteps.web")


class PageRoute(APIRoute):
    """A page: a `Redirect` becomes a 303, an expired form goes back to its page with a notice, and
    the cookies the viewer needs (a refreshed session, a pre-session id) go out with any answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handler(request)
            except Redirect as redirect:
                response = see_other(redirect.location)
            except FormExpiredError:
                response = see_other(with_notice(request.url.path, "form-expired"))
            except (AppError, RequestValidationError) as exc:
                # Rendered here rather than by the app's handlers, so that the cookies below go out
                # with the error page too: a session refreshed in-process before a 404 must not lose
                # its rotated refresh token (the browser's next page would present the spent one).
                error = exc if isinstance(exc, AppError) else from_validation_error(exc)
                if error.status >= 500:
                    log.warning("request_failed", problem=error.slug, status=error.status)
                response = problem_response(error, request.scope)
            except Exception as exc:
                response = problem_response(_unexpected(request, exc), request.scope)
            viewer = getattr(request.state, "viewer", None)
            if isinstance(viewer, Viewer):
                viewer.finish(response)
            return response

        return page


def _unexpected(request: Request, exc: Exception) -> AppError:
    """What ErrorHandlerMiddleware would answer (a database outage is a 503, anything else a logged 500)."""
    error = runtime_of(request).db.classify(exc)
    if error is None:
        log.exception("unhandled_exception", method=request.method, path=request.url.path)
        return InternalError()
    return error


def page_router() -> APIRouter:
    return APIRouter(route_class=PageRoute, include_in_schema=False)


async def _pages(request: Request) -> Pages:
    return pages_of(runtime_of(request))


PagesDep = Annotated[Pages, Depends(_pages)]


def see_other(location: str) -> Response:
    return RedirectResponse(location, status_code=303)


def with_notice(path: str, notice: str, **query: str) -> str:
    return f"{path}?{urlencode({'notice': notice, **query})}"


async def posted(request: Request, viewer: Viewer) -> dict[str, Any]:
    """The posted form, after its CSRF token and origin are checked (else the page says it expired)."""
    data = await read_form(request)
    token = data.get(CSRF_FIELD)
    check_form(request, viewer, kit_of(request), token if isinstance(token, str) else None)
    return data


async def undoable(session: AsyncSession, work: Awaitable[T]) -> T:
    """Run a service call in a savepoint: when it refuses (raises), what it wrote before refusing is
    undone although the page goes on to answer normally (with the form again), and the request's
    transaction commits. The API needs no such thing: its refusals roll the whole request back."""
    async with session.begin_nested():
        return await work


async def attempt(session: AsyncSession, work: Awaitable[T]) -> T | AppError:
    """`undoable`, for a form: a refusal the person can act on (a 4xx other than 404 and 429) comes
    back for the page to show; anything else goes on to the error pages."""
    try:
        return await undoable(session, work)
    except AppError as error:
        if error.status >= 500 or error.status in (404, 429):
            raise
        return error


def kit_of(request: Request) -> AuthKit:
    return auth_kit_of(runtime_of(request))
