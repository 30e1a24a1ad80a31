"""Sections 3 and 4: full build throughput against bare encode, and the cost of one-document updates."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import store
from ..build import build_index, chunk_params
from ..chunk import chunk_text
from ..config import Settings
from ..embed import Embedder
from ..index import choose_kind, create_index
from ..ingest import load_corpus
from ..lexical import LexicalIndex
from .stats import Check, Section, ratio, timed
from .synth import synthetic_documents, write_corpus

BUILD_TARGET = 0.9
INCREMENTAL_TARGET = 0.05


def bare_encode(embedder: Embedder, texts: list[str], batch_size: int) -> float:
    """Seconds for the model's own encode of `texts`, as build calls it (same batch size).

    PyTorch: sentence-transformers' model.encode itself. ONNX: the export's encode (tokenize, run, pool).
    """
    if embedder.backend == "torch":
        model = embedder.model
        seconds, _ = timed(lambda: model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                                convert_to_numpy=True))
    else:
        seconds, _ = timed(lambda: embedder.encode(texts, batch_size=batch_size))
    return seconds


def component_times(settings: Settings, embedder: Embedder) -> dict[str, float]:
    """The non-model stages of a build, each timed alone on the built corpus."""
    out: dict[str, float] = {}
    started = time.perf_counter()
    documents, _ = load_corpus(settings.corpus)
    out["read"] = time.perf_counter() - started
    params = chunk_params(settings, embedder)
    started = time.perf_counter()
    passages = [p for d in documents for p in chunk_text(d.doc_id, d.text, params, embedder.count_tokens)]
    out["chunk (incl. token counting)"] = time.perf_counter() - started
    loaded = store.load(settings.index)
    vectors = np.ascontiguousarray(loaded.vectors, dtype=np.float32)
    out["bm25 build"], lexical = timed(lambda: LexicalIndex.build([p.text for p in passages]))
    kind = choose_kind(settings.index_kind, len(passages), settings.approximate_above)

    def dense_build():
        index = create_index(kind, embedder.dim, hnsw_m=settings.hnsw_m, hnsw_ef_search=settings.hnsw_ef_search,
                             ivf_nprobe=settings.ivf_nprobe)
        index.add(vectors)
        return index

    out[f"{kind} index build"], _ = timed(dense_build)
    out["load previous index"], _ = timed(lambda: store.load(settings.index))
    return out


def run(settings: Settings, embedder: Embedder, reference: Embedder | None, sentences: list[str], work: Path, *,
        quick: bool, log=print) -> tuple[Section, Section]:
    """`embedder` builds; `reference` (sentence-transformers on PyTorch) is the first definition of bare encode."""
    build_section = Section("build", "3. Build throughput: synthetic corpus from the seeds' sentences",
                            ["measure", "documents", "passages", "seconds", "passages/s"])
    inc_section = Section("incremental", "4. Incremental cost (fraction of the full build of the same corpus)",
                          ["change", "embedded passages", "seconds", "fraction of full build"])
    count = 100 if quick else 200
    shape = (3, 8) if quick else (4, 14)
    documents = synthetic_documents(sentences, count, seed=0, sentences_per_doc=shape)
    corpus = work / "synthetic-corpus"
    paths = write_corpus(documents, corpus)
    local = settings.with_overrides(corpus=corpus, index=work / "synthetic-index")
    # The same passages the build will cut, for the bare encode (chunking is deterministic).
    params = chunk_params(local, embedder)
    texts = [p.text for d in load_corpus(corpus)[0] for p in chunk_text(d.doc_id, d.text, params, embedder.count_tokens)]
    encode_runs = [] if quick else [bare_encode(embedder, texts, settings.batch_size)]
    # Full mode: the build sits between two bare encodes, so drifting machine load hits both sides alike.
    report = build_index(local, embedder)
    full_s = report.seconds
    encode_runs.append(bare_encode(embedder, texts, settings.batch_size))
    encode_s = float(np.mean(encode_runs))
    passages = report.passages
    build_pps, encode_pps = passages / full_s, passages / encode_s
    build_section.rows += [
        [f"full build (build_index, {embedder.backend})", report.documents, passages, full_s, build_pps],
        [f"bare encode, {embedder.backend}, same passages", "", passages, encode_s, encode_pps],
    ]
    if reference is not None and reference is not embedder:
        torch_s = bare_encode(reference, texts, settings.batch_size)
        build_section.rows.append(["bare model.encode, PyTorch, same passages", "", passages, torch_s,
                                   passages / torch_s])
        build_section.notes.append(f"build on {embedder.backend} / bare PyTorch encode throughput = "
                                   f"{ratio(build_pps, passages / torch_s):.3f}")
        build_section.data["bare_torch_encode_s"] = torch_s
    components = component_times(local, embedder)
    for name, seconds in components.items():
        build_section.rows.append([f"  of which {name}", "", "", seconds, None])
    build_ratio = ratio(build_pps, encode_pps)
    build_section.checks.append(Check(f"build throughput >= {BUILD_TARGET}x bare encode throughput",
                                      f"{build_ratio:.3f}x ({build_pps:.1f} vs {encode_pps:.1f} passages/s)",
                                      build_ratio >= BUILD_TARGET))
    build_section.notes.append(f"batch size {settings.batch_size}; component times are measured separately on the "
                               "same corpus and overlap nothing (the build also writes and fsyncs the index)")
    build_section.data |= {"full_build_s": full_s, "encoder": embedder.backend, "bare_encode_s": encode_s,
                           "passages": passages, "documents": report.documents, "components_s": components,
                           "encode_runs_s": encode_runs}
    log(f"  build {build_pps:.1f} p/s vs bare encode {encode_pps:.1f} p/s ({build_ratio:.3f}x)")

    # 4. One document added, changed, removed; and a rebuild with nothing changed (the fixed cost).
    extra = synthetic_documents(sentences, 1, seed=10_001, sentences_per_doc=shape)[0]
    steps = [
        ("add one document", lambda: (corpus / "doc_new.txt").write_text(extra, encoding="utf-8")),
        ("change one document", lambda: paths[0].write_text(paths[0].read_text(encoding="utf-8")
                                                            + "\nOne more sentence changes this document.\n",
                                                            encoding="utf-8")),
        ("remove one document", lambda: paths[1].unlink()),
        ("nothing changed", lambda: None),
    ]
    inc_section.data = {"full_build_s": full_s}
    for label, mutate in steps:
        mutate()
        r = build_index(local, embedder)
        fraction = ratio(r.seconds, full_s)
        inc_section.rows.append([label, r.embedded_passages, r.seconds, fraction])
        inc_section.data[label] = {"seconds": r.seconds, "embedded": r.embedded_passages, "fraction": fraction}
        log(f"  {label}: {r.seconds:.2f}s = {fraction:.3f} of full build")
    for label in ("add one document", "change one document"):
        fraction = inc_section.data[label]["fraction"]
        inc_section.checks.append(Check(f"{label} <= {INCREMENTAL_TARGET:.0%} of the full build",
                                        f"{fraction:.1%} ({inc_section.data[label]['seconds']:.2f}s of {full_s:.2f}s)",
                                        fraction <= INCREMENTAL_TARGET))
    inc_section.notes.append(f"corpus of {report.documents} documents, {passages} passages; full build {full_s:.2f}s")
    return build_section, inc_section
