"""Section 8: the rerank stage against its floor, a reranked question end to end, and the same over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Settings
from ..rerank import load_reranker, rerank_hits
from ..rerank.base import distinct_sentences, sentence_pass_passages
from ..search import Searcher
from .inproc import interleaved
from .stats import Check, Section, percentile, ratio, summarize

STAGE_TARGET = 0.8  # rerank stage p50 <= 0.8x the floor
QUESTION_TARGET = 1.0  # a reranked question end to end p50 <= 1.0x the floor
HTTP_MARGIN_S = 0.005  # HTTP at one client <= in process + 5 ms
CURVE_DEPTHS = (10, 20, 30)


class PaddedCallFloor:
    """The floor: the same (question, passage) pairs through bare ONNX Runtime in one call padded to the longest
    pair, which is what sentence-transformers' CrossEncoder.predict does with fewer pairs than its batch size.

    Its own session with ONNX Runtime's default options (a thread per core) on the same model file, and the
    model's tokenizer padding to the longest pair of the call.
    """

    def __init__(self, folder: Path, max_tokens: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_padding()  # to the longest of the call, not the file's fixed 512
        self.tokenizer.enable_truncation(max_length=max_tokens, strategy="longest_first")

    def __call__(self, query: str, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch([(query, text) for text in texts])
        columns = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                   "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                   "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        return self.session.run(None, {name: columns[name] for name in self.inputs})[0].reshape(-1)


def _pairs_read(reranker, query: str, passages: list[str], sentence_depth: int) -> list[str]:
    """Every text the rerank stage reads for `query`: the passages, then the distinct sentences of the
    `sentence_depth` it scores highest, so the floor scores the same pairs."""
    top = sentence_pass_passages(reranker.score(query, passages), sentence_depth)
    return passages + list(distinct_sentences([passages[i] for i in top]))


def _http_search(url: str) -> Callable[[str], None]:
    from urllib.parse import urlsplit

    from .load import Connection

    parts = urlsplit(url)
    connection = Connection(parts.hostname, parts.port, timeout=60)

    def ask(question: str) -> None:
        body = json.dumps({"query": question, "k": 10, "mode": "hybrid", "rerank": True}).encode()
        status, _ = connection.post("/search", body)
        if status != 200:
            raise RuntimeError(f"POST /search answered {status}")

    ask.close = connection.close  # type: ignore[attr-defined]
    return ask


def run(settings: Settings, searcher: Searcher, index_dir: Path, questions: list[str], *, quick: bool, work: Path,
        env: dict[str, str], log=print) -> Section:
    """Reranking on the seeds index at the configured depth, every score computed (the pair cache is off)."""
    section = Section("rerank", f"8. Reranking: hybrid top {settings.rerank_depth} through the cross-encoder",
                      ["variant", "n", "p50 ms", "p95 ms", "p99 ms", "p50 / floor"])
    reranker = load_reranker(settings.rerank_model, sha256=settings.rerank_sha256, threads=settings.rerank_threads,
                             cache_size=0)
    folder = getattr(reranker, "folder", None)
    if folder is None:
        section.skipped = f"the reranker {settings.rerank_model!r} is not an ONNX cross-encoder: no floor to time"
        return section
    floor = PaddedCallFloor(folder, reranker.max_tokens)
    reranking = Searcher(settings, searcher.embedder, searcher.index, reranker)
    depth = settings.rerank_depth
    used = questions[:24] if quick else questions
    # The same candidates for the floor and the stage: the first stage runs once per question, untimed.
    curve = sorted({depth, *CURVE_DEPTHS})
    candidates = {q: reranking.retrieve(q, max(10, *curve), "hybrid", reranking.encode_queries([q])[0])
                  for q in used}
    sentence_depth = settings.rerank_sentence_depth
    texts = {q: _pairs_read(reranker, q, [searcher.index.passages[h.passage_id].text for h in hits[:depth]],
                            sentence_depth) for q, hits in candidates.items()}
    variants: dict[str, Callable[[str], object]] = {
        "floor: one padded call": lambda q: floor(q, texts[q]),
        "rerank stage": lambda q: rerank_hits(reranker, q, candidates[q], reranking._passage_text, depth,
                                              sentence_depth),
        "question, reranked": lambda q: reranking.search(q, 10, "hybrid", rerank=True),
        "question, first stage only": lambda q: reranking.search(q, 10, "hybrid", rerank=False),
    }
    # The cost side of the depth curve (its quality side is the eval's, on dev).
    for other in curve:
        if other != depth:
            variants[f"rerank stage, depth {other}"] = (
                lambda q, d=other: rerank_hits(reranker, q, candidates[q], reranking._passage_text, d,
                                               sentence_depth))
    for question in used[:3]:  # warm up every path
        for variant in variants.values():
            variant(question)
    times = interleaved(variants, used, rounds=1 if quick else 2, budget=150 if quick else 400)
    times.update(_http_times(index_dir, reranking, used[: 24 if quick else 60], work, env, log))
    floor_p50 = percentile(times["floor: one padded call"], 50)
    for name, seconds in times.items():
        s = summarize(seconds)
        section.data[name] = s
        section.rows.append([name, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], ratio(s["p50_ms"] / 1e3, floor_p50)])
    pairs = [len(texts[q]) for q in used]
    section.notes.insert(0, f"{len(used)} questions, {np.mean(pairs):.1f} pairs each (passages and the sentence "
                            f"pass's sentences, depth {sentence_depth}); variants interleaved in a "
                            "random order per question; pair cache off, so every score is computed")
    stage_p50 = percentile(times["rerank stage"], 50)
    question_p50 = percentile(times["question, reranked"], 50)
    section.checks.append(Check(f"rerank stage p50 <= {STAGE_TARGET}x its floor (same pairs, one padded call)",
                                f"{ratio(stage_p50, floor_p50):.3f}x ({stage_p50 * 1e3:.1f} vs {floor_p50 * 1e3:.1f} ms)",
                                stage_p50 <= STAGE_TARGET * floor_p50))
    section.checks.append(Check(f"reranked question end to end p50 <= {QUESTION_TARGET}x the rerank floor",
                                f"{ratio(question_p50, floor_p50):.3f}x ({question_p50 * 1e3:.1f} ms)",
                                question_p50 <= QUESTION_TARGET * floor_p50))
    if "HTTP, 1 client" in times:
        http, local = times["HTTP, 1 client"], times["question, reranked (beside HTTP)"]
        # Per question, HTTP minus in process: a half-second question varies by more than the few milliseconds
        # HTTP adds, so the difference of two medians is mostly noise; the median of paired differences is not.
        extra = percentile([h - q for h, q in zip(http, local)], 50)
        section.data["http_extra_p50_ms"] = extra * 1e3
        section.checks.append(Check("reranked question over HTTP at 1 client p50 <= in process + 5 ms",
                                    f"{extra * 1e3:+.2f} ms, median of {len(http)} paired differences (p50s "
                                    f"{percentile(http, 50) * 1e3:.1f} vs {percentile(local, 50) * 1e3:.1f} ms)",
                                    extra <= HTTP_MARGIN_S))
    log(f"  rerank stage/floor = {ratio(stage_p50, floor_p50):.3f}, question/floor = {ratio(question_p50, floor_p50):.3f}")
    return section


def _http_times(index_dir: Path, reranking: Searcher, questions: list[str], work: Path, env: dict[str, str],
                log) -> dict[str, list[float]]:
    """A server reranking with its pair cache off, one client, alternated question by question with the same
    search in this process, so both see the same machine."""
    from .http import Server, server_available

    if server_available() is not None:
        return {}
    server_env = dict(env) | {"ASKCORPUS_RERANK": "true", "ASKCORPUS_RERANK_CACHE_SIZE": "0"}
    with Server(index_dir, work, server_env) as server:
        server.wait_ready(questions[0])
        ask = _http_search(server.url)
        try:
            # Every question once, untimed: this process has already asked them all (above), so its per-passage
            # caches (sentence splits, highlights) are warm; the server's must be too, or the comparison times
            # those caches. The pair-score cache is off in both, so the reranking itself is always computed.
            for question in questions:
                ask(question)
            variants = {"HTTP, 1 client": ask,
                        "question, reranked (beside HTTP)": lambda q: reranking.search(q, 10, "hybrid", rerank=True)}
            log(f"  HTTP at one client, {len(questions)} questions...")
            return interleaved(variants, questions, rounds=1, budget=120)
        finally:
            ask.close()
