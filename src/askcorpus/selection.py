"""Which passages a filter keeps (the index's documents as arrays), and dense search restricted to them."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .errors import FilterError
from .filters import Filter, format_of, glob_pattern, is_glob, title_words
from .records import Hit

# A filter keeping at most this many passages is searched exactly over just those vectors, whatever the index: at
# 384 dimensions gathering and scoring 4,096 rows takes about 0.6 ms, less than an unfiltered HNSW search of 100k
# passages, and is exact, while an approximate index asked for a few scattered ids misses many (at 1% of 100k,
# recall@10 0.72 for HNSW and 0.56 for IVF through a FAISS selector at the default efSearch and nprobe; timings:
# `python -m askcorpus.bench.scale --filters 100000`).
EXACT_ROWS = 4096
# Rows scored per NumPy product: OpenBLAS spreads a longer matrix-vector product over its threads, which on a busy
# two-core machine took 8-11 ms for 5,000 rows instead of 0.3 ms.
BLOCK_ROWS = 1024
CACHED_FILTERS = 16


class Catalog:
    """What filters read of an index's documents (path, format, modification time, title), as arrays, and the
    passages each filter keeps, the last few cached. Made once per loaded index; safe to share between threads."""

    def __init__(self, documents: Sequence[dict], passage_doc: Sequence[int]) -> None:
        self.doc_ids = [d["doc_id"] for d in documents]
        self.titles = [d.get("title", "") for d in documents]
        self.position = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        self.paths = np.array(self.doc_ids, dtype=str)
        self.formats = np.array([d.get("format") or format_of(d["doc_id"]) for d in documents], dtype=str)
        mtimes = [d.get("mtime") for d in documents]
        # Builds before modification times were recorded have none: NaN, so a time filter knows to say so.
        self.mtimes = np.array([math.nan if m is None else m for m in mtimes], dtype=np.float64)
        self.has_mtimes = not any(m is None for m in mtimes)
        self.passage_doc = np.asarray(passage_doc, dtype=np.int64)
        self._cache: OrderedDict[Filter, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def require(self, filter: Filter) -> None:
        """FilterError when the filter needs what this index did not record."""
        if filter.needs_mtime and not self.has_mtimes:
            raise FilterError("filter.modified_after/modified_before: this index records no modification times "
                              "(built by an older askcorpus); run `askcorpus index` to record them (nothing is "
                              "embedded again)")

    def documents_matching(self, filter: Filter) -> np.ndarray:
        """A boolean per document (in manifest order): whether the filter keeps it. The cheap array tests run first
        and the per-document ones (glob, title) only on what is left."""
        self.require(filter)
        keep = np.ones(len(self.doc_ids), dtype=bool)
        if filter.doc_ids is not None:
            chosen = np.zeros(len(self.doc_ids), dtype=bool)
            chosen[[self.position[d] for d in filter.doc_ids if d in self.position]] = True
            keep &= chosen
        if filter.formats is not None:
            keep &= np.isin(self.formats, sorted(filter.formats))
        if filter.modified_after is not None:
            keep &= self.mtimes >= filter.modified_after.timestamp()
        if filter.modified_before is not None:
            keep &= self.mtimes < filter.modified_before.timestamp()
        if filter.path is not None and not is_glob(filter.path):
            keep &= np.char.startswith(self.paths, filter.path)
        if filter.path is not None and is_glob(filter.path):
            pattern = glob_pattern(filter.path)
            for i in np.flatnonzero(keep).tolist():
                keep[i] = pattern.match(self.doc_ids[i]) is not None
        if filter.title is not None:
            wanted = title_words(filter.title)
            for i in np.flatnonzero(keep).tolist():
                keep[i] = wanted <= title_words(self.titles[i])
        return keep

    def passages_matching(self, filter: Filter) -> np.ndarray:
        """The ids of the passages of the documents the filter keeps, ascending (read-only, cached)."""
        with self._lock:
            found = self._cache.get(filter)
            if found is not None:
                self._cache.move_to_end(filter)
                return found
        found = np.flatnonzero(self.documents_matching(filter)[self.passage_doc])
        found.setflags(write=False)
        with self._lock:
            self._cache[filter] = found
            while len(self._cache) > CACHED_FILTERS:
                self._cache.popitem(last=False)
        return found


def allowed_passages(catalog: Catalog, filters: Sequence[Filter | None]) -> np.ndarray | None:
    """The passages every given filter keeps (ascending), or None when no filter restricts anything."""
    chosen = [catalog.passages_matching(f) for f in filters if f is not None and not f.is_empty]
    if not chosen:
        return None
    allowed = chosen[0]
    for more in chosen[1:]:
        allowed = np.intersect1d(allowed, more, assume_unique=True)
    return allowed


def exact_hits(vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray) -> list[Hit]:
    """The top k of the `allowed` rows of `vectors` by inner product with `query`, best first, ties by id."""
    if not len(allowed) or k <= 0:
        return []
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    scores = np.empty(len(allowed), dtype=np.float32)
    for first in range(0, len(allowed), BLOCK_ROWS):
        rows = np.asarray(vectors[allowed[first : first + BLOCK_ROWS]], dtype=np.float32)
        scores[first : first + len(rows)] = rows @ query
    top = np.arange(len(allowed)) if len(allowed) <= k else np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((allowed[top], -scores[top]))]
    return [Hit(i, s) for i, s in zip(allowed[top].tolist(), scores[top].tolist())]


def dense_hits(index, query: np.ndarray, k: int, allowed: np.ndarray) -> list[Hit]:
    """Dense search of a LoadedIndex within `allowed`: exact over those vectors when they are few, else the vector
    index through its id selector, falling back to exact when that finds fewer than k of the allowed passages."""
    if not len(allowed):
        return []
    if len(allowed) <= EXACT_ROWS:
        return exact_hits(index.vectors, query, k, allowed)
    hits = index.dense.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, allowed=allowed)[0]
    if len(hits) < min(k, len(allowed)):
        return exact_hits(index.vectors, query, k, allowed)
    return hits
