"""BM25 terms: stop words including question words, irregular verb forms, and highlight spans."""

from __future__ import annotations

import pytest

from askcorpus.lexical import LexicalIndex, term_spans, terms


def test_question_words_and_stop_words_are_dropped():
    assert terms("Who is the leader of ISKP, and how many fighters does it have?") == ["leader", "iskp", "fighter"]


def test_irregular_verb_forms_meet_their_base_form():
    assert terms("Who leads ISKP?") == ["lead", "iskp"]
    assert terms("ISKP is led by Ghafari") == ["iskp", "lead", "ghafari"]
    assert terms("they fought and took Kabul") == ["fight", "take", "kabul"]


def test_bm25_matches_across_irregular_forms_and_ranks_by_rarity():
    index = LexicalIndex.build([
        "ISKP is led by Sanaullah Ghafari.",
        "ISKP attacks continued in Kabul.",
        "ISKP recruits in Pakistan.",
        "Weather report for Kabul.",
    ])
    hits = index.search("Who leads ISKP?", k=3)
    assert hits[0].passage_id == 0
    assert {h.passage_id for h in hits} == {0, 1, 2}
    assert index.search("who what how", k=3) == []
    assert index.search("zebra", k=3) == []


def test_term_spans_point_at_the_matching_words():
    text = "As of 2022, ISKP is led by Ghafari; leaders lead."
    spans = term_spans(text, set(terms("Who leads ISKP?")))
    assert [text[a:b] for a, b in spans] == ["ISKP", "led", "lead"]


def _term_spans_word_by_word(text, wanted):
    """The plain definition term_spans must agree with: every word, lower-cased, stemmed on its own."""
    from askcorpus.lexical import _TOKEN, _stem_words, _stopwords

    return [m.span() for m in _TOKEN.finditer(text)
            if m.group().lower() not in _stopwords() and _stem_words([m.group().lower()])[0] in wanted]


@pytest.mark.parametrize("query", ["Who leads ISKP?", "How many fighters does the group have?",
                                   "Taliban relations with Pakistan", "attacks in Kabul airport 2021"])
def test_term_spans_agree_with_the_word_by_word_definition_on_the_seeds(seeds_dir, query):
    wanted = set(terms(query))
    for path in sorted(seeds_dir.iterdir()):
        text = path.read_text(encoding="utf-8")
        assert term_spans(text, wanted) == _term_spans_word_by_word(text, wanted)
    odd = "ISKP's LEADER led; Leads, leading — İstanbul ǅemal lead_time ıskp"
    assert term_spans(odd, wanted) == _term_spans_word_by_word(odd, wanted)
    assert term_spans(odd, wanted) == _term_spans_word_by_word(odd, wanted)  # again, from the cache
    assert term_spans("", wanted) == []
