"""Every Prometheus metric of the service, with buckets set here and nowhere else.

Each app gets its own registry so that several apps (tests, benchmarks) can live in one process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
COMPONENT_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
# The phases of a /reward request, timed by medix_phase_duration_seconds (a bounded label set).
PHASES = ("admission", "rules", "cache_lookup", "judge_queue", "judge_call", "judge", "embed", "cache_write",
          "compose")


class BatchHistogram(Collector):
    """A labelled histogram fed a whole batch at once (numpy), for per-item values of big batches.

    Exposed exactly like a prometheus_client Histogram (`_bucket`, `_sum`, `_count`), without its
    per-observation cost, which dominated the service's own time on a warm 512-item batch.
    """

    def __init__(self, name: str, doc: str, label: str, buckets: Sequence[float], registry: CollectorRegistry):
        self.name, self.doc, self.label = name, doc, label
        self._bounds = np.asarray(sorted(b for b in buckets if b != float("inf")), dtype=float)
        self._counts: dict[str, np.ndarray] = {}
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, label_value: str, values: Sequence[float]) -> None:
        if not len(values):
            return
        v = np.asarray(values, dtype=float)
        # Bucket i holds bounds[i-1] < v <= bounds[i]; the last one is +Inf.
        counts = np.bincount(np.searchsorted(self._bounds, v, side="left"), minlength=len(self._bounds) + 1)
        with self._lock:
            self._counts[label_value] = self._counts.get(label_value, 0) + counts
            self._sums[label_value] = self._sums.get(label_value, 0.0) + float(v.sum())

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.doc, labels=[self.label])

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        with self._lock:
            for value, counts in self._counts.items():
                cumulative = np.cumsum(counts)
                buckets = [(floatToGoString(b), float(c)) for b, c in zip(self._bounds, cumulative[:-1], strict=True)]
                buckets.append(("+Inf", float(cumulative[-1])))
                family.add_metric([value], buckets, sum_value=self._sums[value])
        yield family


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("medix_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=r)
        self.request_duration = Histogram("medix_request_duration_seconds", "Request latency by route.",
                                          ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.items = Counter("medix_items", "Items scored or judged, by route.", ["route"], registry=r)
        self.client_retries = Counter("medix_client_retries", "Requests that a client says are a retry (its "
                                      "X-Medix-Attempt header above 1), by route.", ["route"], registry=r)
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
        self.tenant_queue_depth = Gauge("medix_tenant_queue_depth", "Judge calls waiting for a slot, by tenant "
                                        "(API key name from the key file, or anonymous).", ["tenant"], registry=r)
        self.tenant_queue_wait = Histogram("medix_tenant_queue_wait_seconds", "Wait for a judge slot, by tenant.",
                                           ["tenant"], buckets=LATENCY_BUCKETS, registry=r)
        self.phase_duration = Histogram("medix_phase_duration_seconds", "Time a /reward request spends in each "
                                        "phase: " + ", ".join(PHASES) + ".", ["phase"], buckets=LATENCY_BUCKETS,
                                        registry=r)
        # Tenants are key names from the key file (a bounded set), as in medix_tenant_*.
        self.judge_tokens = Counter("medix_judge_tokens", "Judge tokens by tenant, route and kind (prompt, "
                                    "completion), as the judge's replies count them; cached verdicts cost none.",
                                    ["tenant", "route", "kind"], registry=r)
        self.embed_tokens = Counter("medix_embed_tokens", "Embedding input tokens by tenant and route, where the "
                                    "embeddings server reports them.", ["tenant", "route"], registry=r)
        self.reward_component = BatchHistogram("medix_reward_component", "Distribution of reward components.",
                                               "component", COMPONENT_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
