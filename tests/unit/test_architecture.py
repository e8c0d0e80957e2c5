"""The shape every domain follows: dependencies in one direction, through services; small files."""

from __future__ import annotations

import re
from pathlib import Path

import smilingsteps
from smilingsteps.domains import DOMAINS
from tests.support.import_graph import cycle, violations

PACKAGE = Path(smilingsteps.__file__).parent
MAX_LINES = 600
# Who may use whom, as each domain declares it in its package.
DEPENDS = {domain.name: domain.depends_on for domain in DOMAINS}


def test_domains_depend_in_one_direction_through_services() -> None:
    found = violations(PACKAGE, DEPENDS)
    assert not found, "\n" + "\n".join(found)


def test_the_declared_dependencies_have_no_cycle() -> None:
    assert cycle(DEPENDS) is None


def test_the_registry_lists_each_domain_after_those_it_depends_on() -> None:
    seen: set[str] = set()
    for domain in DOMAINS:
        assert set(domain.depends_on) <= seen, f"{domain.name} is registered before {set(domain.depends_on) - seen}"
        seen.add(domain.name)


def test_every_domain_package_is_registered() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")} - {"platform", "migrations"}
    assert packages == set(DEPENDS)


def test_every_declared_part_of_a_domain_resolves() -> None:
    for domain in DOMAINS:
        domain.load_models()
        assert domain.router is None or domain.build_router() is not None, domain.name


def test_the_architecture_page_lists_what_each_domain_declares() -> None:
    page = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    table = page[page.index("| domain | depends on |") :]
    rows = re.findall(r"^\| (\w+) \| ([\w, —]+) \|$", table.split("\n\n")[0], flags=re.MULTILINE)[1:]
    written = {name: tuple(sorted(d.strip() for d in deps.split(",") if d.strip() != "—")) for name, deps in rows}
    assert written == {name: tuple(sorted(deps)) for name, deps in DEPENDS.items()}


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
