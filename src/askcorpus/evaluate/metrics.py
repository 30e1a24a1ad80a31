"""Pure metric functions, one per metric, as in ranx: each takes one question's ranked relevance list.

`relevance[i]` is truthy when the passage at rank i + 1 is relevant (binary relevance).
Averaging over questions is the caller's job (`mean`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def recall_at_k(relevance: Sequence[Any], k: int) -> float:
    """1.0 when a relevant passage is at rank <= k, else 0.0 ("hit" recall; ranx calls it hit_rate@k)."""
    _check_k(k)
    return 1.0 if any(relevance[:k]) else 0.0


def reciprocal_rank(relevance: Sequence[Any], k: int = 10) -> float:
    """1 / rank of the first relevant passage within the top k, else 0.0 (MRR@k once averaged)."""
    _check_k(k)
    for rank, relevant in enumerate(relevance[:k], start=1):
        if relevant:
            return 1.0 / rank
    return 0.0


def dcg_at_k(relevance: Sequence[Any], k: int) -> float:
    """Discounted cumulative gain with binary gains: sum of rel_i / log2(i + 1) over ranks i <= k."""
    _check_k(k)
    return sum(1.0 / math.log2(rank + 1) for rank, relevant in enumerate(relevance[:k], start=1) if relevant)


def ndcg_at_k(relevance: Sequence[Any], k: int, n_relevant: int | None = None) -> float:
    """DCG@k over the ideal DCG@k, the ideal ranking putting all `n_relevant` relevant passages first.

    `n_relevant` is how many relevant passages exist in the whole collection (the qrels), as ranx
    computes it; by default the relevant passages in `relevance` itself. 0.0 when there are none.
    """
    _check_k(k)
    if n_relevant is None:
        n_relevant = sum(1 for relevant in relevance if relevant)
    ideal = dcg_at_k([True] * min(n_relevant, k), k)
    return dcg_at_k(relevance, k) / ideal if ideal > 0 else 0.0


def interval_coverage(start: int, end: int, intervals: Sequence[tuple[int, int]]) -> float:
    """Share of [start, end) covered by the union of `intervals`."""
    if end <= start:
        return 0.0
    clipped = sorted((max(start, a), min(end, b)) for a, b in intervals if min(end, b) > max(start, a))
    covered, reach = 0, start
    for a, b in clipped:
        if b > reach:
            covered += b - max(a, reach)
            reach = b
    return covered / (end - start)


def evidence_coverage(passages: Sequence[Any], evidence: Sequence[Any], k: int = 5) -> float:
    """Share of evidence characters inside the top-k passages (anything with doc_id/start/end).

    With several alternative evidence spans the best-covered span counts. 0.0 without evidence.
    """
    _check_k(k)
    top = passages[:k]
    best = 0.0
    for span in evidence:
        intervals = [(p.start, p.end) for p in top if p.doc_id == span.doc_id]
        best = max(best, interval_coverage(span.start, span.end, intervals))
    return best


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean, None for no values (a metric that does not apply)."""
    return float(sum(values) / len(values)) if len(values) else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation, as numpy), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"cut-off k must be at least 1, got {k}")
