"""Every main page, as each kind of person sees it: it opens without a browser problem, axe-core
finds no serious or critical WCAG 2.2 A/AA violation, and full-page screenshots at 360 and 1280 px
are written to test-artifacts/screenshots/<name>-<width>.png for a person to look at; and at
360 px nothing makes the page scroll sideways (WCAG 1.4.10 reflow; a table scrolls in its own box).

One live app for the module, seeded once: an approved therapist, one waiting for review, a
client with a held and a confirmed session, and an administrator with two-step verification on;
each signed in once in a plain context, whose cookies the watched pages start from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from smilingsteps.accounts.models import Role, User
from tests.e2e.steps import admin_signed_in, hold_a_slot, seeded_person, sign_in
from tests.support.bookings import confirm, therapist_user
from tests.support.browser import CONSOLE_ERROR, Browsers, LiveApp, check_accessibility, screenshots
from tests.web.conftest import ADMIN_PASSWORD


@dataclass
class Site:
    therapist: User
    pending: User
    client: User
    admin_email: str
    held: str  # the client's held session: /bookings/<id>
    confirmed: str  # and a confirmed one
    states: dict[str, Any] = field(default_factory=dict)  # role -> storage state (cookies)

    def path(self, template: str) -> str:
        return template.format(
            therapist=self.therapist.id,
            pending=self.pending.id,
            client=self.client.id,
            held=self.held,
            confirmed=self.confirmed,
        )


@pytest.fixture(scope="module")
def site(browser: Browser, live_app: LiveApp) -> Site:
    app = live_app.app
    therapist = live_app.run(therapist_user(app, full_name="Dr Amina Yusuf", specialties=("anxiety", "grief")))
    pending = live_app.run(therapist_user(app, full_name="Dr Pending Person", approved=False))
    client = seeded_person(live_app, Role.CLIENT, "Achieng Odhiambo", timezone="Europe/London")
    states: dict[str, Any] = {}

    def signed_in(role: str, steps: Callable[[Page], None]) -> None:
        context = browser.new_context(base_url=live_app.url, timezone_id="Europe/London")
        try:
            page = context.new_page()
            steps(page)
            states[role] = context.storage_state()
        finally:
            context.close()

    held: list[str] = []
    admin: list[str] = []

    def as_client(page: Page) -> None:
        sign_in(page, client.email, lands="/bookings")
        held.append(hold_a_slot(page, therapist.id, index=0))
        held.append(hold_a_slot(page, therapist.id, index=4))

    signed_in("client", as_client)
    live_app.run(confirm(app, held[1].rsplit("/", 1)[1]))
    signed_in("therapist", lambda page: sign_in(page, therapist.email, lands="/practice"))
    signed_in("admin", lambda page: admin.append(admin_signed_in(page, live_app)))
    return Site(therapist, pending, client, admin[0], held[0], held[1], states)


def empty_sign_up(page: Page) -> None:
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_contain_text("There is a problem")


def mfa_setup(page: Page) -> None:
    page.get_by_role("button", name="Set up two-step verification").click()
    expect(page.get_by_label("Code from your authenticator app")).to_be_visible()
    # The QR code is a data: URL image; it must draw (an SVG image without its namespace does not).
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    drawn = qr.evaluate("(img) => img.decode().then(() => img.naturalWidth, () => 0)")
    assert drawn > 0, "the QR code image does not render (broken image)"


@dataclass(frozen=True)
class Case:
    name: str  # the screenshots' name
    role: str | None  # whose cookies: None for an anonymous visitor
    path: str  # formatted with the site's ids (Site.path)
    heading: str  # the page's <h1>, to be sure it is the page meant
    prepare: Callable[[Page, Site], None] | None = None  # a state reached by interaction
    status: int = 200
    ends_refused: bool = False  # the state shown is a 4xx answer (a form sent back with errors)


def two_step_sign_in(page: Page, site: Site) -> None:
    sign_in(page, site.admin_email, ADMIN_PASSWORD)
    expect(page.get_by_label("Code from your authenticator app")).to_be_visible()


CASES = (
    Case("home", None, "/", "Talk to a licensed therapist, from wherever you are"),
    Case("directory", None, "/therapists", "Find a therapist"),
    Case("therapist", None, "/therapists/{therapist}?tz=Europe/London", "Dr Amina Yusuf"),
    Case("sign-in", None, "/sign-in", "Sign in"),
    Case("sign-in-two-steps", None, "/sign-in", "Two-step verification", prepare=two_step_sign_in),
    Case("sign-up", None, "/sign-up", "Create an account"),
    Case(
        "sign-up-errors", None, "/sign-up", "Create an account", lambda page, _: empty_sign_up(page), ends_refused=True
    ),
    Case("check-email", None, "/sign-up/check-email", "Check your email"),
    Case("verify-email", None, "/verify-email?token=not-a-real-token", "Confirm your email address"),
    Case("reset-password", None, "/reset-password", "Reset your password"),
    Case("reset-password-new", None, "/reset-password?token=not-a-real-token", "Choose a new password"),
    Case("privacy", None, "/privacy", "Privacy notice"),
    Case("error-404", None, "/no-such-page", "Page not found", status=404),
    Case("my-sessions", "client", "/bookings", "My sessions"),
    Case("hold", "client", "{held}", "Session with Dr Amina Yusuf"),
    Case("session", "client", "{confirmed}", "Session with Dr Amina Yusuf"),
    Case("reschedule", "client", "{confirmed}/reschedule", "Move this session"),
    Case("cancel", "client", "{held}/cancel", "Cancel this session?"),
    Case("account", "client", "/account", "Your account"),
    Case("account-password", "client", "/account/password", "Change your password"),
    Case("account-mfa", "client", "/account/mfa", "Two-step verification"),
    Case("account-mfa-setup", "client", "/account/mfa", "Two-step verification", lambda page, _: mfa_setup(page)),
    Case("account-devices", "client", "/account/sessions", "Signed-in devices"),
    Case("practice", "therapist", "/practice", "My practice"),
    Case("practice-profile", "therapist", "/practice/profile", "Your profile"),
    Case("availability", "therapist", "/practice/availability", "Hours and time off"),
    Case("practice-sessions", "therapist", "/practice/sessions", "My sessions"),
    Case("therapist-session", "therapist", "{confirmed}", "Session with Achieng Odhiambo"),
    Case("admin-review", "admin", "/admin", "Administration"),
    Case("admin-application", "admin", "/admin/therapists/{pending}", "Dr Pending Person"),
    Case("admin-people", "admin", "/admin/users", "People"),
    Case("admin-person", "admin", "/admin/users/{client}", "Achieng Odhiambo"),
    Case("admin-bookings", "admin", "/admin/bookings", "Bookings"),
    Case("admin-audit", "admin", "/admin/audit-log", "Audit log"),
    Case("admin-payments", "admin", "/admin/payments", "Payments"),
)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_page_is_accessible_and_photographed(case: Case, site: Site, browsers: Browsers) -> None:
    page = browsers.new_page(storage_state=site.states[case.role] if case.role else None)
    response = page.goto(site.path(case.path))
    assert response is not None and response.status == case.status, (case.path, response and response.status)
    prepare = None
    if case.prepare is not None:
        steps = case.prepare

        def prepare(copy: Page) -> None:  # the same steps again on axe's copy of the page
            steps(copy, site)

        prepare(page)
    expect(page.get_by_role("heading", level=1)).to_have_text(case.heading)
    if case.role is not None:  # still signed in as who we think (not sent to sign in)
        expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()
    too_wide = overflow_at(page, SMALL_PHONE)
    screenshots(page, case.name)
    check_accessibility(page, site.path(case.path), prepare=prepare)
    if case.status >= 400 or case.ends_refused:
        # chromium logs a page answered with 4xx as a failed load: that one console error is expected.
        seen = browsers.take_problems()
        assert seen and all(p.kind == CONSOLE_ERROR and "Failed to load resource" in p.detail for p in seen), seen
    # WCAG 1.4.10 (reflow): at 360 px nothing makes the page scroll sideways (tables scroll in their box).
    assert not too_wide, f"at {SMALL_PHONE} px the page is wider than the screen: {too_wide}"


SMALL_PHONE = 360
_WIDER_THAN_THE_SCREEN = """
() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) return [];
  const beyond = (e) => e.getBoundingClientRect().right > width + 0.5;
  // Inside a box that scrolls or clips on its own (a table's wrapper) is fine, unless the element
  // is positioned out of it (an absolute child whose containing block is outside the box).
  const clipped = (e) => {
    const position = getComputedStyle(e).position;
    if (position === "fixed") return false;
    let held = position !== "absolute";
    for (let box = e.parentElement; box && box !== document.body; box = box.parentElement) {
      const style = getComputedStyle(box);
      held ||= style.position !== "static";
      if (held && style.overflowX !== "visible" && !beyond(box)) return true;
    }
    return false;
  };
  const wide = [...document.body.querySelectorAll("*")].filter((e) => beyond(e) && !clipped(e));
  return wide.filter((e) => !wide.includes(e.parentElement)).map((e) => {  // where it starts
    const name = e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + [...e.classList].map((c) => "." + c).join("");
    return `${name} (${Math.round(e.getBoundingClientRect().right - width)} px)`;
  });
}
"""


def overflow_at(page: Page, width: int) -> list[str]:
    """What sticks out past the right edge of a `width`-px screen (empty when the page fits)."""
    before = page.viewport_size
    assert before is not None
    page.set_viewport_size({"width": width, "height": before["height"]})
    try:
        return list(page.evaluate(_WIDER_THAN_THE_SCREEN))
    finally:
        page.set_viewport_size(before)
