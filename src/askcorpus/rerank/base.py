"""The Reranker interface, the stage that reorders a first-stage list with it, and the score-to-confidence map."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..chunk import sentence_spans
from ..records import Hit


class Reranker(ABC):
    """Scores (question, text) pairs together; a higher score means the text answers the question better.

    Scores are raw model outputs (a cross-encoder's logit): comparable across questions, unbounded;
    `confidence` maps one into 0..1.
    """

    name: str
    backend: str  # what runs it: "onnx", or "overlap" for the unit-test stand-in

    @abstractmethod
    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of len(texts) scores, one per (query, text) pair, in the order given."""


def confidence(score: float) -> float:
    """A cross-encoder logit as a confidence in 0..1: the logistic function, which is how MS MARCO
    cross-encoders are trained to read (sentence-transformers' CrossEncoder applies the same sigmoid)."""
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    e = math.exp(score)
    return e / (1.0 + e)


def rerank_hits(reranker: Reranker, query: str, hits: Sequence[Hit], text_of: Callable[[int], str],
                depth: int, sentence_depth: int = 0, sentence_margin: float | None = None) -> list[Hit]:
    """The first `depth` hits reordered by the reranker's score, then the rest in their first-stage order.

    With `sentence_depth`, the reranker also reads the sentences of the `sentence_depth` passages it scored
    highest, and each of those passages scores the higher of its own score and its best sentence's (the MaxP
    aggregation of passage-level rerankers): a cross-encoder trained on short passages can rate a passage
    below a neighbour while rating the one sentence that answers well above it.

    Every hit keeps its first-stage `score`; the reranked ones gain `rerank_score`. Ties keep the first-stage
    order (a stable sort), so equal scores never shuffle a list. Past `depth` nothing is scored: like a rescore
    window, the tail keeps the order the first stage gave it.

    With `sentence_margin`, the sentence pass skips a passage scored more than that below the best passage: its
    sentences would have to out-score their own passage by more than the margin to change the top.
    """
    head, tail = list(hits[:depth]), list(hits[depth:])
    if not head:
        return tail
    texts = [text_of(hit.passage_id) for hit in head]
    scores = np.asarray(reranker.score(query, texts), dtype=np.float64)
    if sentence_depth > 0:
        best = sentence_pass_passages(scores, sentence_depth, sentence_margin)
        scores[best] = np.maximum(scores[best], best_sentence_scores(reranker, query, [texts[i] for i in best]))
    order = np.argsort(-scores, kind="stable")
    reranked = [replace(head[i], rerank_score=float(scores[i])) for i in order]
    return reranked + tail


def sentence_pass_passages(scores: np.ndarray, sentence_depth: int,
                           margin: float | None = None) -> np.ndarray:
    """Indexes of the passages whose sentences the sentence pass reads: the `sentence_depth` scored highest, ties
    in first-stage order, and with `margin` only those within it of the best score."""
    scores = np.asarray(scores, dtype=np.float64)
    best = np.argsort(-scores, kind="stable")[:sentence_depth]
    if margin is None or not len(best):
        return best
    return best[scores[best] >= scores[best[0]] - margin]


def adaptive_depth(scores: Sequence[float], depth: int, min_depth: int, gap: float | None) -> int:
    """How many first-stage candidates to rerank: those scoring within `gap` of the first, at least `min_depth`
    and at most `depth`. `scores` are in standard deviations of the first stage's list (hybrid's z-score fusion
    gives them so; other lists are standardised by `standardised_scores`). No gap: always `depth`."""
    if gap is None or min_depth >= depth or not len(scores):
        return depth
    close = int(np.count_nonzero(np.asarray(scores, dtype=np.float64) >= scores[0] - gap))
    return max(min_depth, min(depth, close))


def standardised_scores(scores: Sequence[float]) -> np.ndarray:
    """(s - mean) / std over the list: a gap in these units means the same for cosines, BM25 and fused ranks."""
    values = np.asarray(scores, dtype=np.float64)
    spread = values.std() if len(values) > 1 else 0.0
    return (values - values.mean()) / spread if spread else np.zeros(len(values))


def best_sentence_scores(reranker: Reranker, query: str, texts: Sequence[str]) -> np.ndarray:
    """Each text's best sentence score, all sentences in one reranker call; -inf for a text with no sentence
    (only a heading)."""
    owners = distinct_sentences(texts)
    best = np.full(len(texts), -np.inf)
    if owners:
        for sentence_score, holders in zip(reranker.score(query, list(owners)).tolist(), owners.values()):
            for i in holders:
                best[i] = max(best[i], sentence_score)
    return best


def distinct_sentences(texts: Sequence[str]) -> dict[str, list[int]]:
    """Each distinct sentence of `texts`, in order, with the indexes of the texts holding it: a sentence that two
    overlapping passages share is read once."""
    owners: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        for start, end in sentence_spans(text):
            owners.setdefault(text[start:end], []).append(i)
    return owners
