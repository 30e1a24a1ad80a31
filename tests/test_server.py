"""The real service: `askcorpus serve` as a subprocess on a free loopback port, talked to over HTTP.

Includes an index swap (by `askcorpus index` from outside, then by POST /admin/reindex) while requests keep
flowing: every response during the swaps must be a 200 with a well-formed result.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from askcorpus.api import SearchOut
from askcorpus.build import build_index

from conftest import free_port, start_server, stop_server

pytestmark = pytest.mark.slow

TOKEN = "server-test-token-5678"
QUESTIONS = [
    "What is the primary threat in the region according to USIP?",
    "Why is ISKP dangerous for Afghanistan's neighbours?",
    "How does ISKP recruit new members?",
    "What role could the Shanghai Cooperation Organisation play?",
    "Taliban return to power",
    "refugee flows and cross-border security",
    "Who is al-Qaeda allied with?",
    "economic fragility of Afghanistan",
]
FESTIVAL = ("The Zorblaxian marmalade festival is held every spring in the valley of Quenth. "
            "Its committee publishes the zorblaxian programme in March, with tastings and a parade.\n")
LIGHTHOUSE = ("The Vrenmoor lighthouse keepers recorded forty storms in a single winter. "
              "Vrenmoor lies on a rocky cape and its lamp was first lit in 1872.\n")


@dataclass
class Server:
    base: str
    port: int
    corpus: Path
    index: Path
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory, seeds_settings):
    root = tmp_path_factory.mktemp("server")
    corpus, index = root / "corpus", root / "index"
    shutil.copytree(seeds_settings.corpus, corpus)
    shutil.copytree(seeds_settings.index, index)  # the session's real-model build: no build at start-up
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ASKCORPUS_RELOAD_INTERVAL": "0.5",
           "ASKCORPUS_ADMIN_TOKEN": TOKEN, "ASKCORPUS_ENCODER_CACHE": str(seeds_settings.encoder_cache_dir),
           # Room for all 32 clients to wait their turn, and the 4 clients of the swap test computing at once:
           # these tests check answers and swaps, test_overload the limits.
           "ASKCORPUS_RERANK_CONCURRENCY": "4", "ASKCORPUS_RERANK_QUEUE": "64", "ASKCORPUS_SEARCH_DEADLINE": "120"}
    env.pop("ASKCORPUS_HOST", None)
    log_path = root / "server.log"
    process = start_server(port, ["--index", str(index), "--corpus", str(corpus)], env, log_path)
    try:
        yield Server(f"http://127.0.0.1:{port}", port, corpus, index, log_path, process)
    finally:
        stop_server(process)


def _well_formed(data: dict, query: str) -> None:
    SearchOut.model_validate(data)
    assert data["query"] == query.strip()
    assert [r["rank"] for r in data["results"]] == list(range(1, len(data["results"]) + 1))
    for result in data["results"]:
        assert result["end"] - result["start"] == len(result["text"])


def test_starts_on_loopback_and_reports_health(server, seeds_settings):
    health = httpx.get(server.base + "/health").json()
    assert health["status"] == "ok" and health["index_loaded"] is True
    assert health["model"] == "all-MiniLM-L6-v2" and health["documents"] == 5 and health["passages"] > 0
    assert health["encoder"] == "onnx"  # the default backend, from the export the session made
    assert health["reload_interval"] == 0.5
    log = server.log_text()
    start = next(line for line in log.splitlines() if "serving index" in line)
    assert str(server.index) in start and "all-MiniLM-L6-v2" in start
    assert f"http://127.0.0.1:{server.port}/" in start
    page = httpx.get(server.base + "/")
    assert page.status_code == 200 and "askcorpus" in page.text


def test_concurrent_clients_get_correct_answers(server, searcher):
    expected = {}
    for query in QUESTIONS:
        data = searcher.search(query, 5).to_dict()
        expected[query] = [(r["doc_id"], r["start"], r["end"]) for r in data["results"]]
    failures: list[str] = []
    lock = threading.Lock()

    def client_thread(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for _ in range(6):
                query = rng.choice(QUESTIONS)
                response = client.post("/search", json={"query": query, "k": 5})
                got = [(r["doc_id"], r["start"], r["end"]) for r in response.json()["results"]] \
                    if response.status_code == 200 else None
                if got != expected[query] or response.json()["query"] != query:
                    with lock:
                        failures.append(f"{query!r}: {response.status_code} {got} != {expected[query]}")

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(32)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "clients still running after 120s"
    assert not failures, failures[:5]
    # The server stayed responsive: 192 real-model searches from 32 clients in well under a minute on 2 cores.
    assert time.monotonic() - started < 60


class Traffic:
    """Client threads that keep searching (and reading documents) until stopped; bounded in count and time."""

    def __init__(self, base: str, clients: int = 4, max_requests: int = 2000, max_seconds: float = 150) -> None:
        self.base = base
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                with self.lock:
                    if self.ok + len(self.failures) >= self.max_requests:
                        return
                query = rng.choice(QUESTIONS)
                try:
                    if rng.random() < 0.8:
                        mode = rng.choice(["hybrid", "dense", "bm25"])
                        response = client.get("/search", params={"q": query, "k": 5, "mode": mode})
                        if response.status_code == 200:
                            _well_formed(response.json(), query)
                    else:
                        response = client.get("/documents")
                        if response.status_code == 200:
                            doc = rng.choice(response.json()["documents"])
                            response = client.get(f"/documents/{doc['doc_id']}")
                    assert response.status_code == 200, f"{response.status_code} {response.text[:200]}"
                except Exception as error:  # noqa: BLE001 - every failure is recorded and reported
                    with self.lock:
                        self.failures.append(f"{type(error).__name__}: {error}")
                else:
                    with self.lock:
                        self.ok += 1

    def count(self) -> int:
        with self.lock:
            return self.ok + len(self.failures)


def _top_doc(base: str, query: str) -> str | None:
    results = httpx.get(base + "/search", params={"q": query, "mode": "bm25", "k": 1}, timeout=30).json()["results"]
    return results[0]["doc_id"] if results else None


def test_index_swaps_while_requests_keep_flowing(server, seeds_settings, real_embedder):
    first_build = httpx.get(server.base + "/health").json()["build"]
    assert _top_doc(server.base, "zorblaxian marmalade") != "zz_festival.txt"
    with Traffic(server.base) as traffic:
        # 1. A build by another process (this one: what `askcorpus index` runs, without loading the model
        #    a third time); the running server notices the new build and swaps to it by itself.
        (server.corpus / "zz_festival.txt").write_text(FESTIVAL, encoding="utf-8")
        before = traffic.count()
        build_index(seeds_settings.with_overrides(corpus=server.corpus, index=server.index), real_embedder)
        built_at = time.monotonic()
        while _top_doc(server.base, "zorblaxian marmalade") != "zz_festival.txt":
            assert time.monotonic() - built_at < 10, "the new index was not served within 10 s"
            time.sleep(0.1)
        health = httpx.get(server.base + "/health").json()
        assert health["build"] != first_build and health["documents"] == 6

        # 2. POST /admin/reindex: token checked, then a rebuild and swap inside the server.
        (server.corpus / "zz_lighthouse.txt").write_text(LIGHTHOUSE, encoding="utf-8")
        assert httpx.post(server.base + "/admin/reindex").status_code == 401
        assert httpx.post(server.base + "/admin/reindex", headers={"Authorization": "Bearer nope"}).status_code == 403
        response = httpx.post(server.base + "/admin/reindex", headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=240)
        assert response.status_code == 200, response.text
        assert "zz_lighthouse.txt" in response.json()["added"], response.json()
        assert response.json()["swapped"] is True
        assert _top_doc(server.base, "Vrenmoor lighthouse") == "zz_lighthouse.txt"
        time.sleep(0.5)
        during = traffic.count() - before
    assert not traffic.failures, traffic.failures[:5]
    assert during >= 20, f"only {during} requests ran during the swaps"
    assert httpx.get(server.base + "/health").json()["reloads"] >= 2


def test_raw_traversal_paths_are_404(server):
    """Paths sent byte for byte (an HTTP client would normalise ../ away)."""
    for target in ["/documents/../../../../etc/passwd", "/documents/..%2f..%2f..%2fetc%2fpasswd",
                   "/documents//etc/passwd", "/documents/%2e%2e/%2e%2e/%2e%2e/etc/passwd?start=0&end=10",
                   "/documents/..\\..\\secret.txt", "/documents/a%00b"]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = reply.split(b"\r\n", 1)[0]
        assert b" 404 " in status + b" ", (target, status)
        assert b"root:" not in reply


def test_one_log_line_per_request(server):
    httpx.get(server.base + "/documents/unknown-doc")
    httpx.post(server.base + "/search", json={"query": "  "})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = server.log_text()
        if "GET /documents/unknown-doc 404" in log and "POST /search 422" in log:
            break
        time.sleep(0.1)
    lines = server.log_text().splitlines()
    assert any("GET /documents/unknown-doc 404 " in line and line.endswith("ms") for line in lines)
    assert any("POST /search 422 " in line for line in lines)
    assert any("GET /health 200 " in line for line in lines)
    assert not any("Traceback" in line for line in lines)
