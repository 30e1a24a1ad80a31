"""Filters: each kind alone and combined, on every index kind and BM25, against a brute-force reference; over HTTP,
the command line and the manifest."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from askcorpus import selection, store
from askcorpus.api import create_app
from askcorpus.build import build_index
from askcorpus.cli import main as cli_main
from askcorpus.config import Settings
from askcorpus.embed import HashingEmbedder
from askcorpus.errors import FilterError
from askcorpus.filters import Filter, filter_from, filter_from_pairs, glob_pattern
from askcorpus.rerank import reranker_for
from askcorpus.search import Searcher, zscore_fusion

QUESTIONS = ["What threat does ISKP pose to the region?", "Taliban return to power",
             "refugee flows and border security", "recruitment propaganda techniques"]
# Modification times given to the corpus files, one per seed: 2021-01-01 .. 2025-01-01 UTC.
TIMES = [datetime(2021 + i, 1, 1, tzinfo=timezone.utc).timestamp() for i in range(5)]
LAYOUT = ["reports/2021/{}.txt", "reports/{}.md", "notes/{}.md", "notes/deep/{}.txt", "private/{}.html"]


def _corpus(root: Path, seeds_dir: Path) -> Path:
    """The five seeds spread over folders and formats, each with a known modification time."""
    corpus = root / "corpus"
    for seed, layout, mtime in zip(sorted(seeds_dir.iterdir()), LAYOUT, TIMES):
        target = corpus / layout.format(seed.stem)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = seed.read_text(encoding="utf-8")
        if target.suffix == ".html":
            paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
            text = f"<html><head><title>Private briefing</title></head><body>{paragraphs}</body></html>"
        target.write_text(text, encoding="utf-8")
        os.utime(target, (mtime, mtime))
    return corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, seeds_dir) -> Path:
    return _corpus(tmp_path_factory.mktemp("filters"), seeds_dir)


def _settings(corpus: Path, index: Path, kind: str = "flat") -> Settings:
    return Settings(corpus=corpus, index=index, model="hashing-64", rerank_model="overlap", index_kind=kind)


@pytest.fixture(scope="module")
def indexes(corpus, tmp_path_factory) -> dict[str, Settings]:
    """One build per index kind of the same corpus."""
    built = {}
    for kind in ("flat", "hnsw", "ivf", "exact"):
        settings = _settings(corpus, tmp_path_factory.mktemp(f"index-{kind}"), kind)
        build_index(settings, HashingEmbedder(dim=64))
        built[kind] = settings
    return built


def _searcher(settings: Settings, reranker=None) -> Searcher:
    return Searcher(settings, HashingEmbedder(dim=64), store.load(settings.index), reranker)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _when(year: int) -> datetime:
    return datetime(year, 1, 1, tzinfo=timezone.utc)


# Each filter with its reference written the plain way, over (doc_id, title, mtime read from the file itself).
CASES = {
    "doc_ids": (Filter(doc_ids=["notes/002_820a792f755c5fcd.md", "private/004_9b6637ebe242a1f9.html", "nope"]),
                lambda d, t, m: d in ("notes/002_820a792f755c5fcd.md", "private/004_9b6637ebe242a1f9.html")),
    "path prefix": (Filter(path="reports/"), lambda d, t, m: d.split("/")[0] == "reports"),
    "path glob **": (Filter(path="notes/**"), lambda d, t, m: d.split("/")[0] == "notes"),
    "path glob *": (Filter(path="notes/*"), lambda d, t, m: d.count("/") == 1 and d.startswith("notes/")),
    "path glob suffix": (Filter(path="**/*.txt"), lambda d, t, m: d.endswith(".txt")),
    "formats": (Filter(formats=["md", "HTML"]), lambda d, t, m: d.endswith((".md", ".html"))),
    "modified_after": (Filter(modified_after=_when(2023)), lambda d, t, m: m >= TIMES[2]),
    "modified_before": (Filter(modified_before=_when(2023)), lambda d, t, m: m < TIMES[2]),
    "modified range": (Filter(modified_after=_when(2022), modified_before=_when(2024)),
                       lambda d, t, m: TIMES[1] <= m < TIMES[3]),
    "title": (Filter(title="private BRIEFING"), lambda d, t, m: {"private", "briefing"} <= _words(t)),
    "combined": (Filter(path="notes/", formats=["md"], modified_after=_when(2022)),
                 lambda d, t, m: d.startswith("notes/") and d.endswith(".md") and m >= TIMES[1]),
    "combined, title": (Filter(path="**/*.md", title="ISKP"),
                        lambda d, t, m: d.endswith(".md") and "iskp" in _words(t)),
}


def _reference_passages(index, corpus: Path, keep) -> np.ndarray:
    """Passage ids of documents the plain predicate keeps, with each file's mtime read from disk."""
    kept = {doc_id for doc_id, document in index.documents.items()
            if keep(doc_id, document.title, (corpus / doc_id).stat().st_mtime)}
    return np.array([i for i, p in enumerate(index.passages) if p.doc_id in kept], dtype=np.int64)


def _dense_reference(index, vector: np.ndarray, allowed: np.ndarray) -> list[tuple[int, float]]:
    """Every passage scored, the filter applied, the rest ranked: brute force."""
    scores = np.asarray(index.vectors, dtype=np.float64) @ vector
    return sorted(((int(i), float(scores[i])) for i in allowed), key=lambda item: (-item[1], item[0]))


def _lexical_reference(index, query: str, allowed: np.ndarray) -> list[tuple[int, float]]:
    everything = index.lexical.search(query, len(index.passages))
    keep = set(allowed.tolist())
    return [(h.passage_id, h.score) for h in everything if h.passage_id in keep]


def _same_ranking(found, ranked, k: int) -> None:
    """The top k of `ranked` (every allowed passage, best first): same scores in the same order, and the same
    passages wherever a score is not tied with another passage's (in or out of the top k)."""
    expected = ranked[:k]
    assert len(found) == len(expected)
    assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)
    scores = [s for _, s in ranked]
    for (got, _), (want, score) in zip(found, expected):
        if sum(abs(score - other) <= 1e-5 for other in scores) == 1:
            assert got == want


@pytest.fixture(params=["exact over the subset", "index selector"])
def strategy(request, monkeypatch):
    """Both ways a dense search keeps to a filter: the small-subset exact search, and the vector index's own
    selector (forced by setting the subset threshold to 0)."""
    if request.param == "index selector":
        monkeypatch.setattr(selection, "EXACT_ROWS", 0)
    return request.param


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "exact"])
def test_dense_search_keeps_to_the_filter_exactly(indexes, corpus, kind, case, strategy):
    searcher = _searcher(indexes[kind])
    index = searcher.index
    filter, keep = CASES[case]
    allowed = _reference_passages(index, corpus, keep)
    assert len(allowed), "every case keeps something"
    assert np.array_equal(searcher.allowed(filter), allowed)
    for question in QUESTIONS:
        vector = searcher.encode_queries([question])[0]
        for k in (1, 10, 40):
            hits = searcher.retrieve(question, k, "dense", vector, searcher.allowed(filter))
            _same_ranking([(h.passage_id, h.score) for h in hits], _dense_reference(index, vector, allowed), k)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bm25_and_hybrid_keep_to_the_filter_exactly(indexes, corpus, case):
    searcher = _searcher(indexes["flat"])
    index = searcher.index
    filter, keep = CASES[case]
    allowed = _reference_passages(index, corpus, keep)
    for question in QUESTIONS:
        found = searcher.retrieve(question, 10, "bm25", None, searcher.allowed(filter))
        _same_ranking([(h.passage_id, h.score) for h in found], _lexical_reference(index, question, allowed), 10)
        vector = searcher.encode_queries([question])[0]
        depth = searcher.settings.fusion_depth
        dense = [h for h in index.dense.search(vector[None], len(index.passages))[0] if h.passage_id in allowed]
        lexical = [h for h in index.lexical.search(question, len(index.passages)) if h.passage_id in allowed]
        weight = searcher.settings.dense_weight
        expected = zscore_fusion([dense[:depth], lexical[:depth]], [weight, 1 - weight], limit=10)
        hybrid = searcher.retrieve(question, 10, "hybrid", vector, searcher.allowed(filter))
        assert [h.passage_id for h in hybrid] == [h.passage_id for h in expected]


def test_k_results_come_back_when_that_many_match(indexes):
    """Filtering before ranking: a document that holds few of the unfiltered top k still fills all k."""
    searcher = _searcher(indexes["hnsw"], reranker_for(indexes["hnsw"]))
    question = "What threat does ISKP pose to the region?"
    for mode in ("dense", "bm25", "hybrid"):
        everything = searcher.search(question, k=10, mode=mode)
        counts = {}
        for result in everything.results:
            counts[result.passage.doc_id] = counts.get(result.passage.doc_id, 0) + 1
        rare = min(searcher.index.documents, key=lambda d: counts.get(d, 0))
        assert counts.get(rare, 0) < 10
        only = Filter(doc_ids=[rare])
        filtered = searcher.search(question, k=10, mode=mode, filter=only)
        allowed = searcher.allowed(only)
        # BM25 finds only the passages sharing a word with the question; the dense side finds every one.
        matching = len(_lexical_reference(searcher.index, question, allowed)) if mode == "bm25" else len(allowed)
        assert matching >= 10 and len(filtered.results) == 10
        assert {r.passage.doc_id for r in filtered.results} == {rare}
        assert filtered.reranked  # the second stage reranked what the first stage kept, none the wiser


@pytest.mark.parametrize("filter", [Filter(formats=["pdf"]), Filter(doc_ids=[]), Filter(path="nowhere/"),
                                    Filter(modified_after=_when(2030)), Filter(title="zzzz-no-such-word"),
                                    Filter(modified_after=_when(2024), modified_before=_when(2022))])
def test_a_filter_matching_nothing_gives_an_empty_list(indexes, filter):
    searcher = _searcher(indexes["ivf"], reranker_for(indexes["ivf"]))
    for mode in ("dense", "bm25", "hybrid"):
        response = searcher.search("ISKP", k=10, mode=mode, filter=filter)
        assert response.results == () and response.answer is None


def test_scopes_and_a_search_filter_both_hold(indexes):
    searcher = _searcher(indexes["flat"]).scoped(Filter(path="notes/")).scoped(Filter(formats=["txt"]))
    response = searcher.search("ISKP", k=10, mode="hybrid", filter=Filter(title="islamic state"))
    doc_ids = {r.passage.doc_id for r in response.results}
    assert doc_ids and all(d.startswith("notes/") and d.endswith(".txt") for d in doc_ids)
    assert searcher.search("ISKP", k=10, filter=Filter(path="reports/")).results == ()


def test_globs_keep_to_folders_and_filters_normalise():
    assert glob_pattern("notes/*").match("notes/a.md") and not glob_pattern("notes/*").match("notes/sub/a.md")
    assert glob_pattern("**/*.md").match("a.md") and glob_pattern("**/*.md").match("x/y/a.md")
    assert glob_pattern("notes/**").match("notes/sub/a.md") and not glob_pattern("notes/**").match("notesx/a")
    assert glob_pattern("r/[!a]?.txt").match("r/b1.txt") and not glob_pattern("r/[!a]?.txt").match("r/a1.txt")
    assert Filter(formats=[".PDF", "htm"]) == Filter(formats=["html", "pdf"])
    assert Filter(path="./notes/").path == "notes/"
    assert Filter(modified_after=datetime(2024, 1, 1)).modified_after == _when(2024)  # no offset: UTC
    assert filter_from({}) is None and filter_from({"path": None}) is None


@pytest.mark.parametrize("data,field", [({"paths": "x"}, "filter.paths"), ({"formats": ["exe"]}, "filter.formats"),
                                        ({"modified_after": "yesterday"}, "filter.modified_after"),
                                        ({"doc_ids": "a.txt"}, "filter.doc_ids"), ({"path": 3}, "filter.path")])
def test_a_malformed_filter_names_its_field(data, field):
    with pytest.raises(FilterError, match=re.escape(field)):
        filter_from(data)


def test_command_line_pairs():
    made = filter_from_pairs(["path=notes/**", "formats=pdf,md", "formats=txt", "doc_ids=a,b.txt",
                              "modified_after=2024-01-31T00:00:00Z", "title=annual report"])
    assert made == Filter(path="notes/**", formats=["pdf", "md", "txt"], doc_ids=["a,b.txt"],
                          modified_after=datetime(2024, 1, 31, tzinfo=timezone.utc), title="annual report")
    for bad in (["path"], ["colour=red"], ["path=a", "path=b"], ["modified_before=soon"]):
        with pytest.raises(FilterError, match="--filter|filter.modified_before"):
            filter_from_pairs(bad)


# ---------------------------------------------------------------------------------------------- manifest


def test_the_manifest_records_path_format_and_mtime(indexes, corpus):
    manifest = store.load(indexes["flat"].index).manifest
    assert len(manifest["documents"]) == 5
    for entry in manifest["documents"]:
        assert entry["path"] == entry["doc_id"]
        assert entry["format"] == {".txt": "txt", ".md": "md", ".html": "html"}[Path(entry["doc_id"]).suffix]
        assert entry["mtime"] == (corpus / entry["doc_id"]).stat().st_mtime


def _copy(settings: Settings, tmp_path: Path) -> Settings:
    corpus = tmp_path / "corpus"
    shutil.copytree(settings.corpus, corpus)  # copy2 keeps the modification times
    copied = _settings(corpus, tmp_path / "index")
    shutil.copytree(settings.index, copied.index)
    return copied


def test_a_touched_file_is_recorded_again_without_embedding(indexes, tmp_path):
    settings = _copy(indexes["flat"], tmp_path)
    embedder = HashingEmbedder(dim=64)
    assert build_index(settings, embedder).up_to_date
    touched = settings.corpus / "notes/002_820a792f755c5fcd.md"
    os.utime(touched, (TIMES[4] + 60, TIMES[4] + 60))
    report = build_index(settings, embedder)
    assert not report.up_to_date and report.embedded_passages == 0 and not report.changed
    searcher = _searcher(settings)
    found = searcher.search("ISKP", k=40, mode="bm25", filter=Filter(modified_after=_when(2025)))
    assert found.results and {r.passage.doc_id for r in found.results} <= {"notes/002_820a792f755c5fcd.md",
                                                                             "private/004_9b6637ebe242a1f9.html"}


def _strip_filter_fields(settings: Settings) -> None:
    """Make the build look like one from before filters: no path, format or mtime in its manifest."""
    build = store.current_build(settings.index)
    manifest = json.loads((build / store.MANIFEST_FILE).read_text(encoding="utf-8"))
    for entry in manifest["documents"]:
        for key in ("path", "format", "mtime"):
            entry.pop(key)
    (build / store.MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def test_an_index_from_before_filters_loads_and_says_to_rebuild_for_times(indexes, tmp_path):
    settings = _copy(indexes["flat"], tmp_path)
    _strip_filter_fields(settings)
    searcher = _searcher(settings)
    # Path and format come from the document ids: those filters work as they are.
    notes = searcher.search("ISKP", k=10, filter=Filter(path="notes/", formats=["md"]))
    assert notes.results and all(r.passage.doc_id.startswith("notes/") for r in notes.results)
    with pytest.raises(FilterError, match="askcorpus index"):
        searcher.search("ISKP", filter=Filter(modified_after=_when(2023)))
    with TestClient(create_app(settings, embedder=HashingEmbedder(dim=64))) as client:
        response = client.get("/search", params={"q": "ISKP", "filter.modified_after": "2023-01-01T00:00:00Z"})
        assert response.status_code == 422 and "askcorpus index" in response.json()["detail"]
        assert client.get("/documents").json()["documents"][0]["modified"] is None
    report = build_index(settings, HashingEmbedder(dim=64))
    assert report.embedded_passages == 0 and not report.up_to_date
    assert _searcher(settings).search("ISKP", k=10, filter=Filter(modified_after=_when(2023))).results


# ---------------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def client(indexes, tmp_path):
    settings = _copy(indexes["flat"], tmp_path)
    with TestClient(create_app(settings, embedder=HashingEmbedder(dim=64))) as test_client:
        yield test_client


def test_post_and_get_filters_are_the_same_search(client):
    body = {"query": "ISKP threat", "k": 8, "mode": "hybrid",
            "filter": {"path": "notes/**", "formats": ["md", "txt"], "modified_after": "2022-01-01T00:00:00Z"}}
    posted = client.post("/search", json=body)
    assert posted.status_code == 200
    doc_ids = {r["doc_id"] for r in posted.json()["results"]}
    assert doc_ids and all(d.startswith("notes/") for d in doc_ids)
    got = client.get("/search", params=[("q", "ISKP threat"), ("k", 8), ("mode", "hybrid"),
                                        ("filter.path", "notes/**"), ("filter.formats", "md"),
                                        ("filter.formats", "txt"), ("filter.modified_after", "2022-01-01T00:00:00Z")])
    assert got.status_code == 200 and got.json() == posted.json()


def test_a_filter_matching_nothing_is_an_empty_list_over_http(client):
    response = client.post("/search", json={"query": "ISKP", "filter": {"formats": ["pdf"]}})
    assert response.status_code == 200 and response.json()["results"] == []
    assert response.json()["answer"] is None


@pytest.mark.parametrize("filter,field", [
    ({"modified_after": "yesterday"}, "filter.modified_after"), ({"modified_before": 1700000000}, "filter.modified_before"),
    ({"formats": ["exe"]}, "filter.formats"), ({"paths": "notes/"}, "filter.paths"), ({"doc_ids": "a.txt"}, "filter.doc_ids"),
    ({"title": ["a"]}, "filter.title"), ("notes/", "filter"),
])
def test_a_malformed_filter_is_a_422_naming_the_field_post(client, filter, field):
    response = client.post("/search", json={"query": "ISKP", "filter": filter})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    assert any(".".join(map(str, e["loc"][1:])).startswith(field) for e in response.json()["errors"])


@pytest.mark.parametrize("params,field", [({"filter.modified_after": "yesterday"}, "filter.modified_after"),
                                          ({"filter.formats": "exe"}, "filter.formats"),
                                          ({"filter.pathz": "notes/"}, "filter.pathz")])
def test_a_malformed_filter_is_a_422_naming_the_field_get(client, params, field):
    for path, extra in (("/search", {"q": "ISKP"}), ("/documents", {})):
        response = client.get(path, params={**extra, **params})
        assert response.status_code == 422, response.text
        assert field in response.json()["detail"]


def test_documents_listing_takes_the_same_filter(client):
    everything = client.get("/documents").json()
    assert everything["count"] == 5 and {d["format"] for d in everything["documents"]} == {"txt", "md", "html"}
    listed = client.get("/documents", params={"filter.path": "reports/", "filter.modified_before": "2022-06-01"})
    assert [d["doc_id"] for d in listed.json()["documents"]] == ["reports/001_6ed2f81b91fb4ea5.md",
                                                                 "reports/2021/000_455900a64ecf7b1d.txt"]
    assert listed.json()["count"] == 2
    assert client.get("/documents", params={"filter.formats": "pdf"}).json() == {"count": 0, "documents": []}
    first = everything["documents"][0]
    assert datetime.fromisoformat(first["modified"]).year in range(2021, 2026)


# ---------------------------------------------------------------------------------------------- command line


def _cli_env(monkeypatch):
    monkeypatch.setenv("ASKCORPUS_MODEL", "hashing-64")
    monkeypatch.setenv("ASKCORPUS_RERANK_MODEL", "overlap")


def test_ask_filter_flag(indexes, tmp_path, capsys, monkeypatch):
    _cli_env(monkeypatch)
    settings = _copy(indexes["flat"], tmp_path)
    paths = ["--corpus", str(settings.corpus), "--index", str(settings.index)]
    assert cli_main(["ask", "ISKP threat", "--json", "-k", "5", "--filter", "path=reports/",
                     "--filter", "formats=md", *paths]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 5 and {r["doc_id"] for r in results} == {"reports/001_6ed2f81b91fb4ea5.md"}
    assert cli_main(["ask", "ISKP", "--json", "--filter", "formats=pdf", *paths]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == []


def test_a_malformed_filter_flag_fails_before_anything_loads(tmp_path, capsys, monkeypatch):
    _cli_env(monkeypatch)
    index = tmp_path / "index"
    assert cli_main(["ask", "ISKP", "--filter", "colour=red", "--index", str(index)]) == 2
    assert "--filter 'colour=red'" in capsys.readouterr().err
    assert not index.exists()


def test_eval_filter_flag(fake_settings, tmp_path, capsys, monkeypatch):
    _cli_env(monkeypatch)
    paths = ["--corpus", str(fake_settings.corpus), "--index", str(fake_settings.index)]
    args = ["eval", "--limit", "3", "--modes", "bm25", "--json", *paths]
    assert cli_main([*args, "--filter", "formats=pdf"]) == 0
    nothing = json.loads(capsys.readouterr().out)
    assert cli_main(args) == 0
    everything = json.loads(capsys.readouterr().out)
    assert nothing != everything  # no passage to find within a filter keeping nothing
    assert cli_main([*args, "--filter", "modified_after=whenever"]) == 2


# ---------------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_filters_with_the_real_model(searcher):
    question = "Who was the first emir of ISKP?"
    everything = searcher.search(question, k=5)
    best = everything.results[0].passage.doc_id
    within = searcher.search(question, k=5, filter=Filter(doc_ids=[best]))
    assert within.results[0].passage_id == everything.results[0].passage_id
    assert {r.passage.doc_id for r in within.results} == {best} and len(within.results) == 5
    elsewhere = searcher.search(question, k=5, filter=Filter(doc_ids=[d for d in searcher.index.documents
                                                                      if d != best]))
    assert len(elsewhere.results) == 5 and best not in {r.passage.doc_id for r in elsewhere.results}
