"""Email templates: for each name a subject, a plain-text body and an HTML body.

Templates ship inside the package (`templates/NAME.subject.txt`, `NAME.txt`,
`NAME.html`). HTML is autoescaped, text is not; an unknown name or a missing
context key is a programming error and raises at once, when the message is
queued, never later in the sender.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from smilingsteps.platform.i18n import DEFAULT_LANGUAGE, Language, translations

APP_NAME = "Smiling Steps"

# The context each template needs: the contract with the code that queues them.
TEMPLATE_CONTEXT: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "verify_email": frozenset({"full_name", "link", "expires_hours"}),
        "registration_attempt": frozenset({"full_name", "sign_in_link", "reset_link"}),
        "password_reset": frozenset({"full_name", "link", "expires_minutes"}),
        "account_locked": frozenset({"full_name", "locked_until", "reset_link"}),
        "password_changed": frozenset({"full_name"}),
        "therapist_approved": frozenset({"full_name", "link"}),
        "therapist_rejected": frozenset({"full_name", "reason"}),
        "mfa_changed": frozenset({"full_name", "enabled"}),
        "booking_received": frozenset({"full_name", "other_name", "when", "hold_minutes", "link"}),
        "booking_confirmed": frozenset({"full_name", "other_name", "when", "link", "receipt_line"}),
        "booking_cancelled": frozenset({"full_name", "other_name", "when", "cancelled_by", "refund_note"}),
        "booking_rescheduled": frozenset({"full_name", "other_name", "when", "previous_when", "link"}),
        "booking_reminder": frozenset({"full_name", "other_name", "when", "lead", "link"}),
    }
)

_WHITESPACE = re.compile(r"\s+")


class EmailTemplateError(ValueError):
    """An unknown template or a context that does not fit it."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=len(Language))
def environment(language: Language = DEFAULT_LANGUAGE) -> Environment:
    """The templates in `language` (gettext from the shared catalogue)."""
    env = Environment(
        loader=PackageLoader("smilingsteps.notifications", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.globals["app_name"] = APP_NAME
    env.globals["lang"] = language.value
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def render_email(template: str, context: Mapping[str, Any], language: Language = DEFAULT_LANGUAGE) -> RenderedEmail:
    """Render all three parts of `template` in `language`; raise EmailTemplateError when it cannot."""
    required = TEMPLATE_CONTEXT.get(template)
    if required is None:
        raise EmailTemplateError(f"unknown email template {template!r}")
    missing = sorted(required - context.keys())
    if missing:
        raise EmailTemplateError(f"email template {template!r} needs {', '.join(missing)}")
    env = environment(language)
    values = dict(context)
    subject = env.get_template(f"{template}.subject.txt").render(values)
    return RenderedEmail(
        # One line whatever the values hold: a header cannot be split or forged.
        subject=_WHITESPACE.sub(" ", subject).strip(),
        text=env.get_template(f"{template}.txt").render(values).strip() + "\n",
        html=env.get_template(f"{template}.html").render(values),
    )
