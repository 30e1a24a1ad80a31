"""BM25 terms: stop words including question words, irregular verb forms, and highlight spans."""

from __future__ import annotations

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
