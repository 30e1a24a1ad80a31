"""What a build hands to a backend (documents to read, chunk and embed) and the local backend that does it here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .chunk import ChunkParams, chunk_text
from .embed import Embedder
from .errors import IngestError
from .ingest import SourceFile, read_document
from .records import Document, Passage


@dataclass(frozen=True)
class Pending:
    """A new or changed source file, with the bytes the build hashed (the backend never reads the disk)."""

    source: SourceFile
    data: bytes


@dataclass(frozen=True)
class Parsed:
    """One pending file read and chunked: its document and passages, or why it cannot be used."""

    doc_id: str
    document: Document | None
    passages: tuple[Passage, ...] = ()
    error: str | None = None


@dataclass
class EmbedStats:
    """Where the vectors were made: passages embedded per node (one entry, "local", for a local build)."""

    per_node: dict[str, int] = field(default_factory=dict)


class Backend(ABC):
    """Runs a build's expensive stages. The driver plans before and writes after; a backend only computes.

    Contract: `read_and_chunk` returns one Parsed per Pending, in the same order; `embed` returns one unit
    vector per text, in the same order. Neither writes anything.
    """

    name: str

    def open(self) -> None:
        """Acquire what the backend runs on (a cluster connection); called before the build takes its lock."""

    def close(self) -> None:
        """Release what `open` acquired."""

    @abstractmethod
    def read_and_chunk(self, pending: Sequence[Pending], params: ChunkParams) -> list[Parsed]:
        """Parse and chunk each pending file."""

    @abstractmethod
    def embed(self, texts: Sequence[str], stats: EmbedStats) -> np.ndarray:
        """An (len(texts), dim) float32 array of the model's unit vectors."""


def parse_one(pending: Pending, params: ChunkParams, count_tokens: Callable[[Sequence[str]], list[int]]) -> Parsed:
    """Read and chunk one file; an unreadable file becomes a Parsed with its error (the build skips it)."""
    try:
        document = read_document(pending.source, pending.data)
    except IngestError as error:
        return Parsed(pending.source.doc_id, None, (), str(error))
    passages = chunk_text(document.doc_id, document.text, params, count_tokens)
    return Parsed(document.doc_id, document, tuple(passages))


class LocalBackend(Backend):
    """Everything in this process, with the driver's own embedder."""

    name = "local"

    def __init__(self, embedder: Embedder, batch_size: int = 32, *, progress: bool = False,
                 on_embed_batch: Callable[[int], None] | None = None) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.progress = progress
        self.on_embed_batch = on_embed_batch

    def read_and_chunk(self, pending: Sequence[Pending], params: ChunkParams) -> list[Parsed]:
        return [parse_one(p, params, self.embedder.count_tokens) for p in pending]

    def embed(self, texts: Sequence[str], stats: EmbedStats) -> np.ndarray:
        vectors = self._encode(list(texts))
        if len(texts):
            stats.per_node["local"] = len(texts)
        return vectors

    def _encode(self, texts: list[str]) -> np.ndarray:
        embedder, batch_size = self.embedder, self.batch_size
        if not texts:
            return np.zeros((0, embedder.dim), dtype=np.float32)
        if self.on_embed_batch is None:
            return embedder.encode(texts, batch_size=batch_size, progress=self.progress)
        # With a callback (tests that kill a build mid-way), encode batch by batch and report each.
        parts = []
        done = 0
        for first in range(0, len(texts), batch_size):
            parts.append(embedder.encode(texts[first : first + batch_size], batch_size=batch_size))
            done += len(parts[-1])
            self.on_embed_batch(done)
        return np.vstack(parts)
