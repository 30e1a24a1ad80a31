"""The index on disk: a manifest, the passage table, vectors, FAISS and BM25 files, swapped in atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from . import __version__
from .errors import IndexFormatError, IndexLockedError, IndexNotFoundError, ModelMismatchError
from .filters import format_of
from .index import VectorIndex, load_index
from .jsonfile import write_json
from .lexical import LexicalIndex
from .records import Document, Passage
from .selection import Catalog
from .system import fsync_dir

FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
BUILDS_DIR = "builds"
LOCK_FILE = ".lock"
MANIFEST_FILE = "manifest.json"
DOCUMENTS_FILE = "documents.json"
VECTORS_FILE = "vectors.npy"
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class LoadedIndex:
    """Everything a query needs, read from one build directory. Never modified after loading."""

    path: Path
    manifest: dict
    documents: dict[str, Document]
    passages: list[Passage]
    vectors: np.ndarray  # (passages, dim) unit vectors, row i is passage i
    dense: VectorIndex
    lexical: LexicalIndex

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def built_at(self) -> str:
        return self.manifest["built_at"]

    def passages_of(self, doc_id: str) -> range:
        first, count = self.manifest["documents_index"][doc_id]
        return range(first, first + count)

    @cached_property
    def catalog(self) -> Catalog:
        """What filters read of the documents, made on first use (cached_property writes past the frozen
        __setattr__; two threads racing to make it make equal ones)."""
        return Catalog(self.manifest["documents"], self.manifest["passages"]["doc"])


def current_build(index_dir: Path) -> Path:
    """The build directory CURRENT points at, or IndexNotFoundError."""
    index_dir = Path(index_dir)
    pointer = index_dir / CURRENT_FILE
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise IndexNotFoundError(
            f"no index at {index_dir} (no {CURRENT_FILE} file): build one with `askcorpus index --index {index_dir}`"
        ) from None
    build = index_dir / BUILDS_DIR / name
    if not name or "/" in name or not build.is_dir():
        raise IndexFormatError(f"{pointer} points at a missing build {name!r}; rebuild with `askcorpus index`")
    return build


def read_manifest(build: Path) -> dict:
    try:
        manifest = json.loads((build / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{build} has no {MANIFEST_FILE}; rebuild with `askcorpus index`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{build / MANIFEST_FILE} is damaged ({error}); rebuild with `askcorpus index`") from error
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"index at {build} has format version {version!r}, this askcorpus reads version {FORMAT_VERSION}; "
            "rebuild it with `askcorpus index`"
        )
    return manifest


def load(index_dir: Path, expected_model: str | None = None, *, hnsw_ef_search: int | None = None,
         ivf_nprobe: int | None = None) -> LoadedIndex:
    """Load the current build; refuses an index of another format version or another model."""
    build = current_build(index_dir)
    manifest = read_manifest(build)
    if expected_model is not None and manifest["model"]["name"] != expected_model:
        raise ModelMismatchError(
            f"index at {index_dir} was built with model {manifest['model']['name']!r} but {expected_model!r} "
            "is configured; rebuild with `askcorpus index` or set ASKCORPUS_MODEL to the index's model"
        )
    try:
        raw_documents = json.loads((build / DOCUMENTS_FILE).read_text(encoding="utf-8"))
        documents = {
            d["doc_id"]: Document(d["doc_id"], d["text"], d["sha256"], d["title"], tuple(d["page_starts"]))
            for d in raw_documents
        }
        table = manifest["passages"]
        doc_ids = [d["doc_id"] for d in manifest["documents"]]
        passages = []
        for doc_index, start, end, tokens in zip(table["doc"], table["start"], table["end"], table["tokens"]):
            doc_id = doc_ids[doc_index]
            passages.append(Passage(doc_id, start, end, documents[doc_id].text[start:end], tokens))
        vectors = np.load(build / VECTORS_FILE, mmap_mode="r")
        dense = load_index(manifest["index"]["kind"], build, manifest["model"]["dim"])
        lexical = LexicalIndex.load(build)
    except (OSError, KeyError, ValueError, TypeError, IndexError, json.JSONDecodeError) as error:
        raise IndexFormatError(f"index at {build} is damaged ({type(error).__name__}: {error}); rebuild it") from error
    dense.set_search_params(hnsw_ef_search=hnsw_ef_search, ivf_nprobe=ivf_nprobe)
    if not (len(passages) == len(dense) == vectors.shape[0]):
        raise IndexFormatError(
            f"index at {build} is inconsistent: {len(passages)} passages, {len(dense)} dense vectors, "
            f"{vectors.shape[0]} stored vectors; rebuild it"
        )
    manifest = dict(manifest)
    manifest["documents_index"] = {d["doc_id"]: (d["first_passage"], d["passage_count"]) for d in manifest["documents"]}
    return LoadedIndex(build, manifest, documents, passages, vectors, dense, lexical)


@contextmanager
def build_lock(index_dir: Path, wait_seconds: float = 600.0) -> Iterator[None]:
    """One build at a time per index folder; a killed build's lock dies with its process."""
    from filelock import FileLock, Timeout

    Path(index_dir).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(index_dir) / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another build of {index_dir} to finish...", flush=True)
        try:
            lock.acquire(timeout=wait_seconds)
        except Timeout:
            raise IndexLockedError(
                f"another build of {index_dir} has held {Path(index_dir) / LOCK_FILE} for {wait_seconds:.0f}s; "
                "wait for it or stop it"
            ) from None
    try:
        yield
    finally:
        lock.release()


def write_build(
    index_dir: Path,
    *,
    model: dict,
    chunking: dict,
    index_info: dict,
    documents: list[Document],
    passages: list[Passage],
    vectors: np.ndarray,
    dense: VectorIndex,
    lexical: LexicalIndex,
    stats: dict,
    modified: Mapping[str, float] | None = None,
) -> Path:
    """Write a complete build beside the current one, then point CURRENT at it in one atomic rename.

    Each document's entry records what filters read: its corpus-relative `path`, `format` and `mtime` (the file's
    modification time in seconds since the epoch, from `modified`; null when not given).
    Call under `build_lock`. A process killed at any point leaves CURRENT on the previous, complete build.
    """
    modified = modified or {}
    index_dir = Path(index_dir)
    builds = index_dir / BUILDS_DIR
    builds.mkdir(parents=True, exist_ok=True)
    name = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    temp = builds / (TEMP_PREFIX + name)
    temp.mkdir()

    doc_position = {d.doc_id: i for i, d in enumerate(documents)}
    first_passage: dict[str, int] = {}
    counts: dict[str, int] = {}
    for i, passage in enumerate(passages):
        first_passage.setdefault(passage.doc_id, i)
        counts[passage.doc_id] = counts.get(passage.doc_id, 0) + 1
    manifest = {
        "format_version": FORMAT_VERSION,
        "askcorpus_version": __version__,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "chunking": chunking,
        "index": index_info,
        "stats": stats,
        "documents": [
            {
                "doc_id": d.doc_id,
                "path": d.doc_id,  # the document id is its path relative to the corpus folder
                "format": format_of(d.doc_id),
                "mtime": modified.get(d.doc_id),
                "sha256": d.sha256,
                "title": d.title,
                "chars": len(d.text),
                "pages": len(d.page_starts) or None,
                "first_passage": first_passage.get(d.doc_id, 0),
                "passage_count": counts.get(d.doc_id, 0),
            }
            for d in documents
        ],
        "passages": {
            "doc": [doc_position[p.doc_id] for p in passages],
            "start": [p.start for p in passages],
            "end": [p.end for p in passages],
            "tokens": [p.tokens for p in passages],
        },
    }
    write_json(temp / DOCUMENTS_FILE, [
        {"doc_id": d.doc_id, "title": d.title, "sha256": d.sha256, "page_starts": list(d.page_starts), "text": d.text}
        for d in documents
    ])
    np.save(temp / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
    dense.save(temp)
    lexical.save(temp)
    # The manifest goes last: a build directory with a manifest is a complete one.
    write_json(temp / MANIFEST_FILE, manifest)
    _fsync_tree(temp)
    final = builds / name
    os.rename(temp, final)
    _replace_pointer(index_dir, name)
    _remove_old_builds(index_dir, keep={name})
    return final


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(directory)


def _replace_pointer(index_dir: Path, name: str) -> None:
    temp = index_dir / f"{CURRENT_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, index_dir / CURRENT_FILE)
    fsync_dir(index_dir)


def _remove_old_builds(index_dir: Path, keep: set[str], keep_previous: int = 1, grace_seconds: float = 60.0) -> None:
    """Delete leftovers of killed builds and all but the newest older builds.

    The newest previous build stays, and so does anything younger than `grace_seconds`, because a
    server may still be loading it while the swap happens.
    """
    builds = Path(index_dir) / BUILDS_DIR
    for pointer in Path(index_dir).glob(f"{CURRENT_FILE}.*.tmp"):
        pointer.unlink(missing_ok=True)
    finished = sorted(
        (p for p in builds.iterdir() if p.is_dir() and not p.name.startswith(TEMP_PREFIX) and p.name not in keep),
        key=lambda p: p.name,
        reverse=True,
    )
    now = time.time()
    stale = [p for p in builds.iterdir() if p.name.startswith(TEMP_PREFIX)] + finished[keep_previous:]
    for path in stale:
        if now - path.stat().st_mtime > grace_seconds or path.name.startswith(TEMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
