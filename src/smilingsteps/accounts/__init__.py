"""Accounts: users and roles, passwords, sign-in with lockout, sessions and tokens, MFA.

Other domains use `auth` (who is asking: `CurrentUser`, `TherapistUser`, `AdminUser`)
and `service` (an account's contact, status changes), never the repository.
"""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="accounts",
    depends_on=("audit", "notifications"),
    models="smilingsteps.accounts.models",
    router="smilingsteps.accounts.router:build_router",
    part="smilingsteps.accounts.security:install",
)
