"""M-Pesa payments: attempts, the raw callbacks, and what each booking was paid.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from smilingsteps.platform.models import UtcDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'initiated', 'pending', 'succeeded', 'failed', 'cancelled', 'timed_out', 'refund_due', 'refunded'"
LIVE = "status IN ('initiated', 'pending')"
REASONS = (
    "'insufficient_funds', 'another_session', 'expired', 'push_error', 'cancelled_by_user', 'unreachable',"
    " 'wrong_pin', 'mpesa_unavailable', 'refused', 'no_answer', 'other'"
)


def _payments() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("booking_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("amount_kes", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=12), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("callback_token_hash", sa.String(length=64), nullable=False),
        sa.Column("merchant_request_id", sa.String(length=64), nullable=True),
        sa.Column("checkout_request_id", sa.String(length=64), nullable=True),
        sa.Column("mpesa_receipt", sa.String(length=32), nullable=True),
        sa.Column("result_code", sa.Integer(), nullable=True),
        sa.Column("result_desc", sa.String(length=300), nullable=True),
        sa.Column("paid_at", UtcDateTime(), nullable=True),
        sa.Column("hold_expires_before", UtcDateTime(), nullable=True),
        sa.Column("pushed_at", UtcDateTime(), nullable=True),
        sa.Column("next_check_at", UtcDateTime(), nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("settled_at", UtcDateTime(), nullable=True),
        sa.Column("refund_kes", sa.Integer(), nullable=False),
        sa.Column("refund_receipt", sa.String(length=32), nullable=True),
        sa.Column("refunded_at", UtcDateTime(), nullable=True),
        sa.Column("refunded_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_payments_status_known")),
        sa.CheckConstraint(f"reason IN ({REASONS})", name=op.f("ck_payments_reason_known")),
        sa.CheckConstraint("amount_kes > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint(
            "refund_kes >= 0 AND refund_kes <= amount_kes", name=op.f("ck_payments_refund_within_amount")
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_payments_booking_id_bookings"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["client_id"], ["users.id"], name=op.f("fk_payments_client_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("callback_token_hash", name=op.f("uq_payments_callback_token_hash")),
        sa.UniqueConstraint("checkout_request_id", name=op.f("uq_payments_checkout_request_id")),
        sa.UniqueConstraint("mpesa_receipt", name=op.f("uq_payments_mpesa_receipt")),
        sa.UniqueConstraint("refund_receipt", name=op.f("uq_payments_refund_receipt")),
    )
    op.create_index("ix_payments_booking", "payments", ["booking_id", "created_at"])
    op.create_index("ix_payments_client", "payments", ["client_id", "created_at"])
    op.create_index("ix_payments_created", "payments", ["created_at"])
    op.create_index("ix_payments_status_check", "payments", ["status", "next_check_at"])
    # One live attempt per booking: a second prompt (and a second charge) is refused by the database.
    op.create_index(
        "uq_payments_live_booking",
        "payments",
        ["booking_id"],
        unique=True,
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )


def _callbacks() -> None:
    op.create_table(
        "mpesa_callbacks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=True),
        sa.Column("checkout_request_id", sa.String(length=64), nullable=True),
        sa.Column("result_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("source_ip", sa.String(length=45), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_mpesa_callbacks_payment_id_payments"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mpesa_callbacks")),
    )
    op.create_index("ix_mpesa_callbacks_payment_id", "mpesa_callbacks", ["payment_id"])
    op.create_index("ix_mpesa_callbacks_received_at", "mpesa_callbacks", ["received_at"])


def upgrade() -> None:
    # Bookings confirmed so far were confirmed by an administrator: nothing was paid through the platform.
    with op.batch_alter_table("bookings") as batch:
        batch.add_column(sa.Column("paid_kes", sa.Integer(), nullable=False, server_default="0"))
        batch.create_check_constraint(
            op.f("ck_bookings_refund_within_paid"), "paid_kes >= 0 AND refund_due_kes <= paid_kes"
        )
    _payments()
    _callbacks()


def downgrade() -> None:
    op.drop_table("mpesa_callbacks")
    op.drop_table("payments")
    with op.batch_alter_table("bookings") as batch:
        batch.drop_constraint(op.f("ck_bookings_refund_within_paid"), type_="check")
        batch.drop_column("paid_kes")
