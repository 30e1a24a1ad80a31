"""`askcorpus eval --beir DIR` on a small generated BEIR folder: documents ranked by their best passage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from askcorpus.cli import main as cli_main
from askcorpus.evaluate.beir import (BeirFormatError, doc_id_of, file_name, load_beir, ndcg, rank_documents,
                                     recall)

TOPICS = {
    "d1": ("Tea harvest", "Tea leaves are picked by hand in the highlands. The harvest starts in spring."),
    "d2": ("Copper mining", "Copper ore is mined in open pits and smelted near the river."),
    "d3": ("River ferries", "Ferries cross the river every hour; the crossing takes twenty minutes."),
    "d/4": ("Salt trade", "Salt caravans crossed the desert to the coastal markets for centuries."),
    "d5": ("", "Tin is alloyed with copper to make bronze, which the smiths cast into bells."),
}
QUERIES = {"q1": "when does the tea harvest start", "q2": "how is copper ore smelted",
           "q3": "salt caravans desert markets", "q4": "a query no document answers"}
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d5", 1), ("q3", "d/4", 1), ("q4", "d3", 0)]


def make_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in TOPICS.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": q}) + "\n" for i, q in QUERIES.items()))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    return folder


def test_load_keeps_queries_with_a_relevant_document(tmp_path):
    beir = load_beir(make_beir(tmp_path / "toy"))
    assert set(beir.queries) == {"q1", "q2", "q3"}  # q4 has only a zero-relevance judgement
    assert beir.qrels["q2"] == {"d2": 2, "d5": 1}
    assert beir.corpus["d/4"] == ("Salt trade", TOPICS["d/4"][1])


def test_bad_folders_name_the_file_and_line(tmp_path):
    with pytest.raises(BeirFormatError, match="corpus.jsonl is missing"):
        load_beir(tmp_path)
    folder = make_beir(tmp_path / "toy")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnope\t1\n")
    with pytest.raises(BeirFormatError, match="line 2: document 'nope' is not in corpus.jsonl"):
        load_beir(folder)


def test_document_ids_survive_the_file_names():
    for doc_id in ["d1", "d/4", "a b?c", "..", "ünï"]:
        assert doc_id_of(file_name(doc_id)) == doc_id and "/" not in file_name(doc_id)


def test_documents_rank_by_their_best_passage():
    assert rank_documents(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    assert rank_documents(["a", "b", "c"], limit=2) == ["a", "b"]


def test_metrics_agree_with_ranx():
    ranx = pytest.importorskip("ranx")
    qrels = {"q1": {"a": 2, "b": 1, "z": 1}, "q2": {"c": 1}}
    ranked = {"q1": ["b", "x", "a", "y"], "q2": ["y", "c"]}
    run = ranx.Run({q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in ranked.items()})
    expected = ranx.evaluate(ranx.Qrels(qrels), run, ["ndcg@10", "recall@100"])
    mine_ndcg = sum(ndcg(ranked[q], qrels[q]) for q in qrels) / 2
    mine_recall = sum(recall(ranked[q], qrels[q]) for q in qrels) / 2
    assert mine_ndcg == pytest.approx(expected["ndcg@10"], abs=1e-9)
    assert mine_recall == pytest.approx(expected["recall@100"], abs=1e-9)


def test_cli_scores_a_beir_folder(tmp_path, monkeypatch, capsys):
    folder = make_beir(tmp_path / "toy")
    monkeypatch.setenv("ASKCORPUS_MODEL", "hashing-64")
    monkeypatch.setenv("ASKCORPUS_RERANK_MODEL", "overlap")
    index = tmp_path / "index"
    args = ["eval", "--beir", str(folder), "--index", str(index), "--json", "--modes", "bm25,hybrid,bm25+rerank"]
    assert cli_main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["queries"] == 3 and data["documents"] == 5
    # Every query shares its rare words with its relevant document only: BM25 puts it first.
    assert data["modes"]["bm25"]["recall@100"] == 1.0
    assert data["modes"]["bm25"]["ndcg@10"] > 0.9
    for scores in data["modes"].values():
        assert 0.0 < scores["ndcg@10"] <= 1.0
    # The corpus and its index live under the index folder, apart from the main index.
    assert (index / "beir" / "toy" / "index" / "CURRENT").is_file()
    assert not (index / "CURRENT").exists()
    # Run again: nothing is embedded a second time.
    assert cli_main(args) == 0
    assert "index is up to date" in capsys.readouterr().err


@pytest.mark.slow
def test_beir_with_the_real_models(tmp_path, monkeypatch, capsys, encoder_cache):
    folder = make_beir(tmp_path / "toy")
    monkeypatch.setenv("ASKCORPUS_ENCODER_CACHE", str(encoder_cache))
    assert cli_main(["eval", "--beir", str(folder), "--index", str(tmp_path / "index"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["modes"]) == {"bm25", "dense", "hybrid", "hybrid+rerank"}
    for mode in ("dense", "hybrid", "hybrid+rerank"):
        assert data["modes"][mode]["recall@100"] == 1.0 and data["modes"][mode]["ndcg@10"] > 0.8, mode
