"""FAISS indexes: exact inner product (flat), HNSW graph, and IVF inverted lists."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from ..records import Hit
from .base import VectorIndex

FILE_NAME = "vectors.faiss"

# Searches of this many queries or fewer run on one OpenMP thread. FAISS ships its own libgomp beside
# PyTorch's, so a two-thread FAISS search leaves a second spinning thread pool that slows the next model
# encode; and one query gains nothing from two threads (see `askcorpus bench`, sections 1 and 5).
FEW_QUERIES = 8


@contextmanager
def one_openmp_thread() -> Iterator[None]:
    """FAISS's OpenMP at one thread in this thread for the duration (the setting is per calling thread)."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class FaissIndex(VectorIndex):
    KINDS = ("flat", "hnsw", "ivf")

    def __init__(
        self,
        kind: str,
        dim: int,
        *,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 256,
        ivf_nprobe: int = 32,
        index: "faiss.Index | None" = None,
    ) -> None:
        self.kind = kind
        self.dim = dim
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.ivf_nprobe = ivf_nprobe
        self.index = index if index is not None else self._empty(kind)
        self._apply_search_params()

    def _empty(self, kind: str) -> "faiss.Index | None":
        if kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            # 40 builds in half the time of 80 with the same recall (bench: 100k 149 -> 76 s, recall 1.000).
            index.hnsw.efConstruction = 40
            return index
        return None  # IVF needs the data to train its centroids: made on first add

    def set_search_params(self, *, hnsw_ef_search: int | None = None, ivf_nprobe: int | None = None) -> None:
        self.hnsw_ef_search = hnsw_ef_search or self.hnsw_ef_search
        self.ivf_nprobe = ivf_nprobe or self.ivf_nprobe
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if isinstance(self.index, faiss.IndexHNSW):
            self.index.hnsw.efSearch = self.hnsw_ef_search
        elif isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = self.ivf_nprobe

    def add(self, vectors: np.ndarray) -> None:
        vectors = self._check_vectors(vectors)
        if self.index is None:
            # About 4·sqrt(n) lists, each trained on enough points for stable centroids.
            lists = max(1, min(int(4 * math.sqrt(len(vectors))), len(vectors) // 39 or 1))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, lists, faiss.METRIC_INNER_PRODUCT)
            sample = vectors if len(vectors) <= lists * 256 else vectors[np.random.default_rng(0).choice(len(vectors), lists * 256, replace=False)]
            index.train(sample)
            self.index = index
            self._apply_search_params()
        self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        queries = self._check_vectors(queries)
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(len(queries))]
        if len(queries) <= FEW_QUERIES:
            with one_openmp_thread():
                scores, ids = self.index.search(queries, k)
        else:
            scores, ids = self.index.search(queries, k)
        # tolist() makes the Python numbers in one call (a numpy scalar per hit cost more than the search).
        return [
            [Hit(i, s) for i, s in zip(id_row, score_row) if i >= 0]
            for id_row, score_row in zip(ids.tolist(), scores.tolist())
        ]

    def save(self, directory: Path) -> None:
        if self.index is None:
            self.index = faiss.IndexFlatIP(self.dim)  # an IVF index that never saw data is just empty
        faiss.write_index(self.index, str(Path(directory) / FILE_NAME))

    @classmethod
    def load(cls, kind: str, directory: Path) -> "FaissIndex":
        index = faiss.read_index(str(Path(directory) / FILE_NAME))
        loaded = cls(kind, index.d, index=index)
        return loaded

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)
