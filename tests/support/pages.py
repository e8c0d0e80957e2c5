"""Driving the web pages the way a browser without JavaScript does: GET a page, read the
form's CSRF token from it, POST the form back (urlencoded, with Origin), follow nothing."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from tests.support.accounts import ORIGIN

HTML = {"Accept": "text/html,application/xhtml+xml"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"')


def csrf_token(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found is not None, f"no CSRF token on the page:\n{page.text[:2000]}"
    return html.unescape(found.group(1))


def hidden_fields(page: httpx.Response) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}


async def open_page(client: httpx.AsyncClient, path: str, **headers: str) -> httpx.Response:
    return await client.get(path, headers={**HTML, **headers})


async def submit(
    client: httpx.AsyncClient, path: str, fields: dict[str, Any], *, token: str | None, origin: str | None = ORIGIN
) -> httpx.Response:
    """POST a form as a browser sends it; `token` is the page's CSRF token (None leaves it out)."""
    data = dict(fields)
    if token is not None:
        data["csrf_token"] = token
    headers = dict(HTML)
    if origin is not None:
        headers["Origin"] = origin
    return await client.post(path, data=data, headers=headers)


async def fill(client: httpx.AsyncClient, page_path: str, action: str, fields: dict[str, Any]) -> httpx.Response:
    """Open `page_path`, then send its form to `action` with `fields` (and the page's token)."""
    page = await open_page(client, page_path)
    assert page.status_code == 200, page.text
    return await submit(client, action, fields, token=csrf_token(page))


def text_of(page: httpx.Response) -> str:
    """The page's visible text, roughly: tags dropped, whitespace folded (for 'the page says …')."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page.text, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())
