"""The interactive API docs (Swagger UI), self-hosted under the strict Content-Security-Policy.

Swagger UI 5 (it reads OpenAPI 3.1) is vendored in `static/swagger-ui/` (see VENDORED.md:
swagger-ui-dist from npm, Apache-2.0, licence beside it), our start-up script is
`static/docs-init.js`; nothing is loaded from another origin, no script or style is inline, and
every asset carries its Subresource Integrity hash.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from smilingsteps.platform.errors import NotFoundError
from smilingsteps.platform.versioning import API_PREFIX

DOCS_PATH = f"{API_PREFIX}/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
_MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes

    @property
    def integrity(self) -> str:
        return "sha384-" + base64.b64encode(hashlib.sha384(self.body).digest()).decode()

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[Path(self.name).suffix]


@cache
def assets() -> dict[str, Asset]:
    """The three files the page loads, read once."""
    static = resources.files("smilingsteps.platform") / "static"
    found = [
        Asset("swagger-ui.css", (static / "swagger-ui" / "swagger-ui.css").read_bytes()),
        Asset("swagger-ui-bundle.js", (static / "swagger-ui" / "swagger-ui-bundle.js").read_bytes()),
        Asset("docs-init.js", (static / "docs-init.js").read_bytes()),
    ]
    return {asset.name: asset for asset in found}


def page(openapi_url: str, title: str) -> str:
    found = assets()
    css, bundle, init = found["swagger-ui.css"], found["swagger-ui-bundle.js"], found["docs-init.js"]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{ASSETS_PATH}/{css.name}" integrity="{css.integrity}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{ASSETS_PATH}/{bundle.name}" integrity="{bundle.integrity}"></script>
<script src="{ASSETS_PATH}/{init.name}" integrity="{init.integrity}"></script>
</body>
</html>
"""


def install(app: FastAPI, *, openapi_url: str, title: str) -> None:
    async def docs() -> HTMLResponse:
        return HTMLResponse(page(openapi_url, title))

    async def asset(name: str) -> Response:
        found = assets().get(name)
        if found is None:
            raise NotFoundError()
        return Response(found.body, media_type=found.media_type)

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{ASSETS_PATH}/{{name}}", asset, methods=["GET"], include_in_schema=False)
