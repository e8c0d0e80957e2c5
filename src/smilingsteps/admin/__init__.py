"""Administration, for MFA-signed-in admins: account status, therapist review (with the full profile), user
search, every booking, and the audit log."""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="admin",
    depends_on=("accounts", "audit", "bookings", "notifications", "therapists"),
    router="smilingsteps.admin.router:build_router",
)
