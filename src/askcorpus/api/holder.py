"""The index being served, swapped as one reference when a new build appears, and the model behind a lock."""

import asyncio
import logging
import threading
from datetime import datetime, timezone
from functools import partial
from typing import Any, Sequence

import numpy as np

from .. import store
from ..config import Settings
from ..embed import Embedder
from ..errors import AskcorpusError
from ..search import Searcher

log = logging.getLogger("askcorpus.api")


class SerializedEmbedder(Embedder):
    """The model behind a lock, so searches and a web reindex never use the tokenizer at the same time.

    Hugging Face fast tokenizers fail ("Already borrowed") when one thread changes their truncation settings
    while another encodes; long encodes are split into batches so searches interleave with a rebuild.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.name = inner.name
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens
        self._lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            return self.inner.count_tokens(texts)

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        texts = list(texts)
        step = max(1, batch_size)
        if len(texts) <= step:
            with self._lock:
                return self.inner.encode(texts, batch_size=step)
        parts = []
        for first in range(0, len(texts), step):
            with self._lock:
                parts.append(self.inner.encode(texts[first : first + step], batch_size=step))
        return np.vstack(parts)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class IndexHolder:
    """The one Searcher being served. Readers take `holder.searcher` once per request; a swap replaces it."""

    def __init__(self, settings: Settings, embedder: Embedder, searcher: Searcher) -> None:
        self.settings = settings
        self.embedder = embedder
        self._searcher = searcher
        self.loaded_at = _now()
        self.reloads = 0
        self.reload_errors = 0  # failed attempts to load a new build (askcorpus_reload_errors_total)
        self.last_error: str | None = None
        self._failed_build: str | None = None
        self._lock = asyncio.Lock()  # one load or build at a time

    @property
    def searcher(self) -> Searcher:
        return self._searcher

    def swap(self, searcher: Searcher) -> None:
        old = self._searcher.index
        self._searcher = searcher
        self.loaded_at = _now()
        self.reloads += 1
        self.last_error = None
        self._failed_build = None
        new = searcher.index
        log.info("now serving index build %s (%d documents, %d passages; was %s)",
                 new.path.name, len(new.documents), len(new.passages), old.path.name)

    async def reload_if_changed(self) -> bool:
        """Load and swap in the build CURRENT names if it is not the one served. Failures keep the old index."""
        try:
            build = await asyncio.to_thread(store.current_build, self.settings.index)
        except AskcorpusError as error:
            self._note_failure(None, str(error))
            return False
        if build.name in (self._searcher.index.path.name, self._failed_build):
            return False
        async with self._lock:
            if build.name == self._searcher.index.path.name:
                return False
            return await self._load_and_swap(build.name)

    async def _load_and_swap(self, build_name: str) -> bool:
        from ..engine import load_index_for

        try:
            index = await asyncio.to_thread(load_index_for, self.settings, self.embedder)
        except Exception as error:  # a damaged or foreign build must never take the service down
            self._note_failure(build_name, f"{type(error).__name__}: {error}" if not isinstance(error, AskcorpusError)
                               else str(error))
            return False
        if index.path.name == self._searcher.index.path.name:
            return False
        self.swap(Searcher(self.settings, self.embedder, index, self._searcher.reranker))
        return True

    def _note_failure(self, build_name: str | None, message: str) -> None:
        self.reload_errors += 1
        if message != self.last_error:
            log.error("cannot load the new index (%s); still serving build %s", message,
                      self._searcher.index.path.name)
        self.last_error = message
        self._failed_build = build_name

    async def reindex(self) -> tuple[Any, bool]:
        """Rebuild from the corpus (incrementally) in a worker thread, then swap to the new build."""
        from ..build import build_index

        async with self._lock:
            report = await asyncio.to_thread(build_index, self.settings, self.embedder)
            swapped = False
            if report.index_path is not None and report.index_path.name != self._searcher.index.path.name:
                swapped = await self._load_and_swap(report.index_path.name)
            return report, swapped

    async def watch(self) -> None:
        interval = self.settings.reload_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching whatever happens
                log.exception("index watcher failed; will retry")


def open_holder(settings: Settings, embedder: Embedder | None, searcher: Searcher | None) -> IndexHolder:
    from ..embed import embedder_for
    from ..engine import open_searcher

    if searcher is not None:
        base = searcher.embedder
    else:
        base = embedder or embedder_for(settings)
    locked = base if isinstance(base, SerializedEmbedder) else SerializedEmbedder(base)
    if searcher is None:
        searcher = open_searcher(settings, locked, build_if_missing=True, on_build=partial(log_build, settings))
    return IndexHolder(settings, locked, Searcher(settings, locked, searcher.index, searcher.reranker))


def log_build(settings: Settings, report: Any = None) -> None:
    if report is None:
        log.info("no index at %s: building it from %s first...", settings.index, settings.corpus)
    else:
        log.info("built the index: %s", report.summary().replace("\n", "; "))
