"""The package's import graph, read from the source (every import, lazy and TYPE_CHECKING ones too)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

# What a domain may not reach in another domain: its queries, its HTTP, its background work.
PRIVATE_MODULES = frozenset({"repository", "router", "jobs"})


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. smilingsteps.bookings.service
    imported: str  # dotted name as written, e.g. smilingsteps.therapists.repository
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(root: Path) -> Iterator[Import]:
    """Every `import x` and `from x import y` under the package at `root` (y too, as x.y: it may be a module)."""
    package = root.name
    for path in sorted(root.rglob("*.py")):
        importer = module_name(root, path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        yield Import(importer, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != package:
                    continue
                yield Import(importer, node.module, node.lineno)
                for alias in node.names:
                    yield Import(importer, f"{node.module}.{alias.name}", node.lineno)


def top(root: Path, name: str) -> str | None:
    """The first-level module or package of a dotted name (`bookings` for smilingsteps.bookings.x);
    None for the package itself and names from its `__init__` (`smilingsteps.__version__`)."""
    parts = name.split(".")
    if len(parts) < 2 or not ((root / parts[1]).is_dir() or (root / f"{parts[1]}.py").is_file()):
        return None
    return parts[1]


def violations(root: Path, domains: Mapping[str, tuple[str, ...]]) -> list[str]:
    """What breaks the direction rules, given each domain's declared dependencies, one line per import statement.

    - platform imports no domain (and not the app, the CLI or the registry);
    - a domain imports only the domains it declares;
    - never another domain's repository, router or jobs.
    """
    found: dict[tuple[str, int, str], str] = {}
    for item in imports_in(root):
        source, target = top(root, item.importer), top(root, item.imported)
        if source is None or target is None or source == target:
            continue
        where = f"{item.importer}:{item.line}"
        if source == "platform":
            if target != "config":
                found[(where, 0, target)] = f"{where} imports {target}: platform depends on no domain"
            continue
        if source not in domains or target in ("platform", "config"):
            continue  # the wiring (app, cli, the registry, migrations) may import anything
        if target not in domains:
            found[(where, 1, target)] = f"{where} imports {target}: a domain depends only on platform and domains"
        elif target not in domains[source]:
            found[(where, 2, target)] = f"{where} imports {target}: {source} does not declare it among its dependencies"
        leaf = item.imported.split(".")[2:3]
        if leaf and leaf[0] in PRIVATE_MODULES:
            found[(where, 3, leaf[0])] = (
                f"{where} imports {target}.{leaf[0]}: use {target}'s service, never its {leaf[0]}"
            )
    return sorted(found.values())


def cycle(domains: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle among the declared dependencies, or None."""
    try:
        tuple(TopologicalSorter(domains).static_order())
    except CycleError as exc:
        return list(exc.args[1])
    return None
