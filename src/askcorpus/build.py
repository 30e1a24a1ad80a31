"""Building the index from a corpus folder, incrementally: only new and changed documents are embedded."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import store
from .chunk import ChunkParams
from .config import Settings
from .embed import Embedder
from .errors import AskcorpusError, EmptyCorpusError
from .index import VectorIndex, choose_kind, create_index
from .ingest import READER_VERSION, Skipped, find_sources
from .lexical import LEXICAL_VERSION, LexicalIndex
from .produce import Backend, EmbedStats, LocalBackend, Pending
from .records import Document, Passage

log = logging.getLogger(__name__)

# Bump when the sentence splitter changes what passages it cuts, so old indexes rebuild.
SPLITTER_VERSION = 3


@dataclass
class BuildReport:
    """What a build did, for the CLI to print and tests to check."""

    index_path: Path | None = None
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    documents: int = 0
    passages: int = 0
    embedded_passages: int = 0
    full_rebuild_reason: str | None = None
    index_kind: str = ""
    # Vectors the previous build's HNSW graph already held and kept (only new rows were added to it); 0 when
    # the vector index was built from scratch.
    extended_vectors: int = 0
    up_to_date: bool = False
    seconds: float = 0.0
    backend: str = "local"
    # Passages embedded per node id ("local" for a local build): how the work was shared out.
    embedded_per_node: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = []
        if self.full_rebuild_reason:
            lines.append(f"full rebuild: {self.full_rebuild_reason}")
        for label, names in (("added", self.added), ("changed", self.changed), ("removed", self.removed)):
            lines.append(f"{label:<9} {len(names):>5}" + (f"  {', '.join(names[:10])}" if names else "")
                         + (" ..." if len(names) > 10 else ""))
        lines.append(f"{'unchanged':<9} {len(self.unchanged):>5}")
        if self.up_to_date:
            lines.insert(0, "index is up to date: nothing to embed, nothing written")
        lines.append(f"{'skipped':<9} {len(self.skipped):>5}")
        for skip in self.skipped:
            lines.append(f"  skipped {skip.doc_id}: {skip.reason}")
        extended = f" (graph extended: {self.extended_vectors} kept)" if self.extended_vectors else ""
        if len(self.embedded_per_node) > 1 or self.backend != "local":
            shares = ", ".join(f"{node[:12]} {count}" for node, count in sorted(self.embedded_per_node.items()))
            lines.append(f"embedded on {self.backend}: {len(self.embedded_per_node)} node(s): {shares or 'none'}")
        lines.append(
            f"index: {self.documents} documents, {self.passages} passages ({self.embedded_passages} embedded), "
            f"{self.index_kind} vectors{extended}, {self.seconds:.1f}s -> {self.index_path}"
        )
        return "\n".join(lines)


def chunk_params(settings: Settings, embedder: Embedder) -> ChunkParams:
    return ChunkParams(size=settings.chunk_tokens, overlap=settings.chunk_overlap, max_tokens=embedder.max_tokens)


def _build_signature(settings: Settings, embedder: Embedder) -> tuple[dict, dict]:
    model = {"name": embedder.name, "dim": embedder.dim, "max_tokens": embedder.max_tokens}
    params = chunk_params(settings, embedder)
    chunking = {"size": params.size, "overlap": params.overlap, "max_tokens": params.max_tokens,
                "splitter_version": SPLITTER_VERSION, "lexical_version": LEXICAL_VERSION,
                "reader_version": READER_VERSION}
    return model, chunking


def _reusable(settings: Settings, embedder: Embedder, model: dict, chunking: dict) -> tuple[store.LoadedIndex | None, str | None]:
    """The previous build if its vectors can be reused, else None and why everything is rebuilt."""
    try:
        previous = store.load(settings.index)
    except store.IndexNotFoundError:
        return None, None
    except AskcorpusError as error:
        return None, f"the previous index cannot be read ({error})"
    if previous.manifest["model"] != model:
        return None, f"model changed from {previous.manifest['model']['name']} to {model['name']}"
    old_readers = previous.manifest["chunking"].get("reader_version", 1)
    if old_readers != chunking["reader_version"]:
        return None, f"documents are read differently now (reader version {old_readers} -> {READER_VERSION})"
    if previous.manifest["chunking"] != chunking:
        return None, f"chunking changed from {previous.manifest['chunking']} to {chunking}"
    return previous, None


def build_index(
    settings: Settings,
    embedder: Embedder,
    *,
    progress: bool = False,
    on_embed_batch: Callable[[int], None] | None = None,
    backend: Backend | None = None,
) -> BuildReport:
    """Bring the index at `settings.index` up to date with the corpus at `settings.corpus`.

    The driver (this process) decides what to (re)embed and writes the build; `backend` reads, chunks and
    embeds the new and changed documents: here (default) or on a Ray cluster (build_ray.RayBackend).
    """
    started = time.perf_counter()
    if backend is None:
        backend = LocalBackend(embedder, settings.batch_size, progress=progress, on_embed_batch=on_embed_batch)
    # Opened before the lock and before any file is read: a cluster that cannot be reached fails the build
    # with nothing written.
    backend.open()
    try:
        return _build(settings, embedder, backend, started)
    finally:
        backend.close()


def _build(settings: Settings, embedder: Embedder, backend: Backend, started: float) -> BuildReport:
    report = BuildReport(backend=backend.name)
    model, chunking = _build_signature(settings, embedder)
    params = chunk_params(settings, embedder)
    with store.build_lock(settings.index):
        previous, reason = _reusable(settings, embedder, model, chunking)
        report.full_rebuild_reason = reason
        old_documents = previous.documents if previous else {}

        sources, report.skipped = find_sources(settings.corpus)
        documents: list[Document] = []
        passages_by_doc: dict[str, list[Passage]] = {}
        reused_vectors: dict[str, np.ndarray] = {}
        to_embed: list[Passage] = []
        pending: list[Pending] = []
        modified: dict[str, float] = {}  # each file's modification time, for filters (recorded in the manifest)
        for source in sources:
            try:
                data = source.path.read_bytes()
                modified[source.doc_id] = source.path.stat().st_mtime
            except OSError as error:
                report.skipped.append(Skipped(source.doc_id, f"cannot read file: {error}"))
                continue
            digest = hashlib.sha256(data).hexdigest()
            old = old_documents.get(source.doc_id)
            if previous is not None and old is not None and old.sha256 == digest:
                documents.append(old)
                rows = previous.passages_of(source.doc_id)
                passages_by_doc[source.doc_id] = previous.passages[rows.start : rows.stop]
                reused_vectors[source.doc_id] = np.asarray(previous.vectors[rows.start : rows.stop])
                report.unchanged.append(source.doc_id)
                continue
            pending.append(Pending(source, data))
        for parsed in backend.read_and_chunk(pending, params) if pending else []:
            if parsed.document is None:
                log.warning("skipping %s: %s", parsed.doc_id, parsed.error)
                report.skipped.append(Skipped(parsed.doc_id, parsed.error or "unreadable"))
                continue
            (report.changed if parsed.doc_id in old_documents else report.added).append(parsed.doc_id)
            documents.append(parsed.document)
            passages_by_doc[parsed.doc_id] = list(parsed.passages)
            to_embed.extend(parsed.passages)
        # Documents kept as they were stay in the previous build's order and new or changed ones follow, so
        # a build that only adds documents leaves the previous passages as the first rows (see _extendable).
        if previous is not None:
            position = {d["doc_id"]: i for i, d in enumerate(previous.manifest["documents"])}
            kept = set(report.unchanged)
            documents.sort(key=lambda d: (0, position[d.doc_id], "") if d.doc_id in kept else (1, 0, d.doc_id))
        current_ids = {d.doc_id for d in documents}
        # Includes documents that were indexed before but now fail to read: they are skipped *and* removed.
        report.removed = sorted(doc_id for doc_id in old_documents if doc_id not in current_ids)
        if not any(passages_by_doc.values()):
            raise EmptyCorpusError(
                f"no readable text in {settings.corpus} ({len(report.skipped)} files skipped); "
                "the previous index, if any, is unchanged"
            )

        kind = choose_kind(settings.index_kind, sum(map(len, passages_by_doc.values())), settings.approximate_above)
        if previous is not None and not (report.added or report.changed or report.removed) \
                and previous.manifest["index"]["kind"] == kind and _same_mtimes(previous, modified):
            report.up_to_date = True
            report.index_path = previous.path
            report.documents = len(documents)
            report.passages = len(previous.passages)
            report.index_kind = kind
            report.seconds = time.perf_counter() - started
            return report

        embed_stats = EmbedStats()
        new_vectors = backend.embed([p.text for p in to_embed], embed_stats) if to_embed \
            else np.zeros((0, embedder.dim), dtype=np.float32)
        report.embedded_per_node = embed_stats.per_node
        new_rows = {}
        offset = 0
        for doc_id in dict.fromkeys(p.doc_id for p in to_embed):
            count = len(passages_by_doc[doc_id])
            new_rows[doc_id] = new_vectors[offset : offset + count]
            offset += count

        all_passages: list[Passage] = []
        blocks: list[np.ndarray] = []
        for document in documents:
            all_passages.extend(passages_by_doc[document.doc_id])
            blocks.append(reused_vectors.get(document.doc_id, new_rows.get(document.doc_id)))
        vectors = np.vstack([b for b in blocks if b is not None and len(b)]).astype(np.float32, copy=False)

        dense = _extendable(previous, kind, settings, all_passages)
        if dense is not None:
            report.extended_vectors = len(dense)
            dense.add(vectors[len(dense):])
        else:
            dense = create_index(kind, embedder.dim, hnsw_m=settings.hnsw_m,
                                 hnsw_ef_search=settings.hnsw_ef_search, ivf_nprobe=settings.ivf_nprobe)
            dense.add(vectors)
        lexical = LexicalIndex.build([p.text for p in all_passages])
        report.documents = len(documents)
        report.passages = len(all_passages)
        report.embedded_passages = len(to_embed)
        report.index_kind = kind
        report.index_path = store.write_build(
            settings.index,
            model=model,
            chunking=chunking,
            index_info={"kind": kind, "requested": settings.index_kind, "hnsw_m": settings.hnsw_m},
            documents=documents,
            passages=all_passages,
            vectors=vectors,
            dense=dense,
            lexical=lexical,
            modified=modified,
            stats={
                "added": report.added,
                "changed": report.changed,
                "removed": report.removed,
                "skipped": [{"doc_id": s.doc_id, "reason": s.reason} for s in report.skipped],
                "embedded_passages": report.embedded_passages,
                "backend": backend.name,
            },
        )
    report.seconds = time.perf_counter() - started
    return report


def _same_mtimes(previous: store.LoadedIndex, modified: dict[str, float]) -> bool:
    """Whether the previous build recorded these modification times: a file touched but not changed, or a build
    from before they were recorded, is written again (nothing is embedded) so time filters see the files as
    they are."""
    return all(d.get("mtime") == modified.get(d["doc_id"]) for d in previous.manifest["documents"])


def _extendable(previous: store.LoadedIndex | None, kind: str, settings: Settings,
                passages: list[Passage]) -> VectorIndex | None:
    """The previous build's HNSW graph, to add the new rows to, when its passages are this build's first rows.

    An HNSW graph takes new vectors at the cost of inserting just those (building it again is most of an
    incremental build past ~20k passages), but cannot drop any: a build that changes or removes a document
    builds it again. The other kinds are cheap to rebuild (flat, exact) or would keep stale centroids (IVF).
    """
    if previous is None or kind != "hnsw":
        return None
    info = previous.manifest["index"]
    count = len(previous.passages)
    if info["kind"] != "hnsw" or info.get("hnsw_m") != settings.hnsw_m or len(previous.dense) != count:
        return None
    # Kept passages are the previous build's own objects, so this compares references, not texts.
    if len(passages) < count or passages[:count] != previous.passages:
        return None
    return previous.dense  # loaded by this build alone: adding to it changes nothing anyone else reads

