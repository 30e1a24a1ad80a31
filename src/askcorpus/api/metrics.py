"""The service's Prometheus metrics, one registry per app: requests, stage latencies, admission, reloads, index."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .admission import REASONS, Lanes
from .callers import REFUSAL_REASONS

CONTENT_TYPE = CONTENT_TYPE_LATEST
STAGES = ("encode", "retrieve", "rerank", "answer")
GENERATION_OUTCOMES = ("answered", "abstained", "error")
# Request latency buckets (seconds): from a cached /health to a search that waited its whole 5 s budget.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Paths are labelled by route, never raw, so a client cannot grow the label set.
_EXACT = {"/search": "/search", "/health": "/health", "/documents": "/documents", "/metrics": "/metrics",
          "/admin/reindex": "/admin/reindex", "/": "/", "/docs": "/docs", "/openapi.json": "/openapi.json",
          "/mcp": "/mcp"}


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
    """Values read at scrape time from the lanes and the index holder (nothing to keep in step)."""

    def __init__(self, lanes: Lanes, holder: Callable[[], Any]) -> None:
        self.lanes = lanes
        self.holder = holder

    def describe(self) -> list:
        return []  # values only exist once the app runs; nothing to check at registration

    def collect(self) -> Iterator:
        for name, text, value_of in (
            ("askcorpus_queue_length", "waiting for a turn of the lane", lambda gate: gate.waiting),
            ("askcorpus_in_progress", "holding a turn of the lane (computing)", lambda gate: gate.running),
            ("askcorpus_queue_length_max", "most waiting at once since start", lambda gate: gate.max_waiting),
            ("askcorpus_in_progress_max", "most computing at once since start", lambda gate: gate.max_running),
            ("askcorpus_queue_limit", "the lane's queue setting", lambda gate: gate.queue),
            ("askcorpus_concurrency_limit", "the lane's concurrency setting", lambda gate: gate.concurrency),
            ("askcorpus_service_seconds", "running estimate of one turn's duration in the lane",
             lambda gate: gate.service_seconds),
        ):
            family = GaugeMetricFamily(name, text, labels=["lane"])
            for lane, gate in self.lanes.named().items():
                family.add_metric([lane], value_of(gate))
            yield family
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

    def __init__(self, lanes: Lanes, holder: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("askcorpus_requests", "HTTP requests answered, by route and status",
                                ["endpoint", "status"], registry=registry)
        self.request_seconds = Histogram("askcorpus_request_duration_seconds", "time to answer an HTTP request",
                                         ["endpoint"], buckets=REQUEST_BUCKETS, registry=registry)
        self.stage_seconds = Histogram("askcorpus_stage_duration_seconds",
                                       "time in each stage of an answered search (encode: per model call)",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.queue_seconds = Histogram("askcorpus_queue_wait_seconds", "time an admitted search waited for its turn "
                                       "of the lane", ["lane"], buckets=REQUEST_BUCKETS, registry=registry)
        self.rejections = Counter("askcorpus_rejections", "turned away before the lane's work: 503 from the search "
                                  "and rerank lanes; from the generate lane, an answer whose generated.error says so",
                                  ["lane", "reason"], registry=registry)
        for lane in lanes.named():  # present (at 0) from the first scrape, so rate() works from the start
            self.queue_seconds.labels(lane)
            for reason in REASONS:
                self.rejections.labels(lane, reason)
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
        self.auth_refusals = Counter("askcorpus_auth_refusals", "requests refused by the tokens file, by reason: "
                                     "missing or unknown token (401), a document outside the token's prefixes "
                                     "(404), the file unreadable (503)", ["reason"], registry=registry)
        for reason in REFUSAL_REASONS:
            self.auth_refusals.labels(reason)
        registry.register(_StateCollector(lanes, holder))

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = endpoint_of(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            if stage in STAGES:
                self.stage_seconds.labels(stage).observe(seconds)

    def refuse(self, reason: str) -> None:
        """One request refused by the tokens file (askcorpus_auth_refusals_total)."""
        self.auth_refusals.labels(reason).inc()

    def reject(self, lane: str, reason: str) -> None:
        self.rejections.labels(lane, reason).inc()

    def observe_wait(self, lane: str, seconds: float) -> None:
        self.queue_seconds.labels(lane).observe(seconds)

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
