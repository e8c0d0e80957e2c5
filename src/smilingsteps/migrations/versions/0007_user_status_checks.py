"""Accounts' enums are checked by the database too: role, status and therapist status.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

The values are written out here, as a migration is a record of what it did; the models
build the same constraints from the enums, and a test compares the live constraints with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "role_known": "role IN ('client', 'therapist', 'admin')",
    "status_known": "status IN ('active', 'suspended')",
    "therapist_status_known": "therapist_status IN ('pending', 'approved', 'rejected')",
}


def upgrade() -> None:
    # Batch mode rebuilds the table on SQLite (which cannot add a constraint in place) and
    # issues plain ALTER TABLE … ADD CONSTRAINT on PostgreSQL.
    with op.batch_alter_table("users") as batch:
        for name, condition in CHECKS.items():
            batch.create_check_constraint(op.f(f"ck_users_{name}"), condition)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for name in CHECKS:
            batch.drop_constraint(op.f(f"ck_users_{name}"), type_="check")
