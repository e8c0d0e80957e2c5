"""API versioning: the mechanism behind the policy in docs/api-versioning.md.

A deprecated route declares `dependencies=[deprecated(...)]`; every response it
sends then carries `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link`
to its successor, and the OpenAPI document marks it deprecated. Past its sunset
it answers 410 Gone (problem+json) until the route is removed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from fastapi import Depends, Response
from fastapi.params import Depends as DependsParam

from smilingsteps.platform.errors import GoneError

API_PREFIX = "/api/v1"


def deprecation_headers(*, deprecated_at: datetime, sunset_at: datetime, successor: str) -> dict[str, str]:
    return {
        "Deprecation": f"@{int(deprecated_at.astimezone(UTC).timestamp())}",
        "Sunset": format_datetime(sunset_at.astimezone(UTC), usegmt=True),
        "Link": f'<{successor}>; rel="successor-version"',
    }


def deprecated(*, deprecated_at: datetime, sunset_at: datetime, successor: str) -> DependsParam:
    """A route dependency announcing the route's deprecation, sunset and successor."""
    if sunset_at <= deprecated_at:
        raise ValueError("sunset_at must come after deprecated_at")
    headers = deprecation_headers(deprecated_at=deprecated_at, sunset_at=sunset_at, successor=successor)

    def announce(response: Response) -> None:
        if datetime.now(UTC) >= sunset_at:
            raise GoneError(f"This endpoint was retired on {headers['Sunset']}; use {successor}.", headers=headers)
        response.headers.update(headers)

    dependency: DependsParam = Depends(announce)
    return dependency
