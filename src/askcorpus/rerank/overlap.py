"""A term-overlap stand-in for the cross-encoder: deterministic, instant, for fast unit tests only."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..lexical import terms
from .base import Reranker

OVERLAP_NAME = "overlap"


class TermOverlapReranker(Reranker):
    """Scores a text by the share of the question's stemmed terms it contains, mapped onto -4..4 like a logit."""

    backend = "overlap"
    name = OVERLAP_NAME

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        wanted = set(terms(query))
        if not wanted:
            return np.full(len(texts), -4.0, dtype=np.float32)
        shares = [len(wanted & set(terms(text))) / len(wanted) for text in texts]
        return (np.asarray(shares, dtype=np.float32) * 8.0 - 4.0).astype(np.float32)
