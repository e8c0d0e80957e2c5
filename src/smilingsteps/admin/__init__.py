"""Administration: account status, therapist review, user search and the audit log, for MFA-signed-in admins."""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="admin",
    depends_on=("accounts", "audit", "notifications"),
    router="smilingsteps.admin.router:build_router",
)
