"""Dense vector indexes: one interface (base), a FAISS backend and an exact NumPy backend, and a factory."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, IndexFormatError
from .base import VectorIndex
from .faiss_backend import FaissIndex
from .numpy_backend import NumpyIndex

__all__ = ["VectorIndex", "FaissIndex", "NumpyIndex", "choose_kind", "create_index", "load_index"]


def choose_kind(requested: str, passages: int, approximate_above: int) -> str:
    """The index type to build: exact inner product until the corpus is large enough for HNSW to pay."""
    if requested == "auto":
        return "hnsw" if passages > approximate_above else "flat"
    return requested


def create_index(kind: str, dim: int, *, hnsw_m: int = 32, hnsw_ef_search: int = 256, ivf_nprobe: int = 32) -> VectorIndex:
    """An empty index of the named kind ("flat", "hnsw", "ivf" from FAISS; "exact" in NumPy)."""
    if kind == "exact":
        return NumpyIndex(dim)
    if kind in FaissIndex.KINDS:
        return FaissIndex(kind, dim, hnsw_m=hnsw_m, hnsw_ef_search=hnsw_ef_search, ivf_nprobe=ivf_nprobe)
    raise ConfigError(f"unknown index kind {kind!r}: choose one of auto, flat, hnsw, ivf, exact")


def load_index(kind: str, directory: Path, dim: int) -> VectorIndex:
    """Read back an index that `VectorIndex.save` wrote into `directory`."""
    if kind == "exact":
        index: VectorIndex = NumpyIndex.load(directory)
    elif kind in FaissIndex.KINDS:
        index = FaissIndex.load(kind, directory)
    else:
        raise IndexFormatError(f"the index names an unknown vector index kind {kind!r}; rebuild it")
    if index.dim != dim:
        raise IndexFormatError(f"vector index has dimension {index.dim}, manifest says {dim}; rebuild the index")
    return index
