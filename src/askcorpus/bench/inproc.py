"""Section 1: in-process query latency of each mode against the floor (bare encode + bare FAISS search)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..answer import extract_answer
from ..config import MODES
from ..records import Result
from ..search import Searcher, reciprocal_rank_fusion
from .stats import Check, Section, percentile, ratio, summarize
from .synth import BUILTIN_QUESTIONS

HYBRID_TARGET = 1.3
FLOOR_TORCH = "floor, PyTorch (ST encode + FAISS flat)"
FLOOR_ONNX = "floor, ONNX Runtime (encode + FAISS flat)"


def load_questions(path: Path | None, limit: int | None = None) -> tuple[list[str], str]:
    """Questions from a QA JSONL file (field "question"), or the built-in list; and where they came from."""
    questions: list[str] = []
    if path is not None and path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                question = json.loads(line).get("question")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(question, str) and question.strip():
                questions.append(question.strip())
    source = str(path)
    if not questions:
        questions, source = list(BUILTIN_QUESTIONS), "built-in list"
    return (questions[:limit] if limit else questions), source


class Floor:
    """The least a dense query can cost: one bare encode of the query plus a bare FAISS flat search.

    `encode` is the model's own encode on one backend: sentence-transformers on PyTorch (the floor as first
    defined) or the bare ONNX Runtime session of the export (the floor that backend lowers it to).
    """

    def __init__(self, searcher: Searcher, encode: Callable[[list[str]], np.ndarray]) -> None:
        import faiss

        self.encode = encode
        vectors = np.ascontiguousarray(searcher.index.vectors, dtype=np.float32)
        self.flat = faiss.IndexFlatIP(vectors.shape[1])
        self.flat.add(vectors)

    def __call__(self, query: str, k: int = 10):
        from ..index.faiss_backend import one_openmp_thread

        vector = self.encode([query])
        # One OpenMP thread, as the served index searches: FAISS's own libgomp at two threads keeps spinning
        # beside the model's threads and slows the next encode (about +45% at low load, far more on a busy
        # machine), which would flatter the ratio.
        with one_openmp_thread():
            return self.flat.search(vector, k)


def floors(searcher: Searcher, reference) -> dict[str, Floor]:
    """The PyTorch floor (`reference`: the sentence-transformers model), and the ONNX one when that serves."""
    out = {}
    if reference is not None:
        model = reference.model
        out[FLOOR_TORCH] = Floor(searcher, lambda texts: model.encode(texts, normalize_embeddings=True))
    if searcher.embedder.backend == "onnx":
        out[FLOOR_ONNX] = Floor(searcher, searcher.embedder.encode)
    if not out:  # a test stand-in embedder: its own encode is the floor
        out[FLOOR_TORCH] = Floor(searcher, searcher.embedder.encode)
    return out


def serving_floor(by_floor: dict) -> str:
    """The name of the floor of the backend that serves, among the keys of `by_floor`: ONNX's when present."""
    return FLOOR_ONNX if FLOOR_ONNX in by_floor else FLOOR_TORCH


def in_blocks(variants: dict[str, Callable[[str], object]], questions: list[str],
              budget: float) -> dict[str, list[float]]:
    """Each variant timed over the questions on its own, one after the other in the order given."""
    share = budget / max(1, len(variants))
    return {name: interleaved({name: variant}, questions, rounds=1, budget=share)[name]
            for name, variant in variants.items()}


def interleaved(variants: dict[str, Callable[[str], object]], questions: list[str], rounds: int,
                budget: float, seed: int = 0) -> dict[str, list[float]]:
    """Time every variant on every question, in a fresh seeded random order for each question.

    Machine noise then hits all variants alike, and so does what a variant leaves behind for the next one (the
    caches full of its own data). A fixed rotation put the ONNX floor right after the PyTorch floor nearly
    every time, which slowed the floor and flattered every ratio to it.
    """
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    started = time.perf_counter()
    for _ in range(rounds):
        for question in questions:
            rng.shuffle(order)
            for name in order:
                t0 = time.perf_counter()
                variants[name](question)
                times[name].append(time.perf_counter() - t0)
            if time.perf_counter() - started > budget:
                return times
    return times


def stage_breakdown(searcher: Searcher, questions: list[str], k: int = 10) -> dict[str, list[float]]:
    """Where a hybrid query's time goes, stage by stage, as Searcher.search runs them."""
    depth = max(k, searcher.settings.fusion_depth)
    stages: dict[str, list[float]] = {s: [] for s in ("encode", "dense search", "bm25 search", "fusion",
                                                      "results", "answer")}
    index = searcher.index
    for question in questions:
        t0 = time.perf_counter()
        vector = searcher.encode_queries([question])[0]
        t1 = time.perf_counter()
        dense = index.dense.search(vector.reshape(1, -1), depth)[0]
        t2 = time.perf_counter()
        lexical = index.lexical.search(question, depth)
        t3 = time.perf_counter()
        hits = reciprocal_rank_fusion([dense, lexical], k=searcher.settings.rrf_k, limit=k)
        t4 = time.perf_counter()
        results = tuple(
            Result(rank, h.passage_id, index.passages[h.passage_id], h.score,
                   index.documents[index.passages[h.passage_id].doc_id].page_of(index.passages[h.passage_id].start))
            for rank, h in enumerate(hits, start=1))
        t5 = time.perf_counter()
        extract_answer(question, vector, results, index, searcher.settings)
        t6 = time.perf_counter()
        for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            stages[name].append(seconds)
    return stages


def run(searcher: Searcher, reference, questions: list[str], source: str, *, quick: bool, log=print) -> Section:
    section = Section("inproc", "1. In-process query latency (k=10), seeds index",
                      ["variant", "n", "p50 ms", "p95 ms", "p99 ms", "p50 / serving floor", "p50 / PyTorch floor"])
    floor_variants = floors(searcher, reference)
    floor_name = serving_floor(floor_variants)
    # Only the serving floor runs among the modes. PyTorch's encode, run just before an ONNX Runtime one, evicts
    # that model from the caches: the ONNX floor took 4.42 ms right after it and 2.59 ms in a block of its own.
    others = {name: floor for name, floor in floor_variants.items() if name != floor_name}
    variants: dict[str, Callable[[str], object]] = {floor_name: floor_variants[floor_name]}
    for mode in MODES:
        variants[mode] = lambda q, mode=mode: searcher.search(q, 10, mode)
    # bm25 mode without the answer: the cost of encoding the query only for the answer's confidence.
    variants["bm25, no answer"] = lambda q: searcher.search(q, 10, "bm25", with_answer=False)
    for question in questions[:5]:  # warm up every path once
        for variant in [*others.values(), *variants.values()]:
            variant(question)
    questions_used = questions[:60] if quick else questions
    times = interleaved(variants, questions_used, rounds=1 if quick else 2, budget=30 if quick else 200)
    times.update(in_blocks(others, questions_used, budget=10 if quick else 60))
    floor_p50 = percentile(times[floor_name], 50)
    torch_p50 = percentile(times[FLOOR_TORCH], 50)
    section.data = {"questions": source, "n_questions": len(questions_used), "encoder": searcher.embedder.backend,
                    "serving_floor": floor_name}
    for name, seconds in times.items():
        s = summarize(seconds)
        section.data[name] = s
        section.rows.append([name, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"],
                             ratio(s["p50_ms"] / 1e3, floor_p50), ratio(s["p50_ms"] / 1e3, torch_p50)])
    stages = stage_breakdown(searcher, questions_used[: 40 if quick else 120])
    total = sum(percentile(v, 50) for v in stages.values())
    for name, seconds in stages.items():
        p50 = percentile(seconds, 50)
        section.notes.append(f"hybrid stage {name}: p50 {p50 * 1e3:.3f} ms ({100 * p50 / total:.1f}% of the stages)")
    section.data["stages_p50_ms"] = {name: percentile(v, 50) * 1e3 for name, v in stages.items()}
    hybrid_p50 = percentile(times["hybrid"], 50)
    hybrid_ratio = ratio(hybrid_p50, floor_p50)
    section.checks.append(Check(f"in-process hybrid p50 <= {HYBRID_TARGET}x floor of the serving encoder",
                                f"{hybrid_ratio:.3f}x ({hybrid_p50 * 1e3:.2f} ms vs {floor_name} "
                                f"{floor_p50 * 1e3:.2f} ms)", hybrid_ratio <= HYBRID_TARGET))
    if floor_name != FLOOR_TORCH:
        section.notes.append(f"hybrid on {searcher.embedder.backend} / PyTorch floor = "
                             f"{ratio(hybrid_p50, torch_p50):.3f} ({hybrid_p50 * 1e3:.2f} vs {torch_p50 * 1e3:.2f} ms)")
    section.notes.insert(0, f"{len(questions_used)} questions from {source}, variants interleaved in a random order "
                            f"per question (the other floor timed apart, after them); queries encoded by "
                            f"{searcher.embedder.backend}")
    log(f"  hybrid/floor = {hybrid_ratio:.3f}")
    return section


def measure_floors(searcher: Searcher, reference, questions: list[str], budget: float = 10.0, *,
                   serving_last: bool = True) -> dict[str, list[float]]:
    """Floor latencies for the HTTP comparison, each in a block of its own, the serving floor next to the HTTP
    run (`serving_last` before it, first after it), so neither follows a PyTorch encode."""
    variants = floors(searcher, reference)
    serving = serving_floor(variants)
    order = sorted(variants, key=lambda name: (name == serving) if serving_last else (name != serving))
    return in_blocks({name: variants[name] for name in order}, questions, budget)
