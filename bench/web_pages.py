"""Web pages: what the server-rendered pages cost next to the JSON API, what a first visit downloads,
and Lighthouse's scores.

Targets (from the issue): the directory page costs the server at most 1.5x the JSON API answering the
same query; the directory page's first load (HTML and every asset it references) weighs at most
150 KiB and asks no host but 127.0.0.1; Lighthouse (mobile, its default) scores at least 95 for
performance, accessibility and best practices on the home page, the directory, a therapist's
profile and the sign-in page (SEO is reported, not targeted).

One run, in three parts, against servers started by the script (``--serve``: the full app from
``create_app``, JSON access log to a file, ``RATE_LIMITS_ENABLED=false``, uvicorn with the harness's
settings, pinned to CPU 0) on a database seeded here: ``--therapists`` approved therapists (40) with
profiles (every other one offers anxiety, so the filtered directory has more than a page) and
weekday availability 09:00-17:00 in Africa/Nairobi, written with the therapists service as
tests/support/bookings.py does.

1. **Server cost** under ``wrk`` (1 thread, ``--connections``, pinned to CPU 1), in interleaved
   rounds, the order rotating each round: ``GET /therapists?specialty=anxiety`` with
   ``Accept: text/html`` (a first visit: no cookie, so the page also sets its pre-session form
   cookie), the same with that cookie (a returning visitor), ``GET /api/v1/therapists?specialty=
   anxiety&limit=12`` (the page shows 12 per page, so the same work), and informationally a
   therapist's profile page against ``GET /api/v1/therapists/{id}/slots`` over the same 14 days.
   With the server saturated, ``1e6 / rps`` is its time per request; the server's own CPU per
   request (its threads' schedstat) is reported too. Ratios page/API are per round and of medians.
   The page and the API are first checked to list the same therapists in the same order.
   ``--postgres`` measures a second server on a scratch PostgreSQL database in the same rounds.
   Then, in process (SQLite, direct ASGI calls): the CPU per request of the pages and the API, the
   part spent rendering templates and in Babel's formatting, and a what-if page whose template output
   is reused: where the page's extra cost goes.
2. **First-load weight** of ``/therapists``: the HTML and every asset it references (stylesheets,
   scripts and the modules they import, icons, images, CSS ``url()``/``@import``), fetched from the
   server, uncompressed and gzip (level 6; the app itself sends them uncompressed, compression is the
   proxy's job), and every reference to another host. Lighthouse's ``total-byte-weight`` and
   ``network-requests`` of the same page confirm it.
3. **Lighthouse** (npm ``lighthouse``, pinned in ``bench/lighthouse/package-lock.json`` and installed by
   this script with ``npm ci --ignore-scripts`` when missing) with Debian's chromium
   (``CHROME_PATH=/usr/bin/chromium``, ``--headless=new --no-sandbox --disable-gpu``), mobile, simulated
   throttling, ``--lighthouse-runs`` runs per page (3): the median score per category, and every audit
   that failed in any run with what it found. Full reports go to ``bench/results/lighthouse/``
   (git-ignored).

Usage (from the repository root; bench/README.md has the details)::

    .tools/bin/uv run --frozen python bench/web_pages.py                    # ~6 min
    .tools/bin/uv run --frozen python bench/web_pages.py --postgres         # + PostgreSQL, ~9 min
    .tools/bin/uv run --frozen python bench/web_pages.py --no-load          # weight and Lighthouse only
    .tools/bin/uv run --frozen python bench/web_pages.py --serve sqlite --port 8001 --workdir /tmp/x

Without ``--ref``, what is measured is a copy of the working tree's ``src/`` taken when the run starts
(``harness.use_worktree_snapshot``; ``--live-tree`` imports the tree as it is): others may edit it
during the run, and uncommitted files (which ``--ref`` cannot export) are measured too.

Results: ``bench/results/web_pages.json``.

smilingsteps ships no ``py.typed`` marker, so its imports carry ``type: ignore[import-untyped, unused-ignore]``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import harness

API = "/api/v1"
SPECIALTY = "anxiety"
PAGE_SIZE = 12  # the directory page's page size (web/public_pages.py PAGE_SIZE)
SLOT_DAYS = 14  # the profile page's window (web/public_pages.py SLOT_DAYS)
THERAPIST_TZ = "Africa/Nairobi"
TARGET_RATIO = 1.5
TARGET_WEIGHT_KIB = 150.0
TARGET_SCORE = 95
TARGET_CATEGORIES = ("performance", "accessibility", "best-practices")
CATEGORIES = (*TARGET_CATEGORIES, "seo")
BACKENDS = ("sqlite", "postgres")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LIGHTHOUSE_DIR = harness.BENCH_DIR / "lighthouse"
LIGHTHOUSE_CLI = LIGHTHOUSE_DIR / "node_modules" / "lighthouse" / "cli" / "index.js"
REPORTS_DIR = harness.RESULTS_DIR / "lighthouse"
CHROME_PATH = "/usr/bin/chromium"
CHROME_FLAGS = "--headless=new --no-sandbox --disable-gpu"
FORM_COOKIE = "ss_form"  # web/viewer.py: the pre-session id an anonymous visitor's forms are bound to
HTML_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SOURCE_FILES = (
    "web/public_pages.py",
    "web/rendering.py",
    "web/viewer.py",
    "web/templates/base.html",
    "web/templates/directory.html",
    "web/templates/therapist.html",
    "web/static/css/app.css",
    "web/static/js/app.js",
    "bookings/router.py",
    "therapists/service.py",
)


@dataclass
class Options(harness.Load):
    therapists: int = 40
    postgres: bool = False
    admin_url: str = DEFAULT_ADMIN_URL
    load: bool = True
    lighthouse: bool = True
    lighthouse_runs: int = 3
    in_process_requests: int = 300


# --------------------------------------------------------------------------
# The server and its data
# --------------------------------------------------------------------------


def serve(port: int, workdir: Path, backend: str) -> None:
    """The full app from the environment's settings until SIGTERM."""
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]

    settings = Settings()
    app = harness.logged_app(settings, workdir / f"app-{backend}.log")
    harness.run_uvicorn(app, port)


def settings_env(database_url: str, workdir: Path) -> dict[str, str]:
    return {
        "APP_ENV": "test",
        "SECRET_KEY": secrets.token_urlsafe(36),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(workdir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "RATE_LIMITS_ENABLED": "false",
        "JOBS_IN_PROCESS": "false",  # no mail sender polling the database in the measured process
        "SHUTDOWN_READINESS_DELAY": "0",
    }


@dataclass
class Seeded:
    therapists: list[str]  # ids, in creation order
    offering_specialty: int  # how many list SPECIALTY


async def seed(url: str, count: int) -> Seeded:
    """Approved therapists with a profile and weekday availability, straight into the database (the
    service calls of tests/support/bookings.py ``therapist_user``)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from smilingsteps.accounts.models import Role, TherapistStatus, User  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.therapists import service as therapists  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.therapists.schemas import AvailabilityIn, ProfileIn, RuleIn  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.therapists.vocabulary import Specialty  # type: ignore[import-untyped, unused-ignore]

    others = [s.value for s in Specialty if s.value != SPECIALTY]
    now = dt.datetime.now(dt.UTC)
    availability = AvailabilityIn(
        rules=[RuleIn(weekday=day, start=dt.time(9), end=dt.time(17)) for day in range(5)], exceptions=[]
    )
    users, profiles = [], []
    for index in range(count):
        specialties = [others[index % len(others)], others[(index + 5) % len(others)]]
        if index % 2 == 0:
            specialties = [SPECIALTY, specialties[0]]
        users.append(
            User(
                id=uuid.uuid4(),
                email=f"bench-web-{index}@example.com",
                password_hash="!",  # nobody signs in
                full_name=f"Dr Bench Therapist {index:02d}",
                phone="254712345678",
                timezone=THERAPIST_TZ,
                role=Role.THERAPIST.value,
                status="active",
                therapist_status=TherapistStatus.APPROVED.value,
                email_verified_at=now,
                password_changed_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        profiles.append(
            ProfileIn(
                bio="Warm, practical support for adults and couples: short-term, goal-focused sessions "
                "in English or Kiswahili.",
                specialties=specialties,
                languages=["en", "sw"] if index % 3 else ["en"],
                years_of_practice=3 + index % 20,
                license_number=f"KCPB-{10000 + index}",
                price_kes=1500 + 250 * (index % 10),
                session_minutes=50,
                buffer_minutes=10,
                timezone=THERAPIST_TZ,
            )
        )
    engine = create_async_engine(url)
    try:
        maker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        async with maker() as session, session.begin():
            session.add_all(users)
            await session.flush()
            for user, profile in zip(users, profiles, strict=True):
                await therapists.save_profile(session, user.id, Role.THERAPIST, profile, now=now)
                await therapists.set_availability(session, user.id, availability)
    finally:
        await engine.dispose()
    return Seeded([str(u.id) for u in users], sum(SPECIALTY in p.specialties for p in profiles))


def prepare_sqlite(workdir: Path, count: int) -> tuple[str, Seeded]:
    from smilingsteps.platform import migrate  # type: ignore[import-untyped, unused-ignore]

    url = f"sqlite+aiosqlite:///{(workdir / 'web.db').as_posix()}"
    migrate.upgrade(url)  # runs its own event loop
    return url, asyncio.run(seed(url, count))


@contextmanager
def postgres_database(admin_url: str, count: int) -> Iterator[tuple[str, Seeded]]:
    """A scratch database (dropped at the end), migrated and seeded."""
    from smilingsteps.platform import migrate  # type: ignore[import-untyped, unused-ignore]

    runner = asyncio.Runner()
    database = harness.scratch_database(admin_url, "bench_web")
    name = runner.run(database.__aenter__())
    try:
        url = harness.postgres_url(admin_url, name)
        migrate.upgrade(url)
        yield url, runner.run(seed(url, count))
    finally:
        runner.run(database.__aexit__(None, None, None))
        runner.close()


# --------------------------------------------------------------------------
# Part 1: server cost under wrk
# --------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    meaning: str = ""


def cases(seeded: Seeded, now: dt.datetime) -> list[Case]:
    profile = seeded.therapists[0]
    start = now.replace(microsecond=0)
    window = f"from={start:%Y-%m-%dT%H:%M:%SZ}&to={start + dt.timedelta(days=SLOT_DAYS):%Y-%m-%dT%H:%M:%SZ}"
    returning = {"Accept": HTML_ACCEPT, "Cookie": f"{FORM_COOKIE}={uuid.uuid4()}"}
    return [
        Case(
            "directory-page",
            f"/therapists?specialty={SPECIALTY}",
            {"Accept": HTML_ACCEPT},
            "the directory page, first visit (no cookie: it sets the pre-session form cookie)",
        ),
        Case(
            "directory-page-returning",
            f"/therapists?specialty={SPECIALTY}",
            returning,
            "the directory page with the pre-session form cookie a browser sends back",
        ),
        Case(
            "directory-api",
            f"{API}/therapists?specialty={SPECIALTY}&limit={PAGE_SIZE}",
            {"Accept": "application/json"},
            "the JSON API, the same query and page size",
        ),
        Case(
            "profile-page",
            f"/therapists/{profile}",
            returning,
            f"a therapist's profile page: profile and free slots over {SLOT_DAYS} days (returning visitor)",
        ),
        Case(
            "slots-api",
            f"{API}/therapists/{profile}/slots?{window}",
            {"Accept": "application/json"},
            f"the JSON API's free slots over the same {SLOT_DAYS} days (without the profile)",
        ),
    ]


COMPARISONS = (
    ("directory-page", "directory-api", "directory page (first visit) / JSON API, same query", True),
    ("directory-page-returning", "directory-api", "directory page (returning visitor) / JSON API", False),
    ("profile-page", "slots-api", "profile page / slots API over 14 days (informational)", False),
)
THERAPIST_LINK = re.compile(r'href="/therapists/([0-9a-f-]{36})"')


def check_cases(port: int, found: list[Case], seeded: Seeded) -> dict[str, Any]:
    """Each case answers 200; the page and the API list the same therapists in the same order."""
    answers: dict[str, Any] = {}
    bodies: dict[str, bytes] = {}
    for case in found:
        status, headers, body = harness.request(port, "GET", case.path, headers=case.headers, timeout=10.0)
        if status != 200:
            raise SystemExit(f"{case.name}: GET {case.path} answered {status}: {body[:300]!r}")
        names = [name.lower() for name, _ in headers]
        answers[case.name] = {
            "status": status,
            "content_type": {k.lower(): v for k, v in headers}.get("content-type"),
            "body_bytes": len(body),
            "headers": len(headers),
            "header_bytes": sum(len(k) + len(v) + 4 for k, v in headers),
            "sets_cookie": "set-cookie" in names,
        }
        bodies[case.name] = body
    page_ids = THERAPIST_LINK.findall(bodies["directory-page"].decode())
    api_ids = [item["id"] for item in json.loads(bodies["directory-api"])["items"]]
    slots = json.loads(bodies["slots-api"])
    page_slots = bodies["profile-page"].decode().count('class="slot"')
    same = page_ids == api_ids and len(api_ids) == PAGE_SIZE
    answers["same_therapists_same_order"] = same
    answers["therapists_listed"] = {
        "page": len(page_ids),
        "api": len(api_ids),
        "matching_in_db": seeded.offering_specialty,
    }
    answers["slots_listed"] = {"api": len(slots), "page_slot_links": page_slots}
    if not same:
        raise SystemExit(f"page and API differ: page {page_ids} vs API {api_ids}")
    return answers


def wrk_args(case: Case) -> list[str]:
    args: list[str] = []
    for name, value in case.headers.items():
        args += ["-H", f"{name}: {value}"]
    return args


def measured_run(server: harness.Server, case: Case, seconds: float, load: harness.Load) -> dict[str, Any]:
    """One wrk run, with the server's own CPU time over it."""
    cpu_before, wall_before = harness.threads_cpu_ns(server.pid), time.monotonic()
    run = harness.run_wrk(server.url(case.path), seconds, load, *wrk_args(case))
    cpu_s = (harness.threads_cpu_ns(server.pid) - cpu_before) / 1e9
    wall_s = time.monotonic() - wall_before
    run["server_cpu_us_per_request"] = round(cpu_s * 1e6 / max(1, run["requests"]), 2)
    run["server_cpu_busy_fraction"] = round(cpu_s / wall_s, 3)
    return run


def measure_load(servers: dict[str, harness.Server], found: dict[str, list[Case]], load: Options) -> dict[str, Any]:
    """Warm-up, then the interleaved rounds over every (backend, case)."""
    keys = [(backend, case.name) for backend in servers for case in found[backend]]
    by_key = {(backend, case.name): case for backend in servers for case in found[backend]}
    for backend, name in keys:
        print(f"warm-up {backend} {name} {load.warmup} s", flush=True)
        harness.run_wrk(
            servers[backend].url(by_key[backend, name].path), load.warmup, load, *wrk_args(by_key[backend, name])
        )
    runs: list[dict[str, Any]] = []
    for rnd, (backend, name) in harness.rounds(keys, load.rounds):
        run = measured_run(servers[backend], by_key[backend, name], load.duration, load)
        runs.append({"backend": backend, "case": name, "round": rnd, **run})
        print(
            f"round {rnd} {backend:8s} {name:26s} {run['rps']:9.1f} rps  {run['server_cpu_us_per_request']:8.1f} µs cpu"
            f"  busy {run['server_cpu_busy_fraction']:.2f}",
            flush=True,
        )
    return {"runs": runs, "summary": summarise_load(runs, found, load)}


def summarise_load(runs: list[dict[str, Any]], found: dict[str, list[Case]], load: Options) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for backend, backend_cases in found.items():
        per_case: dict[str, Any] = {}
        for case in backend_cases:
            mine = [r for r in runs if r["backend"] == backend and r["case"] == case.name]
            cpu = [r["server_cpu_us_per_request"] for r in mine]
            per_case[case.name] = {
                "path": case.path,
                "headers": case.headers,
                "meaning": case.meaning,
                **harness.wrk_summary(mine),
                "server_cpu_us_per_request": round(statistics.median(cpu), 2),
                "rounds_server_cpu_us_per_request": cpu,
                "server_cpu_busy_fraction_median": round(
                    statistics.median(r["server_cpu_busy_fraction"] for r in mine), 3
                ),
                "errors": sum(harness.wrk_errors(r) for r in mine),
            }
        ratios: dict[str, Any] = {}
        for page, api, meaning, targeted in COMPARISONS:
            if page not in per_case or api not in per_case:
                continue
            rounds_ratio = [
                round(a["rps"] / p["rps"], 3)
                for p, a in zip(
                    [r for r in runs if r["backend"] == backend and r["case"] == page],
                    [r for r in runs if r["backend"] == backend and r["case"] == api],
                    strict=True,
                )
            ]
            ratio = per_case[page]["us_per_request"] / per_case[api]["us_per_request"]
            cpu_ratio = per_case[page]["server_cpu_us_per_request"] / per_case[api]["server_cpu_us_per_request"]
            ratios[f"{page} / {api}"] = {
                "meaning": meaning,
                "ratio_us_per_request": round(ratio, 3),
                "ratio_per_round": rounds_ratio,
                "ratio_server_cpu_us": round(cpu_ratio, 3),
                "difference_us_per_request": round(
                    per_case[page]["us_per_request"] - per_case[api]["us_per_request"], 1
                ),
                **(
                    {
                        "target": TARGET_RATIO,
                        "met_by_rps": ratio <= TARGET_RATIO,
                        "met_by_server_cpu": cpu_ratio <= TARGET_RATIO,
                        "met": ratio <= TARGET_RATIO and cpu_ratio <= TARGET_RATIO,
                    }
                    if targeted
                    else {}
                ),
            }
        result[backend] = {"cases": per_case, "ratios": ratios}
    return result


IN_PROCESS = ("directory-page-returning", "directory-api", "profile-page", "slots-api")
RENDER_CACHED = "what-if: directory-page-returning, template output reused"


FORMATTERS = ("kes", "when", "day", "clock_time", "number")  # platform/i18n.py: Babel, called by the filters


async def _in_process(url: str, workdir: Path, found: list[Case], requests: int, rounds: int) -> dict[str, Any]:
    """CPU per request with direct ASGI calls (no HTTP), and how much of a page's goes to rendering its
    template (``Pages.render`` timed on the loop's thread) and, inside it, to the Babel formatting the
    template's filters call (prices, dates, times): where the page's extra cost goes."""
    import profiling
    from smilingsteps.config import Settings  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.platform import i18n  # type: ignore[import-untyped, unused-ignore]
    from smilingsteps.web import rendering  # type: ignore[import-untyped, unused-ignore]

    app = harness.logged_app(Settings(**settings_env(url, workdir)), workdir / "app-in-process.log")
    spent = {"render": 0, "formatting": 0}
    originals: dict[str, Any] = {name: getattr(i18n, name) for name in FORMATTERS}
    original_render = rendering.Pages.render

    def timed(function: Any, key: str) -> Any:
        def wrapper(*args: Any) -> Any:
            started = time.thread_time_ns()
            try:
                return function(*args)
            finally:
                spent[key] += time.thread_time_ns() - started

        return wrapper

    rendered: dict[tuple[str, Any], str] = {}
    caching = [False]
    timed_render = timed(original_render, "render")

    def render(self: Any, name: str, language: Any, context: Any) -> Any:
        """Timed; in the what-if case, a template's first rendering is reused (no rendering at all)."""
        if not caching[0]:
            return timed_render(self, name, language, context)
        if (name, language) not in rendered:
            rendered[name, language] = original_render(self, name, language, context)
        return rendered[name, language]

    scopes: dict[str, dict[str, Any]] = {}
    for case in found:
        if case.name in IN_PROCESS:
            path, _, query = case.path.partition("?")
            scope = profiling.asgi_scope(path, [(k.lower().encode(), v.encode()) for k, v in case.headers.items()])
            scope["query_string"] = query.encode()
            scopes[case.name] = scope
    scopes[RENDER_CACHED] = scopes["directory-page-returning"]
    samples: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "render": [], "formatting": []} for name in scopes}
    # The filters look the formatters up in the module on every call; Pages.render is looked up on the class.
    rendering.Pages.render = render
    for name, function in originals.items():
        setattr(i18n, name, timed(function, "formatting"))
    try:
        async with app.router.lifespan_context(app):
            for scope in scopes.values():
                await profiling.call_asgi(app, scope, max(10, requests // 5))  # warm-up
            for _, name in harness.rounds(list(scopes), rounds):
                spent.update(render=0, formatting=0)
                caching[0] = name == RENDER_CACHED
                _, cpu_us = await profiling.call_asgi(app, scopes[name], requests)
                samples[name]["cpu"].append(round(cpu_us, 1))
                samples[name]["render"].append(round(spent["render"] / 1e3 / requests, 1))
                samples[name]["formatting"].append(round(spent["formatting"] / 1e3 / requests, 1))
    finally:
        rendering.Pages.render = original_render
        for name, function in originals.items():
            setattr(i18n, name, function)
    cases_out: dict[str, dict[str, Any]] = {
        name: {
            "cpu_us_per_request": round(statistics.median(found_samples["cpu"]), 1),
            "rounds_cpu_us_per_request": found_samples["cpu"],
            "render_us_per_request": round(statistics.median(found_samples["render"]), 1),
            "of_which_babel_formatting_us": round(statistics.median(found_samples["formatting"]), 1),
        }
        for name, found_samples in samples.items()
    }
    cpu = {name: values["cpu_us_per_request"] for name, values in cases_out.items()}
    explained: dict[str, Any] = {
        "directory page, by difference (what-if: its template's output reused, not rendered)": {
            "page_us": cpu["directory-page-returning"],
            "page_without_rendering_us": cpu[RENDER_CACHED],
            "api_us": cpu["directory-api"],
            "rendering_us": round(cpu["directory-page-returning"] - cpu[RENDER_CACHED], 1),
            "rest_of_the_page_over_the_api_us": round(cpu[RENDER_CACHED] - cpu["directory-api"], 1),
        }
    }
    for page, api in (("directory-page-returning", "directory-api"), ("profile-page", "slots-api")):
        extra = cases_out[page]["cpu_us_per_request"] - cases_out[api]["cpu_us_per_request"]
        explained[f"{page} - {api}"] = {
            "extra_cpu_us": round(extra, 1),
            "ratio": round(cases_out[page]["cpu_us_per_request"] / cases_out[api]["cpu_us_per_request"], 3),
            "template_render_us": cases_out[page]["render_us_per_request"],
            "of_which_babel_formatting_us": cases_out[page]["of_which_babel_formatting_us"],
            "extra_outside_rendering_us": round(extra - cases_out[page]["render_us_per_request"], 1),
        }
    return {
        "method": f"direct ASGI calls on uvloop, CPU of this process (process_time: the loop and aiosqlite's "
        f"thread), {rounds} interleaved rounds of {requests} requests, medians; render = the loop thread's CPU "
        f"inside Pages.render; Babel formatting = inside i18n.{', i18n.'.join(FORMATTERS)} (the filters for "
        "prices, days and times); the API's JSON serialisation is part of its own CPU; the what-if case is the "
        "directory page with Pages.render returning its first output again (everything but the rendering)",
        "cases": cases_out,
        "page_minus_api": explained,
    }


def in_process(url: str, workdir: Path, found: list[Case], options: Options) -> dict[str, Any]:
    import uvloop

    with options.this_process_on(options.server_cpu), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_in_process(url, workdir, found, options.in_process_requests, options.rounds))


# --------------------------------------------------------------------------
# Part 2: first-load weight
# --------------------------------------------------------------------------


class References(HTMLParser):
    """What a browser loads for a page: stylesheets, icons, preloads, scripts, images, media."""

    LOADED_RELS = frozenset(
        {"stylesheet", "icon", "shortcut", "apple-touch-icon", "preload", "modulepreload", "manifest"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []  # (what, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "link" and set(values.get("rel", "").lower().split()) & self.LOADED_RELS and values.get("href"):
            self.found.append((f"link rel={values['rel']}", values["href"]))
        elif tag in {"script", "img", "iframe", "audio", "video", "source", "embed", "input"} and values.get("src"):
            self.found.append((tag, values["src"]))
        if values.get("srcset"):
            for candidate in values["srcset"].split(","):
                if candidate.strip():
                    self.found.append((f"{tag} srcset", candidate.split()[0]))
        if tag == "video" and values.get("poster"):
            self.found.append(("video poster", values["poster"]))
        if values.get("style"):
            self.found.extend(("style attribute", url) for url in css_urls(values["style"]))


CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")
JS_IMPORT = re.compile(
    r"""(?:^|[;\s])import\s*(?:[\w*{}\s,$]+from\s*)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)""", re.M
)


def css_urls(text: str) -> list[str]:
    return [a or b for a, b in CSS_URL.findall(text) if not (a or b).startswith("data:")]


def gzip_size(body: bytes) -> int:
    return len(gzip.compress(body, compresslevel=6, mtime=0))


def fetch(port: int, path: str, accept: str = "*/*") -> tuple[int, dict[str, str], bytes]:
    status, headers, body = harness.request(port, "GET", path, headers={"Accept": accept}, timeout=10.0)
    return status, {k.lower(): v for k, v in headers}, body


def page_weight(port: int, path: str) -> dict[str, Any]:
    """The page and everything it references (recursively through CSS and JS modules), each once."""
    base = f"http://{harness.HOST}:{port}{path}"
    status, headers, html = fetch(port, path, HTML_ACCEPT)
    if status != 200:
        raise SystemExit(f"GET {path} answered {status}")
    parser = References()
    parser.feed(html.decode())
    queue = [(what, urljoin(base, url), path) for what, url in parser.found]
    resources: list[dict[str, Any]] = [
        {
            "url": path,
            "what": "document",
            "status": status,
            "content_type": headers.get("content-type"),
            "content_encoding": headers.get("content-encoding", "identity"),
            "bytes": len(html),
            "gzip_bytes": gzip_size(html),
        }
    ]
    external: list[dict[str, str]] = []
    seen = {base}
    while queue:
        what, url, referrer = queue.pop(0)
        parts = urlsplit(url)
        if parts.scheme == "data":
            continue
        if parts.hostname != harness.HOST or parts.port != port:
            external.append({"url": url, "what": what, "referenced_by": referrer})
            continue
        if url in seen:
            continue
        seen.add(url)
        local = parts.path + (f"?{parts.query}" if parts.query else "")
        got, got_headers, body = fetch(port, local)
        kind = got_headers.get("content-type", "")
        resources.append(
            {
                "url": local,
                "what": what,
                "status": got,
                "content_type": kind,
                "content_encoding": got_headers.get("content-encoding", "identity"),
                "cache_control": got_headers.get("cache-control"),
                "bytes": len(body),
                "gzip_bytes": gzip_size(body),
            }
        )
        if "css" in kind:
            queue += [("css url()", urljoin(url, ref), local) for ref in css_urls(body.decode())]
        elif "javascript" in kind:
            queue += [("js import", urljoin(url, a or b), local) for a, b in JS_IMPORT.findall(body.decode())]
    total = sum(r["bytes"] for r in resources)
    total_gzip = sum(r["gzip_bytes"] for r in resources)
    return {
        "page": path,
        "requests": len(resources),
        "resources": resources,
        "total_bytes": total,
        "total_kib": round(total / 1024, 2),
        "total_gzip_bytes": total_gzip,
        "total_gzip_kib": round(total_gzip / 1024, 2),
        "references_to_other_hosts": external,
        "requests_to_other_hosts": len(external),
        "not_ok": [r["url"] for r in resources if r["status"] != 200],
        "target_kib": TARGET_WEIGHT_KIB,
        "met": total / 1024 <= TARGET_WEIGHT_KIB and not external,
        "note": "KiB = 1024 bytes; uncompressed as the app sends them (it does not compress); gzip at level 6 is "
        "what a compressing proxy would send; the target is checked on the uncompressed total",
    }


# --------------------------------------------------------------------------
# Part 3: Lighthouse
# --------------------------------------------------------------------------


def ensure_lighthouse() -> dict[str, Any]:
    """The pinned Lighthouse in bench/lighthouse/node_modules (npm ci from the lock when missing)."""
    harness.require_tools("node", "npm")
    if not Path(CHROME_PATH).exists():
        raise SystemExit(f"{CHROME_PATH} not found (Debian: apt-get install -y chromium)")
    if not LIGHTHOUSE_CLI.exists():
        print("installing lighthouse (npm ci --prefix bench/lighthouse)", flush=True)
        subprocess.run(
            [
                "npm",
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
                str(LIGHTHOUSE_DIR),
            ],
            check=True,
            timeout=600,
        )
    package = json.loads((LIGHTHOUSE_CLI.parent.parent / "package.json").read_text(encoding="utf-8"))
    chromium = subprocess.run([CHROME_PATH, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"lighthouse": package["version"], "chromium": chromium, "node": node}


def run_lighthouse(url: str, report_base: Path, zone: str, attempts: int = 3) -> tuple[dict[str, Any], int]:
    """One Lighthouse run (mobile, simulated throttling: its defaults), the browser in time zone `zone`;
    its JSON report, parsed, and how many attempts it took (a run that ends in a runtime error, such as
    Chromium's occasional NO_NAVSTART trace, is repeated)."""
    report_base.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "node",
        str(LIGHTHOUSE_CLI),
        url,
        "--quiet",
        "--output=json",
        "--output=html",
        f"--output-path={report_base}",
        f"--only-categories={','.join(CATEGORIES)}",
        f"--chrome-flags={CHROME_FLAGS}",
    ]
    env = {**os.environ, "CHROME_PATH": CHROME_PATH, "TZ": zone}
    json_path = report_base.with_name(report_base.name + ".report.json")
    problem = ""
    for attempt in range(1, attempts + 1):
        json_path.unlink(missing_ok=True)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
        report: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8")) if json_path.exists() else {}
        if done.returncode == 0 and report and not report.get("runtimeError"):
            return report, attempt
        problem = str((report.get("runtimeError") or {}).get("code") or done.stderr[-2000:])
        print(f"  lighthouse attempt {attempt} failed: {problem}", flush=True)
    raise RuntimeError(f"lighthouse failed on {url} {attempts} times; last: {problem}")


def _item_summary(item: dict[str, Any]) -> str:
    parts = []
    node = item.get("node")
    if isinstance(node, dict):
        parts += [str(node.get("snippet", "")), str(node.get("explanation", ""))]
    for key in ("description", "source", "url", "label", "directive", "severity", "name"):
        value = item.get(key)
        if isinstance(value, str | int | float) and value != "":
            parts.append(f"{key}: {value}")
        elif isinstance(value, dict) and value.get("url"):
            parts.append(f"{key}: {value['url']}")
    return " | ".join(p for p in parts if p)[:400]


def failed_audits(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Audits of the categories that did not pass: binary ones below 1, numeric ones below 0.9 (not green);
    and best practices' informative audits that found something (e.g. no HSTS header). Each with its
    weight in its category's score (0: flagged, but the score does not count it)."""
    audits = report["audits"]
    found: list[dict[str, Any]] = []
    for category in CATEGORIES:
        for ref in report["categories"][category]["auditRefs"]:
            audit = audits[ref["id"]]
            mode, score = audit.get("scoreDisplayMode"), audit.get("score")
            details = audit.get("details") or {}
            items = details.get("items")
            items = items if isinstance(items, list) else []
            failing = mode == "error" or (
                score is not None
                and (score < 1 if mode == "binary" else score < 0.9)
                and mode not in {"informative", "manual", "notApplicable"}
            )
            finding = mode == "informative" and category == "best-practices" and bool(items)
            if not (failing or finding):
                continue
            found.append(
                {
                    "category": category,
                    "id": ref["id"],
                    "title": audit.get("title"),
                    "score": score,
                    "weight": ref.get("weight", 0),
                    "mode": mode,
                    "display_value": audit.get("displayValue"),
                    "error": audit.get("errorMessage"),
                    "items": [_item_summary(item) for item in items[:5] if isinstance(item, dict)],
                }
            )
    return found


METRICS = (
    "first-contentful-paint",
    "largest-contentful-paint",
    "total-blocking-time",
    "cumulative-layout-shift",
    "speed-index",
    "interactive",
)


def lighthouse_run_summary(report: dict[str, Any]) -> dict[str, Any]:
    audits = report["audits"]
    network = (audits.get("network-requests", {}).get("details") or {}).get("items") or []
    hosts = Counter(
        urlsplit(str(item.get("url", ""))).hostname or urlsplit(str(item.get("url", ""))).scheme for item in network
    )
    other = [
        str(item.get("url"))
        for item in network
        if urlsplit(str(item.get("url", ""))).scheme in {"http", "https"}
        and urlsplit(str(item.get("url", ""))).hostname != harness.HOST
    ]
    return {
        "scores": {c: round(100 * (report["categories"][c]["score"] or 0)) for c in CATEGORIES},
        "metrics": {m: audits[m].get("numericValue") for m in METRICS if m in audits},
        "total_byte_weight": audits.get("total-byte-weight", {}).get("numericValue"),
        "network_requests": len(network),
        "network_hosts": dict(hosts),
        "requests_to_other_hosts": other,
        "resources": [
            {
                "url": urlsplit(str(i.get("url"))).path,
                "transfer": i.get("transferSize"),
                "resource": i.get("resourceSize"),
            }
            for i in network
        ],
        "failed": failed_audits(report),
        "warnings": report.get("runWarnings", []),
        "final_url": report.get("finalDisplayedUrl") or report.get("finalUrl"),
        "form_factor": report.get("configSettings", {}).get("formFactor"),
        "throttling_method": report.get("configSettings", {}).get("throttlingMethod"),
    }


def lighthouse_pages(port: int, seeded: Seeded, runs: int, reports: Path) -> dict[str, Any]:
    """The targeted pages with the browser in Nairobi (the platform's visitors; the default zone of a
    page), and the profile once more from a browser in UTC: its script then re-asks the page in the
    visitor's zone (``?tz=UTC``), a second navigation Lighthouse measures too (informational)."""
    profile = f"/therapists/{seeded.therapists[0]}"
    pages = [
        ("home", "/", THERAPIST_TZ, True),
        ("directory", "/therapists", THERAPIST_TZ, True),
        ("profile", profile, THERAPIST_TZ, True),
        ("sign-in", "/sign-in", THERAPIST_TZ, True),
        ("profile-browser-in-utc", profile, "UTC", False),
    ]
    result: dict[str, Any] = {}
    for name, path, zone, targeted in pages:
        summaries = []
        attempts = []
        for index in range(runs):
            print(f"lighthouse {name} run {index + 1}/{runs}", flush=True)
            url = f"http://{harness.HOST}:{port}{path}"
            report, attempt = run_lighthouse(url, reports / f"{name}-{index + 1}", zone)
            summaries.append(lighthouse_run_summary(report))
            attempts.append(attempt)
        scores = {c: statistics.median(s["scores"][c] for s in summaries) for c in CATEGORIES}
        failures: dict[str, dict[str, Any]] = {}
        for summary in summaries:
            for audit in summary["failed"]:
                entry = failures.setdefault(audit["id"], {**audit, "failed_in_runs": 0})
                entry["failed_in_runs"] += 1
        result[name] = {
            "path": path,
            "browser_time_zone": zone,
            "targeted": targeted,
            "scores_median": scores,
            "scores_per_run": [s["scores"] for s in summaries],
            "attempts_per_run": attempts,
            "final_urls": sorted({str(s["final_url"]) for s in summaries}),
            "met": all(scores[c] >= TARGET_SCORE for c in TARGET_CATEGORIES),
            "metrics_ms_median": {
                m: round(statistics.median(s["metrics"][m] for s in summaries), 3) for m in summaries[0]["metrics"]
            },
            "total_byte_weight_median": statistics.median(s["total_byte_weight"] or 0 for s in summaries),
            "network_requests": summaries[0]["network_requests"],
            "network_hosts": summaries[0]["network_hosts"],
            "requests_to_other_hosts": sorted({u for s in summaries for u in s["requests_to_other_hosts"]}),
            "resources_first_run": summaries[0]["resources"],
            "failed_audits_lowering_the_score": [a for a in failures.values() if a["weight"] > 0],
            "failed_audits_weight_0": [a for a in failures.values() if a["weight"] == 0 and a["mode"] != "informative"],
            "informative_findings": [a for a in failures.values() if a["mode"] == "informative"],
            "run_warnings": sorted({w for s in summaries for w in s["warnings"]}),
            "form_factor": summaries[0]["form_factor"],
            "throttling_method": summaries[0]["throttling_method"],
        }
    return result


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def server_errors(log_file: Path) -> dict[str, Any]:
    """Error-level lines of a server's JSON log, counted by event."""
    counts: Counter[str] = Counter()
    if log_file.exists():
        with log_file.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if '"level":"error"' in line.replace(" ", ""):
                    try:
                        counts[str(json.loads(line).get("event"))] += 1
                    except ValueError:
                        counts["unparsed"] += 1
    return {"lines": sum(counts.values()), "by_event": dict(counts)}


def benchmark(options: Options, workdir: Path, reports: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if options.lighthouse:
        report["lighthouse_tools"] = ensure_lighthouse()  # before any server: a failed install costs nothing
    if options.load:
        harness.require_tools("wrk", *(["taskset"] if options.pinned else []))
    databases: dict[str, tuple[str, Seeded]] = {"sqlite": prepare_sqlite(workdir, options.therapists)}
    with _maybe_postgres(options) as postgres:
        if postgres is not None:
            databases["postgres"] = postgres
        envs = {backend: settings_env(url, workdir) for backend, (url, _) in databases.items()}
        report["server_settings"] = {k: v for k, v in envs["sqlite"].items() if k not in {"SECRET_KEY", "DATABASE_URL"}}

        def start(backend: str) -> harness.Server:
            pin = options.taskset(options.server_cpu)
            return harness.start_server(__file__, [backend], backend, workdir, pin, envs[backend])

        with harness.running_servers(start, list(databases), timeout=60.0) as servers:
            now = dt.datetime.now(dt.UTC)
            found = {backend: cases(seeded, now) for backend, (_, seeded) in databases.items()}
            report["checks"] = {
                backend: check_cases(servers[backend].port, found[backend], databases[backend][1])
                for backend in servers
            }
            report["page_weight"] = page_weight(servers["sqlite"].port, "/therapists")
            report["page_weight_filtered"] = page_weight(servers["sqlite"].port, f"/therapists?specialty={SPECIALTY}")
            if options.load:
                with options.this_process_on(options.client_cpu):
                    report["load"] = measure_load(servers, found, options)
                print("in process: where the page's extra CPU goes", flush=True)
                report["in_process"] = in_process(databases["sqlite"][0], workdir, found["sqlite"], options)
            if options.lighthouse:
                report["lighthouse"] = lighthouse_pages(
                    servers["sqlite"].port, databases["sqlite"][1], options.lighthouse_runs, reports
                )
    report["server_errors"] = {backend: server_errors(workdir / f"app-{backend}.log") for backend in databases}
    return report


@contextmanager
def _maybe_postgres(options: Options) -> Iterator[tuple[str, Seeded] | None]:
    if not options.postgres:
        yield None
        return
    harness.postgres_url(options.admin_url, "check")  # loopback only
    with postgres_database(options.admin_url, options.therapists) as found:
        yield found


def targets(report: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for backend, summary in report.get("load", {}).get("summary", {}).items():
        ratio = summary["ratios"]["directory-page / directory-api"]
        result[f"directory_page_vs_api_{backend}"] = {
            "target": f"<= {TARGET_RATIO}x",
            "ratio_us_per_request": ratio["ratio_us_per_request"],
            "ratio_server_cpu_us": ratio["ratio_server_cpu_us"],
            "met_by_rps": ratio["met_by_rps"],
            "met_by_server_cpu": ratio["met_by_server_cpu"],
            "met": ratio["met"],
        }
    weight = report["page_weight"]
    result["directory_first_load"] = {
        "target": f"<= {TARGET_WEIGHT_KIB} KiB, 0 requests to other hosts",
        "kib": weight["total_kib"],
        "gzip_kib": weight["total_gzip_kib"],
        "requests_to_other_hosts": weight["requests_to_other_hosts"],
        "met": weight["met"],
    }
    if "lighthouse" in report:
        result["lighthouse"] = {
            "target": f">= {TARGET_SCORE} for {', '.join(TARGET_CATEGORIES)}",
            "pages": {
                name: {"scores": page["scores_median"], "met": page["met"], "targeted": page["targeted"]}
                for name, page in report["lighthouse"].items()
            },
            "met": all(page["met"] for page in report["lighthouse"].values() if page["targeted"]),
        }
    return result


def print_report(report: dict[str, Any]) -> None:
    if "load" in report:
        for backend, summary in report["load"]["summary"].items():
            print(f"\n{backend}")
            harness.print_wrk_table(summary["cases"], width=26)
            for name, ratio in summary["ratios"].items():
                print(
                    f"  {name}: {ratio['ratio_us_per_request']:.3f}x (server CPU {ratio['ratio_server_cpu_us']:.3f}x; "
                    f"per round {ratio['ratio_per_round']})"
                )
    weight = report["page_weight"]
    print(
        f"\nfirst load of {weight['page']}: {weight['requests']} requests, {weight['total_kib']} KiB "
        f"({weight['total_gzip_kib']} KiB gzip), {weight['requests_to_other_hosts']} to other hosts"
    )
    for name, page in report.get("lighthouse", {}).items():
        scores = ", ".join(f"{c} {v:g}" for c, v in page["scores_median"].items())
        print(
            f"lighthouse {name:10s} {scores}; {page['total_byte_weight_median'] / 1024:.1f} KiB, "
            f"{page['network_requests']} requests, hosts {page['network_hosts']}"
        )
        for audit in (
            page["failed_audits_lowering_the_score"] + page["failed_audits_weight_0"] + page["informative_findings"]
        ):
            print(
                f"    failed ({audit['failed_in_runs']} runs, weight {audit['weight']}) "
                f"{audit['category']}/{audit['id']}: {audit['title']} "
                f"{audit['display_value'] or ''} {audit['items'][:2]}"
            )
    print(f"\ntargets: {json.dumps(report['targets'], indent=1)}")


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, serve=BACKENDS)
    harness.add_load_arguments(parser, duration=5, warmup=2, rounds=5, connections=32, what="wrk: ")
    parser.add_argument("--therapists", type=int, default=40, help="approved therapists to seed (default 40)")
    parser.add_argument(
        "--postgres", action="store_true", help="also measure a server on a scratch PostgreSQL database"
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="libpq URL of a maintenance database (loopback)")
    parser.add_argument("--no-load", action="store_true", help="skip the wrk part")
    parser.add_argument("--no-lighthouse", action="store_true", help="skip Lighthouse")
    parser.add_argument("--lighthouse-runs", type=int, default=3, help="Lighthouse runs per page (default 3)")
    parser.add_argument(
        "--in-process-requests", type=int, default=300, help="in process: requests per case and round (default 300)"
    )
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR, help="Lighthouse's full reports (git-ignored)")
    harness.add_output_arguments(parser, harness.RESULTS_DIR / "web_pages.json")
    harness.add_ref_argument(parser)
    parser.add_argument(
        "--live-tree",
        action="store_true",
        help="import the working tree as it is (default: a copy of src/ taken when the run starts, so "
        "edits made meanwhile do not change what is measured)",
    )
    args = parser.parse_args(argv)
    if harness.check_serve(parser, args):
        serve(args.port, args.workdir, args.serve)
        return 0
    options = Options.from_args(args, load=not args.no_load, lighthouse=not args.no_lighthouse)
    with harness.source_of(args.ref, snapshot=not args.live_tree):
        started = time.monotonic()
        report: dict[str, Any] = {
            "benchmark": "Web pages: directory page vs JSON API cost, first-load weight, Lighthouse",
            "generated_at": harness.now_iso(),
            "machine": harness.machine(("jinja2", "sqlalchemy", "aiosqlite", "asyncpg"), proc_cpuinfo=True),
            "source": harness.measured_source(SOURCE_FILES),
            "command": harness.command_line("web_pages.py", argv),
            "options": {k: v for k, v in vars(options).items() if k not in {"admin_url", "tmp_root"}},
            "load_average_at_start": os.getloadavg(),
        }
        with tempfile.TemporaryDirectory(prefix="web-bench-", dir=options.tmp_root) as tmp:
            if options.lighthouse and args.reports.exists():
                shutil.rmtree(args.reports)
            report.update(benchmark(options, Path(tmp), args.reports))
    report["targets"] = targets(report)
    report["load_average_at_end"] = os.getloadavg()
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    harness.write_json(args.out, report)
    print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
