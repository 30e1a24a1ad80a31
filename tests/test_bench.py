"""Bench helpers: percentile math, synthetic data, tables and reports, the load generator; one slow smoke run."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from argparse import Namespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from askcorpus.bench import render_text, write_report
from askcorpus.bench.inproc import FLOOR_ONNX, FLOOR_TORCH, interleaved, load_questions, measure_floors
from askcorpus.bench.load import run_load
from askcorpus.bench.stats import Check, Section, fmt, markdown_table, percentile, summarize, text_table
from askcorpus.bench.synth import (
    BUILTIN_QUESTIONS,
    VectorModel,
    seed_sentences,
    synthetic_documents,
    synthetic_texts,
    vocabulary_of,
    write_corpus,
)
from askcorpus.config import Settings


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy_linear(q):
    values = list(np.random.default_rng(q).exponential(size=37))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges():
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_is_in_milliseconds():
    s = summarize([0.001] * 10 + [0.1])
    assert s["n"] == 11 and s["p50_ms"] == pytest.approx(1.0) and s["p99_ms"] > s["p95_ms"] >= s["p50_ms"]


def test_interleaved_times_every_variant_after_every_other_alike():
    # What runs just before a variant changes its time (a PyTorch encode evicts the ONNX model from the caches),
    # so no variant may always follow the same one: every ordered pair must occur about equally often.
    calls: list[str] = []
    names = ["torch floor", "onnx floor", "dense", "bm25", "hybrid"]
    variants = {name: (lambda q, name=name: calls.append(name)) for name in names}
    times = interleaved(variants, [f"q{i}" for i in range(400)], rounds=1, budget=60)
    assert all(len(times[name]) == 400 for name in names)
    assert all(sorted(calls[i * 5:(i + 1) * 5]) == sorted(names) for i in range(400))  # each once per question
    pairs = {(a, b): 0 for a in names for b in names if a != b}
    for before, after in zip(calls, calls[1:]):
        if before != after:
            pairs[(before, after)] += 1
    expected = sum(pairs.values()) / len(pairs)
    assert min(pairs.values()) > 0.6 * expected and max(pairs.values()) < 1.4 * expected, pairs
    calls.clear()
    interleaved(variants, ["a", "b", "c"], rounds=1, budget=60)
    first = list(calls)
    calls.clear()
    interleaved(variants, ["a", "b", "c"], rounds=1, budget=60)
    assert calls == first  # seeded: the same order on every run


def test_http_floors_are_timed_in_blocks_with_the_serving_floor_next_to_the_http_run():
    # A PyTorch encode right before an ONNX one evicts the ONNX model from the caches (2.59 -> 4.42 ms here):
    # the serving floor must neither follow it nor be mixed with it.
    from types import SimpleNamespace

    calls: list[str] = []

    def encoder(name):
        def encode(texts):
            calls.append(name)
            return np.ones((len(texts), 4), dtype=np.float32) / 2
        return encode

    searcher = SimpleNamespace(index=SimpleNamespace(vectors=np.eye(4, dtype=np.float32)),
                               embedder=SimpleNamespace(backend="onnx", encode=encoder("onnx")))
    reference = SimpleNamespace(model=SimpleNamespace(encode=lambda texts, **_: encoder("torch")(texts)))
    questions = [f"q{i}" for i in range(20)]
    before = measure_floors(searcher, reference, questions, budget=30, serving_last=True)
    assert calls == ["torch"] * 20 + ["onnx"] * 20
    assert len(before[FLOOR_ONNX]) == len(before[FLOOR_TORCH]) == 20
    calls.clear()
    measure_floors(searcher, reference, questions, budget=30, serving_last=False)
    assert calls == ["onnx"] * 20 + ["torch"] * 20


def test_seed_sentences_and_synthetic_corpus_are_deterministic(seeds_dir, tmp_path):
    sentences = seed_sentences(seeds_dir)
    assert len(sentences) > 100 and all(len(s.split()) >= 3 for s in sentences)
    first = synthetic_documents(sentences, 5, seed=3)
    assert first == synthetic_documents(sentences, 5, seed=3)
    assert first != synthetic_documents(sentences, 5, seed=4)
    assert all("\n\n" in d or len(d) > 0 for d in first)
    paths = write_corpus(first, tmp_path / "c")
    assert [p.read_text(encoding="utf-8") for p in paths] == first


def test_synthetic_documents_need_sentences():
    with pytest.raises(ValueError):
        synthetic_documents([], 1)


def test_vector_model_gives_unit_vectors_with_neighbourhoods():
    model = VectorModel(dim=64, latent=16, topics=20)
    base = model.sample(2000, stream=1)
    assert base.dtype == np.float32 and base.shape == (2000, 64)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(base, model.sample(2000, stream=1))
    queries = model.sample(50, stream=2)
    # Topic structure: a query's nearest vector is much closer than a random one (uniform noise is not).
    sims = queries @ base.T
    assert float(np.mean(sims.max(axis=1))) > float(np.mean(sims)) + 0.3


def test_synthetic_texts_count_and_vocabulary(seeds_dir):
    vocabulary = vocabulary_of(seed_sentences(seeds_dir), extra=100)
    assert len(set(vocabulary)) == len(vocabulary)
    batches = list(synthetic_texts(vocabulary, 25, chunk=10, words=(5, 8)))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert all(5 <= len(t.split()) <= 8 for b in batches for t in b)


def test_tables_and_formatting():
    assert fmt(None) == "-" and fmt(float("nan")) == "-" and fmt(1234.5) == "1,234" and fmt(0.12345) == "0.123"
    table = text_table(["a", "b"], [["x", 1.5], ["yy", 22.0]])
    assert table.splitlines()[0].startswith("a ") and "22.00" in table
    md = markdown_table(["a", "b"], [["x|y", 2.0]])
    assert md.splitlines()[1] == "|---|---|" and "x\\|y" in md


def test_load_questions_falls_back_to_builtin(tmp_path):
    questions, source = load_questions(tmp_path / "absent.jsonl")
    assert questions == list(BUILTIN_QUESTIONS) and source == "built-in list"
    assert len(BUILTIN_QUESTIONS) >= 30
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "one?"}\n\nnot json\n{"question": "two?"}\n', encoding="utf-8")
    assert load_questions(qa) == (["one?", "two?"], str(qa))
    assert load_questions(qa, limit=1)[0] == ["one?"]


def test_report_files(tmp_path):
    section = Section("x", "X", ["name", "value"], rows=[["a", 1.0]], notes=["n"],
                      checks=[Check("t <= 1", "0.5", True), Check("u", "not run", None)])
    skipped = Section("y", "Y", [], skipped="no server")
    info = {"cpus": 2, "cpu_model": "cpu", "memory_gb": 24, "platform": "p", "python": "3.11", "quick": True,
            "started": "now", "total_seconds": 1.0, "load_average_at_start": [0], "load_average_at_end": [0]}
    text = render_text(info, [section, skipped])
    assert "[MET] t <= 1: 0.5" in text and "[not measured] u" in text and "skipped: no server" in text
    write_report(tmp_path / "r", info, [section, skipped])
    data = json.loads((tmp_path / "r" / "bench.json").read_text(encoding="utf-8"))
    assert [s["key"] for s in data["sections"]] == ["x", "y"]
    assert "| a | 1.00 |" in (tmp_path / "r" / "bench.md").read_text(encoding="utf-8")


class _Search(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        payload = json.dumps({"query": body["query"], "results": []}).encode()
        # "cheap only" answers 200 only to a request that asks for the first stage alone
        wrong = body["query"] == "cheap only" and body.get("rerank") is not False
        self.send_response(422 if wrong else {"bad": 422, "busy": 503}.get(body["query"], 200))
        if body["query"] == "busy":
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def tiny_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Search)
    server.protocol_version = "HTTP/1.1"
    _Search.protocol_version = "HTTP/1.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_load_generator_is_bounded_by_requests(tiny_server):
    result = run_load(tiny_server, ["a", "b", "bad"], concurrency=4, requests=30, duration=20)
    assert result["ok"] == 20 and result["errors"] == 10 and result["error_kinds"] == ["HTTP 422"]
    assert len(result["latencies_s"]) == 20 and result["rps"] > 0


def test_load_generator_counts_503s_apart_and_can_honour_retry_after(tiny_server):
    eager = run_load(tiny_server, ["busy", "a"], concurrency=2, requests=40, duration=20)
    assert eager["statuses"] == {"503": 20, "200": 20} and len(eager["rejected_latencies_s"]) == 20
    assert eager["transport_errors"] == 0
    # Told to come back in a second, each client asks once more at most within 0.5 s: its first request.
    polite = run_load(tiny_server, ["busy"], concurrency=2, requests=40, duration=0.5, honour_retry_after=True)
    assert polite["statuses"] == {"503": 2}


def test_load_generator_is_bounded_by_time(tiny_server):
    result = run_load(tiny_server, ["a"], concurrency=2, requests=100_000, duration=0.3)
    assert 0 < result["ok"] < 100_000 and result["elapsed_s"] < 5


def test_round_trips_time_each_request_on_one_connection(tiny_server):
    from askcorpus.bench.http import round_trips

    seconds = round_trips(tiny_server, "/health", count=7)
    assert len(seconds) == 7 and all(0 < s < 5 for s in seconds)
    with pytest.raises(RuntimeError, match="404"):
        round_trips(tiny_server, "/nowhere", count=2)


def test_load_connection_keeps_alive_and_reads_each_answer_whole(tiny_server):
    from urllib.parse import urlsplit

    from askcorpus.bench.load import Connection

    parts = urlsplit(tiny_server)
    connection = Connection(parts.hostname, parts.port, timeout=5)
    first = connection.post("/search", json.dumps({"query": "a" * 70_000}).encode())  # answer > one recv
    sock = connection.sock
    second = connection.post("/search", json.dumps({"query": "bad"}).encode())
    assert first[0] == 200 and json.loads(first[1])["query"] == "a" * 70_000
    assert second[0] == 422 and json.loads(second[1])["query"] == "bad"
    assert connection.sock is sock and connection.buffer == b""
    connection.close()


def test_load_connection_refuses_what_it_cannot_read():
    from askcorpus.bench.load import Connection, HTTPError

    answers = iter([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"garbage\r\n\r\n", b""])
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer():
            for reply in answers:
                peer, _ = server.accept()
                with peer:
                    peer.recv(65536)
                    peer.sendall(reply)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        for message in ("without Content-Length", "not an HTTP status line", "closed the connection"):
            connection = Connection("127.0.0.1", server.getsockname()[1], timeout=5)
            with pytest.raises(HTTPError, match=message):
                connection.post("/search", b"{}")
            connection.close()
        thread.join(5)


def test_run_measured_reports_each_process_its_own_peak_memory():
    from askcorpus.bench.http import run_measured

    def child(megabytes: int) -> dict:
        # It holds its block a moment, as a real command holds its index: the peak is sampled while it runs.
        code = (f"import sys, time; block = b'x' * ({megabytes} << 20); print(len(block) >> 20); time.sleep(0.3); "
                "sys.exit(3)")
        return run_measured([sys.executable, "-c", code], dict(os.environ), timeout=60)

    big, small = child(300), child(60)
    assert big["returncode"] == small["returncode"] == 3 and big["stdout"].strip() == "300"
    assert big["peak_rss_mb"] >= 300 and big["wall_s"] > 0
    # The second child's own peak, not the largest of all children so far.
    assert 60 <= small["peak_rss_mb"] < 200
    with pytest.raises(subprocess.TimeoutExpired):
        run_measured([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), timeout=0.5)


def test_load_generator_only_targets_loopback():
    with pytest.raises(ValueError, match="loopback"):
        run_load("http://10.0.0.1:80", ["a"], concurrency=1, requests=1, duration=1)


def test_scale_rows_small():
    from askcorpus.bench.scale import run_dense

    rows = run_dense(3000, Settings(), latency_queries=20, recall_queries=50, log=lambda m: None)
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"exact", "flat", "hnsw", "ivf"}
    assert by_kind["flat"]["recall_at_10"] == 1.0 and by_kind["exact"]["recall_at_10"] > 0.99
    assert by_kind["hnsw"]["recall_at_10"] > 0.9 and len(by_kind["hnsw"]["sweep"]) == 5
    assert by_kind["exact"]["bytes_per_vector"] == 384 * 4


def test_scale_checks_say_where_hnsw_overtakes_exact_search():
    from askcorpus.bench.scale import _checks

    def row(n, kind, p50, one_thread=None, recall=1.0):
        return {"n": n, "kind": kind, "p50_ms": p50, "p50_ms_1thread": one_thread, "recall_at_10": recall}

    section = Section("scale", "5", [])
    # At 20k flat is slower than HNSW only at its better (one-thread) time: the one a served query gets.
    rows = [row(10_000, "flat", 0.3, 0.18), row(10_000, "hnsw", 0.24),
            row(20_000, "flat", 1.2, 0.84), row(20_000, "hnsw", 0.51, recall=0.999)]
    _checks(section, Settings(approximate_above=20_000), rows)
    assert section.data["hnsw_faster_from"] == 20_000
    assert section.data["flat_ms_per_100k"] == pytest.approx(0.84 / 20_000 * 1e5)
    note = next(n for n in section.notes if n.startswith("exact flat vs HNSW"))
    assert "10,000 0.18 vs 0.24 ms (1.000)" in note and "HNSW is faster from 20,000" in note
    section = Section("scale", "5", [])
    _checks(section, Settings(), [row(10_000, "flat", 0.1), row(10_000, "hnsw", 0.2)])
    assert section.data["hnsw_faster_from"] is None


@pytest.mark.slow
def test_bench_quick_smoke(tmp_path, monkeypatch, capsys):
    """Sections 1 and 5 of `bench --quick` on small sizes, with a report: each verdict follows from its figures."""
    from askcorpus.bench import main

    monkeypatch.setenv("ASKCORPUS_BENCH_SECTIONS", "1,5")
    monkeypatch.setenv("ASKCORPUS_BENCH_SIZES", "2000")
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo)
    args = Namespace(quick=True, report=tmp_path / "report", index=None, corpus=None)
    assert main(args, Settings(corpus=repo / "seeds", index=tmp_path / "unused")) == 0
    out = capsys.readouterr().out
    assert "1. In-process query latency" in out and "5. Scale" in out
    data = json.loads((tmp_path / "report" / "bench.json").read_text(encoding="utf-8"))
    keys = {s["key"]: s for s in data["sections"]}
    assert keys["inproc"]["skipped"] is None and keys["scale"]["skipped"] is None
    # The verdict is the one the section's own figures give: hybrid's p50 against the serving floor's.
    from askcorpus.bench.inproc import HYBRID_TARGET

    inproc = keys["inproc"]["data"]
    hybrid, floor = inproc["hybrid"]["p50_ms"], inproc[inproc["serving_floor"]]["p50_ms"]
    assert 0 < floor < hybrid  # the floor is encode + bare search; a search does that and more
    assert keys["inproc"]["checks"][0]["met"] is (hybrid / floor <= HYBRID_TARGET)
    assert f"{hybrid / floor:.3f}x" in keys["inproc"]["checks"][0]["measured"]


def test_load_connection_sends_again_when_the_server_closed_an_idle_connection():
    from askcorpus.bench.load import Connection

    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer_once_per_connection():
            for _ in range(2):
                peer, _ = server.accept()
                with peer:  # answers one request, then closes as an idle keep-alive timeout would
                    peer.recv(65536)
                    peer.sendall(reply)

        thread = threading.Thread(target=answer_once_per_connection, daemon=True)
        thread.start()
        connection = Connection("127.0.0.1", server.getsockname()[1], timeout=5)
        assert connection.get("/health") == (200, b"{}")
        time.sleep(0.1)
        assert connection.get("/health") == (200, b"{}")  # on a second connection
        connection.close()
        thread.join(5)


def test_rerank_section_needs_an_onnx_cross_encoder(fake_settings):
    from askcorpus.bench.rerank import run

    section = run(fake_settings, searcher=None, index_dir=fake_settings.index, questions=["q"], quick=True,
                  work=fake_settings.index, env={})
    assert section.skipped and "overlap" in section.skipped and not section.rows


@pytest.mark.slow
def test_rerank_floor_runs_the_same_model_as_the_reranker():
    """The floor is the reranker's own model in one padded call: a call of one pair pads nothing, so it must give
    the reranker's score for that pair; a padded call of several gives each pair a score near its own."""
    from askcorpus.bench.rerank import PaddedCallFloor
    from askcorpus.rerank import load_reranker

    reranker = load_reranker("cross-encoder/ms-marco-MiniLM-L-12-v2", cache_size=0)
    floor = PaddedCallFloor(reranker.folder, reranker.max_tokens)
    question = "Who leads ISKP?"
    texts = ["As of 2022, ISKP is led by Sanaullah Ghafari alias Shahab al-Muhajir.",
             "The ferry leaves at noon on Tuesdays, and tickets are sold at the harbour office by the quay."]
    own = reranker.score_uncached(question, texts)
    assert [float(floor(question, [t])[0]) for t in texts] == pytest.approx(own.tolist(), abs=1e-5)
    together = floor(question, texts)
    assert together.shape == (2,) and together[0] > together[1]
    assert together == pytest.approx(own, abs=0.5)  # int8: a shared, padded call moves scores a little


def test_generation_section_says_why_it_is_skipped_without_a_model(monkeypatch):
    from askcorpus.bench import generate

    monkeypatch.delenv("ASKCORPUS_LLM_GGUF", raising=False)
    monkeypatch.setattr("askcorpus.generate.llamacpp.bundled_test_model", lambda: None)
    section = generate.run(Settings(), searcher=None, index_dir=Path("unused"), questions=["q"], source="x",
                           quick=True, log=lambda _: None)
    assert section.skipped and "ASKCORPUS_LLM_GGUF" in section.skipped and not section.rows and not section.checks


def test_generation_section_prefers_the_configured_gguf(monkeypatch, tmp_path):
    from askcorpus.bench.generate import model_path

    monkeypatch.setenv("ASKCORPUS_LLM_GGUF", str(tmp_path / "mine.gguf"))
    assert model_path(Settings(llm_gguf=None)) == (tmp_path / "mine.gguf", "ASKCORPUS_LLM_GGUF")
    assert model_path(Settings(llm_gguf=tmp_path / "other.gguf"))[0] == tmp_path / "other.gguf"


def _quick_section(tmp_path, monkeypatch, capsys, number: str, key: str, title: str) -> dict:
    """One section of `bench --quick` over the seeds, run through `bench.main`: its entry in bench.json."""
    from askcorpus.bench import main

    monkeypatch.setenv("ASKCORPUS_BENCH_SECTIONS", number)
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo)
    args = Namespace(quick=True, report=tmp_path / "report", index=None, corpus=None)
    assert main(args, Settings(corpus=repo / "seeds", index=tmp_path / "unused")) == 0
    assert title in capsys.readouterr().out
    data = json.loads((tmp_path / "report" / "bench.json").read_text(encoding="utf-8"))
    section = next(s for s in data["sections"] if s["key"] == key)
    assert section["skipped"] is None, section["skipped"]
    return section


@pytest.mark.slow
def test_generation_section_quick(tmp_path, monkeypatch, capsys, smollm2_gguf):
    """Section 12 of `bench --quick` with the real SmolLM2 GGUF: every figure measured, positive, and each ratio and
    verdict the one its own figures give."""
    from askcorpus.bench.generate import CHECK_TARGET, MIN_TOKENS, PREPARE_TARGET_S, QUICK, STREAM_TARGET

    monkeypatch.delenv("ASKCORPUS_LLM_GGUF", raising=False)
    section = _quick_section(tmp_path, monkeypatch, capsys, "12", "generation", "12. Generated answers")
    figures = section["data"]
    assert figures["model"] == smollm2_gguf.name and figures["max_tokens"] == QUICK["max_tokens"]
    for name in ("prepare", "first_token", "check", "rerank", "answer"):
        stage = figures[f"{name}_ms"]
        assert stage["n"] >= 3 and 0 < stage["p50"] <= stage["p90"], (name, stage)
    # prepare, then the first token, all within the whole answer; the check after the last token is part of it too.
    assert figures["prepare_ms"]["p50"] < figures["first_token_ms"]["p50"] < figures["answer_ms"]["p50"]
    assert figures["check_ms"]["p50"] < figures["answer_ms"]["p50"]
    scored = figures["check_pairs_scored"]  # the check's cross-encoder pairs, per answer
    assert len(scored) == figures["check_ms"]["n"] and figures["check_scored_ms"]["n"] == sum(1 for n in scored if n)

    pairs = figures["pairs"]
    assert len(pairs) >= 3
    for pair in pairs:  # both sides answered the same question from the same results with the same prompt
        assert pair["same_results"] and pair["http_prompt_tokens"] == pair["direct_prompt_tokens"] > 0
        assert 0 < pair["http_tokens"] <= QUICK["max_tokens"] and 0 < pair["direct_tokens"] <= QUICK["max_tokens"]
    assert [p["http_first"] for p in pairs][:2] == [True, False]  # the order alternates
    kept = [p for p in pairs if min(p["http_tokens"], p["direct_tokens"]) >= MIN_TOKENS]
    ratios = figures["ratios"]
    assert len(ratios) == len(figures["http_tokens_per_s"]) == len(figures["direct_tokens_per_s"]) == len(kept) >= 1
    assert all(rate > 0 for rate in figures["http_tokens_per_s"] + figures["direct_tokens_per_s"])
    for pair, http, direct, paired in zip(kept, figures["http_tokens_per_s"], figures["direct_tokens_per_s"],
                                          ratios):
        assert http == pytest.approx(pair["http_tokens"] / pair["http_span_s"])
        assert direct == pytest.approx(pair["direct_tokens"] / pair["direct_span_s"])
        assert paired == pytest.approx(http / direct)
    assert figures["ratio_p50"] == pytest.approx(percentile(ratios, 50))

    prepare, check, stream = section["checks"]
    assert prepare["met"] is (figures["prepare_ms"]["p50"] <= PREPARE_TARGET_S * 1e3)
    assert check["met"] is (figures["check_ms"]["p50"] <= CHECK_TARGET * figures["rerank_ms"]["p50"])
    assert stream["met"] is (figures["ratio_p50"] >= STREAM_TARGET)
    assert f"{figures['ratio_p50']:.3f}x" in stream["measured"]


def test_load_generator_asks_for_the_cheap_path_when_told(tiny_server):
    assert run_load(tiny_server, ["cheap only"], concurrency=1, requests=3, duration=5)["statuses"] == {"422": 3}
    cheap = run_load(tiny_server, ["cheap only"], concurrency=1, requests=3, duration=5, rerank=False)
    assert cheap["statuses"] == {"200": 3}


def test_process_cpu_seconds_grows_with_work_and_is_none_for_no_process():
    from askcorpus.bench.stats import process_cpu_seconds

    before = process_cpu_seconds(os.getpid())
    sum(i * i for i in range(3_000_000))
    after = process_cpu_seconds(os.getpid())
    assert before is not None and after > before
    assert process_cpu_seconds(2 ** 22 + 7) is None  # above pid_max: no such process


def _cost_data(cheap_1: float, cheap_32: float, cpu: float, p50: float, burst: float) -> dict:
    def cheap(one, many):
        return {1: {"rps": one}, 8: {"rps": (one + many) / 2}, 32: {"rps": many}}

    def server(cpu_ms, p50_ms, rps, rejected_p99=10.0):
        return {"cheap": cheap(100.0, 150.0), "reranked": {"cpu_ms": cpu_ms, "p50_ms": p50_ms},
                "burst": {"rps": rps, "rejected": 50, "rejected_p99_ms": rejected_p99, "health_p99_ms": 5.0,
                          "health_not_200": 0, "other": 0, "statuses": {"200": 10, "503": 50}}}

    return {"reranking off": {"cheap": cheap(cheap_1, cheap_32)},
            "e622b11 variant": server(800.0, 400.0, 2.0),
            "default": server(cpu, p50, burst) | {"cheap": cheap(cheap_1, cheap_32)}}


@pytest.mark.parametrize("figures, verdicts", [
    ((100.0, 260.0, 390.0, 210.0, 3.7), [True, True, True, True, True, True, True, True]),
    ((100.0, 240.0, 410.0, 230.0, 3.5), [False, False, False, False, False, True, True, True]),
])
def test_cost_section_holds_each_figure_to_its_target_against_the_variant(figures, verdicts):
    """Section 13's verdicts follow from its own figures: 32 clients against one, CPU and p50 against the
    variant's 800 and 400 ms, the burst's answered/s against the variant's 2.0."""
    from askcorpus.bench import cost

    section = Section("cost", "13", [])
    cost._checks(section, _cost_data(*figures))
    assert [check.met for check in section.checks] == verdicts
    assert "(390 vs 800 ms)" in section.checks[2].measured or not verdicts[2]


@pytest.mark.slow
def test_cost_section_quick_against_real_servers(tmp_path, monkeypatch, capsys):
    """Section 13 of `bench --quick` with three real servers: every figure measured, the variant's single gate
    turning the cheap path away at 32 clients, and each verdict the one its own figures give."""
    section = _quick_section(tmp_path, monkeypatch, capsys, "13", "cost", "13. Cost per question")
    servers = section["data"]["servers"]
    for label in ("reranking off", "e622b11 variant", "default"):
        assert all(servers[label]["cheap"][str(n)]["rps"] > 0 for n in (1, 8, 32)), label
    variant, default = servers["e622b11 variant"], servers["default"]
    assert variant["cheap"]["32"]["statuses"].get("503", 0) > 0  # 2 turns + 8 places for 32 clients
    assert set(default["cheap"]["32"]["statuses"]) == {"200"}  # the lanes admit them all
    for server in (variant, default):
        assert server["reranked"]["answered"] > 0 and server["reranked"]["cpu_ms"] > 0
        assert set(server["burst"]["statuses"]) <= {"200", "503"}
    checks = {c["target"]: c["met"] for c in section["checks"]}
    cpu = next(v for k, v in checks.items() if k.startswith("CPU per reranked question"))
    assert cpu is (default["reranked"]["cpu_ms"] <= 0.5 * variant["reranked"]["cpu_ms"])
    burst = next(v for k, v in checks.items() if k.startswith("burst (64 clients"))
    assert burst is (default["burst"]["rps"] >= 1.8 * variant["burst"]["rps"])


def test_sections_are_chosen_by_name_or_number_in_run_order_and_an_unknown_one_is_named():
    from askcorpus.bench import SECTIONS, selected

    assert [s.name for s in selected("overload,rerank", quick=True)] == ["rerank", "overload"]
    assert [s.name for s in selected("9, 8", quick=True)] == ["rerank", "overload"]
    assert [s.name for s in selected("4", quick=True)] == ["build"]  # 3 and 4 come from one run
    assert "encoder" not in {s.name for s in selected("", quick=True)}
    assert [s.name for s in selected(None, quick=False)] == [s.name for s in SECTIONS]
    assert [s.name for s in selected("encoder", quick=True)] == ["encoder"]  # asked for by name: run
    from askcorpus.errors import ConfigError

    with pytest.raises(ConfigError, match="no bench section 'rerankk'.*rerank"):
        selected("rerankk", quick=True)
    assert len({s.name for s in SECTIONS}) == len({s.number for s in SECTIONS}) == len(SECTIONS)
