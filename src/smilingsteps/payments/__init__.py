"""Payments: M-Pesa Express (STK push) for bookings, Safaricom's callbacks, reconciliation, refunds.

Payments depends on bookings and uses it through its service (`await_payment`,
`payment_failed`, `confirm`, the cancellation hook); bookings never imports payments.
"""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="payments",
    depends_on=("accounts", "audit", "bookings", "notifications"),
    models="smilingsteps.payments.models",
    router="smilingsteps.payments.router:build_router",
    jobs="smilingsteps.payments.jobs:jobs",
    part="smilingsteps.payments.gateway:install",
)
