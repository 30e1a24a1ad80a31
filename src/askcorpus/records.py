"""The nouns every stage shares: documents, passages, hits, answers and search results."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    """One source file's text, as citations index into it."""

    doc_id: str
    text: str
    sha256: str
    title: str
    # Character offsets where each PDF page starts; empty for formats without pages.
    page_starts: tuple[int, ...] = ()

    def page_of(self, offset: int) -> int | None:
        """1-based page holding `offset`, or None when the format has no pages."""
        if not self.page_starts:
            return None
        return max(1, bisect_right(self.page_starts, offset))


@dataclass(frozen=True)
class Passage:
    """A span of a document: `document.text[start:end] == text`."""

    doc_id: str
    start: int
    end: int
    text: str
    tokens: int  # cl100k_base tokens, for budgeting an LLM context


@dataclass(frozen=True)
class Hit:
    """One retriever's verdict on a passage; every retriever returns this shape."""

    passage_id: int
    score: float  # the first stage's score (fused, cosine or BM25)
    rerank_score: float | None = None  # the reranker's, when it read this passage


@dataclass(frozen=True)
class Answer:
    """The extractive answer: a span of a document with a confidence in [0, 1]."""

    text: str
    doc_id: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Result:
    """A ranked passage as callers see it."""

    rank: int
    passage_id: int
    passage: Passage
    score: float  # the first stage's score
    page: int | None = None
    rerank_score: float | None = None  # the reranker's score; when set, the list is ordered by it


@dataclass(frozen=True)
class SearchResponse:
    query: str
    mode: str
    answer: Answer | None
    results: tuple[Result, ...] = field(default_factory=tuple)
    reranked: bool = False
    # Seconds each stage took inside the search ("encode", "retrieve", "rerank", "answer"); not part of the JSON.
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """The JSON shape shared by `askcorpus ask --json` and `POST /search`."""
        return {
            "query": self.query,
            "mode": self.mode,
            "reranked": self.reranked,
            "answer": None
            if self.answer is None
            else {
                "text": self.answer.text,
                "doc_id": self.answer.doc_id,
                "start": self.answer.start,
                "end": self.answer.end,
                "score": round(self.answer.score, 6),
            },
            "results": [
                {
                    "rank": r.rank,
                    "doc_id": r.passage.doc_id,
                    "start": r.passage.start,
                    "end": r.passage.end,
                    "text": r.passage.text,
                    "score": round(r.score, 6),
                    "rerank_score": None if r.rerank_score is None else round(r.rerank_score, 6),
                    "tokens": r.passage.tokens,
                    "page": r.page,
                    "passage_id": r.passage_id,
                }
                for r in self.results
            ],
        }
