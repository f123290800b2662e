"""The API's Prometheus metrics (`stella_api_*`), in a registry of its own per app so two
apps in one process (tests) never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Latency buckets around the API's target (p99 ≤ 100 ms for a verify call).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "stella_api_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "stella_api_request_duration_seconds",
            "Time to answer a request, by route template.",
            ("route",),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.records_ingested = Counter(
            "stella_api_records_ingested_total",
            "Observation records stored through POST /api/v1/evidence (new ones only).",
            ("signed",),
            registry=self.registry,
        )
        self.chunks_refused = Counter(
            "stella_api_chunks_conflicting_total",
            "Chunks refused because their (chain, sequence) is stored with another seal.",
            registry=self.registry,
        )
        self.verifications = Counter(
            "stella_api_verifications_total",
            "Verification reports made, by verdict.",
            ("verified",),
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "stella_api_store_unavailable_total",
            "Requests answered 503 because the store could not be reached.",
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
