"""The route class every /api router uses: JSON bodies only, checked up front."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from smilingsteps.platform.errors import UnsupportedMediaTypeError


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


class ApiRoute(APIRoute):
    """Rejects a body that is not JSON with 415 before FastAPI tries to parse it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        field_info = getattr(self.body_field, "field_info", None)
        if self.body_field is None or isinstance(field_info, params.Form):
            return handler

        async def checked(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if _has_body(request) and (content_type is None or not is_json_media_type(content_type)):
                raise UnsupportedMediaTypeError(
                    f"Send the body as application/json, not {content_type or 'without a Content-Type'}."
                )
            return await handler(request)

        return checked
