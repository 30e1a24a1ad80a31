"""Queries in every mode against the real seeds with the real model, fusion, validation and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from askcorpus.config import Settings
from askcorpus.errors import QueryError
from askcorpus.records import Hit
from askcorpus.search import MISSING_Z, reciprocal_rank_fusion, validate_query, zscore_fusion

LEADER_DOC = "004_9b6637ebe242a1f9.txt"


def test_rrf_sums_reciprocal_ranks_and_breaks_ties_by_id():
    dense = [Hit(1, 0.9), Hit(2, 0.8), Hit(3, 0.7)]
    lexical = [Hit(3, 12.0), Hit(1, 5.0), Hit(4, 1.0)]
    fused = reciprocal_rank_fusion([dense, lexical], k=60)
    assert [h.passage_id for h in fused] == [1, 3, 2, 4]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert [h.passage_id for h in reciprocal_rank_fusion([[Hit(9, 1)], [Hit(8, 1)]], k=60)] == [8, 9]
    assert len(reciprocal_rank_fusion([dense, lexical], limit=2)) == 2


def test_zscore_fusion_weighs_standardised_scores():
    dense = [Hit(1, 0.9), Hit(2, 0.5), Hit(3, 0.4)]
    lexical = [Hit(3, 9.0), Hit(4, 3.0), Hit(5, 3.0)]
    fused = zscore_fusion([dense, lexical], [0.6, 0.4])
    d_mean, d_std = np.mean([0.9, 0.5, 0.4]), np.std([0.9, 0.5, 0.4])
    l_mean, l_std = np.mean([9.0, 3.0, 3.0]), np.std([9.0, 3.0, 3.0])
    expected = {
        1: 0.6 * (0.9 - d_mean) / d_std + 0.4 * MISSING_Z,
        2: 0.6 * (0.5 - d_mean) / d_std + 0.4 * MISSING_Z,
        3: 0.6 * (0.4 - d_mean) / d_std + 0.4 * (9.0 - l_mean) / l_std,
        4: 0.6 * MISSING_Z + 0.4 * (3.0 - l_mean) / l_std,
        5: 0.6 * MISSING_Z + 0.4 * (3.0 - l_mean) / l_std,
    }
    assert [h.passage_id for h in fused] == sorted(expected, key=lambda p: (-expected[p], p))
    for hit in fused:
        assert hit.score == pytest.approx(expected[hit.passage_id])
    # A list with no spread (or nothing at all) cannot reorder the other one.
    assert [h.passage_id for h in zscore_fusion([dense, []], [0.6, 0.4])] == [1, 2, 3]
    assert [h.passage_id for h in zscore_fusion([dense, [Hit(7, 2.0)]], [0.6, 0.4], limit=2)] == [1, 2]


def _zscore_fusion_by_definition(rankings, weights, limit=None):
    """The fusion written out a passage at a time: what the array version must reproduce to the last bit."""
    standardised = []
    for ranking in rankings:
        scores = np.array([hit.score for hit in ranking], dtype=np.float64)
        spread = float(scores.std()) if len(scores) > 1 else 0.0
        mean = float(scores.mean()) if len(scores) else 0.0
        standardised.append({hit.passage_id: (hit.score - mean) / spread if spread else 0.0 for hit in ranking})
    candidates = set().union(*standardised)
    fused = {pid: sum(w * z.get(pid, MISSING_Z) for w, z in zip(weights, standardised)) for pid in candidates}
    return [Hit(pid, score) for pid, score in sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:limit]]


def test_zscore_fusion_equals_its_definition_on_random_rankings():
    rng = np.random.default_rng(7)
    for _ in range(300):
        rankings = []
        for scale in (1.0, 20.0):
            ids = rng.choice(120, size=int(rng.integers(0, 60)), replace=False)
            # Rounded scores make ties, inside a list and across the fused total.
            scores = np.sort(np.round(rng.random(len(ids)) * scale, 1))[::-1]
            rankings.append([Hit(int(i), float(s)) for i, s in zip(ids, scores)])
        weights = [float(rng.choice([0.5, 0.6, 0.75])), 0.0]
        weights[1] = 1.0 - weights[0]
        limit = [None, 1, 10][int(rng.integers(0, 3))]
        assert zscore_fusion(rankings, weights, limit) == _zscore_fusion_by_definition(rankings, weights, limit)


@pytest.mark.parametrize(
    "query,k,mode,message",
    [
        ("", 10, "hybrid", "empty"),
        ("   \n\t", 10, "hybrid", "empty"),
        ("x" * 2001, 10, "hybrid", "2000"),
        ("fine", 0, "hybrid", "k must"),
        ("fine", 101, "hybrid", "k must"),
        ("fine", True, "hybrid", "k must"),
        ("fine", 10, "semantic", "mode must"),
        (None, 10, "hybrid", "string"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(query, k, mode, message):
    with pytest.raises(QueryError, match=message):
        validate_query(query, k, mode, Settings())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_mode_finds_the_leader_with_exact_citations(searcher, mode):
    response = searcher.search("Who is the current leader of ISKP?", k=5, mode=mode)
    assert response.mode == mode and len(response.results) == 5
    texts = [r.passage.text for r in response.results]
    assert any("Ghafari" in t for t in texts), texts
    for rank, result in enumerate(response.results, start=1):
        document = searcher.index.documents[result.passage.doc_id]
        assert result.rank == rank
        assert document.text[result.passage.start : result.passage.end] == result.passage.text
    # Reranked (the default with the real model), the list follows the cross-encoder's score.
    assert response.reranked
    scores = [r.rerank_score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    first_stage = searcher.search("Who is the current leader of ISKP?", k=5, mode=mode, rerank=False)
    scores = [r.score for r in first_stage.results]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
def test_answer_is_an_exact_span_and_abstains_off_topic(searcher):
    response = searcher.search("Who was the first emir of ISKP?", k=5)
    answer = response.answer
    assert answer is not None and "Hafiz Saeed Khan" in answer.text
    assert searcher.index.documents[answer.doc_id].text[answer.start : answer.end] == answer.text
    assert 0.0 <= answer.score <= 1.0
    off_topic = searcher.search("What is a good recipe for chocolate chip cookies?", k=5)
    assert off_topic.answer is None
    assert off_topic.to_dict()["answer"] is None


@pytest.mark.slow
def test_who_leads_iskp_cites_the_current_leader(searcher):
    """The issue's new-user check: the right passage first, the answer sentence, exact offsets."""
    response = searcher.search("Who leads ISKP?", k=5)
    top = response.results[0].passage
    assert "Sanaullah Ghafari" in top.text
    assert searcher.index.documents[top.doc_id].text[top.start : top.end] == top.text
    assert response.answer is not None and "led by Sanaullah Ghafari" in response.answer.text


@pytest.mark.slow
def test_json_shape(searcher):
    data = searcher.search("How many fighters does ISKP have?", k=3).to_dict()
    assert set(data) >= {"query", "mode", "answer", "results"}
    assert set(data["answer"]) >= {"text", "doc_id", "start", "end", "score"}
    for result in data["results"]:
        assert set(result) >= {"rank", "doc_id", "start", "end", "text", "score", "tokens"}
        assert isinstance(result["tokens"], int) and result["tokens"] > 0
    json.dumps(data)


@pytest.mark.slow
def test_cli_ask_json_builds_a_missing_index_and_prints_one_object(tmp_path, seeds_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", ASKCORPUS_CORPUS=str(seeds_dir), ASKCORPUS_INDEX=str(tmp_path / "ix"))
    run = subprocess.run(
        [sys.executable, "-m", "askcorpus.cli", "ask", "Who is the current leader of ISKP?", "--json", "-k", "3"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "building it" in run.stderr
    data = json.loads(run.stdout)
    assert data["query"] == "Who is the current leader of ISKP?" and data["mode"] == "hybrid" and len(data["results"]) == 3
    text = (seeds_dir / data["results"][0]["doc_id"]).read_bytes().decode("utf-8")
    for result in data["results"]:
        assert text[result["start"] : result["end"]] == result["text"] or \
            (seeds_dir / result["doc_id"]).read_bytes().decode()[result["start"] : result["end"]] == result["text"]
    assert any("Ghafari" in r["text"] for r in data["results"])

    human = subprocess.run(
        [sys.executable, "-m", "askcorpus.cli", "ask", "Who leads ISKP?", "-k", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert human.returncode == 0 and " 1. " in human.stdout and "[[" in human.stdout

    bad = subprocess.run(
        [sys.executable, "-m", "askcorpus.cli", "ask", "   ", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert bad.returncode == 2 and "query is empty" in bad.stderr and bad.stdout == ""

    # A reader that goes away (`askcorpus ask ... | head`) ends the command quietly, not with a traceback.
    piped = subprocess.Popen([sys.executable, "-m", "askcorpus.cli", "ask", "Who leads ISKP?", "-k", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    piped.stdout.close()
    stderr = piped.communicate(timeout=600)[1].decode()
    assert piped.returncode == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_the_schema_pattern_matches_exactly_what_validation_accepts():
    import re
    import sys

    from askcorpus.search import NOT_ONLY_WHITESPACE

    pattern = re.compile(NOT_ONLY_WHITESPACE)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        assert bool(pattern.search(char)) == (not char.isspace()), hex(code)
