"""Errors the therapists domain raises."""

from __future__ import annotations

from smilingsteps.platform.errors import ConflictError


class NoProfileError(ConflictError):
    slug, title = "therapist-profile-missing", "Therapist profile missing"
    default_detail = "Create your therapist profile (PUT /api/v1/therapists/me) first."
