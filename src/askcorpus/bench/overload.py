"""Section 9: a real `askcorpus serve` with reranking on, over capacity: goodput, a 64-client burst, a soak."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Settings
from .http import Server, _request, run_load
from .load import Connection
from .stats import Check, Section, percentile, ratio

GOODPUT_CLIENTS = (1, 2, 4, 8)
BURST_CLIENTS = 64
# A row with a shallower rerank: what answering from the top 10 candidates instead of 20 would buy.
SHALLOW_DEPTH = 10


def _probe(url: str, stop: threading.Event, seconds: list[float], statuses: list[int], every: float = 0.02) -> None:
    """GET /health on one keep-alive connection until `stop`: what a load balancer's health check sees."""
    parts = urlsplit(url)
    connection = Connection(parts.hostname, parts.port, timeout=30)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status, _ = connection.get("/health")
            except OSError:
                connection.close()
                status = 0
            seconds.append(time.perf_counter() - started)
            statuses.append(status)
            stop.wait(every)
    finally:
        connection.close()


def _with_probe(url: str, work) -> tuple[dict, list[float], list[int]]:
    stop = threading.Event()
    seconds: list[float] = []
    statuses: list[int] = []
    prober = threading.Thread(target=_probe, args=(url, stop, seconds, statuses), daemon=True)
    prober.start()
    try:
        result = work()
    finally:
        stop.set()
        prober.join(timeout=35)
    return result, seconds, statuses


def _metrics_text(url: str) -> str:
    status, body = _request(url + "/metrics", timeout=10)
    return body.decode("utf-8", "replace") if status == 200 else ""


def _metric(text: str, name: str) -> float | None:
    """The first sample of `name` (which may carry its labels, `name{lane="rerank"}`) in a scrape."""
    for line in text.splitlines():
        if line.startswith(name + " ") or (not name.endswith("}") and line.startswith(name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def _ms(seconds: float) -> float:
    return seconds * 1e3


def run(index: Path, questions: list[str], settings: Settings, *, quick: bool, work: Path,
        env: dict[str, str] | None = None, log=print) -> Section:
    section = Section("overload", "9. Overload: askcorpus serve with reranking on, admission control",
                      ["run", "clients", "200", "503", "other", "answered/s", "200 p50 ms", "200 p99 ms",
                       "503 p99 ms", "/health p99 ms"])
    queries_file = work / "overload-questions.json"
    queries_file.write_text(json.dumps(questions), encoding="utf-8")
    limits = {"ASKCORPUS_RERANK": "true", "ASKCORPUS_SEARCH_CONCURRENCY": str(settings.search_concurrency),
              "ASKCORPUS_SEARCH_QUEUE": str(settings.search_queue),
              "ASKCORPUS_RERANK_CONCURRENCY": str(settings.rerank_concurrency),
              "ASKCORPUS_RERANK_QUEUE": str(settings.rerank_queue),
              "ASKCORPUS_SEARCH_DEADLINE": str(settings.search_deadline),
              "ASKCORPUS_RERANK_DEPTH": str(settings.rerank_depth), "ASKCORPUS_RELOAD_INTERVAL": "0",
              # Every question pays for its reranking: the runs reuse the same questions, and cached pair scores
              # would make later runs cheaper than earlier ones.
              "ASKCORPUS_RERANK_CACHE_SIZE": "0"}
    server_env = dict(env or {}) | limits
    step = 8.0 if quick else 20.0
    burst_seconds = 12.0 if quick else 30.0
    soak_seconds = 30.0 if quick else 600.0
    data: dict = {"limits": limits}

    def row(label: str, clients: int, result: dict, health: list[float] | None = None) -> dict:
        statuses = result.get("statuses", {})
        other = sum(n for code, n in statuses.items() if code not in ("200", "503")) + result["transport_errors"]
        ok = result["latencies_s"]
        rejected = result["rejected_latencies_s"]
        summary = {"ok": result["ok"], "rejected": statuses.get("503", 0), "other": other, "rps": result["rps"],
                   "ok_p50_ms": _ms(percentile(ok, 50)), "ok_p99_ms": _ms(percentile(ok, 99)),
                   "rejected_p99_ms": _ms(percentile(rejected, 99)),
                   "health_p99_ms": _ms(percentile(health, 99)) if health else None,
                   "elapsed_s": result["elapsed_s"], "statuses": statuses, "error_kinds": result["error_kinds"]}
        section.rows.append([label, clients, summary["ok"], summary["rejected"], other, summary["rps"],
                             summary["ok_p50_ms"], summary["ok_p99_ms"], summary["rejected_p99_ms"] if rejected
                             else None, summary["health_p99_ms"]])
        data[f"{label} {clients}"] = summary
        return summary

    with Server(index, work, server_env) as server:
        server.wait_ready(questions[0])
        for question in questions[:5]:  # warm up
            _request(server.url + "/search", {"query": question, "k": 10, "mode": "hybrid"})
        goodput = {}
        for clients in GOODPUT_CLIENTS:
            result = run_load(server.url, queries_file, concurrency=clients, requests=2000, duration=step,
                              honour_retry_after=True)
            goodput[clients] = row("closed loop", clients, result)["rps"]
            log(f"  {clients} clients: {goodput[clients]:.2f} answered/s")
        log(f"  burst: {BURST_CLIENTS} clients for {burst_seconds:.0f}s, honouring Retry-After...")
        burst, health, health_statuses = _with_probe(server.url, lambda: run_load(
            server.url, queries_file, concurrency=BURST_CLIENTS, requests=20_000, duration=burst_seconds,
            honour_retry_after=True))
        burst_summary = row("burst", BURST_CLIENTS, burst, health)
        log(f"  burst: {burst_summary['ok']} answered, {burst_summary['rejected']} turned away")
        log("  burst without backoff (clients ignore Retry-After)...")
        hostile, hostile_health, _ = _with_probe(server.url, lambda: run_load(
            server.url, queries_file, concurrency=BURST_CLIENTS, requests=50_000, duration=step))
        row("burst, no backoff", BURST_CLIENTS, hostile, hostile_health)
        scrape = _metrics_text(server.url)
        data["metrics_after_bursts"] = {f"{name}{{lane={lane}}}": _metric(scrape, f'{name}{{lane="{lane}"}}')
                                        for name in ("askcorpus_queue_length_max", "askcorpus_in_progress_max",
                                                     "askcorpus_service_seconds")
                                        for lane in ("search", "rerank")}
        at_limit = settings.rerank_concurrency + settings.rerank_queue  # what the reranker's lane holds
        log(f"  soak: {at_limit} clients for {soak_seconds:.0f}s...")
        rss_start = server.rss_mb()
        samples: list[float] = []
        stop = threading.Event()

        def sample_rss() -> None:
            while not stop.wait(5.0):
                value = server.rss_mb()
                if value is not None:
                    samples.append(value)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        soak = run_load(server.url, queries_file, concurrency=at_limit, requests=100_000, duration=soak_seconds,
                        honour_retry_after=True)
        stop.set()
        sampler.join(timeout=10)
        rss_end = server.rss_mb()
        row("soak", at_limit, soak)

    with Server(index, work, server_env | {"ASKCORPUS_RERANK_DEPTH": str(SHALLOW_DEPTH)}) as shallow:
        shallow.wait_ready(questions[0])
        for question in questions[:5]:
            _request(shallow.url + "/search", {"query": question, "k": 10, "mode": "hybrid"})
        result = run_load(shallow.url, queries_file, concurrency=8, requests=2000, duration=step,
                          honour_retry_after=True)
        shallow_rps = row(f"rerank depth {SHALLOW_DEPTH}", 8, result)["rps"]

    best_clients = max(goodput, key=goodput.get)
    best = goodput[best_clients]
    deadline_ms = settings.search_deadline * 1e3
    section.checks += [
        Check("burst: only 200 and 503", f"{burst_summary['other']} other answers or errors "
                                         f"({burst_summary['statuses']})", burst_summary["other"] == 0),
        Check("burst: 503 p99 <= 50 ms", f"{burst_summary['rejected_p99_ms']:.1f} ms over "
                                         f"{burst_summary['rejected']} rejections",
              burst_summary["rejected"] > 0 and burst_summary["rejected_p99_ms"] <= 50),
        Check("burst: /health p99 <= 50 ms", f"{burst_summary['health_p99_ms']:.1f} ms over {len(health)} probes "
                                             f"({sum(1 for s in health_statuses if s != 200)} not 200)",
              burst_summary["health_p99_ms"] <= 50 and all(s == 200 for s in health_statuses)),
        Check("burst: answered/s >= 0.9x best of 1-8 clients",
              f"{ratio(burst_summary['rps'], best):.2f}x ({burst_summary['rps']:.2f} vs {best:.2f} at "
              f"{best_clients} clients)", burst_summary["rps"] >= 0.9 * best),
        Check("burst: 200 p99 <= deadline", f"{burst_summary['ok_p99_ms']:.0f} ms vs {deadline_ms:.0f} ms",
              burst_summary["ok_p99_ms"] <= deadline_ms),
        Check(f"soak ({soak_seconds:.0f} s at {at_limit} clients): server RSS flat (end <= start x 1.05)",
              f"{rss_start:.0f} MB -> {rss_end:.0f} MB (max sampled {max(samples, default=rss_end):.0f} MB)",
              None if rss_start is None or rss_end is None else rss_end <= rss_start * 1.05),
    ]
    data |= {"goodput": goodput, "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_samples_mb": samples,
             "shallow_rps": shallow_rps}
    section.data = data
    section.notes += [
        f"server: search lane {settings.search_concurrency} + {settings.search_queue}, rerank lane "
        f"{settings.rerank_concurrency} + {settings.rerank_queue} (turns + queue), "
        f"search_deadline {settings.search_deadline:g} s, rerank_depth {settings.rerank_depth}; POST /search hybrid "
        f"k=10, rerank score cache off; load generator a separate process, closed loop, one keep-alive connection "
        f"per client; after a 503 a client waits the Retry-After seconds before asking again (as HTTP clients "
        f"should)",
        "'burst, no backoff': the same burst with clients that ask again at once (no target: the cost of "
        "rejections)",
        f"/health probed every 20 ms from the bench process during the bursts; rerank depth {SHALLOW_DEPTH}: a "
        f"second server, 8 clients ({ratio(shallow_rps, goodput.get(8, 0)):.2f}x the answered/s of depth "
        f"{settings.rerank_depth})",
    ]
    return section
