"""Notifications: a transactional email outbox, its templates and mail backends.

`service.queue_email` writes a rendered message in the caller's transaction;
`sender.OutboxSender` (a job of `smilingsteps worker`, or of the app itself in
development) sends it through SMTP or into `.eml` files.
"""

from smilingsteps.platform.domain import Domain

DOMAIN = Domain(
    name="notifications",
    models="smilingsteps.notifications.models",
    jobs="smilingsteps.notifications.jobs:jobs",
)
