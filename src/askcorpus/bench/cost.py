"""Section 13: what a question costs the service, against the rerank depth, sentence pass and admission of commit
e622b11 run in the same bench as a variant: the cheap path's throughput at 1/8/32 clients (reranking off, and
on a reranking server), CPU time per reranked question, its latency, and a 64-client burst."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Settings
from .http import Server, _request, run_load
from .overload import BURST_CLIENTS, _with_probe
from .stats import Check, Section, percentile, ratio

# The rerank stage and admission of commit e622b11: depth 30 always, the sentences of the top 10 passages, and
# one gate of 2 turns and 8 places for the whole search.
VARIANT = {"ASKCORPUS_RERANK_MIN_DEPTH": "30", "ASKCORPUS_RERANK_SENTENCE_DEPTH": "10",
           "ASKCORPUS_RERANK_SENTENCE_MARGIN": "inf", "ASKCORPUS_SEARCH_CONCURRENCY": "2",
           "ASKCORPUS_SEARCH_QUEUE": "8"}
CHEAP_CLIENTS = (1, 8, 32)
CHEAP_TARGET = 2.5  # 32 clients >= 2.5x one client's requests/s, admission at its defaults
CPU_TARGET = 0.5  # CPU per reranked question <= 0.5x the variant's
LATENCY_TARGET = 0.55  # p50 of a reranked question at 1 client <= 0.55x the variant's
BURST_TARGET = 1.8  # answered/s under the burst >= 1.8x the variant's
FAST_MS = 50.0  # 503 p99 and /health p99 under the burst


def _cheap_path(server: Server, queries: Path, step: float, log) -> dict[int, dict]:
    """POST /search with rerank false at 1, 8 and 32 clients: requests/s and latency."""
    runs = {}
    for clients in CHEAP_CLIENTS:
        runs[clients] = run_load(server.url, queries, concurrency=clients, requests=20_000, duration=step,
                                 rerank=False)
        log(f"    cheap path, {clients} clients: {runs[clients]['rps']:.1f} req/s")
    return runs


def _reranked_cost(server: Server, queries: Path, count: int, seconds: float) -> dict:
    """One client asking reranked questions in a closed loop: the server's CPU seconds per answered question
    (process time of all its threads, so every stage and the HTTP layer count) and the latency."""
    before = server.cpu_seconds()
    result = run_load(server.url, queries, concurrency=1, requests=count, duration=seconds)
    after = server.cpu_seconds()
    answered = result["ok"]
    cpu = None if before is None or after is None or not answered else (after - before) / answered
    return {"answered": answered, "cpu_ms": None if cpu is None else cpu * 1e3,
            "p50_ms": percentile(result["latencies_s"], 50) * 1e3,
            "p90_ms": percentile(result["latencies_s"], 90) * 1e3, "statuses": result["statuses"]}


def _burst(server: Server, queries: Path, seconds: float) -> dict:
    result, health, health_statuses = _with_probe(server.url, lambda: run_load(
        server.url, queries, concurrency=BURST_CLIENTS, requests=50_000, duration=seconds, honour_retry_after=True))
    statuses = result["statuses"]
    other = sum(n for code, n in statuses.items() if code not in ("200", "503")) + result["transport_errors"]
    return {"rps": result["rps"], "ok": result["ok"], "rejected": statuses.get("503", 0), "other": other,
            "rejected_p99_ms": percentile(result["rejected_latencies_s"], 99) * 1e3,
            "health_p99_ms": percentile(health, 99) * 1e3, "health_not_200": sum(1 for s in health_statuses
                                                                                 if s != 200),
            "ok_p50_ms": percentile(result["latencies_s"], 50) * 1e3, "statuses": statuses}


def _measure_server(label: str, index: Path, questions: list[str], queries: Path, env: dict[str, str], *,
                    reranking: bool, quick: bool, work: Path, log) -> dict:
    step = 5.0 if quick else 15.0
    log(f"  server: {label}...")
    with Server(index, work, env) as server:
        server.wait_ready(questions[0])
        for question in questions[:5]:  # warm up both paths
            _request(server.url + "/search", {"query": question, "k": 10, "mode": "hybrid", "rerank": False})
            if reranking:
                _request(server.url + "/search", {"query": question, "k": 10, "mode": "hybrid"})
        measured = {"cheap": _cheap_path(server, queries, step, log)}
        if reranking:
            measured["reranked"] = _reranked_cost(server, queries, 40 if quick else 150, 30.0 if quick else 120.0)
            log(f"    reranked: {measured['reranked']['cpu_ms']:.0f} ms CPU per question, p50 "
                f"{measured['reranked']['p50_ms']:.0f} ms")
            measured["burst"] = _burst(server, queries, 10.0 if quick else 30.0)
            log(f"    burst: {measured['burst']['rps']:.1f} answered/s, {measured['burst']['rejected']} turned away")
    return measured


def run(index: Path, questions: list[str], settings: Settings, *, quick: bool, work: Path,
        env: dict[str, str] | None = None, log=print) -> Section:
    section = Section("cost", "13. Cost per question: lanes and the rerank stage's levers against commit e622b11's",
                      ["server", "measure", "clients", "value", "unit"])
    queries = work / "cost-questions.json"
    queries.write_text(json.dumps(questions), encoding="utf-8")
    # Every reranked question pays for its pairs: the runs reuse the questions, and cached scores would make
    # later runs cheaper than earlier ones.
    common = dict(env or {}) | {"ASKCORPUS_RERANK_CACHE_SIZE": "0", "ASKCORPUS_RELOAD_INTERVAL": "0"}
    servers = {
        "reranking off": (common | {"ASKCORPUS_RERANK": "false"}, False),
        "e622b11 variant": (common | {"ASKCORPUS_RERANK": "true"} | VARIANT, True),
        "default": (common | {"ASKCORPUS_RERANK": "true"}, True),
    }
    data = {label: _measure_server(label, index, questions, queries, server_env, reranking=reranking, quick=quick,
                                   work=work, log=log)
            for label, (server_env, reranking) in servers.items()}
    _rows(section, data)
    _checks(section, data)
    section.data = {"variant_env": VARIANT, "servers": data}
    section.notes += [
        f"three servers one after another, each a separate `askcorpus serve` on loopback with the pair score cache "
        f"off; 'e622b11 variant' sets {', '.join(f'{k}={v}' for k, v in VARIANT.items())}; the load generator is a "
        "separate process, closed loop, one keep-alive connection per client",
        "cheap path: POST /search hybrid k=10 with rerank false; CPU per reranked question: the server process's "
        "user + system time over a 1-client run of reranked questions, divided by the questions answered",
        f"burst: {BURST_CLIENTS} clients of reranked questions honouring Retry-After, /health probed every 20 ms",
    ]
    return section


def _rows(section: Section, data: dict) -> None:
    for label, measured in data.items():
        for clients, run in measured["cheap"].items():
            section.rows.append([label, "cheap path (rerank false)", clients, run["rps"], "req/s"])
        if "reranked" in measured:
            reranked, burst = measured["reranked"], measured["burst"]
            section.rows += [[label, "CPU per reranked question", 1, reranked["cpu_ms"], "ms"],
                             [label, "reranked question p50", 1, reranked["p50_ms"], "ms"],
                             [label, "burst: answered", BURST_CLIENTS, burst["rps"], "req/s"],
                             [label, "burst: 503 p99", BURST_CLIENTS, burst["rejected_p99_ms"], "ms"],
                             [label, "burst: /health p99", BURST_CLIENTS, burst["health_p99_ms"], "ms"]]


def _scaling(runs: dict[int, dict]) -> float:
    return ratio(runs[32]["rps"], runs[1]["rps"])


def _checks(section: Section, data: dict) -> None:
    off, before, after = data["reranking off"], data["e622b11 variant"], data["default"]
    for label, runs in (("reranking off", off["cheap"]), ("reranking server, rerank false", after["cheap"])):
        section.checks.append(Check(
            f"[{label}] cheap path: 32 clients >= {CHEAP_TARGET}x one client's req/s (admission defaults)",
            f"{_scaling(runs):.2f}x ({runs[32]['rps']:.1f} vs {runs[1]['rps']:.1f}; the variant's "
            f"{_scaling(before['cheap']):.2f}x)", _scaling(runs) >= CHEAP_TARGET))
    cpu_now, cpu_then = after["reranked"]["cpu_ms"], before["reranked"]["cpu_ms"]
    section.checks.append(Check(
        f"CPU per reranked question <= {CPU_TARGET}x the variant's",
        "unmeasured (no /proc here)" if cpu_now is None or cpu_then is None else
        f"{ratio(cpu_now, cpu_then):.2f}x ({cpu_now:.0f} vs {cpu_then:.0f} ms)",
        None if cpu_now is None or cpu_then is None else cpu_now <= CPU_TARGET * cpu_then))
    p50_now, p50_then = after["reranked"]["p50_ms"], before["reranked"]["p50_ms"]
    section.checks.append(Check(f"reranked question p50 at 1 client <= {LATENCY_TARGET}x the variant's",
                                f"{ratio(p50_now, p50_then):.2f}x ({p50_now:.0f} vs {p50_then:.0f} ms)",
                                p50_now <= LATENCY_TARGET * p50_then))
    burst, burst_then = after["burst"], before["burst"]
    section.checks += [
        Check(f"burst ({BURST_CLIENTS} clients, reranking on): answered/s >= {BURST_TARGET}x the variant's",
              f"{ratio(burst['rps'], burst_then['rps']):.2f}x ({burst['rps']:.1f} vs {burst_then['rps']:.1f})",
              burst["rps"] >= BURST_TARGET * burst_then["rps"]),
        Check(f"burst: 503 p99 <= {FAST_MS:.0f} ms", f"{burst['rejected_p99_ms']:.1f} ms over {burst['rejected']}",
              None if not burst["rejected"] else burst["rejected_p99_ms"] <= FAST_MS),
        Check(f"burst: /health p99 <= {FAST_MS:.0f} ms", f"{burst['health_p99_ms']:.1f} ms "
                                                         f"({burst['health_not_200']} not 200)",
              burst["health_p99_ms"] <= FAST_MS and burst["health_not_200"] == 0),
        Check("burst: only 200 and 503", f"{burst['other']} other ({burst['statuses']})", burst["other"] == 0),
    ]
