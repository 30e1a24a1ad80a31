"""Wiring settings, model and index into a Searcher: what the CLI, API, eval and bench all start from."""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from .build import BuildReport, build_index
from .config import Settings
from .embed import Embedder, embedder_for
from .errors import IndexNotFoundError
from .ingest import check_corpus
from .rerank import Reranker, reranker_for
from .search import Searcher
from . import store


def announce_builds(settings: Settings, stream: TextIO | None = None) -> Callable[[BuildReport | None], None]:
    """An `on_build` callback that says a missing index is being built, then prints what the build did (to
    `stream`, or to whatever sys.stderr is when it prints)."""

    def announce(report: BuildReport | None = None) -> None:
        out = stream or sys.stderr
        if report is None:
            print(f"no index at {settings.index}: building it from {settings.corpus} first...", file=out)
        else:
            print(report.summary(), file=out)

    return announce


def open_searcher(settings: Settings, embedder: Embedder | None = None, *, build_if_missing: bool = False,
                  on_build: Callable[[BuildReport | None], None] | None = None,
                  reranker: Reranker | None = None) -> Searcher:
    """Load the models and the index named by `settings`; build the index first if asked and it is missing.

    The reranker loads first: a missing or damaged reranker file fails before anything is built. A missing
    index is noticed before any model loads, and so is a corpus it could not be built from: a failing
    command writes nothing (the encoder's export included).
    """
    try:
        store.current_build(settings.index)
    except IndexNotFoundError:
        if not build_if_missing:
            raise
        check_corpus(settings.corpus)
    reranker = reranker or reranker_for(settings)
    embedder = embedder or embedder_for(settings)
    try:
        index = load_index_for(settings, embedder)
    except IndexNotFoundError:
        if not build_if_missing:
            raise
        if on_build is not None:
            on_build()
        report: BuildReport = build_index(settings, embedder, progress=True)
        if on_build is not None:
            on_build(report)
        index = load_index_for(settings, embedder)
    return Searcher(settings, embedder, index, reranker)


def load_index_for(settings: Settings, embedder: Embedder) -> store.LoadedIndex:
    return store.load(settings.index, expected_model=embedder.name, hnsw_ef_search=settings.hnsw_ef_search,
                      ivf_nprobe=settings.ivf_nprobe)
