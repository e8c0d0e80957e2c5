"""Which time-zone names the platform accepts: IANA zones people live in."""

from __future__ import annotations

import zoneinfo
from functools import cache

# Files in the zone database that zoneinfo accepts but that are not zones a person lives in;
# `localtime` and `posixrules` would silently mean the server's own zone.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def zone_names() -> frozenset[str]:
    """Every accepted name (the API schema lists them)."""
    return _zones()


@cache
def sorted_zone_names() -> tuple[str, ...]:
    """The accepted names in order, for a page's time-zone list (sorted once)."""
    return tuple(sorted(_zones()))


def is_iana_zone(name: str) -> bool:
    """True for an exact IANA zone name such as `Africa/Nairobi` (case matters, no paths)."""
    return name in _zones()
