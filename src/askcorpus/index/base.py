"""The interface every dense vector index implements, so search never knows the backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..records import Hit


class VectorIndex(ABC):
    """Maximum inner product search over unit vectors; ids are row numbers in insertion order."""

    kind: str
    dim: int

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append (n, dim) float32 vectors; their ids continue from len(self)."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[list[Hit]]:
        """For each query row, up to k hits, best first; with `allowed` (ascending passage ids), only those."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the index into `directory` (which exists)."""

    @abstractmethod
    def __len__(self) -> int: ...

    def set_search_params(self, *, hnsw_ef_search: int | None = None, ivf_nprobe: int | None = None) -> None:
        """Search-time knobs of approximate indexes (settings may differ from build time); exact ones ignore them."""

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        return vectors
