"""The service's Prometheus metrics, one registry per app: requests, stage latencies, admission, reloads, index."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .admission import REASONS, AdmissionGate

CONTENT_TYPE = CONTENT_TYPE_LATEST
STAGES = ("encode", "retrieve", "rerank", "answer")
GENERATION_OUTCOMES = ("answered", "abstained", "error")
# Request latency buckets (seconds): from a cached /health to a search that waited its whole 5 s budget.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Paths are labelled by route, never raw, so a client cannot grow the label set.
_EXACT = {"/search": "/search", "/health": "/health", "/documents": "/documents", "/metrics": "/metrics",
          "/admin/reindex": "/admin/reindex", "/": "/", "/docs": "/docs", "/openapi.json": "/openapi.json"}


def endpoint_of(path: str) -> str:
    """The route a request path belongs to: the `endpoint` label."""
    if path in _EXACT:
        return _EXACT[path]
    if path.startswith("/documents/"):
        return "/documents/{doc_id}"
    if path.startswith("/static/"):
        return "/static"
    return "other"


class _StateCollector:
    """Values read at scrape time from the gate and the index holder (nothing to keep in step)."""

    def __init__(self, gate: AdmissionGate, holder: Callable[[], Any]) -> None:
        self.gate = gate
        self.holder = holder

    def describe(self) -> list:
        return []  # values only exist once the app runs; nothing to check at registration

    def collect(self) -> Iterator:
        gate = self.gate
        for name, text, value in (
            ("askcorpus_queue_length", "searches waiting for a turn", gate.waiting),
            ("askcorpus_searches_in_progress", "searches holding a turn (computing)", gate.running),
            ("askcorpus_queue_length_max", "most searches waiting at once since start", gate.max_waiting),
            ("askcorpus_searches_in_progress_max", "most searches computing at once since start", gate.max_running),
            ("askcorpus_queue_limit", "setting search_queue", gate.queue),
            ("askcorpus_concurrency_limit", "setting search_concurrency", gate.concurrency),
            ("askcorpus_search_service_seconds", "running estimate of one admitted search's duration",
             gate.service_seconds),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        holder = self.holder()
        if holder is None:
            return
        yield CounterMetricFamily("askcorpus_reloads", "index swaps since start", value=holder.reloads)
        yield CounterMetricFamily("askcorpus_reload_errors", "new builds that could not be loaded (old one kept)",
                                  value=holder.reload_errors)
        index = holder.searcher.index
        yield GaugeMetricFamily("askcorpus_index_passages", "passages in the index being served",
                                value=len(index.passages))
        yield GaugeMetricFamily("askcorpus_index_documents", "documents in the index being served",
                                value=len(index.documents))


class Metrics:
    """The counters and histograms the app updates, and the scrape."""

    def __init__(self, gate: AdmissionGate, holder: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("askcorpus_requests", "HTTP requests answered, by route and status",
                                ["endpoint", "status"], registry=registry)
        self.request_seconds = Histogram("askcorpus_request_duration_seconds", "time to answer an HTTP request",
                                         ["endpoint"], buckets=REQUEST_BUCKETS, registry=registry)
        self.stage_seconds = Histogram("askcorpus_stage_duration_seconds",
                                       "time in each stage of an answered search (encode: per model call)",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.queue_seconds = Histogram("askcorpus_queue_wait_seconds", "time an admitted search waited for its turn",
                                       buckets=REQUEST_BUCKETS, registry=registry)
        self.rejections = Counter("askcorpus_rejections", "searches turned away with 503 before any model work",
                                  ["reason"], registry=registry)
        for reason in REASONS:  # present (at 0) from the first scrape, so rate() works from the start
            self.rejections.labels(reason)
        self.generation_rejections = Counter(
            "askcorpus_generation_rejections", "generated answers not written: the generation lane was full, its "
            "deadline passed, or the client left", ["reason"], registry=registry)
        for reason in REASONS:
            self.generation_rejections.labels(reason)
        self.generations = Counter("askcorpus_generations", "generated answers by outcome", ["outcome"],
                                   registry=registry)
        for outcome in GENERATION_OUTCOMES:
            self.generations.labels(outcome)
        self.generation_seconds = Histogram(
            "askcorpus_generation_duration_seconds", "askcorpus's time around the model (prepare: results to the "
            "request sent; check: last token to the checked answer) and the model's (first_token, total)",
            ["part"], buckets=STAGE_BUCKETS + (5.0, 10.0, 30.0, 60.0), registry=registry)
        self.generated_sentences = Counter("askcorpus_generated_sentences", "sentences of generated answers, by "
                                           "whether the passages they cite support them", ["supported"],
                                           registry=registry)
        self.dropped_markers = Counter("askcorpus_dropped_markers", "[n] markers naming no passage given to the "
                                       "model, removed from answers", registry=registry)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        registry.register(_StateCollector(gate, holder))

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = endpoint_of(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            if stage in STAGES:
                self.stage_seconds.labels(stage).observe(seconds)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def observe_generation_rejected(self, reason: str) -> None:
        self.generation_rejections.labels(reason).inc()

    def observe_generated(self, generated: Any) -> None:
        """Counts and times of one generated answer (a `records.Generated`)."""
        if generated is None:
            return
        outcome = "error" if generated.error else "abstained" if generated.abstained else "answered"
        self.generations.labels(outcome).inc()
        for part, seconds in generated.timings.items():
            self.generation_seconds.labels(part).observe(seconds)
        self.generation_seconds.labels("total").observe(generated.seconds)
        for sentence in generated.sentences:
            self.generated_sentences.labels(str(sentence.supported).lower()).inc()
        if generated.dropped_markers:
            self.dropped_markers.inc(generated.dropped_markers)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)
