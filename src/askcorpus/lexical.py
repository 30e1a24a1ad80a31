"""BM25 over passage texts (bm25s with the Snowball English stemmer): the exact-words retriever."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .records import Hit

# Bump when tokenising changes, so indexes built the old way are rebuilt.
LEXICAL_VERSION = 3
# Lucene's English stop words plus the words questions are made of: "who leads ISKP" must not
# rank passages for containing "who".
QUESTION_WORDS = frozenset(
    "what who whom whose which when where why how does do did done has have had were been being its "
    "about many much can could would should may might".split()
)
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
# Irregular past forms the Snowball stemmer cannot reach: without them "Who leads ISKP?" never matches
# "ISKP is led by ...". (Words like "left" or "saw" are left out: their other senses are as common.)
IRREGULAR_FORMS = {
    form: base
    for base, forms in {
        "lead": "led", "take": "took taken", "make": "made", "hold": "held", "begin": "began begun",
        "win": "won", "run": "ran", "seek": "sought", "bring": "brought", "buy": "bought", "catch": "caught",
        "think": "thought", "tell": "told", "say": "said", "see": "seen", "go": "went gone", "come": "came",
        "become": "became", "give": "gave given", "know": "knew known", "grow": "grew grown", "meet": "met",
        "pay": "paid", "send": "sent", "spend": "spent", "build": "built", "strike": "struck", "stand": "stood",
        "lose": "lost", "find": "found", "keep": "kept", "fall": "fell fallen", "rise": "rose risen",
        "draw": "drew drawn", "choose": "chose chosen", "write": "wrote written", "speak": "spoke spoken",
        "break": "broke broken", "shoot": "shot", "hide": "hid hidden", "flee": "fled", "fight": "fought",
        "sell": "sold", "steal": "stole stolen", "throw": "threw thrown", "drive": "drove driven",
        "withdraw": "withdrew withdrawn", "overthrow": "overthrew overthrown", "undertake": "undertook undertaken",
        "forbid": "forbade forbidden", "swear": "swore sworn", "hear": "heard", "mean": "meant", "deal": "dealt",
        "teach": "taught", "understand": "understood", "arise": "arose arisen", "slay": "slew slain",
    }.items()
    for form in forms.split()
}


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def _stem_words(words: list[str]) -> list[str]:
    """Snowball English stems, after mapping irregular verb forms to their base form."""
    return _stemmer().stemWords([IRREGULAR_FORMS.get(word, word) for word in words])


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN) | QUESTION_WORDS


def terms(text: str) -> list[str]:
    """The stemmed, stop-word-free terms BM25 matches on, in order of appearance."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in _stopwords()]
    return _stem_words(words) if words else []


def term_spans(text: str, wanted: set[str]) -> list[tuple[int, int]]:
    """Character spans of the words in `text` whose stem is in `wanted` (for highlighting)."""
    spans_of = _spans_by_stem(text)
    found = [span for stem in wanted for span in spans_of.get(stem, ())]
    return sorted(found) if len(wanted) > 1 else found


@lru_cache(maxsize=4096)
def _spans_by_stem(text: str) -> dict[str, tuple[tuple[int, int], ...]]:
    """Where each stem of a text's non-stop words occurs. Cached: results repeat across queries, and stemming
    ten results word by word cost each search about 2 ms in the server (0.5 ms with the cache, seeds bench);
    looking up the query's few stems, rather than walking every word, halves what is left."""
    stopwords = _stopwords()
    matches = [m for m in _TOKEN.finditer(text) if m.group().lower() not in stopwords]
    stems = _stem_words([m.group().lower() for m in matches]) if matches else []
    spans_of: dict[str, list[tuple[int, int]]] = {}
    for match, stem in zip(matches, stems):
        spans_of.setdefault(stem, []).append(match.span())
    return {stem: tuple(spans) for stem, spans in spans_of.items()}


class LexicalIndex:
    """BM25 (Lucene variant, k1=1.5, b=0.75) over a fixed list of passage texts; ids are list positions."""

    DIRECTORY = "bm25"

    def __init__(self, retriever) -> None:
        self.retriever = retriever

    @classmethod
    def build(cls, texts: Sequence[str]) -> "LexicalIndex":
        import bm25s

        # bm25s sets its own logger to DEBUG on import, which would print on every build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)

        tokens = bm25s.tokenize(list(texts), stopwords=sorted(_stopwords()), stemmer=_stem_words,
                                 show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return cls(retriever)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[Hit]:
        """Up to k passages sharing at least one term with the query, best first; with `allowed` (passage ids),
        only those, so a filter takes the top k of what it keeps rather than thinning the top k of everything."""
        known = [t for t in terms(query) if t in self.retriever.vocab_dict]
        if not known or k <= 0 or (allowed is not None and not len(allowed)):
            return []
        scores = self.retriever.get_scores(known)
        # Scoring every passage is the cost of the search either way; picking among the allowed ones is cheaper.
        matching = np.flatnonzero(scores > 0) if allowed is None else allowed[scores[allowed] > 0]
        if len(matching) > k:
            matching = matching[np.argpartition(-scores[matching], k - 1)[:k]]
        ordered = matching[np.lexsort((matching, -scores[matching]))]
        return [Hit(i, s) for i, s in zip(ordered.tolist(), scores[ordered].tolist())]

    def save(self, directory: Path) -> None:
        self.retriever.save(str(Path(directory) / self.DIRECTORY))

    @classmethod
    def load(cls, directory: Path) -> "LexicalIndex":
        import bm25s

        return cls(bm25s.BM25.load(str(Path(directory) / cls.DIRECTORY)))
