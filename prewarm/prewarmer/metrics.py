"""Prometheus metrics for the prewarmer, on a registry of its own.

Its own CollectorRegistry (not the process-global one) so two proxies in one
process (tests, the demo) do not collide and /metrics shows only prewarm's series.
Model labels come from client requests; names the prewarmer does not know are
counted as "other" by the caller so a client cannot grow the series without bound.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from prewarm.records import RequestEvent

if TYPE_CHECKING:
    from prewarm.gpu import Budget

LOAD_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
# From a warm token (tens of ms) to a cold 70B load (minutes).
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class PrewarmMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._children: dict[tuple[str, int, bool | None], tuple[Any, ...]] = {}
        self.requests = Counter("prewarm_requests", "Proxied requests per model and HTTP status", ["model", "status"],
                                registry=r)
        self.ttft = Histogram("prewarm_ttft_seconds", "Time to the first byte of the answer, cold or warm",
                              ["model", "cold"], buckets=LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("prewarm_request_seconds", "Time from a request's arrival to its end",
                                         ["model", "cold"], buckets=LATENCY_BUCKETS, registry=r)
        self.cold_starts = Counter(
            "prewarm_cold_starts", "Requests whose model was not resident when they arrived", ["model"], registry=r
        )
        self.loads = Counter("prewarm_loads", "Loads the prewarmer carried out", ["model"], registry=r)
        self.evictions = Counter("prewarm_evictions", "Unloads the prewarmer carried out", ["model"], registry=r)
        self.load_seconds = Histogram(
            "prewarm_load_seconds", "Time a prewarm load took", buckets=LOAD_BUCKETS, registry=r
        )
        self.vram_used = Gauge("prewarm_vram_used_bytes", "Bytes resident on the upstream (incl. reserved room)", registry=r)
        self.vram_budget = Gauge("prewarm_vram_budget_bytes", "The VRAM budget: the most the planner may fill", registry=r)
        self.budget_source = Gauge(
            "prewarm_vram_budget_source", "1 for the source of the current budget", ["source"], registry=r
        )
        self.forecast_age = Gauge("prewarm_forecast_age_seconds", "Seconds since the forecast in use was made", registry=r)
        self._forecast_at: float | None = None
        self._prewarmer: Any = None
        self.forecast_age.set_function(self._age)

    def bind(self, prewarmer: Any) -> None:
        """Read VRAM in use from the prewarmer at scrape time rather than pushing it on every change."""
        self._prewarmer = prewarmer
        self.vram_used.set_function(lambda: float(prewarmer.resident_bytes()))

        store = getattr(prewarmer, "store", None)
        if store is not None:
            self.registry.register(_LogRows(store))
        self.registry.register(_PerModel(prewarmer))

    def _age(self) -> float:
        return float("nan") if self._forecast_at is None else max(0.0, time.time() - self._forecast_at)

    def observe_request(self, model: str, event: RequestEvent) -> None:
        """Every proxied request passes here: the labelled children are looked up once per label set and
        kept (the labels are bounded: known models or "other", the statuses the upstream uses)."""
        key = (model, event.status, event.cold)
        children = self._children.get(key)
        if children is None:
            cold = "unknown" if event.cold is None else str(event.cold).lower()
            children = self._children[key] = (
                self.requests.labels(model, str(event.status)),
                self.cold_starts.labels(model) if event.cold else None,
                self.ttft.labels(model, cold),
                self.request_seconds.labels(model, cold),
            )
        requests, cold_starts, ttft, total = children
        requests.inc()
        if cold_starts is not None:
            cold_starts.inc()
        if event.ttft_ms is not None:
            ttft.observe(event.ttft_ms / 1000.0)
        if event.total_ms is not None:
            total.observe(event.total_ms / 1000.0)

    def loaded(self, model: str, seconds: float) -> None:
        self.loads.labels(model).inc()
        self.load_seconds.observe(seconds)

    def evicted(self, model: str) -> None:
        self.evictions.labels(model).inc()

    def set_budget(self, budget: Budget) -> None:
        self.vram_budget.set(budget.bytes)
        for source in ("nvml", "config", "upstream"):
            self.budget_source.labels(source).set(1 if source == budget.source else 0)

    def forecast_made(self, made_at: float) -> None:
        self._forecast_at = made_at

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LogRows(Collector):
    """prewarm_log_rows_total{outcome}: the request log writer's own counters, read at scrape time."""

    OUTCOMES = ("written", "spilled", "dropped", "quarantined")

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily("prewarm_log_rows", "Rows of the request log by what became of them",
                                    labels=["outcome"])]

    def collect(self) -> list[CounterMetricFamily]:
        family = self.describe()[0]
        counters = self.store.counters
        for outcome in self.OUTCOMES:
            family.add_metric([outcome], float(counters.get(outcome, 0)))
        return [family]


class _PerModel(Collector):
    """prewarm_inflight_requests, prewarm_resident_bytes and prewarm_model_worth per model, read from the
    prewarmer at scrape time (only models it knows: the resident set and requests it admitted, never arbitrary
    client names)."""

    def __init__(self, prewarmer: Any) -> None:
        self.prewarmer = prewarmer

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily("prewarm_inflight_requests", "Requests in flight per model", labels=["model"]),
                GaugeMetricFamily("prewarm_resident_bytes", "Bytes each resident model holds on the upstream",
                                  labels=["model"]),
                GaugeMetricFamily("prewarm_model_worth", "Seconds of client waiting a resident model is expected to "
                                  "save per GB-hour it holds (what evictions and vram_cost compare)", labels=["model"])]

    def collect(self) -> list[GaugeMetricFamily]:
        inflight, resident, worth = self.describe()
        counts: dict[str, int] = {}
        for model, n in self.prewarmer.in_flight().items():
            label = model if self.prewarmer.facts.known_now(model) else "other"
            counts[label] = counts.get(label, 0) + n
        for label, n in sorted(counts.items()):
            inflight.add_metric([label], float(n))
        for model, size in sorted(self.prewarmer.resident().items()):
            resident.add_metric([model], float(size))
        for model, value in sorted(self.prewarmer.worths().items()):
            worth.add_metric([model], value)
        return [inflight, resident, worth]

