"""The web app: server-rendered pages (Jinja2) for clients, therapists and admins, in English
and Kiswahili, calling the same services as the API in-process (never the API over the network).

It depends on every domain and nothing depends on it: it is registered last.
"""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="web",
    depends_on=("accounts", "admin", "audit", "bookings", "notifications", "payments", "therapists"),
    pages="smilingsteps.web.router:build_pages",
    part="smilingsteps.web.rendering:install",
)
