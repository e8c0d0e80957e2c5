"""Notifications: a transactional email outbox, its templates and mail backends.

`service.queue_email` writes a rendered message in the caller's transaction;
`tasks.OutboxSender` (run by `smilingsteps worker`, or in-process in
development) sends it through SMTP or into `.eml` files.
"""
