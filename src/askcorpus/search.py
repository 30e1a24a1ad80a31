"""One search function for every shell: dense, BM25, and hybrid retrieval that fuses the two."""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from .answer import extract_answer, extract_answer_reranked
from .config import MODES, Settings
from .embed import Embedder
from .errors import QueryError
from .filters import Filter
from .records import Candidates, Hit, Result, SearchResponse
from .rerank import Reranker, adaptive_depth, rerank_hits, standardised_scores
from .selection import allowed_passages, dense_hits
from .store import LoadedIndex


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = 60, limit: int | None = None) -> list[Hit]:
    """Fuse rankings by sum of 1 / (k + rank); ties broken by passage id so the order is deterministic."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.passage_id] = fused.get(hit.passage_id, 0.0) + 1.0 / (k + rank)
    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [Hit(pid, score) for pid, score in ordered[:limit]]


# A passage missing from one retriever's list counts as this many standard deviations below its mean.
MISSING_Z = -3.0


def zscore_fusion(
    rankings: Sequence[Sequence[Hit]], weights: Sequence[float], limit: int | None = None
) -> list[Hit]:
    """Fuse by weighted sum of each list's standardised scores (z = (s - mean) / std over the list).

    Unlike rank fusion it keeps how far ahead a passage is: a clear dense winner is not pulled level
    with a weak BM25 match that shares one common word with the question.
    """
    # Arrays rather than a dict per passage: at fusion depth 50 the dicts cost about half a millisecond of
    # Python per query, holding the GIL the server's other requests wait for. Same arithmetic in the same
    # order as the definition (tests check every bit), so the same ranking.
    columns = [([hit.passage_id for hit in ranking], np.array([hit.score for hit in ranking], dtype=np.float64))
               for ranking in rankings]
    candidates = sorted(set().union(*(ids for ids, _ in columns)))
    if not candidates:
        return []
    row = {pid: i for i, pid in enumerate(candidates)}
    fused = np.zeros(len(candidates), dtype=np.float64)
    for weight, (ids, scores) in zip(weights, columns):
        z = np.full(len(candidates), MISSING_Z, dtype=np.float64)
        z[[row[pid] for pid in ids]] = _standardised(scores)
        fused += weight * z
    order = np.argsort(-fused, kind="stable")[:limit]  # candidates ascend, so ties go to the lower id
    return [Hit(candidates[i], float(fused[i])) for i in order]


def _standardised(scores: np.ndarray) -> np.ndarray:
    """(s - mean) / std, or zeros when the scores do not spread; numpy's own mean and std, written out
    because their Python wrappers cost more than the arithmetic on fifty numbers."""
    if len(scores) < 2:
        return np.zeros(len(scores), dtype=np.float64)
    deviations = scores - scores.sum() / len(scores)
    spread = math.sqrt((deviations * deviations).sum() / len(scores))
    return deviations / spread if spread else np.zeros(len(scores), dtype=np.float64)


# A query must hold a character Python does not count as white space (str.strip removes exactly those).
# Spelled out as a class rather than \S because JSON Schema (ECMA) and pydantic (Rust) regexes do not
# treat U+001C..U+001F and U+0085 as white space, so the published schema would admit what we refuse.
NOT_ONLY_WHITESPACE = "[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def validate_query(query: object, k: object, mode: object, settings: Settings) -> str:
    """The stripped query, or QueryError saying which parameter is wrong and what is allowed."""
    if not isinstance(query, str):
        raise QueryError("query must be a string")
    stripped = query.strip()
    if not stripped:
        raise QueryError("query is empty: ask a question")
    if len(query) > settings.max_query_chars:
        raise QueryError(f"query is {len(query)} characters long; the limit is {settings.max_query_chars}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
        raise QueryError(f"k must be a whole number from 1 to 100, got {k!r}")
    if mode not in MODES:
        raise QueryError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return stripped


def validate_rerank(rerank: object, rerank_depth: object, reranker: Reranker | None) -> None:
    """QueryError when reranking is asked of a searcher without a reranker, or the depth is out of range."""
    if rerank is not None and not isinstance(rerank, bool):
        raise QueryError(f"rerank must be true or false, got {rerank!r}")
    if rerank and reranker is None:
        raise QueryError("reranking is off here (ASKCORPUS_RERANK=false): ask without rerank")
    if rerank_depth is not None and (isinstance(rerank_depth, bool) or not isinstance(rerank_depth, int)
                                     or not 1 <= rerank_depth <= 100):
        raise QueryError(f"rerank_depth must be a whole number from 1 to 100, got {rerank_depth!r}")


class Searcher:
    """Answers queries against one loaded index with one embedder and, when given one, a reranker; with a `scope`
    (filters), only from the documents every one of them keeps, and a search's own filter as well.

    Thread-safe: holds no mutable state of its own (the reranker's score cache has its own lock).
    """

    def __init__(self, settings: Settings, embedder: Embedder, index: LoadedIndex,
                 reranker: Reranker | None = None, scope: tuple[Filter, ...] = ()) -> None:
        self.settings = settings
        self.embedder = embedder
        self.index = index
        self.reranker = reranker
        self.scope = scope

    def scoped(self, scope: Filter | None) -> "Searcher":
        """This searcher held to `scope` as well as to its own, for a shell that cannot pass a filter to each
        search (one HTTP request, an evaluation run)."""
        if scope is None or scope.is_empty:
            return self
        return Searcher(self.settings, self.embedder, self.index, self.reranker, (*self.scope, scope))

    def allowed(self, filter: Filter | None = None) -> np.ndarray | None:
        """The passage ids the scope and `filter` all keep (ascending), or None when nothing is filtered;
        FilterError when a filter needs what the index did not record."""
        filters = tuple(f for f in (*self.scope, filter) if f is not None)
        for given in filters:
            self.index.catalog.require(given)
        return allowed_passages(self.index.catalog, filters)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(list(queries), batch_size=max(1, len(queries)))

    def retrieve(self, query: str, k: int, mode: str, query_vector: np.ndarray | None,
                 allowed: np.ndarray | None = None) -> list[Hit]:
        """Ranked hits for one query; `query_vector` is needed for dense and hybrid. With `allowed` (ascending
        passage ids) both retrievers rank only those passages, before fusion: k of them come back when k match."""
        depth = max(k, self.settings.fusion_depth)
        if mode == "bm25":
            return self.index.lexical.search(query, k, allowed)
        wanted = depth if mode == "hybrid" else k
        dense = self.index.dense.search(query_vector.reshape(1, -1), wanted)[0] if allowed is None \
            else dense_hits(self.index, query_vector, wanted, allowed)
        if mode == "dense":
            return dense
        lexical = self.index.lexical.search(query, depth, allowed)
        if self.settings.fusion == "rrf":
            return reciprocal_rank_fusion([dense, lexical], k=self.settings.rrf_k, limit=k)
        weight = self.settings.dense_weight
        return zscore_fusion([dense, lexical], [weight, 1.0 - weight], limit=k)

    def _result(self, rank: int, hit: Hit) -> Result:
        passage = self.index.passages[hit.passage_id]
        page = self.index.documents[passage.doc_id].page_of(passage.start)
        return Result(rank=rank, passage_id=hit.passage_id, passage=passage, score=hit.score, page=page,
                      rerank_score=hit.rerank_score)

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: str | None = None,
        *,
        query_vector: np.ndarray | None = None,
        with_answer: bool = True,
        rerank: bool | None = None,
        rerank_depth: int | None = None,
        filter: Filter | None = None,
    ) -> SearchResponse:
        """Ranked passages with citations, and the extractive answer (or None when nothing matches well).

        With reranking (on by default when the searcher has a reranker), the first stage fetches
        max(k, rerank_depth) candidates, the reranker reorders the top of them (`rerank_candidates`), and the
        top k are returned; the answer and its confidence then come from the reranker too. With `filter` (and the
        searcher's scope) only the documents it keeps are searched.
        """
        return self.second_stage(self.first_stage(query, k, mode, query_vector=query_vector,
                                                  with_answer=with_answer, rerank=rerank,
                                                  rerank_depth=rerank_depth, filter=filter))

    def first_stage(self, query: str, k: int | None = None, mode: str | None = None, *,
                    query_vector: np.ndarray | None = None, with_answer: bool = True, rerank: bool | None = None,
                    rerank_depth: int | None = None, filter: Filter | None = None) -> Candidates:
        """The cheap part of a search, validated: the question encoded (if not given) and the first-stage hits,
        drawn only from what the filter keeps, so the second stage never needs to know there was one."""
        k = self.settings.k if k is None else k
        mode = self.settings.mode if mode is None else mode
        query = validate_query(query, k, mode, self.settings)
        validate_rerank(rerank, rerank_depth, self.reranker)
        reranking = self.reranker is not None and rerank is not False
        fetch = max(k, self.settings.rerank_depth if rerank_depth is None else rerank_depth) if reranking else k
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        allowed = self.allowed(filter)
        if allowed is not None:
            clock = _lap(timings, "filter", clock)
        # The cosine answer needs the query's vector even in bm25 mode; the reranker's answer does not. A filter
        # that keeps nothing needs no vector: there is nothing to compare it with.
        if (mode != "bm25" or (with_answer and not reranking)) and query_vector is None \
                and (allowed is None or len(allowed)):
            query_vector = self.encode_queries([query])[0]
            clock = _lap(timings, "encode", clock)
        hits = self.retrieve(query, fetch, mode, query_vector, allowed) if allowed is None or len(allowed) else []
        _lap(timings, "retrieve", clock)
        return Candidates(query, mode, k, tuple(hits), query_vector, reranking, rerank_depth, with_answer, timings,
                          filter)

    def second_stage(self, candidates: Candidates) -> SearchResponse:
        """The search finished from its first stage: reranked (when asked), cut to k, with the answer."""
        c = candidates
        timings = dict(c.timings)
        clock = time.perf_counter()
        hits = list(c.hits)
        if c.reranking:
            hits = self.rerank(c)
            clock = _lap(timings, "rerank", clock)
        results = tuple(self._result(rank, hit) for rank, hit in enumerate(hits[:c.k], start=1))
        answer = None
        if c.with_answer:
            answer = (extract_answer_reranked(c.query, results, self.reranker, self.settings) if c.reranking
                      else extract_answer(c.query, c.query_vector, results, self.index, self.settings))
            _lap(timings, "answer", clock)
        return SearchResponse(query=c.query, mode=c.mode, answer=answer, results=results, reranked=c.reranking,
                              timings=timings)

    def rerank(self, candidates: Candidates) -> list[Hit]:
        """The first stage's hits with the top `rerank_candidates` of them reordered by the reranker."""
        return rerank_hits(self.reranker, candidates.query, candidates.hits, self._passage_text,
                           self.rerank_candidates(candidates), self.settings.rerank_sentence_depth,
                           self.settings.rerank_sentence_margin)

    def rerank_candidates(self, candidates: Candidates) -> int:
        """How many of the first stage's hits the cross-encoder reads: the request's rerank_depth, or as many as
        score within rerank_gap of the first (between rerank_min_depth and rerank_depth)."""
        if candidates.rerank_depth is not None:
            return candidates.rerank_depth
        settings = self.settings
        scores = [hit.score for hit in candidates.hits]
        if not (candidates.mode == "hybrid" and settings.fusion == "zscore"):
            scores = standardised_scores(scores)  # z-score fusion already gives standard deviations
        return adaptive_depth(scores, settings.rerank_depth, settings.rerank_min_depth, settings.rerank_gap)

    def _passage_text(self, passage_id: int) -> str:
        return self.index.passages[passage_id].text


def _lap(timings: dict[str, float], stage: str, since: float) -> float:
    now = time.perf_counter()
    timings[stage] = now - since
    return now
