"""Audit log: an append-only, hash-chained record of security-relevant actions."""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(name="audit", models="smilingsteps.audit.models")
