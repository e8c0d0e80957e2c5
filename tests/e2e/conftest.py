"""Fixtures of the browser tests (tests/support/browser.py says how they work).

`browser`: Debian's chromium, launched once for this package and closed after its last test, so
Playwright's event loop never meets the asyncio tests that follow. `live_app`: the app on a free
port with a fresh database per module (a module overrides `live_app_settings` to change settings).
`browsers`: new watched contexts, one per simulated person; `page`: a page in one of them. A test
fails when a watched context saw a console error, uncaught exception, failed or 5xx request to the
app, CSP violation or non-loopback request (`browsers.take_problems()` for provoked ones).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.browser import Browsers, LiveApp, launch_chromium, running_live_app
from tests.support.smtp import SmtpServer

HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: drives a real browser against the live app (tests/e2e)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.e2e)
        if inspect.iscoroutinefunction(getattr(item, "obj", None)):
            raise pytest.UsageError(f"{item.nodeid}: browser tests are sync (Playwright's sync API owns the loop)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After the test body, the browser's problems fail the test itself (not its teardown)."""
    browsers = getattr(item, "funcargs", {}).get("browsers")
    try:
        result = yield
    except BaseException:
        if isinstance(browsers, Browsers):
            listed = "\n".join(str(problem) for problem in browsers.problems())
            item.add_report_section("call", "browser problems", listed or "none")
        raise
    if isinstance(browsers, Browsers):
        browsers.assert_no_problems()
    return result


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def live_app_settings() -> dict[str, Any]:
    """Settings overrides for this module's live app."""
    return {}


@pytest.fixture(scope="module")
def live_app(
    tmp_path_factory: pytest.TempPathFactory, smtp_server: SmtpServer, live_app_settings: dict[str, Any]
) -> Iterator[LiveApp]:
    with running_live_app(tmp_path_factory.mktemp("e2e"), smtp_server, **live_app_settings) as app:
        yield app


@pytest.fixture
def browsers(browser: Browser, live_app: LiveApp) -> Iterator[Browsers]:
    sessions = Browsers(browser, live_app)
    yield sessions
    sessions.close()


@pytest.fixture
def page(browsers: Browsers) -> Page:
    """A 1280x800 page, en-GB, Europe/London, on the live app (`page.goto("/")`)."""
    return browsers.new_page()
