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

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[list[Hit]]:
        queries = self._check_vectors(queries)
        k = min(k, len(self) if allowed is None else len(allowed))
        if k == 0:
            return [[] for _ in range(len(queries))]
        # SWIG keeps only raw pointers to the selector and its bitmap: `held` keeps them alive through the search.
        params, held = self._selection(allowed) if allowed is not None else (None, None)
        if len(queries) <= FEW_QUERIES:
            with one_openmp_thread():
                scores, ids = self.index.search(queries, k, params=params)
        else:
            scores, ids = self.index.search(queries, k, params=params)
        del held
        # tolist() makes the Python numbers in one call (a numpy scalar per hit cost more than the search).
        return [
            [Hit(i, s) for i, s in zip(id_row, score_row) if i >= 0]
            for id_row, score_row in zip(ids.tolist(), scores.tolist())
        ]

    def _selection(self, allowed: np.ndarray) -> tuple["faiss.SearchParameters", tuple]:
        """Search parameters admitting only `allowed`, through a bitmap selector (one bit per vector, tested in
        constant time; IDSelectorBatch's hash set cost twice as much at 1,000 ids of 100k). A selective filter
        leaves an approximate index few allowed vectors among those it visits, so HNSW's efSearch and IVF's nprobe
        grow as the filter keeps less (recall@10 at 5% of 100k: IVF 0.76 -> 0.96 with 4x nprobe)."""
        mask = np.zeros(len(self), dtype=bool)
        mask[allowed] = True
        bitmap = np.packbits(mask, bitorder="little")  # FAISS reads bit i as byte i >> 3, bit i & 7
        fraction = max(len(allowed), 1) / max(len(self), 1)
        if isinstance(self.index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            params.efSearch = self.hnsw_ef_search * min(4, max(1, math.ceil(0.1 / fraction)))
        elif isinstance(self.index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.index.nlist, self.ivf_nprobe * min(8, max(1, math.ceil(0.2 / fraction))))
        else:
            params = faiss.SearchParameters()
        selector = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bitmap))
        params.sel = selector
        return params, (selector, bitmap)

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
