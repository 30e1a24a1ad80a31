"""Section 14, freshness of a live corpus: a watched folder's change to the first search that returns it, a burst of
100 files against `askcorpus index` on the same 100, and first-stage search latency during the burst's build."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np

from .stats import Check, Section

BURST = 100


def _word(i: int) -> str:
    return "fresh" + "".join("bcdfghjklmnpqrstvwxz"[int(d)] for d in f"{i:04d}") + "word"


def _note(i: int, sentences: list[str]) -> str:
    body = " ".join(sentences[(i * 7 + j) % len(sentences)] for j in range(6))
    return f"Note {i} about {_word(i)}.\n\n{body}\n"


def _found(client, word: str) -> bool:
    results = client.get("/search", params={"q": word, "mode": "bm25", "k": 1, "rerank": "false"}).json()["results"]
    return bool(results) and _word_of(results[0]["doc_id"]) == word


def _word_of(doc_id: str) -> str | None:
    stem = Path(doc_id).stem
    return _word(int(stem.split("-")[-1])) if stem.split("-")[-1].isdigit() else None


def _until(predicate, seconds: float = 120.0, step: float = 0.01) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > seconds:
            raise TimeoutError(f"not within {seconds:.0f} s")
        time.sleep(step)
    return time.monotonic()


def _searches(client, seconds_or_stop, out: list[float]) -> None:
    """First-stage searches back to back, their latencies in `out`, until the event is set or time is up."""
    deadline = time.monotonic() + seconds_or_stop if isinstance(seconds_or_stop, float) else None
    while (deadline is None and not seconds_or_stop.is_set()) or (deadline is not None and time.monotonic() < deadline):
        started = time.perf_counter()
        client.get("/search", params={"q": "regional terrorism threat", "rerank": "false", "k": 10})
        out.append(time.perf_counter() - started)


def _burst(folder: Path, first: int, sentences: list[str], client, live) -> float:
    """Write BURST files into `folder` at once; seconds from the last write until all are found and built."""
    folder.mkdir()
    for i in range(first, first + BURST):
        (folder / f"burst-{i:04d}.txt").write_text(_note(i, sentences), encoding="utf-8")
    written = time.monotonic()
    _until(lambda: all(_found(client, _word(first + i)) for i in (0, BURST // 2, BURST - 1))
           and not live.pending and not live.building, step=0.05)
    return time.monotonic() - written


def run(settings, embedder, work: Path, *, quick: bool, log=print) -> Section:
    import httpx

    from ..api import create_app
    from ..api.graceful import serve_in_thread
    from ..build import build_index
    from .synth import seed_sentences

    section = Section("live", "14. Live corpus: last write to the first search returning it (serve --watch)",
                      ["measure", "n", "p50 s", "max s", "note"])
    sentences = seed_sentences(settings.corpus)
    corpus, index = work / "live-corpus", work / "live-index"
    shutil.copytree(settings.corpus, corpus)
    live_settings = settings.with_overrides(corpus=corpus, index=index, watch=True, rerank=False)
    build_index(live_settings, embedder)
    base_index = work / "live-base-index"
    shutil.copytree(index, base_index)
    singles = 5 if quick else 10
    app = create_app(live_settings, embedder=embedder)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        live = app.state.live
        _until(lambda: live.finished >= 1 and not live.pending and not live.building)
        one = []
        for i in range(singles):
            path = corpus / f"single-{i:04d}.txt"
            path.write_text(_note(i, sentences), encoding="utf-8")
            written = time.monotonic()
            one.append(_until(lambda: _found(client, _word(i))) - written)
            _until(lambda: not live.pending and not live.building)
        log(f"   one file: p50 {np.median(one):.2f} s over {singles}")
        idle: list[float] = []
        _searches(client, 3.0 if quick else 6.0, idle)
        before = live.started
        burst_s = _burst(corpus / "burst", 1000, sentences, client, live)
        builds = live.started - before
        # A second burst with searches running, for their latency (the first ran alone, to compare builds).
        during: list[float] = []
        stop = threading.Event()
        searcher = threading.Thread(target=_searches, args=(client, stop, during), daemon=True)
        searcher.start()
        _burst(corpus / "burst2", 2000, sentences, client, live)
        stop.set()
        searcher.join(timeout=30)
        shutil.rmtree(corpus / "burst2")
    # `askcorpus index` on the same 100, from the same index.
    shutil.rmtree(index)
    shutil.copytree(base_index, index)
    for i in range(singles):
        (corpus / f"single-{i:04d}.txt").unlink()
    build_settings = live_settings.with_overrides(watch=False)
    index_started = time.perf_counter()
    build_index(build_settings, embedder)
    index_s = time.perf_counter() - index_started
    idle_p99, during_p99 = float(np.percentile(idle, 99)), float(np.percentile(during, 99)) if during else None
    section.rows += [
        ["one new file, write to found", singles, float(np.median(one)), float(max(one)),
         f"debounce {settings.watch_debounce} s included"],
        [f"{BURST} files at once, last write to all found", 1, burst_s, burst_s, f"{builds} build(s)"],
        [f"askcorpus index on the same {BURST}", 1, index_s, index_s, "build_index alone"],
        ["first-stage search p99, idle", len(idle), float(np.median(idle)), idle_p99, "p50 / p99"],
        ["first-stage search p99, during a second burst", len(during), float(np.median(during)) if during else None,
         during_p99, "p50 / p99"],
    ]
    section.notes.append(f"the watched burst takes {burst_s - index_s:+.2f} s over the build alone: debounce, "
                         "stability check, loading the new build, search polling; latencies in seconds")
    section.checks += [
        Check("one changed file searchable <= 2 s after its last write (p50 of 10)", f"{np.median(one):.2f} s",
              bool(np.median(one) <= 2.0)),
        Check(f"{BURST} files all searchable <= 1.2x `askcorpus index` on them", f"{burst_s:.2f} s vs "
              f"{index_s:.2f} s ({burst_s / index_s:.2f}x)", bool(burst_s <= 1.2 * index_s)),
        Check("first-stage search p99 during a watched burst <= 2x idle p99",
              f"{during_p99 if during_p99 is not None else float('nan'):.4f} s vs {idle_p99:.4f} s",
              None if during_p99 is None else bool(during_p99 <= 2 * idle_p99)),
    ]
    section.data = {"one": one, "burst_s": burst_s, "index_s": index_s, "builds": builds,
                    "idle_p99": idle_p99, "during_p99": during_p99}
    return section
