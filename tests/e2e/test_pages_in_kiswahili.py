"""Every main page in Kiswahili: first for a visitor who pressed the footer's language switch,
then for signed-in people (a client, a therapist, an administrator) whose account's language is
Kiswahili while their browser asks for English. Each page must say `<html lang="sw">` and none
of a few English strings it would otherwise show (the navigation, the footer, its heading).

Until the catalogue (src/smilingsteps/locale/sw/LC_MESSAGES/messages.po) translates them, this
test lists every English string still on a page, page by page, in one failure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from playwright.sync_api import Page, expect

from smilingsteps.accounts.models import Role
from smilingsteps.platform.i18n import Language
from tests.e2e.steps import enrol_two_steps, seeded_person, set_language, sign_in, user_by_email
from tests.support.bookings import therapist_user
from tests.support.browser import Browsers, LiveApp
from tests.web.conftest import ADMIN_PASSWORD, make_admin

# The layout's words, on every page: the header's, the footer's, the skip link.
ANONYMOUS_CHROME = ("Find a therapist", "Sign in", "Sign up", "Privacy notice", "Language:", "Skip to content")
SIGNED_IN_CHROME = ("Find a therapist", "Account", "Sign out", "Privacy notice", "Language:", "Skip to content")
ACCOUNT_NAV = ("Settings", "Password", "Two-step verification", "Signed-in devices")
ADMIN_NAV = ("Therapists to review", "People", "Bookings", "Audit log")
# (path, its English <h1> or None when it is a name, English words its main part would show)
Visits = tuple[tuple[str, str | None, tuple[str, ...]], ...]


@dataclass
class Findings:
    """What is still English, page by page (soft checks: one run shows everything)."""

    missing: list[str] = field(default_factory=list)

    def check(self, page: Page, path: str, heading: str | None, *english: str, chrome: tuple[str, ...]) -> None:
        response = page.goto(path)
        assert response is not None and response.status == 200, (path, response and response.status)
        assert "/sign-in" not in page.url or path.startswith("/sign-in"), f"{path} sent to {page.url}"
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        lang = page.locator("html").get_attribute("lang")
        if lang != "sw":
            self.missing.append(f'{path}: <html lang="{lang}">')
        layout = page.get_by_role("banner").inner_text() + "\n" + page.get_by_role("contentinfo").inner_text()
        layout += "\n" + (page.locator("a.skip").text_content() or "")
        main = page.get_by_role("main").inner_text()
        still = [text for text in chrome if text in layout] + [text for text in english if text in main]
        title = page.get_by_role("heading", level=1).inner_text().strip()
        if heading is not None and title == heading:
            still.append(f"<h1> {heading}")
        if still:
            self.missing.append(f"{path}: " + "; ".join(f'"{text}"' for text in still))

    def assert_none(self) -> None:
        assert not self.missing, "still in English:\n" + "\n".join(f"  {line}" for line in self.missing)


def test_pages_in_kiswahili(browsers: Browsers, live_app: LiveApp) -> None:
    app = live_app.app
    therapist = live_app.run(therapist_user(app, full_name="Dr Amina Yusuf"))
    pending = live_app.run(therapist_user(app, full_name="Dr Pending Person", approved=False))
    found = Findings()

    # A visitor whose browser asks for English presses the switch in the footer.
    visitor = browsers.new_page(locale="en-GB")
    visitor.goto("/privacy")
    expect(visitor.locator("html")).to_have_attribute("lang", "en")
    visitor.get_by_role("contentinfo").get_by_role("button", name="Kiswahili").click()
    expect(visitor).to_have_url(re.compile(r"/privacy$"))  # back where it was
    expect(visitor.locator("html")).to_have_attribute("lang", "sw")
    anonymous: Visits = (
        ("/", "Talk to a licensed therapist, from wherever you are", ("How it works", "Join as a therapist")),
        ("/therapists", "Find a therapist", ("Help with", "Show therapists")),
        (f"/therapists/{therapist.id}?tz=Africa/Nairobi", None, ("Times shown in", "Change time zone")),
        ("/sign-in", "Sign in", ("Email address", "Forgotten your password?")),
        ("/sign-up", "Create an account", ("Full name", "Mobile number", "Create account")),
        ("/reset-password", "Reset your password", ("Send the link",)),
        ("/privacy", "Privacy notice", ("What we keep",)),
    )
    for path, heading, english in anonymous:
        found.check(visitor, path, heading, *english, chrome=ANONYMOUS_CHROME)

    # Signed in: the account's language wins over the browser's English (a fresh browser, no switch).
    client = seeded_person(live_app, Role.CLIENT, "Achieng Odhiambo")
    live_app.run(set_language(app, client.id, Language.KISWAHILI))
    person = browsers.new_page(locale="en-GB")
    sign_in(person, client.email, lands="/bookings")
    expect(person.locator("html")).to_have_attribute("lang", "sw")
    client_pages: Visits = (
        ("/bookings", "My sessions", ("Upcoming", "Past and cancelled")),
        ("/account", "Your account", ("Full name", "Save changes", *ACCOUNT_NAV)),
        ("/account/password", "Change your password", ACCOUNT_NAV),
        ("/account/mfa", "Two-step verification", ("Set up two-step verification", "Settings")),
        ("/account/sessions", "Signed-in devices", ("Sign out this device", "Settings")),
        ("/therapists", "Find a therapist", ("Help with", "Show therapists")),
        (f"/therapists/{therapist.id}", None, ("Times shown in", "Change time zone")),
    )
    for path, heading, english in client_pages:
        found.check(person, path, heading, *english, chrome=(*SIGNED_IN_CHROME, "My sessions"))

    live_app.run(set_language(app, therapist.id, Language.KISWAHILI))
    practice = browsers.new_page(locale="en-GB")
    sign_in(practice, therapist.email, lands="/practice")
    therapist_pages: Visits = (
        ("/practice", "My practice", ("Your application", "Hours and time off")),
        ("/practice/profile", "Your profile", ("About you", "Licence number", "Save profile")),
        ("/practice/availability", "Hours and time off", ("Weekly hours", "Monday", "Save hours")),
        ("/practice/sessions", "My sessions", ("Upcoming", "Past and cancelled")),
    )
    for path, heading, english in therapist_pages:
        found.check(practice, path, heading, *english, chrome=(*SIGNED_IN_CHROME, "My practice"))

    admin = browsers.new_page(locale="en-GB")
    admin_email = live_app.run(make_admin(app))
    sign_in(admin, admin_email, ADMIN_PASSWORD, lands="/account/mfa")
    enrol_two_steps(admin, live_app)  # in English: the account's language is still English
    admin_user = live_app.run(user_by_email(app, admin_email))
    live_app.run(set_language(app, admin_user.id, Language.KISWAHILI))
    admin_pages: Visits = (
        ("/admin", "Administration", ADMIN_NAV),
        (f"/admin/therapists/{pending.id}", None, ("Licence number", "Approve", "Reject")),
        ("/admin/users", "People", ("Name or email address", "Search")),
        (f"/admin/users/{client.id}", None, ("Email address", "Suspend the account")),
        ("/admin/bookings", "Bookings", ("Show bookings", "No booking matches these filters.")),
        ("/admin/audit-log", "Audit log", ADMIN_NAV),
        ("/account/mfa", "Two-step verification", ("Two-step verification is on.", "New recovery codes")),
    )
    for path, heading, english in admin_pages:
        found.check(admin, path, heading, *english, chrome=(*SIGNED_IN_CHROME, "Administration"))

    found.assert_none()
