"""End-to-end browser tests: the real app served by uvicorn in a thread of the test process,
Debian's chromium driven by Playwright's sync API, and watched pages that make their test fail
on what a user may not notice but must not happen: console errors, uncaught exceptions, failed
or 5xx requests to the app, Content-Security-Policy violations, and any request leaving loopback.

The tests are synchronous on purpose. Between two calls Playwright's sync API leaves its own
event loop marked as running in the test thread, so no asyncio test or fixture can run while a
browser is open; the app therefore runs on its own loop in its own thread (`LiveApp.run` hands
it coroutines), and the browser lives only as long as the e2e package (tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import pytest
import uvicorn
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    Route,
    ViewportSize,
    WebError,
    WebSocketRoute,
)
from playwright.sync_api import Error as PlaywrightError

from smilingsteps.app import create_app
from smilingsteps.config import Settings
from smilingsteps.platform import migrate
from smilingsteps.platform.server import build_server
from tests.conftest import TEST_SECRET
from tests.support.accounts import plain_text, runtime
from tests.support.clock import FakeClock
from tests.support.smtp import SmtpServer, client_settings

HOST = "127.0.0.1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by scripts/ensure-chromium
AXE_SCRIPT = REPO / "node_modules" / "axe-core" / "axe.min.js"  # installed by scripts/ensure-axe
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
T = TypeVar("T")


# ---- the live app -----------------------------------------------------------


def live_settings(directory: Path, port: int, smtp: SmtpServer, **overrides: Any) -> Settings:
    """tests/conftest.py's `make_settings`, served at http://127.0.0.1:`port`: its own SQLite
    database, mail to the test SMTP server, and the periodic jobs (the mail sender) in process."""
    origin = f"http://{HOST}:{port}"
    values: dict[str, Any] = {
        "APP_ENV": "test",
        "SECRET_KEY": TEST_SECRET,
        "DATA_DIR": directory / "data",
        "DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'app.db'}",
        "LOG_FORMAT": "json",
        "DB_MAX_RETRIES": 0,
        "ARGON2_TIME_COST": 1,
        "ARGON2_MEMORY_KIB": 64,
        "PUBLIC_BASE_URL": origin,
        "ALLOWED_ORIGINS": origin,
        "JOBS_IN_PROCESS": True,
        # A page load is many requests; the limits have their own tests (tests/integration).
        "RATE_LIMITS_ENABLED": False,
        **client_settings(smtp),
    }
    values.update(overrides)
    # Module-scoped fixtures run before the per-test environment cleaning: read none of it here.
    with pytest.MonkeyPatch.context() as patch:
        for name in Settings.model_fields:
            patch.delenv(name, raising=False)
        return Settings(**values)


def migrate_in_thread(database_url: str) -> None:
    """Alembic runs its own event loop, which it cannot start in a thread where Playwright's is marked running."""
    failure: list[BaseException] = []

    def upgrade() -> None:
        try:
            migrate.upgrade(database_url)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=upgrade, name="e2e-migrate")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def bound_socket() -> socket.socket:
    """A socket on a free loopback port, bound before the settings name the port (no race); uvicorn listens on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


class _ThreadServer(uvicorn.Server):
    """Plain uvicorn (not `DrainingServer`, whose gc.freeze() would freeze the whole test process)
    that says when its start-up is over and which loop it runs on."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.startup_over = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
        finally:
            self.startup_over.set()


class LiveApp:
    """`create_app(settings, clock=clock)` served at `url` from a background thread with its own
    event loop. Move `clock` to move the server's time; `run` executes a coroutine on its loop."""

    def __init__(self, settings: Settings, sock: socket.socket, smtp: SmtpServer, clock: FakeClock) -> None:
        self.settings = settings
        self.clock = clock
        self.smtp = smtp
        self.url = settings.PUBLIC_BASE_URL
        self.app = create_app(settings, clock=clock)
        self._socket = sock
        # build_server's config: the production protocol, limits and server-made answers.
        config = build_server(self.app, settings, host=HOST, port=sock.getsockname()[1]).config
        self._server = _ThreadServer(config)
        self._thread = threading.Thread(target=self._serve, name="e2e-live-app", daemon=True)
        self._crash: BaseException | None = None

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:
            self._crash = exc
        finally:
            self._server.startup_over.set()

    def start(self) -> None:
        self._thread.start()
        if not self._server.startup_over.wait(START_TIMEOUT) or not self._server.started:
            self.stop()
            raise RuntimeError("the live app did not start (its log is in the captured output)") from self._crash

    def stop(self) -> None:
        """Graceful: uvicorn stops listening, finishes requests, runs the lifespan shutdown."""
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(STOP_TIMEOUT)
        self._socket.close()
        assert not self._thread.is_alive(), "the live app did not stop"
        if self._crash is not None:
            raise RuntimeError("the live app's server crashed") from self._crash

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float = 30.0) -> T:
        """Run `coroutine` on the server's loop (seed data with the async helpers of tests/support)."""
        assert self._server.loop is not None, "the live app is not running"
        return asyncio.run_coroutine_threadsafe(coroutine, self._server.loop).result(timeout)

    def run_jobs_now(self) -> None:
        """A pass of every periodic job (outbox, hold expiry, reminders) begun now, and finished."""
        jobs = runtime(self.app).jobs
        assert jobs is not None, "the live app runs no jobs (JOBS_IN_PROCESS is off)"
        self.run(jobs.run_all_now())

    def wait_for_email(self, address: str, *, count: int = 1, timeout: float = 15.0) -> EmailMessage:
        """The `count`-th message to `address`, once the SMTP server has it (bounded by `timeout`).

        The outbox is sent at once rather than at the sender's next poll, and again while waiting
        in case the mail was queued after that pass (the request may still be in flight)."""
        deadline = time.monotonic() + timeout
        while True:
            self.run_jobs_now()
            messages = self.smtp.messages_to(address)
            if len(messages) >= count:
                return messages[count - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{count} message(s) to {address} did not arrive in {timeout} s")
            try:
                self.run(self.smtp.wait_for(address, count, timeout=min(left, 0.5)))
            except AssertionError:
                continue  # not yet: run the jobs again


def first_link(message: EmailMessage) -> str:
    """The first http(s) link in the message's plain-text part."""
    found = re.search(r"https?://[^\s<>\"')]+", plain_text(message))
    assert found is not None, f"no link in:\n{plain_text(message)}"
    return found.group(0).rstrip(".,")


@contextmanager
def running_live_app(directory: Path, smtp: SmtpServer, **overrides: Any) -> Iterator[LiveApp]:
    """A fresh migrated database and the app on a free port, stopped (gracefully) on exit."""
    sock = bound_socket()
    try:
        settings = live_settings(directory, sock.getsockname()[1], smtp, **overrides)
        migrate_in_thread(settings.database_url)
        app = LiveApp(settings, sock, smtp, FakeClock())
    except BaseException:
        sock.close()
        raise
    app.start()
    try:
        yield app
    finally:
        app.stop()


# ---- the browser --------------------------------------------------------------


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's chromium, headless; Playwright never downloads a browser of its own."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/ensure-chromium")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        # Root in a container: no sandbox; no GPU; /dev/shm may be tiny there.
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOOPBACK_HOSTS


@dataclass(frozen=True)
class Problem:
    kind: str  # one of the KIND_* below
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


CSP_VIOLATION = "CSP violation"
CONSOLE_ERROR = "console error"
PAGE_ERROR = "page error"
FAILED_REQUEST = "failed request"
SERVER_ERROR = "server error"
EXTERNAL_REQUEST = "external request"

_CSP_BINDING = "__e2eCspViolation"
# Reported live through a binding rather than kept in the page: an array would die with its
# document, and a sign-in form's redirect would take the violations of the form page with it.
_CSP_LISTENER = f"""
document.addEventListener("securitypolicyviolation", (event) => {{
  window.{_CSP_BINDING}?.({{
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    source: event.sourceFile,
    line: event.lineNumber,
    sample: event.sample,
    page: document.location.href,
  }});
}}, true);
"""
# A macrotask (after `ms`): events the page queued before it (a violation's report) have been dispatched.
_FLUSH = "(ms) => new Promise((resolve) => setTimeout(resolve, ms))"


class Watch:
    """What went wrong in one browser context, as it happened."""

    def __init__(self, app_origin: str) -> None:
        self.app_origin = app_origin
        self.problems: list[Problem] = []

    def attach(self, context: BrowserContext) -> None:
        context.expose_binding(_CSP_BINDING, self._on_csp_event)
        context.add_init_script(_CSP_LISTENER)
        context.on("console", self._on_console)
        context.on("weberror", self._on_page_error)
        context.on("requestfailed", self._on_request_failed)
        context.on("response", self._on_response)
        context.route(lambda url: not is_loopback(url), self._block_external)
        context.route_web_socket(lambda url: not is_loopback(url), self._block_external_socket)

    def _add(self, kind: str, detail: str) -> None:
        self.problems.append(Problem(kind, detail))

    def _on_csp_event(self, source: Any, details: dict[str, Any]) -> None:
        self._add(CSP_VIOLATION, ", ".join(f"{key}={value!r}" for key, value in details.items() if value))

    def _on_console(self, message: ConsoleMessage) -> None:
        where = message.location
        detail = f"{message.text} ({where['url']}:{where['lineNumber']})"
        if "Content Security Policy" in message.text:
            self._add(CSP_VIOLATION, detail)
        elif message.type == "error":
            self._add(CONSOLE_ERROR, detail)

    def _on_page_error(self, error: WebError) -> None:
        self._add(PAGE_ERROR, error.error.stack or error.error.message)

    def _on_request_failed(self, request: Request) -> None:
        # ERR_ABORTED is a navigation cancelling the previous page's loads: normal, not a fault.
        if request.url.startswith(self.app_origin) and request.failure != "net::ERR_ABORTED":
            self._add(FAILED_REQUEST, f"{request.method} {request.url}: {request.failure}")

    def _on_response(self, response: Response) -> None:
        # 4xx can be the point of a test (a wrong password); 5xx from the app never is.
        if response.status >= 500 and response.url.startswith(self.app_origin):
            self._add(SERVER_ERROR, f"{response.request.method} {response.url}: {response.status}")

    def _block_external(self, route: Route) -> None:
        self._add(EXTERNAL_REQUEST, f"{route.request.method} {route.request.url} (blocked)")
        route.abort("blockedbyclient")

    def _block_external_socket(self, socket_route: WebSocketRoute) -> None:
        self._add(EXTERNAL_REQUEST, f"WebSocket {socket_route.url} (blocked)")
        socket_route.close(code=1008, reason="blocked by the e2e harness")


def flush(context: BrowserContext, *, ms: int = 0) -> None:
    """Let every open page deliver what it has queued (CSP reports, console messages)."""
    for page in context.pages:
        if page.is_closed():
            continue
        # Navigating or closing: its events were sent already.
        with contextlib.suppress(PlaywrightError):
            page.evaluate(_FLUSH, ms)


class Browsers:
    """Fresh, watched browser contexts on the live app: one per simulated person."""

    def __init__(self, browser: Browser, app: LiveApp) -> None:
        self.browser = browser
        self.app = app
        self._watches: list[tuple[BrowserContext, Watch]] = []

    def new_context(
        self,
        *,
        width: int = 1280,
        height: int = 800,
        timezone_id: str = "Europe/London",
        locale: str = "en-GB",
        storage_state: Any = None,
    ) -> BrowserContext:
        context = self.browser.new_context(
            base_url=self.app.url,
            viewport={"width": width, "height": height},
            timezone_id=timezone_id,
            locale=locale,
            storage_state=storage_state,
        )
        context.set_default_timeout(10_000)
        context.set_default_navigation_timeout(15_000)
        watch = Watch(self.app.url)
        watch.attach(context)
        self._watches.append((context, watch))
        return context

    def new_page(self, **options: Any) -> Page:
        """A page in a new context (`new_context`'s options): `page.goto("/sign-in")`."""
        return self.new_context(**options).new_page()

    def problems(self, *, flush_ms: int = 0) -> list[Problem]:
        found: list[Problem] = []
        for context, watch in self._watches:
            flush(context, ms=flush_ms)
            found.extend(watch.problems)
        return found

    def take_problems(self) -> list[Problem]:
        """The problems so far, forgotten: for a test that provokes them on purpose."""
        found = self.problems()
        for _, watch in self._watches:
            watch.problems.clear()
        return found

    def wait_for_problem(self, matches: Callable[[Problem], bool], *, timeout: float = 5.0) -> list[Problem]:
        """Every problem so far, once one `matches` (a CSP report arrives a task after the violation)."""
        deadline = time.monotonic() + timeout
        # Each check lets the pages run for 20 ms: a poll interval, not a delay the test needs.
        while True:
            found = self.problems(flush_ms=20)
            if any(matches(problem) for problem in found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching problem within {timeout} s; seen: {found}")

    def assert_no_problems(self) -> None:
        found = self.problems()
        if found:
            listed = "\n".join(f"  - {problem}" for problem in found)
            raise AssertionError(f"the browser ({self.describe()}) saw {len(found)} problem(s):\n{listed}")

    def describe(self) -> str:
        return f"chromium {self.browser.version}"

    def close(self) -> None:
        for context, _ in self._watches:
            context.close()
        self._watches.clear()


# ---- accessibility ------------------------------------------------------------

AXE_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
MAX_TARGETS_SHOWN = 5
_RUN_AXE = """
async ({ tags, exclude }) => {
  const context = exclude.length ? { exclude: exclude.map((selector) => [selector]) } : document;
  const results = await axe.run(context, { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] });
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    targets: v.nodes.map((node) => node.target.join(" ")),
  }));
}
"""
_EMULATION = "() => [navigator.language, Intl.DateTimeFormat().resolvedOptions().timeZone]"


@dataclass(frozen=True)
class AxeViolation:
    id: str
    impact: str | None
    help: str
    help_url: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.targets[:MAX_TARGETS_SHOWN])
        if len(self.targets) > MAX_TARGETS_SHOWN:
            shown += f" and {len(self.targets) - MAX_TARGETS_SHOWN} more"
        return f"{self.id} ({self.impact}): {self.help} [{shown}] {self.help_url}"


def axe_violations(
    page: Page,
    url: str | None = None,
    *,
    wait_for: str | None = None,
    prepare: Callable[[Page], None] | None = None,
    exclude: Sequence[str] = (),
) -> list[AxeViolation]:
    """axe-core's WCAG 2.0/2.1/2.2 A and AA findings for `url` (default: the page's own URL).

    The URL is opened afresh, with the page's cookies and storage, viewport, locale and time zone,
    in a separate context that ignores the CSP (axe is injected as an inline script); the watched
    context keeps the CSP. `wait_for`: a selector to wait for; `prepare`: steps that recreate a
    state reached by interaction (an open menu, a form's errors)."""
    if not AXE_SCRIPT.exists():
        raise RuntimeError(f"{AXE_SCRIPT} is missing: run scripts/ensure-axe")
    browser = page.context.browser
    assert browser is not None
    locale, timezone_id = page.evaluate(_EMULATION)
    context = browser.new_context(
        bypass_csp=True,
        storage_state=page.context.storage_state(),
        viewport=page.viewport_size,
        locale=locale,
        timezone_id=timezone_id,
    )
    try:
        context.route(lambda target: not is_loopback(target), lambda route: route.abort("blockedbyclient"))
        copy = context.new_page()
        copy.goto(urljoin(page.url, url) if url else page.url)
        if wait_for is not None:
            copy.locator(wait_for).first.wait_for()
        if prepare is not None:
            prepare(copy)
        copy.add_script_tag(path=AXE_SCRIPT)
        found = copy.evaluate(_RUN_AXE, {"tags": list(AXE_TAGS), "exclude": list(exclude)})
    finally:
        context.close()
    return [AxeViolation(v["id"], v["impact"], v["help"], v["helpUrl"], tuple(v["targets"])) for v in found]


def check_accessibility(
    page: Page,
    url: str | None = None,
    *,
    wait_for: str | None = None,
    prepare: Callable[[Page], None] | None = None,
    exclude: Sequence[str] = (),
    ignore: Collection[str] = (),
) -> list[AxeViolation]:
    """Fail on serious or critical WCAG A/AA violations (`axe_violations`); return the minor ones.
    `ignore`: rule ids known and accepted (say why at the call)."""
    found = axe_violations(page, url, wait_for=wait_for, prepare=prepare, exclude=exclude)
    blocking = [v for v in found if v.impact in BLOCKING_IMPACTS and v.id not in ignore]
    if blocking:
        listed = "\n".join(f"  - {violation}" for violation in blocking)
        where = url or page.url
        raise AssertionError(f"{len(blocking)} serious or critical accessibility violation(s) on {where}:\n{listed}")
    return [v for v in found if v not in blocking]


# ---- screenshots --------------------------------------------------------------

WIDTHS = (360, 1280)  # a small phone, a laptop
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG at the current viewport: test-artifacts/screenshots/<name>-<width>.png."""
    assert _NAME.fullmatch(name), f"screenshot names are lower-case words and dashes: {name!r}"
    viewport = page.viewport_size
    assert viewport is not None
    path = SCREENSHOTS / f"{name}-{viewport['width']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True, animations="disabled")
    return path


def screenshots(page: Page, name: str, widths: Sequence[int] = WIDTHS) -> list[Path]:
    """`screenshot` at each width (the height kept), then the viewport as it was."""
    original = page.viewport_size
    assert original is not None
    try:
        paths = []
        for width in widths:
            page.set_viewport_size(ViewportSize(width=width, height=original["height"]))
            paths.append(screenshot(page, name))
        return paths
    finally:
        page.set_viewport_size(original)
