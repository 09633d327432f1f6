"""The service's Prometheus metrics (one registry per app): requests and latency per route, the model version
being served, events ingested and reloads."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RELOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("twotower_requests", "HTTP requests by route and status", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("twotower_request_seconds", "Time to answer, by route", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events = Counter("twotower_events_ingested", "Events stored by POST /events", registry=self.registry)
        self.reloads = Counter("twotower_reloads", "Version swaps by outcome", ["outcome"], registry=self.registry)
        self.reload_seconds = Histogram("twotower_reload_seconds", "Time a swap spent per stage (open, warm, catch_up)",
                                        ["stage"], buckets=RELOAD_BUCKETS, registry=self.registry)
        self._version = Gauge("twotower_model_info", "The model version being served (value 1)", ["version"],
                              registry=self.registry)
        metrics = self

        class Middleware:
            """Count and time every request under its route's template (/items/{item_id}/similar)."""

            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                if scope["type"] != "http":
                    return await self.app(scope, receive, send)
                t0, status = time.perf_counter(), [500]

                async def sending(message):
                    if message["type"] == "http.response.start":
                        status[0] = message["status"]
                    await send(message)

                try:
                    await self.app(scope, receive, sending)
                finally:
                    route = getattr(scope.get("route"), "path", None) or "unmatched"
                    metrics.requests.labels(route, scope["method"], str(status[0])).inc()
                    metrics.latency.labels(route, scope["method"]).observe(time.perf_counter() - t0)

        self.middleware = Middleware

    def version(self, version: str) -> None:
        """Mark `version` as the one being served."""
        self._version.clear()
        self._version.labels(version).set(1)

    def swapped(self, stages: dict[str, float]) -> None:
        """Count a swap and the seconds of each of its stages."""
        self.reloads.labels("swapped").inc()
        for stage, seconds in stages.items():
            self.reload_seconds.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
