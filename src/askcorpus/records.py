"""The nouns every stage shares: documents, passages, hits, answers and search results."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any


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
class Citation:
    """A passage given to the language model as `[n]`, cited exactly as a search result is."""

    n: int
    passage_id: int
    doc_id: str
    start: int
    end: int
    page: int | None
    title: str

    def to_dict(self) -> dict:
        return {"n": self.n, "doc_id": self.doc_id, "start": self.start, "end": self.end, "page": self.page,
                "title": self.title, "passage_id": self.passage_id}


@dataclass(frozen=True)
class GeneratedSentence:
    """One sentence of a generated answer: `generated.text[start:end] == text`, with the passages it cites."""

    text: str
    start: int
    end: int
    citations: tuple[int, ...]
    supported: bool

    def to_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end, "citations": list(self.citations),
                "supported": self.supported}


@dataclass(frozen=True)
class Generated:
    """An answer a language model wrote from the numbered passages, each sentence checked against what it cites.

    `text` is None when the model abstained (or no sentence was supported) and when generation failed; then
    `error` says why, in words a user can act on.
    """

    text: str | None
    sentences: tuple[GeneratedSentence, ...] = ()
    citations: tuple[Citation, ...] = ()
    abstained: bool = False
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0
    error: str | None = None
    dropped_markers: int = 0  # [n] markers naming no passage given to the model, removed from the text
    reply: str | None = None  # the model's text as it came, before markers were resolved
    # Seconds askcorpus spent around the model ("prepare": results to the request sent, "first_token",
    # "check": last token to the checked answer); not part of the JSON.
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "sentences": [sentence.to_dict() for sentence in self.sentences],
            "citations": [citation.to_dict() for citation in self.citations],
            "abstained": self.abstained,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 4),
            "error": self.error,
            "dropped_markers": self.dropped_markers,
            "reply": self.reply,
        }


@dataclass(frozen=True)
class Candidates:
    """The first stage's answer to one question, what the second stage (rerank, answer) works from: the hits
    (max(k, rerank_depth) of them when reranking), the question's vector if it was encoded, and the timings so far."""
    query: str
    mode: str
    k: int
    hits: tuple[Hit, ...]
    query_vector: Any = field(default=None, compare=False)
    reranking: bool = False
    rerank_depth: int | None = None  # asked for by the request: rerank exactly this many
    with_answer: bool = True
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    filter: Any = None  # the search's own Filter, if any: the hits already keep to it (and to the searcher's scope)


@dataclass(frozen=True)
class SearchResponse:
    query: str
    mode: str
    answer: Answer | None
    results: tuple[Result, ...] = field(default_factory=tuple)
    reranked: bool = False
    # Seconds each stage took inside the search ("encode", "retrieve", "rerank", "answer"); not part of the JSON.
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    generated: Generated | None = None

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
            "generated": None if self.generated is None else self.generated.to_dict(),
        }
