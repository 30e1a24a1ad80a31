"""The pure metric functions: hand-worked cases, and agreement with ranx on random rankings."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace as NS

import pytest

from askcorpus.evaluate import metrics as M


def test_recall_is_a_hit_at_k():
    rels = [0, 0, 1, 0, 1]
    assert [M.recall_at_k(rels, k) for k in (1, 2, 3, 5, 10)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert M.recall_at_k([], 5) == 0.0
    with pytest.raises(ValueError):
        M.recall_at_k(rels, 0)


def test_reciprocal_rank_stops_at_k():
    assert M.reciprocal_rank([0, 0, 1], 10) == pytest.approx(1 / 3)
    assert M.reciprocal_rank([1, 1], 10) == 1.0
    assert M.reciprocal_rank([0] * 10 + [1], 10) == 0.0
    assert M.reciprocal_rank([], 10) == 0.0


def test_ndcg_hand_worked():
    # relevant at ranks 2 and 4, three relevant passages exist in the collection.
    rels = [0, 1, 0, 1, 0]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert M.dcg_at_k(rels, 10) == pytest.approx(dcg)
    assert M.ndcg_at_k(rels, 10, n_relevant=3) == pytest.approx(dcg / ideal)
    # Without n_relevant the ideal uses the relevant passages that were retrieved.
    assert M.ndcg_at_k(rels, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    # The ideal ranking is cut at k too.
    assert M.ndcg_at_k([1, 1], 2, n_relevant=50) == pytest.approx(1.0)
    assert M.ndcg_at_k([0, 0], 10, n_relevant=0) == 0.0
    assert M.ndcg_at_k([1] + [0] * 9, 10, n_relevant=1) == 1.0


def test_interval_coverage_merges_overlaps():
    assert M.interval_coverage(10, 20, [(0, 12), (11, 15), (18, 30)]) == pytest.approx(0.7)
    assert M.interval_coverage(10, 20, []) == 0.0
    assert M.interval_coverage(10, 20, [(0, 100)]) == 1.0
    assert M.interval_coverage(10, 20, [(20, 30), (0, 10)]) == 0.0


def test_evidence_coverage_takes_the_best_alternative_span_and_the_top_k_only():
    p = lambda d, s, e: NS(doc_id=d, start=s, end=e)  # noqa: E731
    passages = [p("a", 0, 50), p("b", 100, 150), p("x", 0, 10), p("x", 0, 10), p("x", 0, 10), p("b", 150, 200)]
    spans = [NS(doc_id="a", start=40, end=60), NS(doc_id="b", start=120, end=170)]
    # span a: 10/20 covered; span b: 30/50 in the top 5 (the passage reaching 200 is 6th).
    assert M.evidence_coverage(passages, spans, 5) == pytest.approx(0.6)
    assert M.evidence_coverage(passages, spans, 6) == pytest.approx(1.0)
    assert M.evidence_coverage(passages, [], 5) == 0.0
    # Same offsets in another document do not count.
    assert M.evidence_coverage([p("c", 40, 60)], spans[:1], 5) == 0.0


def test_mean_and_percentile_of_nothing_are_none():
    assert M.mean([]) is None and M.percentile([], 50) is None
    assert M.mean([1.0, 0.0]) == 0.5
    assert M.percentile([1, 2, 3, 4, 100], 50) == 3.0
    assert M.percentile(list(range(1, 101)), 95) == pytest.approx(95.05)


@pytest.mark.slow  # ranx compiles its metrics with numba: tens of seconds on a cold cache
@pytest.mark.filterwarnings("ignore:unsafe cast")
def test_metrics_agree_with_ranx_on_random_rankings():
    """An independent implementation: ranx's hit_rate@k is our recall@k, plus its mrr@10 and ndcg@10."""
    ranx = pytest.importorskip("ranx")
    rng = random.Random(7)
    qrels, run, ours = {}, {}, {"hit_rate@1": [], "hit_rate@5": [], "mrr@10": [], "ndcg@10": [], "ndcg@5": []}
    for q in range(200):
        pool = [f"d{i}" for i in range(40)]
        relevant = set(rng.sample(pool, rng.randint(1, 6)))
        ranking = rng.sample(pool, rng.randint(1, 15))
        qrels[f"q{q}"] = {doc: 1 for doc in relevant}
        run[f"q{q}"] = {doc: float(len(ranking) - i) for i, doc in enumerate(ranking)}
        rels = [doc in relevant for doc in ranking]
        ours["hit_rate@1"].append(M.recall_at_k(rels, 1))
        ours["hit_rate@5"].append(M.recall_at_k(rels, 5))
        ours["mrr@10"].append(M.reciprocal_rank(rels, 10))
        ours["ndcg@10"].append(M.ndcg_at_k(rels, 10, n_relevant=len(relevant)))
        ours["ndcg@5"].append(M.ndcg_at_k(rels, 5, n_relevant=len(relevant)))
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(ours), make_comparable=True)
    for name, values in ours.items():
        assert M.mean(values) == pytest.approx(theirs[name], abs=1e-6), name
