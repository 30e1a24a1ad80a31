"""The rerank stage with stand-in scorers: order, depth, k past the depth, ties, empty lists, abstention."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from askcorpus import store
from askcorpus.answer import extract_answer_reranked
from askcorpus.build import build_index
from askcorpus.errors import QueryError
from askcorpus.records import Hit, Passage, Result
from askcorpus.rerank import (Reranker, TermOverlapReranker, adaptive_depth, confidence, load_reranker, rerank_hits,
                              standardised_scores)
from askcorpus.rerank.cross_encoder import PairScoreCache
from askcorpus.search import Searcher


class ScriptedReranker(Reranker):
    """Scores each text by a table (default 0), and records every call."""

    backend = "scripted"
    name = "scripted"

    def __init__(self, table: dict[str, float] | None = None) -> None:
        self.table = table or {}
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query, texts):
        self.calls.append((query, list(texts)))
        return np.array([self.table.get(text, 0.0) for text in texts], dtype=np.float32)


def _hits(n: int) -> list[Hit]:
    return [Hit(i, 10.0 - i) for i in range(n)]


def _text(passage_id: int) -> str:
    return f"passage {passage_id}"


def test_reranked_hits_follow_the_scores_and_keep_their_first_stage_scores():
    reranker = ScriptedReranker({"passage 0": -1.0, "passage 1": 3.0, "passage 2": 0.5})
    reranked = rerank_hits(reranker, "q", _hits(3), _text, depth=3)
    assert [h.passage_id for h in reranked] == [1, 2, 0]
    assert [h.rerank_score for h in reranked] == [3.0, 0.5, -1.0]
    assert [h.score for h in reranked] == [9.0, 8.0, 10.0]  # first-stage scores travel with their passages


def test_only_the_depth_is_scored_and_the_tail_keeps_its_first_stage_order():
    reranker = ScriptedReranker({"passage 2": 5.0})
    reranked = rerank_hits(reranker, "q", _hits(6), _text, depth=3)
    assert reranker.calls == [("q", ["passage 0", "passage 1", "passage 2"])]
    assert [h.passage_id for h in reranked] == [2, 0, 1, 3, 4, 5]
    assert [h.rerank_score for h in reranked[3:]] == [None, None, None]


def test_ties_keep_the_first_stage_order():
    reranked = rerank_hits(ScriptedReranker(), "q", _hits(5), _text, depth=5)
    assert [h.passage_id for h in reranked] == [0, 1, 2, 3, 4]
    tied = ScriptedReranker({"passage 3": 1.0, "passage 1": 1.0})
    assert [h.passage_id for h in rerank_hits(tied, "q", _hits(5), _text, depth=5)] == [1, 3, 0, 2, 4]


def test_the_sentence_pass_lifts_a_passage_to_its_best_sentences_score():
    texts = {0: "Kabul is large. Rain fell.", 1: "The leader is Ghafari. He hides.", 2: "Nothing here. At all."}
    reranker = ScriptedReranker({texts[0]: 2.0, texts[1]: 1.0, texts[2]: 0.5, "The leader is Ghafari.": 4.0,
                                 "Nothing here.": 9.0})
    reranked = rerank_hits(reranker, "q", _hits(3), texts.__getitem__, depth=3, sentence_depth=2)
    # Passage 1's best sentence (4.0) beats passage 0's own score; passage 2 is past the sentence depth, so
    # its sentence is never read and it keeps its own score.
    assert [(h.passage_id, h.rerank_score) for h in reranked] == [(1, 4.0), (0, 2.0), (2, 0.5)]
    read = {text for _, call in reranker.calls[1:] for text in call}
    assert read == {"Kabul is large.", "Rain fell.", "The leader is Ghafari.", "He hides."}


def test_a_sentence_two_overlapping_passages_share_is_scored_once_and_counts_for_both():
    texts = {0: "Alpha came first. Shared line here.", 1: "Shared line here. Omega came last."}
    reranker = ScriptedReranker({"Shared line here.": 3.0})
    reranked = rerank_hits(reranker, "q", _hits(2), texts.__getitem__, depth=2, sentence_depth=2)
    assert [h.rerank_score for h in reranked] == [3.0, 3.0]
    assert [h.passage_id for h in reranked] == [0, 1]  # a tie keeps the first-stage order
    assert reranker.calls[1][1].count("Shared line here.") == 1


def test_without_the_sentence_pass_only_passages_are_read():
    reranker = ScriptedReranker()
    rerank_hits(reranker, "q", _hits(3), _text, depth=3, sentence_depth=0)
    assert len(reranker.calls) == 1


def test_an_empty_candidate_list_is_not_scored():
    reranker = ScriptedReranker()
    assert rerank_hits(reranker, "q", [], _text, depth=10) == []
    assert reranker.calls == []


def test_confidence_is_the_logistic_function_and_never_overflows():
    assert confidence(0.0) == 0.5
    assert confidence(2.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert confidence(-2.0) == pytest.approx(1 - confidence(2.0))
    assert confidence(1e6) == 1.0 and confidence(-1e6) == 0.0
    values = [confidence(x) for x in np.linspace(-12, 12, 49)]
    assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)


def test_the_overlap_stand_in_prefers_texts_sharing_the_questions_terms():
    scores = TermOverlapReranker().score("who leads the province", ["the province is led by X", "weather today"])
    assert scores[0] > scores[1]
    assert isinstance(load_reranker("overlap"), TermOverlapReranker)


def test_pair_score_cache_is_bounded_and_least_recently_used_goes_first():
    cache = PairScoreCache(2)
    cache.put(("q", "a"), 1.0)
    cache.put(("q", "b"), 2.0)
    assert cache.get(("q", "a")) == 1.0  # "a" is now the most recently used
    cache.put(("q", "c"), 3.0)
    assert cache.get(("q", "b")) is None and cache.get(("q", "a")) == 1.0 and cache.get(("q", "c")) == 3.0
    assert len(cache) == 2 and cache.hits == 3 and cache.misses == 1
    off = PairScoreCache(0)
    off.put(("q", "a"), 1.0)
    assert off.get(("q", "a")) is None


# ------------------------------------------------------------------------------ answer and abstention


def _results(texts_scores: list[tuple[str, float | None]]) -> list[Result]:
    results, offset = [], 0
    for rank, (text, rerank_score) in enumerate(texts_scores, start=1):
        passage = Passage("doc", offset, offset + len(text), text, tokens=len(text.split()))
        results.append(Result(rank, rank, passage, score=1.0, rerank_score=rerank_score))
        offset += len(text) + 2
    return results


def test_the_answer_is_the_sentence_the_reranker_scores_best_with_the_top_passages_confidence(fake_settings):
    results = _results([("Rain fell. The leader is Ghafari.", 2.0), ("Other text here. More words follow.", 1.0)])
    reranker = ScriptedReranker({"The leader is Ghafari.": 4.0, "Rain fell.": -2.0, "More words follow.": 9.0})
    answer = extract_answer_reranked("who is the leader?", results, reranker, fake_settings)
    assert answer is not None and answer.text == "The leader is Ghafari."
    assert (answer.doc_id, answer.start, answer.end) == ("doc", 11, 33)
    assert answer.score == pytest.approx(confidence(2.0))  # the top passage's, not the sentence's
    # By default only the top passage's sentences are candidates: the second passage's better sentence is unread.
    assert reranker.calls == [("who is the leader?", ["Rain fell.", "The leader is Ghafari."])]


def test_the_answer_reads_as_many_passages_as_set_each_sentence_once(fake_settings):
    settings = fake_settings.model_copy(update={"answer_rerank_passages": 3})
    results = _results([("Rain fell. The leader is Ghafari.", 2.0), ("Other text here. More words follow.", 1.0)])
    # A third passage overlapping the first: its sentence at the same place in the document is read once.
    overlapping = Passage("doc", 11, 33, "The leader is Ghafari.", tokens=4)
    results.append(Result(3, 3, overlapping, score=1.0, rerank_score=0.5))
    reranker = ScriptedReranker({"The leader is Ghafari.": 4.0, "More words follow.": 9.0})
    answer = extract_answer_reranked("who is the leader?", results, reranker, settings)
    assert answer is not None and answer.text == "More words follow."
    assert answer.score == pytest.approx(confidence(2.0))
    assert reranker.calls[0][1] == ["Rain fell.", "The leader is Ghafari.", "Other text here.", "More words follow."]


def test_the_answer_abstains_below_the_threshold(fake_settings):
    threshold = fake_settings.answer_min_rerank_score
    logit_at_threshold = math.log(threshold / (1 - threshold))
    reranker = ScriptedReranker()
    below = _results([("Some sentence here.", logit_at_threshold - 0.01)])
    above = _results([("Some sentence here.", logit_at_threshold + 0.01)])
    assert extract_answer_reranked("q?", below, reranker, fake_settings) is None
    assert reranker.calls == []  # abstaining costs no model call
    assert extract_answer_reranked("q?", above, reranker, fake_settings) is not None
    assert extract_answer_reranked("q?", _results([("Not reranked.", None)]), reranker, fake_settings) is None
    assert extract_answer_reranked("q?", [], reranker, fake_settings) is None


# ------------------------------------------------------------------------------------------- the searcher


@pytest.fixture(scope="module")
def fake_index(tmp_path_factory):
    from askcorpus.config import Settings
    from askcorpus.embed import HashingEmbedder
    from conftest import SEEDS

    root = tmp_path_factory.mktemp("rerank")
    shutil.copytree(SEEDS, root / "corpus")
    settings = Settings(corpus=root / "corpus", index=root / "index", model="hashing-64", rerank_model="overlap")
    embedder = HashingEmbedder(dim=64)
    build_index(settings, embedder)
    return settings, embedder, store.load(settings.index)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_reranks_the_first_stage_candidates_and_returns_the_top_k(fake_index, mode):
    settings, embedder, index = fake_index
    reranker = TermOverlapReranker()
    searcher = Searcher(settings.with_overrides(rerank_depth=8), embedder, index, reranker)
    question = "Who leads ISKP?"
    first = searcher.search(question, k=8, mode=mode, rerank=False)
    reranked = searcher.search(question, k=3, mode=mode)
    assert not first.reranked and reranked.reranked
    assert all(r.rerank_score is None for r in first.results)
    expected = rerank_hits(reranker, question, [Hit(r.passage_id, r.score) for r in first.results],
                           lambda pid: index.passages[pid].text, depth=8)[:3]
    assert [(r.passage_id, r.score, r.rerank_score) for r in reranked.results] == \
        [(h.passage_id, h.score, h.rerank_score) for h in expected]
    assert [r.rank for r in reranked.results] == [1, 2, 3]
    assert {"retrieve", "rerank", "answer"} <= set(reranked.timings)


def test_k_past_the_depth_returns_k_with_the_tail_in_first_stage_order(fake_index):
    settings, embedder, index = fake_index
    searcher = Searcher(settings, embedder, index, TermOverlapReranker())
    first = searcher.search("ISKP attacks in Kabul", k=7, rerank=False)
    reranked = searcher.search("ISKP attacks in Kabul", k=7, rerank_depth=3)
    assert len(reranked.results) == 7
    assert sorted(r.passage_id for r in reranked.results[:3]) == sorted(r.passage_id for r in first.results[:3])
    assert [r.passage_id for r in reranked.results[3:]] == [r.passage_id for r in first.results[3:]]
    assert all(r.rerank_score is not None for r in reranked.results[:3])
    assert all(r.rerank_score is None for r in reranked.results[3:])


def test_reranking_off_is_exactly_the_first_stage(fake_index):
    settings, embedder, index = fake_index
    with_reranker = Searcher(settings, embedder, index, TermOverlapReranker())
    without = Searcher(settings, embedder, index)
    assert with_reranker.search("Who leads ISKP?", rerank=False) == without.search("Who leads ISKP?")
    assert without.search("Who leads ISKP?").reranked is False


def test_rerank_parameters_are_checked(fake_index):
    settings, embedder, index = fake_index
    without = Searcher(settings, embedder, index)
    with pytest.raises(QueryError, match="reranking is off"):
        without.search("Who leads ISKP?", rerank=True)
    with_reranker = Searcher(settings, embedder, index, TermOverlapReranker())
    for depth in (0, 101, 2.5, True):
        with pytest.raises(QueryError, match="rerank_depth"):
            with_reranker.search("Who leads ISKP?", rerank_depth=depth)
    with pytest.raises(QueryError, match="rerank must be"):
        with_reranker.search("Who leads ISKP?", rerank="yes")


def test_a_bm25_search_with_reranking_does_not_encode_the_question(fake_index):
    settings, embedder, index = fake_index

    class Refusing(type(embedder)):
        def encode(self, texts, batch_size=32, progress=False):
            raise AssertionError("encoded")

    searcher = Searcher(settings, Refusing(dim=64), index, TermOverlapReranker())
    response = searcher.search("Who leads ISKP?", mode="bm25")
    assert response.reranked and response.results and "encode" not in response.timings


# ---------------------------------------------------------------------------------------------- cost levers


@pytest.mark.parametrize("scores, depth, low, gap, expected", [
    ([5.0, 4.9, 4.0, 3.0, 1.0, 0.5], 6, 1, 1.5, 3),   # 5.0, 4.9 and 4.0 lie within 1.5 of the first
    ([5.0, 4.9, 4.0, 3.0, 1.0, 0.5], 6, 4, 1.5, 4),   # never below the minimum
    ([5.0, 4.9, 4.8, 4.7, 4.6, 4.5], 3, 1, 1.5, 3),   # never above the maximum
    ([5.0, 4.9, 4.0], 3, 1, math.inf, 3),             # no gap: the whole depth
    ([5.0, 1.0], 30, 10, 1.5, 10),                    # the minimum even past the list's end
    ([5.0, 1.0], 30, 30, 1.5, 30),                    # minimum at the maximum: a fixed depth
    ([], 30, 10, 1.5, 30),
])
def test_adaptive_depth_counts_the_candidates_within_the_gap_between_its_bounds(scores, depth, low, gap, expected):
    assert adaptive_depth(scores, depth, low, gap) == expected


def test_standardised_scores_have_mean_zero_and_unit_spread_and_a_flat_list_gives_zeros():
    z = standardised_scores([0.9, 0.5, 0.4, 0.1])
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0) and list(np.argsort(-z)) == [0, 1, 2, 3]
    assert list(standardised_scores([0.3, 0.3, 0.3])) == [0.0, 0.0, 0.0]
    assert list(standardised_scores([0.3])) == [0.0]


def test_the_sentence_margin_leaves_out_passages_too_far_below_the_best():
    texts = {0: "Kabul is large. Rain fell.", 1: "The leader is Ghafari. He hides.", 2: "Nothing here. At all."}
    reranker = ScriptedReranker({texts[0]: 5.0, texts[1]: 3.5, texts[2]: 2.9, "Nothing here.": 9.0})
    reranked = rerank_hits(reranker, "q", _hits(3), texts.__getitem__, depth=3, sentence_depth=3,
                           sentence_margin=2.0)
    read = {text for _, call in reranker.calls[1:] for text in call}
    # Passage 2 scores 2.1 below the best: its sentences (one of which would have won) are not read.
    assert read == {"Kabul is large.", "Rain fell.", "The leader is Ghafari.", "He hides."}
    assert [h.passage_id for h in reranked] == [0, 1, 2]
    everything = rerank_hits(ScriptedReranker(reranker.table), "q", _hits(3), texts.__getitem__, depth=3,
                             sentence_depth=3, sentence_margin=math.inf)
    assert everything[0].passage_id == 2  # with no margin its sentence is read and wins


def test_search_reranks_the_candidates_within_the_gap_unless_the_request_names_a_depth(fake_index):
    settings, embedder, index = fake_index
    reranker = ScriptedReranker()
    tuned = settings.with_overrides(rerank_depth=20, rerank_min_depth=4, rerank_gap=1.0, rerank_sentence_depth=0)
    searcher = Searcher(tuned, embedder, index, reranker)
    question = "Who leads ISKP?"
    candidates = searcher.first_stage(question, k=10)
    assert len(candidates.hits) == 20 and candidates.reranking
    scores = [h.score for h in candidates.hits]  # hybrid z-score fusion: standard deviations already
    expected = max(4, min(20, sum(1 for s in scores if s >= scores[0] - 1.0)))
    assert searcher.rerank_candidates(candidates) == expected
    before = len(reranker.calls)
    response = searcher.second_stage(candidates)
    assert len(reranker.calls[before][1]) == expected  # the passages; the answer's sentences come after
    assert response == searcher.search(question, k=10)  # the two stages are the search
    before = len(reranker.calls)
    searcher.search(question, k=10, rerank_depth=7)
    assert len(reranker.calls[before][1]) == 7
    dense = searcher.first_stage(question, k=10, mode="dense")  # cosines: standardised before the gap
    z = standardised_scores([h.score for h in dense.hits])
    assert searcher.rerank_candidates(dense) == max(4, min(20, int((z >= z[0] - 1.0).sum())))
