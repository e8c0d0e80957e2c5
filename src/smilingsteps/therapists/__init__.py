"""Therapists: profiles, weekly availability and time off, the directory's listing rules, schedules."""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="therapists",
    depends_on=("accounts",),
    models="smilingsteps.therapists.models",
    router="smilingsteps.therapists.router:build_router",
)
