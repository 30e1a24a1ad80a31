"""The extractive answer: the sentence of the top passages that best answers the question, or none."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .chunk import sentence_spans
from .lexical import terms
from .records import Answer, Result
from .rerank import Reranker, confidence

if TYPE_CHECKING:
    from .config import Settings
    from .store import LoadedIndex

# How much a sentence's share of the question's terms counts against its passage's similarity.
TERM_WEIGHT = 0.6
# What each step down the ranking costs a candidate sentence (later passages must match clearly better).
RANK_PENALTY = 0.01


def extract_answer(
    query: str,
    query_vector: np.ndarray | None,
    results: Sequence[Result],
    index: "LoadedIndex",
    settings: "Settings",
) -> Answer | None:
    """Pick a sentence from the top passages; abstain when the best passage is not similar enough.

    Confidence is the cosine similarity between the question and the passage holding the sentence,
    so it means the same thing in every retrieval mode.
    """
    if query_vector is None or not results:
        return None
    candidates = results[: settings.answer_passages]
    similarities = np.asarray(index.vectors[[r.passage_id for r in candidates]]) @ query_vector
    if float(similarities.max()) < settings.answer_min_score:
        return None
    wanted = set(terms(query))
    best: tuple[float, Answer] | None = None
    seen: set[tuple[str, int]] = set()
    for rank, (result, similarity) in enumerate(zip(candidates, similarities)):
        passage = result.passage
        for unit_start, unit_end, found in _sentences(passage.text):
            start, end = passage.start + unit_start, passage.start + unit_end
            if (passage.doc_id, start) in seen:
                continue
            seen.add((passage.doc_id, start))
            sentence = passage.text[unit_start:unit_end]
            coverage = len(wanted & found) / len(wanted) if wanted else 0.0
            # Earlier passages win ties; a sentence of one or two words is rarely an answer.
            score = TERM_WEIGHT * coverage + (1 - TERM_WEIGHT) * float(similarity) - RANK_PENALTY * rank
            if len(found) < 3:
                score -= 0.1
            if best is None or score > best[0]:
                confidence = float(np.clip(similarity, 0.0, 1.0))
                best = (score, Answer(sentence, passage.doc_id, start, end, confidence))
    return None if best is None else best[1]


def extract_answer_reranked(query: str, results: Sequence[Result], reranker: Reranker,
                            settings: "Settings") -> Answer | None:
    """The sentence of the top `answer_rerank_passages` reranked passages that the cross-encoder scores best
    against the question.

    Confidence is the sigmoid of the top passage's cross-encoder score, so the answer abstains exactly when the
    best passage the reranker read is unlikely to answer the question (`answer_min_rerank_score`).
    """
    if not results or results[0].rerank_score is None:
        return None
    certainty = confidence(results[0].rerank_score)
    if certainty < settings.answer_min_rerank_score:
        return None
    spans: list[tuple[str, int, int, str]] = []
    seen: set[tuple[str, int]] = set()
    for result in results[: settings.answer_rerank_passages]:
        passage = result.passage
        for unit_start, unit_end in sentence_spans(passage.text):
            start = passage.start + unit_start
            if (passage.doc_id, start) not in seen:
                seen.add((passage.doc_id, start))
                spans.append((passage.doc_id, start, passage.start + unit_end, passage.text[unit_start:unit_end]))
    if not spans:
        return None
    scores = reranker.score(query, [text for *_, text in spans])
    doc_id, start, end, text = spans[int(np.argmax(scores))]  # the first best: earlier passages win ties
    return Answer(text, doc_id, start, end, certainty)


@lru_cache(maxsize=4096)
def _sentences(text: str) -> tuple[tuple[int, int, frozenset[str]], ...]:
    """A passage's candidate sentences with their terms. Cached: the top passages repeat across questions, and
    stemming them was most of the cosine answer's cost."""
    return tuple((start, end, frozenset(terms(text[start:end]))) for start, end in sentence_spans(text))
