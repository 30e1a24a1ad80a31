"""Exact search in NumPy: the reference every approximate index is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import Hit
from .base import VectorIndex

FILE_NAME = "vectors.exact.npy"


class NumpyIndex(VectorIndex):
    kind = "exact"

    def __init__(self, dim: int, vectors: np.ndarray | None = None) -> None:
        self.dim = dim
        self.vectors = np.zeros((0, dim), dtype=np.float32) if vectors is None else vectors

    def add(self, vectors: np.ndarray) -> None:
        self.vectors = np.vstack([self.vectors, self._check_vectors(vectors)])

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[list[Hit]]:
        queries = self._check_vectors(queries)
        if allowed is not None:
            from ..selection import exact_hits

            return [exact_hits(self.vectors, query, k, allowed) for query in queries]
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(len(queries))]
        scores = queries @ self.vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for row, candidates in enumerate(top):
            ordered = candidates[np.argsort(-scores[row, candidates], kind="stable")]
            results.append([Hit(i, s) for i, s in zip(ordered.tolist(), scores[row, ordered].tolist())])
        return results

    def save(self, directory: Path) -> None:
        np.save(Path(directory) / FILE_NAME, self.vectors)

    @classmethod
    def load(cls, directory: Path) -> "NumpyIndex":
        vectors = np.load(Path(directory) / FILE_NAME)
        return cls(vectors.shape[1], vectors)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])
