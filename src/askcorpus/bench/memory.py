"""Section 11: memory per passage of each part of a loaded index, and how many passages fit on one node."""

from __future__ import annotations

import gc
import math
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

from ..config import Settings
from ..index import create_index
from ..lexical import LexicalIndex
from ..records import Passage
from .stats import Section
from .synth import VectorModel, synthetic_texts, vocabulary_of

NODE_GB = (16, 64, 256)
USABLE = 0.8  # of a node's memory, the rest for the OS, the model and the server itself
PQ_BYTES = 48  # IVF-PQ code size per vector (384 dims -> 48 sub-quantisers of 8 bits: 32x smaller)


def _faiss_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def dense_bytes(vectors: np.ndarray, settings: Settings) -> dict[str, float]:
    """Bytes per passage of each dense index kind, serialised as FAISS holds them in memory."""
    import faiss

    n, dim = vectors.shape
    out = {"vectors (float32)": vectors.nbytes / n}
    for kind in ("flat", "hnsw"):
        index = create_index(kind, dim, hnsw_m=settings.hnsw_m)
        index.add(vectors)
        out[kind] = _faiss_bytes(index.index) / n
    out["hnsw graph alone"] = out["hnsw"] - out["flat"]
    nlist = max(16, int(4 * math.sqrt(n)))
    quantizer = faiss.IndexFlatIP(dim)
    pq = faiss.IndexIVFPQ(quantizer, dim, nlist, PQ_BYTES, 8, faiss.METRIC_INNER_PRODUCT)
    pq.train(vectors[: min(n, 256 * nlist)])
    pq.add(vectors)
    out[f"ivf-pq ({PQ_BYTES} B codes)"] = _faiss_bytes(pq) / n
    return out


def lexical_bytes(texts: list[str]) -> float:
    """Bytes per passage of the BM25 index as saved (the arrays it loads)."""
    lexical = LexicalIndex.build(texts)
    with tempfile.TemporaryDirectory() as folder:
        lexical.save(Path(folder))
        total = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return total / len(texts)


def table_bytes(texts: list[str]) -> float:
    """Python heap bytes per passage of the passage table as `store.load` holds it: Passage objects with their
    texts, plus the manifest's four integer columns (documents' texts are counted in the passages' texts)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        passages, position = [], 0
        table = {"doc": [], "start": [], "end": [], "tokens": []}
        for i, text in enumerate(texts):
            copy = "".join(text)  # its own string, as slicing the document's text makes one
            passages.append(Passage(f"doc_{i // 20:05d}.txt", position, position + len(text), copy, 100 + i % 50))
            for key, value in zip(table, (i // 20, position, position + len(text), 100 + i % 50)):
                table[key].append(int(str(value)))  # fresh ints, as json.loads makes them
            position += len(text) + 1
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del passages, table
    return used / len(texts)


def run(settings: Settings, sentences: list[str], *, quick: bool, log=print) -> Section:
    n = 20_000 if quick else 100_000
    section = Section("memory", f"11. Memory per passage ({n:,} synthetic passages, 384 dims) and one node's limit",
                      ["part", "bytes/passage", *[f"passages in {gb} GB" for gb in NODE_GB]])
    vectors = VectorModel().sample(n, stream=0)
    texts = [t for batch in synthetic_texts(vocabulary_of(sentences), n, seed=1) for t in batch]
    log(f"  dense indexes at {n:,} passages...")
    dense = dense_bytes(vectors, settings)
    log("  BM25 and the passage table...")
    # LoadedIndex also holds every document's text once: a passage's text less the overlap with the next one.
    shared = settings.chunk_overlap / settings.chunk_tokens
    parts = dense | {"bm25": lexical_bytes(texts), "passage table": table_bytes(texts),
                     "document texts (estimated)": sum(map(len, texts)) * (1 - shared) / n}
    for name, per in parts.items():
        section.rows.append([name, per, *[None] * len(NODE_GB)])
    common = parts["bm25"] + parts["passage table"] + parts["document texts (estimated)"]
    # What a loaded index holds: the dense index (its own copy of the vectors for flat and HNSW; vectors.npy
    # is memory-mapped and only touched to reuse rows at build time), BM25 and the passage table.
    totals = {"whole index, flat": parts["flat"] + common, "whole index, hnsw": parts["hnsw"] + common,
              "whole index, ivf-pq": parts[f"ivf-pq ({PQ_BYTES} B codes)"] + common}
    for name, per in totals.items():
        section.rows.append([name, per, *[int(gb * 1e9 * USABLE / per) for gb in NODE_GB]])
    section.data = {"passages": n, "bytes_per_passage": parts | totals, "usable_fraction": USABLE}
    section.notes.append(f"passages per node = {USABLE:.0%} of its memory / bytes per passage of the whole index; "
                         f"texts of {40}-{90} words (the seeds' passages are ~128 model tokens)")
    return section
