"""Therapists (profiles, specialties, languages, availability) and bookings (reminders, notes).

On PostgreSQL, exclusion constraints make overlapping active bookings of one
therapist (buffer included) or one client impossible, whatever the application
does; they need the btree_gist extension (trusted: the database owner may create it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from smilingsteps.platform.models import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('held', 'pending_payment', 'confirmed')"


def _profile_tables() -> None:
    op.create_table(
        "therapist_profiles",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("bio", sa.Text(), nullable=False),
        sa.Column("years_of_practice", sa.Integer(), nullable=False),
        sa.Column("license_number", sa.String(length=64), nullable=False),
        sa.Column("price_kes", sa.Integer(), nullable=False),
        sa.Column("session_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_minutes", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("price_kes > 0", name=op.f("ck_therapist_profiles_price_positive")),
        sa.CheckConstraint("session_minutes BETWEEN 15 AND 180", name=op.f("ck_therapist_profiles_session_length")),
        sa.CheckConstraint("buffer_minutes BETWEEN 0 AND 120", name=op.f("ck_therapist_profiles_buffer_length")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_therapist_profiles_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_therapist_profiles")),
    )
    op.create_index("ix_therapist_profiles_price_kes", "therapist_profiles", ["price_kes"])
    for table, column, length in (("therapist_specialties", "specialty", 32), ("therapist_languages", "language", 8)):
        op.create_table(
            table,
            sa.Column("therapist_id", sa.Uuid(), nullable=False),
            sa.Column(column, sa.String(length=length), nullable=False),
            sa.ForeignKeyConstraint(
                ["therapist_id"],
                ["therapist_profiles.user_id"],
                name=op.f(f"fk_{table}_therapist_id_therapist_profiles"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("therapist_id", column, name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column])


def _availability_tables() -> None:
    op.create_table(
        "availability_rules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("start", sa.Time(), nullable=False),
        sa.Column("end", sa.Time(), nullable=False),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_availability_rules_weekday_range")),
        sa.CheckConstraint('"end" > start', name=op.f("ck_availability_rules_rule_order")),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["therapist_profiles.user_id"],
            name=op.f("fk_availability_rules_therapist_id_therapist_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_availability_rules")),
    )
    op.create_index(op.f("ix_availability_rules_therapist_id"), "availability_rules", ["therapist_id"])
    op.create_table(
        "availability_exceptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("start", sa.Time(), nullable=True),
        sa.Column("end", sa.Time(), nullable=True),
        sa.CheckConstraint("kind IN ('off', 'extra')", name=op.f("ck_availability_exceptions_kind_known")),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["therapist_profiles.user_id"],
            name=op.f("fk_availability_exceptions_therapist_id_therapist_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_availability_exceptions")),
    )
    op.create_index(op.f("ix_availability_exceptions_therapist_id"), "availability_exceptions", ["therapist_id"])


def _booking_tables() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column("blocks_until", UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("hold_expires_at", UtcDateTime(), nullable=True),
        sa.Column("price_kes", sa.Integer(), nullable=False),
        sa.Column("client_timezone", sa.String(length=64), nullable=False),
        sa.Column("therapist_timezone", sa.String(length=64), nullable=False),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
        sa.Column("cancelled_by", sa.Uuid(), nullable=True),
        sa.Column("cancel_reason", sa.String(length=500), nullable=True),
        sa.Column("refund_due_kes", sa.Integer(), nullable=False),
        sa.Column("reschedule_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_bookings_ends_after_start")),
        sa.CheckConstraint("blocks_until >= ends_at", name=op.f("ck_bookings_blocks_after_end")),
        sa.CheckConstraint("refund_due_kes >= 0", name=op.f("ck_bookings_refund_not_negative")),
        sa.CheckConstraint(
            "status IN ('held', 'pending_payment', 'confirmed', 'completed', 'no_show_client',"
            " 'no_show_therapist', 'cancelled', 'expired')",
            name=op.f("ck_bookings_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["therapist_id"], ["users.id"], name=op.f("fk_bookings_therapist_id_users"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["client_id"], ["users.id"], name=op.f("fk_bookings_client_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_index("ix_bookings_therapist_time", "bookings", ["therapist_id", "starts_at"])
    op.create_index("ix_bookings_client_time", "bookings", ["client_id", "starts_at"])
    op.create_index("ix_bookings_status_hold", "bookings", ["status", "hold_expires_at"])
    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE bookings ADD CONSTRAINT ex_bookings_therapist_overlap EXCLUDE USING gist"
            f" (therapist_id WITH =, tstzrange(starts_at, blocks_until, '[)') WITH &&) WHERE ({ACTIVE})"
        )
        op.execute(
            "ALTER TABLE bookings ADD CONSTRAINT ex_bookings_client_overlap EXCLUDE USING gist"
            f" (client_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE ({ACTIVE})"
        )
    op.create_table(
        "booking_reminders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("booking_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_booking_reminders_booking_id_bookings"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_reminders")),
    )
    op.create_index(op.f("ix_booking_reminders_booking_id"), "booking_reminders", ["booking_id"])
    op.create_index("ix_booking_reminders_due", "booking_reminders", ["sent_at", "due_at"])
    op.create_table(
        "session_notes",
        sa.Column("booking_id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_session_notes_booking_id_bookings"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["therapist_id"], ["users.id"], name=op.f("fk_session_notes_therapist_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("booking_id", name=op.f("pk_session_notes")),
    )
    op.create_index(op.f("ix_session_notes_therapist_id"), "session_notes", ["therapist_id"])


def upgrade() -> None:
    _profile_tables()
    _availability_tables()
    _booking_tables()


def downgrade() -> None:
    op.drop_table("session_notes")
    op.drop_table("booking_reminders")
    op.drop_table("bookings")  # its indexes and exclusion constraints go with it
    op.drop_table("availability_exceptions")
    op.drop_table("availability_rules")
    op.drop_table("therapist_languages")
    op.drop_table("therapist_specialties")
    op.drop_table("therapist_profiles")
