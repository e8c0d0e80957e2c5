"""Mutation run over the security-critical modules (mutmut 3), module by module.

Each module is mutated on its own, against a fast subset of the tests that cover it
(`GROUPS`): a mutant only runs the selected tests that executed the mutated function
(mutmut records that in a first, instrumented run), fastest first, stopping at the first
failure. Module by module keeps that set small; one run over all six modules with one
test selection makes every surviving mutant of a hot function (token decoding, the CSRF
check) run every integration test.

Every surviving mutant is matched against `EXPLAINED` (equivalent or accepted, with the
reason); the others are reported as unexplained and make the exit status 1.

    .tools/bin/uv run --frozen python bench/mutation.py                  # all groups
    .tools/bin/uv run --frozen python bench/mutation.py --only tokens,gcra
    .tools/bin/uv run --frozen python bench/mutation.py --budget-minutes 20 --max-children 1

Needs the test suite's services (PostgreSQL at TEST_POSTGRES_URL and Redis at
TEST_REDIS_URL, or the permissions to start throwaway ones, as `./scripts/test`).
Writes bench/results/mutation.json and bench/results/mutation.txt. mutmut works in
`mutants/` (a copy of src/ and tests/, git-ignored); it is deleted before each group
and at the end (`--keep` leaves the last group's, for `mutmut show` / `mutmut browse`).
Results are per run: nothing is cached between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MUTANTS = ROOT / "mutants"

# The PostgreSQL-only tests name no backend, so `not postgresql` keeps them: they run where
# the module needs PostgreSQL (bookings), and the others are SQLite, where the module's
# logic is the same.
SQLITE = "not postgresql"
SKIPPED = 34  # mutmut's exit code for a mutant it did not run


@dataclass(frozen=True)
class Group:
    name: str
    module: str  # the file mutated, relative to the repository
    tests: tuple[str, ...]  # pytest arguments: test files and a -k expression
    # Functions whose mutants are not run (regex on the function name), and why: mutmut
    # switches a mutant on per test run, so a function evaluated once at import never runs mutated.
    not_run: str = ""
    not_run_reason: str = ""


GROUPS = (
    Group(
        "tokens",
        "src/smilingsteps/accounts/tokens.py",
        (
            "tests/unit/test_tokens.py",
            "tests/integration/test_guarantees_accounts.py",
            "tests/integration/test_accounts.py",
            "-k",
            f"test_tokens or ({SQLITE} and (csrf or refresh or expire))",
        ),
    ),
    Group(
        "sessions",
        "src/smilingsteps/accounts/sessions.py",
        (
            "tests/integration/test_guarantees_sessions.py",
            "tests/integration/test_guarantees_accounts.py",
            "tests/integration/test_accounts.py",
            "tests/integration/test_account_flows.py",
            "-k",
            f"{SQLITE} and (session or refresh or logout or suspension or password_reset or login)",
        ),
    ),
    Group(
        "auth",
        "src/smilingsteps/accounts/auth.py",
        (
            "tests/integration/test_guarantees_auth.py",
            "tests/integration/test_guarantees_accounts.py",
            "tests/integration/test_accounts.py",
            "tests/integration/test_account_flows.py",
            "tests/integration/test_auth_gaps.py",
            "-k",
            f"{SQLITE} and (test_guarantees_auth or csrf or cookie or bearer or origin or dependencies or admin"
            " or security_event or revoked or expire or suspension)",
        ),
    ),
    Group(
        "gcra",
        "src/smilingsteps/platform/ratelimit/gcra.py",
        (
            "tests/unit/test_ratelimit_rules.py",
            "tests/unit/test_guarantees_ratelimit.py",
            "tests/integration/test_rate_limits.py",
            "-k",
            "not two_instances",
        ),
    ),
    Group(
        "limiter",
        "src/smilingsteps/platform/ratelimit/limiter.py",
        (
            "tests/unit/test_ratelimit_rules.py",
            "tests/unit/test_guarantees_ratelimit.py",
            "tests/integration/test_rate_limits.py",
            "tests/integration/test_rate_limit_bursts.py",
            "tests/integration/test_rate_limit_counting.py",
            "-k",
            f"not two_instances and not burst_on_two and {SQLITE}",
        ),
    ),
    Group(
        "bookings",
        "src/smilingsteps/bookings/repository.py",
        (
            "tests/integration/test_guarantees_bookings.py",
            "tests/integration/test_bookings.py",
            "tests/integration/test_booking_races.py",
            "-k",
            "not many_clients",
        ),
        not_run=r"^x__(surroundings|parties)_statement$",
        not_run_reason="builds a statement once, at import (_SURROUNDINGS, _PARTIES…), before mutmut switches a"
        " mutant on; every booking runs these statements, so the booking tests cover them",
    ),
)


@dataclass(frozen=True)
class Explained:
    """A surviving mutant that is equivalent (no test can tell) or accepted, and why."""

    group: str  # a group's name, or "*" for every group
    function: str  # regex searched in the mutant's function name (e.g. "_decode")
    mutated: str  # regex searched in the mutated line(s) of the mutant's diff ("" matches a removed line)
    reason: str
    original: str = ""  # when set, a regex the original line(s) must match as well


NO_PATH = r"^(?!.*\bpath=)"  # a mutated line without a path= argument (or a removed line)
EXPLAINED: tuple[Explained, ...] = (
    # ---- everywhere
    Explained(
        "*",
        r".",
        r'raise \w+Error\((None|".*")\)( from None)?$',
        "the wording of a problem's detail; its status and type are the contract, and tests check those",
        original=r'raise \w+Error\("[^"]*[ .][^"]*"\)',
    ),
    Explained(
        "*",
        r".",
        r'\.get\("(AUTHORIZATION|ORIGIN|REFERER)"|\.decode\("LATIN-1"\)',
        "header names (Starlette) and codec names (Python) are looked up case-insensitively",
    ),
    # ---- tokens
    Explained(
        "tokens",
        r"_decode$|decode_mfa_challenge$|decode_access$",
        r"",
        "the reason of a refusal other than 'expired' is read by nobody: authenticate() only tells 'expired'"
        " from the rest (tests check that)",
        original=r'raise InvalidTokenError\((type\(exc\)\.__name__|"(issued in the future|wrong token type|'
        r'malformed claims|malformed subject)")\)',
    ),
    Explained(
        "tokens",
        r"issue_access$|issue_mfa_challenge$",
        r"token_urlsafe\((None|13)\)",
        "a longer jti (13 bytes, or the default 32): it only has to be unique, and nothing reads it",
    ),
    Explained(
        "tokens",
        r"csrf_token$",
        r"token_urlsafe\((None|17)\)",
        "a longer nonce (17 bytes, or the default 32) is as good",
    ),
    Explained(
        "tokens",
        r"_encode$",
        r"headers=None|self\._key, headers=|algorithm=ALGORITHM, \)$",
        "PyJWT's defaults are the same: algorithm HS256 and the header {alg: HS256, typ: JWT} (tested)",
    ),
    # ---- sessions
    Explained(
        "sessions",
        r"x_refresh$",
        r"",
        "an internal outcome label: only 'reused' and 'csrf' change what refresh() does; every other one"
        " ends in the same 401 invalid-refresh-token",
        original=r'return "(unknown|revoked)',
    ),
    Explained(
        "sessions",
        r"x_start_session$",
        r"^id=None,$|^$",
        "the model's default makes the id (new_id) when none is given",
        original=r"id=uuid\.uuid4\(\)",
    ),
    # ---- auth
    Explained(
        "auth",
        r"is_admin_request$",
        r'headers\.get\("authorization", "XXXX"\)',
        "a missing header read as '' or as 'XXXX' fails the 'bearer ' prefix test alike: equivalent",
    ),
    Explained(
        "auth",
        r"set_session_cookies$",
        r'samesite="(LAX|STRICT)"',
        "browsers compare SameSite values case-insensitively",
    ),
    Explained(
        "auth",
        r"set_session_cookies$",
        r"max\(2, ",
        "differs only when less than 2 s of the token or session are left, never when it is issued",
    ),
    Explained("auth", r"set_session_cookies$", NO_PATH, "Starlette's default path is /", original=r'path="/"'),
    Explained(
        "auth",
        r"set_session_cookies$",
        r"httponly=True, \)$",
        "Starlette's default SameSite is lax, which is what the access cookie asks for",
        original=r'samesite="lax"',
    ),
    Explained(
        "auth",
        r"set_session_cookies$",
        r"httponly=None|^(?!.*httponly)",
        "None and the default are both 'not HttpOnly', as the CSRF cookie must be",
        original=r"httponly=False",
    ),
    Explained(
        "auth",
        r"clear_session_cookies$",
        r"httponly=(None|name == names\.csrf)|^(?!.*httponly)",
        "HttpOnly on a deletion does not matter: the browser replaces the cookie by name, path and domain",
    ),
    Explained("auth", r"clear_session_cookies$", NO_PATH, "Starlette's default path is /", original=r'path="/"'),
    Explained(
        "auth",
        r"check_csrf$",
        r"if not header and not cookie or header != cookie",
        "a missing header or cookie already differs from the other one (header != cookie)",
    ),
    Explained(
        "auth",
        r"_bearer$|rate_limit_identity$",
        r"\.rpartition\(\" \"\)",
        "an access token has no space: 'Bearer a b' is refused either way (as malformed or as an invalid token),"
        " and for rate limiting it is nobody either way",
    ),
    Explained(
        "auth",
        r"origin_allowed$",
        r'\.(rstrip\(None\)|lstrip\("/"\)|rstrip\("XX/XX"\))',
        "browsers send an Origin without a trailing slash, and a Referer's origin is rebuilt without one",
    ),
    Explained(
        "auth",
        r"rate_limit_identity$",
        r'if name == b"cookie" or token is None',
        "parsing other headers as cookies finds no access token in them",
    ),
    # ---- rate limiting
    Explained(
        "gcra",
        r"x_gcra$",
        r"tat_us <= now_us",
        "when the theoretical arrival time equals now, both branches take now",
    ),
    Explained(
        "limiter",
        r"__init__$",
        r"self\._next_probe = (None|1\.0)",
        "read only after a failure has set it (the breaker cannot be open before one)",
    ),
    Explained(
        "limiter",
        r"check$",
        r"refund=None",
        "None and False take the same branch",
    ),
    # ---- bookings
    Explained(
        "bookings",
        r"busy_between$",
        r"^$|Booking\.starts_at >= start - LONGEST_BOOKING|Booking\.starts_at <= end|Booking\.blocks_until >= start",
        "bounds that only narrow the rows read: the slot computation checks every overlap itself, and"
        " intervals that merely touch do not overlap",
        original=r"Booking\.(starts_at > start - LONGEST_BOOKING|starts_at < end|blocks_until > start)",
    ),
    Explained(
        "bookings",
        r"busy_between$",
        r"excluding is None|statement = None|where\(None\)|Booking\.id == excluding",
        "no caller passes `excluding` today",
    ),
    Explained(
        "bookings",
        r"busy_between$",
        r"order_by\(None\)",
        "the slot computation does not depend on the order of the busy intervals",
    ),
    Explained(
        "bookings",
        r"bookings_of$",
        r"order_by\(Booking\.starts_at\.desc\(\), \)",
        "the tie-break only orders bookings of one person that start at the same time (one of them inactive)",
    ),
    Explained(
        "bookings",
        r"claim_due_reminders$",
        r"with_for_update|\.limit\(None\)|\.order_by\(None\)|\.join\(Booking, (None)?\)",
        "a worker pass's locking mode, batch size and order: every due reminder is still sent once (the job"
        " repeats until none is due, and FOR UPDATE re-checks sent_at after a wait); SQLAlchemy infers the"
        " same join from the foreign key",
    ),
    Explained(
        "bookings",
        r"expire_stale_holds$",
        r"update\(Booking\)\.where\(Booking\.hold_expires_at <= now\)",
        "only held bookings carry an expiry: confirming and cancelling clear hold_expires_at",
    ),
    Explained(
        "bookings",
        r"expire_stale_holds$",
        r"synchronize_session=None",
        "None and False both leave the session's objects alone",
    ),
    Explained(
        "bookings",
        r"note_for$",
        r"where\(SessionNote\.booking_id == booking_id, \)",
        "the service loads the booking for its therapist first, so the booking already implies the therapist",
    ),
    Explained(
        "bookings",
        r"parties_taking_turn$|take_write_lock$",
        r"take_write_lock\(session, (None)?\)|key=None|None if \(therapist_id is None\) or True|"
        r'table="BOOKINGS"',
        "the key is PostgreSQL's (only SQLite callers get here with a therapist, and SQLite's turn is one lock"
        " for the whole database); SQLite table names are case-insensitive",
    ),
    Explained(
        "bookings",
        r"_lock_key$",
        r"int\.from_bytes\(therapist_id\.bytes\[:8\], signed=True\)",
        "int.from_bytes is big-endian by default",
    ),
    Explained(
        "bookings",
        r"x_surroundings$",
        r"clash = stale_in_the_way = None|overlaps_slot = ",
        "falsy either way / only decides whether expired holds in the way are marked at once, which is harmless",
    ),
)


# ---- the child: one group, one mutmut run -------------------------------------------------


def run_group(group: Group, max_children: int) -> None:
    """Run mutmut on one module with the group's tests (in a process of its own)."""
    os.chdir(ROOT)
    from mutmut import configuration

    base = configuration.config()  # [tool.mutmut] in pyproject.toml
    configuration._config = dataclasses.replace(  # the group's module and tests, the rest as configured
        base, only_mutate=[group.module], pytest_add_cli_args_test_selection=list(group.tests)
    )
    import mutmut.__main__ as mutmut_main

    if group.not_run:
        collect = mutmut_main.collect_source_file_mutation_data

        def without_import_time(*, mutant_names: Any) -> Any:
            mutants, by_path = collect(mutant_names=mutant_names)
            kept = []
            for data, name, result in mutants:
                if re.search(group.not_run, _function_of(name)):
                    data.exit_code_by_key[name] = SKIPPED
                    data.save()
                else:
                    kept.append((data, name, result))
            return kept, by_path

        mutmut_main.collect_source_file_mutation_data = without_import_time
    mutmut_main._run([], max_children)


# ---- the parent: groups in turn, then the report ------------------------------------------


def _git(*arguments: str) -> str:
    done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _changed_lines(diff: str, sign: str) -> list[str]:
    return [line[1:].strip() for line in diff.splitlines() if line.startswith(sign) and not line.startswith(sign * 3)]


def _function_of(mutant: str) -> str:
    """`smilingsteps.x.y.x_name__mutmut_3` -> `x_name` (methods: `xǁClassǁname`)."""
    return mutant.rsplit(".", 1)[-1].split("__mutmut_", maxsplit=1)[0]


def _explain(group: Group, name: str, original: list[str], mutated: list[str]) -> str | None:
    function = _function_of(name)
    for entry in EXPLAINED:
        if entry.group not in (group.name, "*") or not re.search(entry.function, function):
            continue
        if entry.original and not any(re.search(entry.original, line) for line in original):
            continue
        if any(re.search(entry.mutated, line) for line in mutated or [""]):
            return entry.reason
    return None


def collect(group: Group) -> dict[str, Any]:
    """The group's verdicts from mutmut's meta file, with the diff of every mutant that was not killed."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    meta_path = MUTANTS / f"{group.module}.meta"
    if not meta_path.exists():
        return {"counts": {}, "not_killed": [], "not_run": []}
    meta = json.loads(meta_path.read_text())
    counts: dict[str, int] = {}
    not_killed = []
    not_run: dict[str, int] = {}
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        for name, code in sorted(meta["exit_code_by_key"].items(), key=lambda item: _mutant_order(item[0])):
            status = status_by_exit_code[code]
            counts[status] = counts.get(status, 0) + 1
            if status in ("killed", "caught by type check"):
                continue
            if code == SKIPPED and group.not_run and re.search(group.not_run, _function_of(name)):
                not_run[_function_of(name)] = not_run.get(_function_of(name), 0) + 1
                continue
            diff = get_diff_for_mutant(name, path=group.module)
            original, mutated = _changed_lines(diff, "-"), _changed_lines(diff, "+")
            entry: dict[str, Any] = {
                "mutant": name.rsplit(".", 1)[-1],
                "status": status,
                "original": original,
                "mutated": mutated,
                "seconds": round(meta.get("durations_by_key", {}).get(name, 0.0), 2),
            }
            if status == "survived":
                entry["explained"] = _explain(group, name, original, mutated)
            not_killed.append(entry)
    finally:
        os.chdir(cwd)
    skipped = [{"function": f, "mutants": n, "why": group.not_run_reason} for f, n in sorted(not_run.items())]
    return {"counts": counts, "not_killed": not_killed, "not_run": skipped}


def _mutant_order(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Interrupt the group's mutmut (it stops its workers), then kill what is left of its session."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_all(groups: list[Group], *, max_children: int, budget_s: float, keep: bool) -> dict[str, Any]:
    deadline = time.monotonic() + budget_s
    logs = Path(tempfile.mkdtemp(prefix="mutation-logs-"))
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "tree_clean": _git("status", "--porcelain", "--", "src", "tests") == "",
        "mutmut": _mutmut_version(),
        "max_children": max_children,
        "budget_minutes": round(budget_s / 60, 1),
        "groups": [],
    }
    try:
        for group in groups:
            shutil.rmtree(MUTANTS, ignore_errors=True)
            left = deadline - time.monotonic()
            outcome: dict[str, Any] = {"name": group.name, "module": group.module, "tests": list(group.tests)}
            if left < 60:
                outcome.update(state="skipped: time budget spent", seconds=0, counts={}, not_killed=[], not_run=[])
                report["groups"].append(outcome)
                continue
            log_path = logs / f"{group.name}.log"
            print(f"== {group.name}: {group.module}", flush=True)
            started = time.monotonic()
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, __file__, "--child", group.name, "--max-children", str(max_children)],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # one process group: a timeout stops mutmut and its workers
                )
                try:
                    code = process.wait(timeout=left)
                    state = "done" if code == 0 else f"failed (exit {code})"
                except subprocess.TimeoutExpired:
                    _stop(process)
                    state = "stopped: time budget spent (partial)"
            outcome.update(state=state, seconds=round(time.monotonic() - started, 1), **collect(group))
            if state != "done":
                outcome["log_tail"] = _tail(log_path)
            report["groups"].append(outcome)
            print(f"   {state} in {outcome['seconds']} s: {outcome['counts']}", flush=True)
    finally:
        if not keep:
            shutil.rmtree(MUTANTS, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    report["seconds"] = round(sum(g.get("seconds", 0) for g in report["groups"]), 1)
    return report


def _tail(path: Path, lines: int = 40) -> list[str]:
    text = path.read_bytes().decode("utf-8", "replace").replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def render(report: dict[str, Any]) -> str:
    out = [
        f"Mutation run {report['started_at']} at {report['commit'][:10]}"
        f"{'' if report['tree_clean'] else ' (src/tests had uncommitted changes)'},"
        f" mutmut {report['mutmut']}, --max-children {report['max_children']}: {report['seconds']} s",
        "",
        f"{'group':<10} {'mutants':>7} {'killed':>7} {'survived':>8} {'explained':>9} {'not run':>7} {'other':>6}"
        f" {'time':>7}  state",
    ]
    for group in report["groups"]:
        counts = group["counts"]
        total = sum(counts.values())
        killed = counts.get("killed", 0) + counts.get("caught by type check", 0)
        survived = counts.get("survived", 0)
        explained = sum(1 for m in group["not_killed"] if m.get("explained"))
        not_run = sum(skipped["mutants"] for skipped in group["not_run"])
        other = total - killed - survived - not_run
        out.append(
            f"{group['name']:<10} {total:>7} {killed:>7} {survived:>8} {explained:>9} {not_run:>7} {other:>6}"
            f" {group['seconds']:>6.0f}s  {group['state']}"
        )
    for group in report["groups"]:
        if not group["not_killed"] and not group["not_run"]:
            continue
        out += ["", f"-- {group['name']} ({group['module']}): not killed"]
        for skipped in group["not_run"]:
            out.append(f"  [not run] {skipped['function']}: {skipped['mutants']} mutants; {skipped['why']}")
        for mutant in group["not_killed"]:
            why = mutant.get("explained")
            label = mutant["status"] if mutant["status"] != "survived" else ("explained" if why else "UNEXPLAINED")
            out.append(f"  [{label}] {mutant['mutant']}")
            out += [f"      - {line}" for line in mutant["original"]]
            out += [f"      + {line}" for line in mutant["mutated"]]
            if why:
                out.append(f"      why: {why}")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated groups: " + ", ".join(g.name for g in GROUPS))
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1)")
    parser.add_argument("--budget-minutes", type=float, default=45, help="stop after this long (default 45)")
    parser.add_argument("--keep", action="store_true", help="leave mutants/ of the last group")
    parser.add_argument("--output", type=Path, default=RESULTS / "mutation", help="report path, without suffix")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    by_name = {g.name: g for g in GROUPS}
    if args.child:
        run_group(by_name[args.child], args.max_children)
        return 0
    names = args.only.split(",") if args.only else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        parser.error(f"unknown groups: {', '.join(unknown)}")
    report = run_all(
        [by_name[n] for n in names], max_children=args.max_children, budget_s=args.budget_minutes * 60, keep=args.keep
    )
    text = render(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    args.output.with_suffix(".txt").write_text(text)
    print(text)
    unexplained = sum(
        1 for g in report["groups"] for m in g["not_killed"] if m["status"] == "survived" and not m["explained"]
    )
    incomplete = any(g["state"] != "done" for g in report["groups"])
    return 1 if unexplained or incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
