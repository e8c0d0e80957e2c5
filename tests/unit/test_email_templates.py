"""Email templates: every one renders its three parts from exactly the documented
context, HTML escapes user values, text does not, nothing remote is loaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jinja2 import meta

from smilingsteps.config import Settings
from smilingsteps.notifications.service import public_link
from smilingsteps.notifications.templates import TEMPLATE_CONTEXT, EmailTemplateError, environment, render_email
from smilingsteps.platform.i18n import Language

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "src" / "smilingsteps" / "notifications" / "templates"
HOSTILE = "<script>alert('x')</script> & \"Co\""

SAMPLES: dict[str, dict[str, Any]] = {
    "verify_email": {"full_name": "Amani", "link": "https://app.example/verify?token=a&b=1", "expires_hours": 48},
    "registration_attempt": {
        "full_name": "Amani",
        "sign_in_link": "https://app.example/sign-in",
        "reset_link": "https://app.example/reset-password",
    },
    "password_reset": {"full_name": "Amani", "link": "https://app.example/reset?token=a", "expires_minutes": 30},
    "account_locked": {
        "full_name": "Amani",
        "locked_until": "14:30 EAT, 3 March",
        "reset_link": "https://app.example/reset",
    },
    "password_changed": {"full_name": "Amani"},
    "therapist_approved": {"full_name": "Dr Otieno", "link": "https://app.example/therapist/availability"},
    "therapist_rejected": {"full_name": "Dr Otieno", "reason": "The licence number could not be verified."},
    "mfa_changed": {"full_name": "Amani", "enabled": True},
    "booking_received": {
        "full_name": "Amani",
        "other_name": "Dr Otieno",
        "when": "Monday 3 May 2027, 10:00 (Africa/Nairobi)",
        "hold_minutes": 10,
        "link": "https://app.example/bookings/1",
    },
    "booking_confirmed": {
        "full_name": "Amani",
        "other_name": "Dr Otieno",
        "when": "Monday 3 May 2027, 10:00 (Africa/Nairobi)",
        "link": "https://app.example/bookings/1",
        "receipt_line": "Paid: KES 2,500 with M-Pesa, receipt SGR7T3X9QA.",
    },
    "booking_cancelled": {
        "full_name": "Amani",
        "other_name": "Dr Otieno",
        "when": "Monday 3 May 2027, 10:00 (Africa/Nairobi)",
        "cancelled_by": "your therapist",
        "refund_note": "The full fee will be refunded.",
    },
    "booking_rescheduled": {
        "full_name": "Amani",
        "other_name": "Dr Otieno",
        "when": "Tuesday 4 May 2027, 11:00 (Africa/Nairobi)",
        "previous_when": "Monday 3 May 2027, 10:00 (Africa/Nairobi)",
        "link": "https://app.example/bookings/1",
    },
    "booking_reminder": {
        "full_name": "Amani",
        "other_name": "Dr Otieno",
        "when": "Monday 3 May 2027, 10:00 (Africa/Nairobi)",
        "lead": "tomorrow",
        "link": "https://app.example/bookings/1",
    },
}


def test_every_template_has_a_sample_and_its_three_files() -> None:
    assert set(SAMPLES) == set(TEMPLATE_CONTEXT)
    for name in TEMPLATE_CONTEXT:
        for suffix in (".subject.txt", ".txt", ".html"):
            assert (TEMPLATES_DIR / f"{name}{suffix}").is_file(), f"{name}{suffix}"


@pytest.mark.parametrize("name", sorted(TEMPLATE_CONTEXT))
def test_the_documented_context_is_exactly_what_the_template_uses(name: str) -> None:
    env = environment()
    used: set[str] = set()
    for suffix in (".subject.txt", ".txt", ".html"):
        assert env.loader is not None
        source = env.loader.get_source(env, f"{name}{suffix}")[0]
        used |= meta.find_undeclared_variables(env.parse(source))
    # Partials (layout, button, footer) use app_name, href and label, which are set for them.
    assert used - {"app_name", "href", "label"} == set(TEMPLATE_CONTEXT[name])


@pytest.mark.parametrize("name", sorted(TEMPLATE_CONTEXT))
def test_each_template_renders_a_one_line_subject_a_text_and_a_self_contained_html_body(name: str) -> None:
    rendered = render_email(name, SAMPLES[name])
    assert rendered.subject and "\n" not in rendered.subject and len(rendered.subject) < 100
    assert "Smiling Steps" in rendered.text and "Smiling Steps" in rendered.html
    assert rendered.text.startswith("Hello ") and "{{" not in rendered.text and "{%" not in rendered.text
    assert rendered.html.lstrip().startswith("<!DOCTYPE html>")
    lowered = rendered.html.lower()
    assert "<script" not in lowered and "<img" not in lowered and "<link" not in lowered and "src=" not in lowered
    for value in SAMPLES[name].values():
        if isinstance(value, str):
            assert value in rendered.text
    for url in re.findall(r'href="([^"]+)"', rendered.html):
        assert url.startswith("https://app.example/"), url


@pytest.mark.parametrize("name", sorted(TEMPLATE_CONTEXT))
def test_user_values_are_escaped_in_html_and_kept_verbatim_in_text(name: str) -> None:
    context = {**SAMPLES[name], "full_name": HOSTILE}
    rendered = render_email(name, context)
    assert HOSTILE in rendered.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;Co&#34;" in rendered.html
    assert "<script" not in rendered.html


def test_links_with_query_strings_are_escaped_inside_html_attributes() -> None:
    rendered = render_email("verify_email", SAMPLES["verify_email"])
    assert 'href="https://app.example/verify?token=a&amp;b=1"' in rendered.html
    assert "https://app.example/verify?token=a&b=1" in rendered.text


def test_a_subject_cannot_be_split_by_a_value() -> None:
    rendered = render_email("mfa_changed", {"full_name": "x", "enabled": False})
    assert rendered.subject == "Two-step verification was turned off for your Smiling Steps account"
    assert "now off" in rendered.text and "now on" not in rendered.text


def test_an_unknown_template_or_a_missing_key_is_refused() -> None:
    with pytest.raises(EmailTemplateError, match="unknown email template"):
        render_email("nope", {})
    with pytest.raises(EmailTemplateError, match="expires_minutes"):
        render_email("password_reset", {"full_name": "A", "link": "https://x.example"})


def test_public_links_start_at_the_public_base_url_and_encode_the_query() -> None:
    settings = Settings(PUBLIC_BASE_URL="https://app.smilingsteps.example/")
    assert public_link(settings, "/verify-email") == "https://app.smilingsteps.example/verify-email"
    assert (
        public_link(settings, "/reset", token="a/b+c=d&e", next="/x y")
        == "https://app.smilingsteps.example/reset?token=a%2Fb%2Bc%3Dd%26e&next=%2Fx+y"
    )
    for bad in ("verify", "//evil.example/x", "https://evil.example"):
        with pytest.raises(ValueError, match="path"):
            public_link(settings, bad)


def test_emails_are_written_in_the_recipients_language() -> None:
    english = render_email("booking_reminder", SAMPLES["booking_reminder"])
    swahili = render_email("booking_reminder", SAMPLES["booking_reminder"], Language.KISWAHILI)
    assert swahili.subject != english.subject and swahili.text != english.text
    assert '<html lang="sw">' in swahili.html and '<html lang="en">' in english.html
    for value in SAMPLES["booking_reminder"].values():
        assert str(value) in swahili.text  # the facts are the same; only the words change
