"""The real service over capacity: `askcorpus serve` (real model, reranking on) as a subprocess on loopback.

Small limits on the rerank lane (1 computing, 3 waiting) and slow searches (rerank depth 50 always, no score
cache) make the server easy to overload with a few dozen requests. Bounded: every test sends a fixed number of requests with timeouts.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from askcorpus.api import SearchOut

from conftest import free_port, start_server, stop_server

pytestmark = pytest.mark.slow

CONCURRENCY, QUEUE = 1, 3  # the rerank lane's
RERANK = (("lane", "rerank"),)
TOPICS = ["ISKP recruitment", "Taliban return to power", "refugee flows", "Shanghai Cooperation Organisation",
          "al-Qaeda allies", "economic fragility", "threats to neighbouring states", "regional security"]


def _question(number: int) -> str:
    # Each question distinct, so no search is cheaper than another.
    return f"What is said about {TOPICS[number % len(TOPICS)]} (question {number})?"


class Served:
    """One `askcorpus serve` process with the small limits; its URL, log, and metrics."""

    def __init__(self, root: Path, seeds_settings, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = root / f"server-{self.port}.log"
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "ASKCORPUS_ENCODER_CACHE": str(seeds_settings.encoder_cache_dir),
                       "ASKCORPUS_RELOAD_INTERVAL": "0", "ASKCORPUS_RERANK_CONCURRENCY": str(CONCURRENCY),
                       "ASKCORPUS_RERANK_QUEUE": str(QUEUE), "ASKCORPUS_RERANK_DEPTH": "50",
                       "ASKCORPUS_RERANK_MIN_DEPTH": "50",
                       "ASKCORPUS_RERANK_CACHE_SIZE": "0",
                       # Long enough that on a busy machine the queue fills before deadlines bite; the deadline
                       # test asks for less with deadline_ms.
                       "ASKCORPUS_SEARCH_DEADLINE": "60", **env}
        self.process = start_server(self.port, ["--index", str(seeds_settings.index)], environment, self.log)
        assert httpx.post(self.base + "/search", json={"query": "warm up"}, timeout=60).status_code == 200

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def metrics(self) -> dict[tuple, float]:
        text = httpx.get(self.base + "/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def wait_until(self, name: str, at_least: float, seconds: float = 20) -> None:
        """Poll /metrics until the rerank lane's gauge `name` reaches `at_least`."""
        deadline = time.monotonic() + seconds
        while self.metrics()[(name, RERANK)] < at_least:
            assert time.monotonic() < deadline, f"{name} never reached {at_least}"
            time.sleep(0.02)

    def stop(self) -> None:
        stop_server(self.process, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory, seeds_settings):
    served = Served(tmp_path_factory.mktemp("overload"), seeds_settings)
    yield served
    served.stop()


def _search(base: str, number: int, client: httpx.Client | None = None, **extra) -> tuple[int, float, dict, dict]:
    owned = client is None
    client = httpx.Client(timeout=60) if owned else client
    try:
        started = time.perf_counter()
        response = client.post(base + "/search", json={"query": _question(number), "k": 5, **extra})
        return response.status_code, time.perf_counter() - started, response.json(), dict(response.headers)
    finally:
        if owned:
            client.close()


def _well_formed(data: dict, query: str) -> None:
    SearchOut.model_validate(data)
    assert data["query"] == query and data["reranked"] is True and len(data["results"]) == 5
    for result in data["results"]:
        assert result["end"] - result["start"] == len(result["text"])


def _requests(metrics: dict, status: str) -> float:
    return metrics.get(("askcorpus_requests_total", (("endpoint", "/search"), ("status", status))), 0.0)


def _rejections(metrics: dict, reason: str) -> float:
    return metrics[("askcorpus_rejections_total", (("lane", "rerank"), ("reason", reason)))]


def _searches_computed(metrics: dict) -> float:
    return metrics[("askcorpus_stage_duration_seconds_count", (("stage", "rerank"),))]


def test_burst_far_over_capacity_gets_only_200s_and_fast_503s(server):
    before = server.metrics()
    health_seconds: list[float] = []
    burst_over = threading.Event()

    def probe_health() -> None:
        with httpx.Client(timeout=10) as client:
            while not burst_over.is_set():
                started = time.perf_counter()
                assert client.get(server.base + "/health").status_code == 200
                health_seconds.append(time.perf_counter() - started)
                time.sleep(0.02)

    clients = [httpx.Client(timeout=60) for _ in range(24)]  # made up front: the burst times the server
    prober = threading.Thread(target=probe_health, daemon=True)
    prober.start()
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda n: _search(server.base, n, clients[n - 1000]), range(1000, 1024)))
    burst_over.set()
    prober.join(timeout=15)
    for client in clients:
        client.close()
    after = server.metrics()

    statuses = [status for status, *_ in answers]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses
    ok_seconds, busy_seconds = [], []
    for number, (status, seconds, data, headers) in zip(range(1000, 1024), answers):
        if status == 200:
            _well_formed(data, _question(number))
            ok_seconds.append(seconds)
        else:
            assert data["detail"].startswith("server busy:") and int(headers["retry-after"]) >= 1
            busy_seconds.append(seconds)
    # Turned away without waiting for a search: every 503 came back before a typical search finished, and so
    # did every /health.
    assert max(busy_seconds) < median(ok_seconds)
    assert health_seconds and max(health_seconds) < median(ok_seconds)
    # The bound held, and the metrics count exactly what the clients saw.
    assert after[("askcorpus_queue_length_max", RERANK)] <= QUEUE
    assert after[("askcorpus_in_progress_max", RERANK)] <= CONCURRENCY
    assert _requests(after, "200") - _requests(before, "200") == statuses.count(200)
    assert _requests(after, "503") - _requests(before, "503") == statuses.count(503)
    rejected = sum(_rejections(after, r) - _rejections(before, r) for r in ("queue_full", "deadline", "expired"))
    assert rejected == statuses.count(503)
    assert _searches_computed(after) - _searches_computed(before) == statuses.count(200)
    assert after[("askcorpus_queue_length", RERANK)] == 0 and after[("askcorpus_in_progress", RERANK)] == 0


def test_a_search_that_cannot_start_within_its_deadline_gets_503(server):
    before = server.metrics()
    with ThreadPoolExecutor(max_workers=2) as pool:
        busy = pool.submit(_search, server.base, 2000)
        server.wait_until("askcorpus_in_progress", 1)  # the slow search holds the only turn
        status, seconds, data, headers = _search(server.base, 2001, deadline_ms=150)
        assert busy.result()[0] == 200
    assert status == 503 and "deadline" in data["detail"] and int(headers["retry-after"]) >= 1
    assert seconds < 5
    after = server.metrics()
    # Turned away at once, or (with no estimate of a search's duration yet) dropped when its budget ran out.
    assert sum(_rejections(after, r) - _rejections(before, r) for r in ("deadline", "expired")) == 1
    assert _searches_computed(after) - _searches_computed(before) == 1


def test_a_client_that_left_while_waiting_is_not_computed(server):
    before = server.metrics()
    body = b'{"query": "' + _question(3000).encode() + b'", "k": 5}'
    with ThreadPoolExecutor(max_workers=1) as pool:
        busy = pool.submit(_search, server.base, 3001)
        server.wait_until("askcorpus_in_progress", 1)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            server.wait_until("askcorpus_queue_length", 1)  # it is waiting for its turn
        assert busy.result()[0] == 200  # the socket above closed while the first search computed
    deadline = time.monotonic() + 10
    while _rejections(server.metrics(), "disconnected") == _rejections(before, "disconnected"):
        assert time.monotonic() < deadline, "the disconnected search was never accounted for"
        time.sleep(0.05)
    after = server.metrics()
    assert _rejections(after, "disconnected") - _rejections(before, "disconnected") == 1
    assert _searches_computed(after) - _searches_computed(before) == 1  # only the first search ran the model


def test_sigterm_while_busy_finishes_every_accepted_request_and_exits_0(tmp_path, seeds_settings):
    # Long enough to drain all five even on a busy machine.
    served = Served(tmp_path, seeds_settings, ASKCORPUS_RERANK_QUEUE="8", ASKCORPUS_SHUTDOWN_TIMEOUT="60")
    try:
        with ThreadPoolExecutor(max_workers=5) as pool:
            pending = [pool.submit(_search, served.base, n) for n in range(4000, 4005)]
            served.wait_until("askcorpus_queue_length", 4)  # 1 computing, 4 waiting
            served.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.TransportError):  # no longer accepting
                httpx.get(served.base + "/health", timeout=2)
            answers = [future.result(timeout=60) for future in pending]
        for number, (status, _, data, _) in zip(range(4000, 4005), answers):
            assert status == 200
            _well_formed(data, _question(number))
        assert served.process.wait(timeout=30) == 0
        assert "stopped by SIGTERM" in served.log_text()
    finally:
        served.stop()
