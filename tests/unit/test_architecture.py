"""The shape every domain follows: dependencies in one direction, through services; small files."""

from __future__ import annotations

from pathlib import Path

import smilingsteps
from tests.support.import_graph import cycle, violations

PACKAGE = Path(smilingsteps.__file__).parent
MAX_LINES = 600

# Written down here until the registry declares it: who may use whom.
DEPENDS: dict[str, tuple[str, ...]] = {
    "notifications": (),
    "audit": (),
    "accounts": ("audit", "notifications"),
    "therapists": ("accounts",),
    "bookings": ("accounts", "audit", "notifications", "therapists"),
    "admin": ("accounts", "audit", "notifications"),
}


def test_domains_depend_in_one_direction_through_services() -> None:
    found = violations(PACKAGE, DEPENDS)
    assert not found, "\n" + "\n".join(found)


def test_the_declared_dependencies_have_no_cycle() -> None:
    assert cycle(DEPENDS) is None


def test_no_product_file_grows_past_600_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
    }
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these by concern: {too_long}"


# ---- the check itself catches what it must ---------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "smilingsteps"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_check_refuses_another_domains_repository_router_or_jobs(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "therapists/service.py": "from smilingsteps.bookings import repository\n",
            "therapists/router.py": "",
            "bookings/service.py": (
                "def later() -> None:\n    from smilingsteps.therapists.router import build_router\n"
                "import smilingsteps.therapists.jobs\n"
                "from smilingsteps.therapists import service\n"
            ),
        },
    )
    found = violations(root, {"therapists": (), "bookings": ("therapists",)})
    assert len(found) == 4, found
    assert any("therapists does not declare it" in line for line in found)
    assert any("never its repository" in line for line in found)
    assert any("never its router" in line for line in found)
    assert any("never its jobs" in line for line in found)


def test_the_check_refuses_platform_importing_a_domain(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "config.py": "",
            "accounts/models.py": "",
            "platform/db.py": (
                "from smilingsteps.config import Settings\nfrom smilingsteps.accounts.models import User\n"
            ),
        },
    )
    assert violations(root, {"accounts": ()}) == [
        "smilingsteps.platform.db:2 imports accounts: platform depends on no domain"
    ]


def test_a_cycle_is_named() -> None:
    assert cycle({"a": ("b",), "b": ("a",)}) is not None
