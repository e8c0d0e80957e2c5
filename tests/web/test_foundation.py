"""The web app's foundation, driven as a browser without JavaScript: pages under the strict
CSP with hashed, integrity-checked assets; friendly error pages for browsers while the API
keeps problem+json; forms with CSRF tokens; sign-up, email verification and sign-in with
the emailed link from a real SMTP server; the language chosen by header, switch and account."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
from fastapi import FastAPI

from smilingsteps.app import create_app
from smilingsteps.platform.errors import DatabaseUnavailableError
from smilingsteps.web.routing import page_router
from smilingsteps.web.viewer import ViewerDep
from tests.conftest import SettingsFactory, running
from tests.support.accounts import PASSWORD, link_token, new_email, tokens_to
from tests.support.clock import FakeClock
from tests.support.pages import HTML, csrf_token, fill, open_page, submit, text_of
from tests.support.smtp import SmtpServer
from tests.web.conftest import mail_for, sign_up_fields

# ---- pages, assets, security headers ----------------------------------------------------------


async def test_the_home_page_is_html_under_the_strict_policy_with_integrity_checked_assets(
    browser: httpx.AsyncClient,
) -> None:
    page = await open_page(browser, "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)" integrity="(sha384-[^"]+)"', page.text)
    assert {path.rsplit(".", 2)[-1] for path, _ in assets} == {"css", "js"}
    for path, integrity in assets:
        asset = await browser.get(path)
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        digest = base64.b64encode(hashlib.sha384(asset.content).digest()).decode()
        assert integrity == f"sha384-{digest}"


async def test_an_asset_under_any_other_name_is_not_found(browser: httpx.AsyncClient) -> None:
    page = await open_page(browser, "/")
    path = re.findall(r'href="(/static/css/app\.[0-9a-f]+\.css)"', page.text)[0]
    stale = path.replace(path.rsplit(".", 2)[1], "0000000000")
    assert (await browser.get(stale)).status_code == 404
    assert (await browser.get("/static/css/app.css")).status_code == 404
    assert (await browser.get("/static/../config.py")).status_code == 404


async def test_browsers_get_a_friendly_page_and_the_api_keeps_problem_json(browser: httpx.AsyncClient) -> None:
    page = await open_page(browser, "/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Page not found" in text_of(page)
    assert page.headers["x-request-id"] in page.text  # the reference a person can quote
    api = await browser.get("/api/v1/no-such-thing", headers=HTML)
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    bare = await browser.get("/no-such-page")
    assert bare.headers["content-type"].startswith("application/problem+json")


async def test_a_rate_limited_page_says_when_to_try_again(make_settings: SettingsFactory, database_url: str) -> None:
    app = create_app(make_settings(DATABASE_URL=database_url, RATE_LIMIT_AUTH="1/15m"))
    async with running(app) as browser:
        for _ in range(2):
            form = await open_page(browser, "/sign-in")
            answer = await submit(
                browser, "/sign-in", {"email": "a@example.com", "password": "x" * 12}, token=csrf_token(form)
            )
    assert answer.status_code == 429
    assert answer.headers["content-type"].startswith("text/html")
    assert "Please try again in 15 minutes." in text_of(answer)
    assert answer.headers["retry-after"].isdigit()


# ---- forms and CSRF ---------------------------------------------------------------------------------


async def test_a_form_without_its_token_changes_nothing_and_says_it_expired(browser: httpx.AsyncClient) -> None:
    await open_page(browser, "/sign-up")
    email = new_email()
    answer = await submit(browser, "/sign-up", sign_up_fields(email), token=None)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-up?notice=form-expired"
    again = await open_page(browser, answer.headers["location"])
    assert "That form had expired" in text_of(again)
    forged = await submit(browser, "/sign-up", sign_up_fields(email), token="forged.token")
    assert forged.status_code == 303
    sign_in = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
    assert sign_in.status_code == 401  # no account was made


async def test_a_form_posted_from_another_site_is_refused(browser: httpx.AsyncClient) -> None:
    page = await open_page(browser, "/sign-up")
    answer = await submit(
        browser, "/sign-up", sign_up_fields(new_email()), token=csrf_token(page), origin="https://evil.example"
    )
    assert answer.status_code == 403
    assert "You cannot open this page" in text_of(answer)


# ---- sign-up, verification, sign-in ---------------------------------------------------------------------


async def test_sign_up_shows_each_problem_next_to_its_field_and_keeps_what_was_typed(
    browser: httpx.AsyncClient,
) -> None:
    fields = sign_up_fields("not-an-email", phone="12345", full_name="Zawadi Ochieng", terms="")
    answer = await fill(browser, "/sign-up", "/sign-up", fields)
    assert answer.status_code == 422
    said = text_of(answer)
    assert "There is a problem" in said
    assert "Enter an email address like name@example.com." in said
    assert "Enter a Kenyan mobile number such as 0712 345 678." in said
    assert "Please confirm you have read the privacy notice." in said
    assert 'aria-invalid="true"' in answer.text and 'id="error-email"' in answer.text
    assert 'value="Zawadi Ochieng"' in answer.text
    assert PASSWORD not in answer.text  # a password is never sent back


async def test_a_new_client_signs_up_verifies_by_the_emailed_link_and_signs_in(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    email = new_email("page")
    answer = await fill(browser, "/sign-up", "/sign-up", sign_up_fields(email))
    assert answer.status_code == 303, text_of(answer)
    assert answer.headers["location"] == "/sign-up/check-email"
    [message] = await mail_for(app, clock, smtp_server, email)
    token = link_token(message, "/verify-email")
    landing = await open_page(browser, f"/verify-email?token={token}")
    assert landing.status_code == 200
    assert "Confirm my email address" in text_of(landing)  # a GET (a mail scanner) spends nothing
    verified = await submit(browser, "/verify-email", {"token": token}, token=csrf_token(landing))
    assert "Your email address is confirmed" in text_of(verified)
    replay = await submit(browser, "/verify-email", {"token": token}, token=csrf_token(landing))
    assert replay.status_code == 400
    assert "This link does not work" in text_of(replay)

    wrong = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": "not the password"})
    assert wrong.status_code == 401
    assert "The email or password is not correct." in text_of(wrong)
    signed = await fill(
        browser, "/sign-in?next=/therapists", "/sign-in", {"email": email, "password": PASSWORD, "next": "/therapists"}
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/therapists"
    directory = await open_page(browser, "/therapists")
    assert "Sign out" in text_of(directory)
    assert directory.headers["cache-control"] == "no-store"


async def test_sign_in_never_redirects_to_another_site(browser: httpx.AsyncClient) -> None:
    email = new_email()
    await fill(browser, "/sign-up", "/sign-up", sign_up_fields(email))
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        signed = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD, "next": target})
        assert signed.headers["location"] == "/bookings"
        out = await fill(browser, "/", "/sign-out", {})
        assert out.status_code == 303


async def test_signing_out_ends_the_session(browser: httpx.AsyncClient) -> None:
    email = new_email()
    await fill(browser, "/sign-up", "/sign-up", sign_up_fields(email))
    await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
    cookies = dict(browser.cookies)
    out = await fill(browser, "/therapists", "/sign-out", {})
    assert out.headers["location"] == "/?notice=signed-out"
    assert "Sign out" not in text_of(await open_page(browser, "/"))
    browser.cookies.update(cookies)  # the old cookies, replayed
    assert "Sign out" not in text_of(await open_page(browser, "/"))


async def test_password_reset_by_the_emailed_link(
    browser: httpx.AsyncClient, app: FastAPI, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    email = new_email()
    await fill(browser, "/sign-up", "/sign-up", sign_up_fields(email))
    asked = await fill(browser, "/reset-password", "/reset-password", {"email": email})
    assert asked.headers["location"] == "/reset-password?notice=reset-sent"
    messages = await mail_for(app, clock, smtp_server, email)
    [token] = tokens_to(messages, "/reset-password")
    new_password = "harbour violet seventeen"
    short = await fill(
        browser, f"/reset-password?token={token}", "/reset-password/confirm", {"token": token, "new_password": "short"}
    )
    assert short.status_code == 422
    done = await fill(
        browser,
        f"/reset-password?token={token}",
        "/reset-password/confirm",
        {"token": token, "new_password": new_password},
    )
    assert done.headers["location"] == "/sign-in?notice=password-reset"
    again = await fill(
        browser,
        f"/reset-password?token={token}",
        "/reset-password/confirm",
        {"token": token, "new_password": new_password},
    )
    assert again.headers["location"] == "/reset-password?notice=reset-link-invalid"
    signed = await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": new_password})
    assert signed.status_code == 303


# ---- languages ------------------------------------------------------------------------------------------------


async def test_the_language_follows_the_browser_then_the_switch_then_the_account(browser: httpx.AsyncClient) -> None:
    swahili = await open_page(browser, "/", **{"Accept-Language": "sw-KE,sw;q=0.9,en;q=0.5"})
    assert '<html lang="sw">' in swahili.text
    english = await open_page(browser, "/", **{"Accept-Language": "fr-FR,en;q=0.5"})
    assert '<html lang="en">' in english.text
    switched = await fill(browser, "/", "/language", {"language": "sw", "next": "/therapists"})
    assert switched.headers["location"] == "/therapists"
    assert '<html lang="sw">' in (await open_page(browser, "/")).text
    email = new_email()
    await fill(browser, "/sign-up", "/sign-up", sign_up_fields(email))  # the account keeps Kiswahili
    browser.cookies.clear()
    await fill(browser, "/sign-in", "/sign-in", {"email": email, "password": PASSWORD})
    assert '<html lang="sw">' in (await open_page(browser, "/", **{"Accept-Language": "en"})).text


async def test_failures_on_our_side_are_friendly_pages_with_the_reference(
    make_settings: SettingsFactory, database_url: str
) -> None:
    app = create_app(make_settings(DATABASE_URL=database_url))

    @app.get("/_test/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    pages = page_router()

    @pages.get("/_test/broken-page")
    async def broken_page(*, viewer: ViewerDep) -> None:
        raise RuntimeError("a bug in a page")

    app.include_router(pages)

    @app.get("/_test/database-down")
    async def database_down() -> None:
        raise DatabaseUnavailableError(retry_after=30)

    async with running(app, raise_app_exceptions=False) as browser:
        crash = await open_page(browser, "/_test/broken")
        assert crash.status_code == 500 and crash.headers["content-type"].startswith("text/html")
        said = text_of(crash)
        assert "Sorry, something went wrong on our side" in said and "a bug" not in said
        assert crash.headers["x-request-id"] in said
        down = await open_page(browser, "/_test/database-down")
        assert down.status_code == 503 and down.headers["retry-after"] == "30"
        assert "Nothing you entered has been lost." in text_of(down)
        assert "Please try again in 30 seconds." in text_of(down)
        page = await open_page(browser, "/_test/broken-page")
        assert page.status_code == 500 and "a bug" not in page.text
        assert "ss_form" in page.headers.get("set-cookie", "")  # the viewer's cookies went out with it
        api = await browser.get("/_test/broken")  # no Accept: text/html
        assert api.headers["content-type"].startswith("application/problem+json")
