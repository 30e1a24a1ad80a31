"""The Reranker interface, the stage that reorders a first-stage list with it, and the score-to-confidence map."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

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
                depth: int) -> list[Hit]:
    """The first `depth` hits reordered by the reranker's score, then the rest in their first-stage order.

    Every hit keeps its first-stage `score`; the reranked ones gain `rerank_score`. Ties keep the first-stage
    order (a stable sort), so equal scores never shuffle a list. Past `depth` nothing is scored: like a rescore
    window, the tail keeps the order the first stage gave it.
    """
    head, tail = list(hits[:depth]), list(hits[depth:])
    if not head:
        return tail
    scores = reranker.score(query, [text_of(hit.passage_id) for hit in head])
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    reranked = [replace(head[i], rerank_score=float(scores[i])) for i in order]
    return reranked + tail
