"""Static assets: self-hosted, served under content-hashed names with Subresource Integrity.

Every file under `web/static/` is read once, at start-up. Its public name carries a hash
of its bytes (`/static/css/app.3f2a9c1b7d.css`), so a changed file is a new URL and the
old one can be cached for a year (`immutable`); templates ask for `asset("css/app.css")`
and get that URL with its `sha384-…` integrity value.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.responses import Response

from smilingsteps.platform.errors import NotFoundError

PREFIX = "/static/"
IMMUTABLE = "public, max-age=31536000, immutable"
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    name: str  # as templates name it: "css/app.css"
    url: str  # "/static/css/app.3f2a9c1b7d.css"
    integrity: str  # "sha384-…"
    media_type: str
    body: bytes


def _hashed_name(name: str, body: bytes) -> str:
    stem, dot, extension = name.rpartition(".")
    digest = hashlib.sha256(body).hexdigest()[:10]
    return f"{stem}.{digest}.{extension}" if dot else f"{name}.{digest}"


def _media_type(name: str) -> str:
    extension = "." + name.rpartition(".")[2]
    return _TYPES.get(extension) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _walk(folder: Traversable, prefix: str = "") -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend(_walk(entry, f"{prefix}{entry.name}/"))
        else:
            found.append((prefix + entry.name, entry.read_bytes()))
    return found


class Assets:
    def __init__(self, root: Traversable | None = None) -> None:
        folder = root or resources.files("smilingsteps.web") / "static"
        self._by_name: dict[str, Asset] = {}
        self._by_url: dict[str, Asset] = {}
        for name, body in _walk(folder):
            integrity = "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
            asset = Asset(name, PREFIX + _hashed_name(name, body), integrity, _media_type(name), body)
            self._by_name[name] = asset
            self._by_url[asset.url] = asset

    def __getitem__(self, name: str) -> Asset:
        """The asset a template names; a missing one is a programming error, raised when the page renders."""
        try:
            return self._by_name[name]
        except KeyError:
            raise LookupError(f"no static asset {name!r} under web/static/") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def response(self, path: str) -> Response:
        """The asset at its hashed URL; any other name (an old hash included) is not found."""
        asset = self._by_url.get(path)
        if asset is None:
            raise NotFoundError("No such file.")
        return Response(asset.body, media_type=asset.media_type, headers={"Cache-Control": IMMUTABLE})
