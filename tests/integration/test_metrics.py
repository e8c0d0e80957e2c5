"""/metrics: Prometheus text, loopback-only or bearer token, and the limiter's state."""

from __future__ import annotations

import pytest

from smilingsteps.app import create_app
from tests.conftest import SettingsFactory, running


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_loopback_scrape_shows_database_and_rate_limit_state(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(RATE_LIMIT_API="1/1h"))
    async with running(app) as client:
        await client.get("/api/v1")
        await client.get("/api/v1")
        response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "smilingsteps_database_up") == 1
    assert sample(text, "smilingsteps_rate_limit_degraded") == 0
    assert 'smilingsteps_rate_limit_decisions_total{outcome="allowed",policy="api"} 1.0' in text
    assert 'smilingsteps_rate_limit_decisions_total{outcome="limited",policy="api"} 1.0' in text
    assert "ratelimit" not in response.headers  # never rate limited itself


async def test_without_token_only_loopback_may_scrape(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    async with running(app, client_addr=("203.0.113.5", 1000)) as client:
        response = await client.get("/metrics")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("header", "status"), [(None, 401), ("Bearer wrong", 401), ("Bearer s3cret-metrics", 200)])
async def test_token_is_required_when_configured(
    make_settings: SettingsFactory, header: str | None, status: int
) -> None:
    app = create_app(make_settings(METRICS_TOKEN="s3cret-metrics"))
    headers = {"authorization": header} if header else {}
    async with running(app, client_addr=("203.0.113.5", 1000)) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == status
