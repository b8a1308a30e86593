"""Every Prometheus metric of the service, with buckets set here and nowhere else.

Each app gets its own registry so that several apps (tests, benchmarks) can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
COMPONENT_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("medix_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=r)
        self.request_duration = Histogram("medix_request_duration_seconds", "Request latency by route.",
                                          ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.items = Counter("medix_items", "Items scored or judged, by route.", ["route"], registry=r)
        self.inflight = Gauge("medix_inflight_requests", "Scoring requests being served now.", registry=r)
        self.backend_requests = Counter("medix_backend_requests", "Backend calls by backend and result.",
                                        ["backend", "result"], registry=r)
        self.backend_duration = Histogram("medix_backend_duration_seconds", "Backend call latency.",
                                          ["backend"], buckets=LATENCY_BUCKETS, registry=r)
        self.embed_batch_size = Histogram("medix_embed_batch_size", "Texts per encode call.",
                                          buckets=BATCH_BUCKETS, registry=r)
        self.cache_requests = Counter("medix_cache_requests", "Cache lookups by kind and result.",
                                      ["kind", "result"], registry=r)
        self.circuit_state = Gauge("medix_backend_circuit_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.",
                                   ["backend"], registry=r)
        self.rate_limited = Counter("medix_rate_limited", "Requests refused by the per-key rate limit.", registry=r)
        self.reward_component = Histogram("medix_reward_component", "Distribution of reward components.",
                                          ["component"], buckets=COMPONENT_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
