"""`GET /metrics` for Prometheus.

Values are read from the running state when scraped, so requests pay nothing
for them. Access: with METRICS_TOKEN set, a matching `Authorization: Bearer`;
without it, loopback clients only (anyone else gets 404, as if it did not exist).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from smilingsteps import __version__
from smilingsteps.platform import http_protocol
from smilingsteps.platform.errors import NotFoundError, UnauthorizedError
from smilingsteps.platform.runtime import Runtime, runtime_of


class RuntimeCollector(Collector):
    """Reads the runtime (database, rate limiter) at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("smilingsteps_build_info", "Build information", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        runtime = getattr(self.app.state, "runtime", None)
        if not isinstance(runtime, Runtime):
            return
        yield GaugeMetricFamily(
            "smilingsteps_database_up", "1 when the database answers", value=int(runtime.db.status.available)
        )
        yield GaugeMetricFamily(
            "smilingsteps_draining", "1 while the process drains for shutdown", value=int(runtime.draining)
        )
        events = CounterMetricFamily(
            "smilingsteps_security_events",
            "Refused authorisations by reason (see security_event log lines)",
            labels=["reason"],
        )
        for reason, count in sorted(runtime.security_events.items()):
            events.add_metric([reason], count)
        yield events
        refused = CounterMetricFamily(
            "smilingsteps_http_refused",
            "Connections the server refused before the app (see the http_refused log lines)",
            labels=["reason"],
        )
        for reason, count in sorted(http_protocol.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        limiter = runtime.limiter
        decisions = CounterMetricFamily(
            "smilingsteps_rate_limit_decisions",
            "Rate-limit decisions by policy and outcome",
            labels=["policy", "outcome"],
        )
        for (policy, outcome), count in sorted(limiter.counts.items()):
            decisions.add_metric([policy, outcome], count)
        yield decisions
        yield GaugeMetricFamily(
            "smilingsteps_rate_limit_degraded",
            "1 while the shared (Redis) rate-limit backend is unavailable and counting is per instance",
            value=int(limiter.degraded),
        )
        yield CounterMetricFamily(
            "smilingsteps_rate_limit_fallbacks",
            "Switches from Redis to in-memory rate limiting",
            value=limiter.fallbacks,
        )
        yield CounterMetricFamily(
            "smilingsteps_rate_limit_fallback_checks",
            "Checks decided in this instance's memory (its share of the quota) although Redis is configured",
            value=limiter.fallback_checks,
        )
        if limiter.redis is not None:
            yield CounterMetricFamily(
                "smilingsteps_rate_limit_redis_overdue",
                "Redis batches not answered within RATE_LIMIT_REDIS_TIMEOUT_MS (a PING then decided)",
                value=limiter.redis.overdue,
            )


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_client(request: Request) -> bool:
    return _is_loopback(request.client.host if request.client else None)


def presents_metrics_token(request: Request) -> bool:
    """`Authorization: Bearer METRICS_TOKEN` (False when no token is set), compared in constant time."""
    token = runtime_of(request).settings.METRICS_TOKEN
    if token is None:
        return False
    sent = request.headers.get("authorization", "")
    return hmac.compare_digest(sent.encode(), f"Bearer {token.get_secret_value()}".encode())


def install(app: FastAPI) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RuntimeCollector(app))

    async def metrics(request: Request) -> Response:
        if runtime_of(request).settings.METRICS_TOKEN is None:
            if not loopback_client(request):
                raise NotFoundError()
        elif not presents_metrics_token(request):
            raise UnauthorizedError("A valid metrics bearer token is required.", headers={"WWW-Authenticate": "Bearer"})
        return Response(
            generate_latest(registry), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
        )

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
