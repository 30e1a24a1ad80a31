"""Whether a generated sentence is supported by the passages it cites: its facts occur there, and the
cross-encoder reads them as saying it."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Sequence

from ..rerank import Reranker

# A word or a number; numbers keep their inner separators ("6,500", "3.5").
TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_][\w\-'’]*")
# Words that open a sentence in capitals without naming anything; any other capitalised word is a name to find.
SENTENCE_OPENERS = frozenset("""
a an the this that these those it its they their them he his she her we our you your i there here
in on at by for from with without within of to as after before since during until while when where why how what
which who whom whose if although though because but and or so yet also however moreover furthermore meanwhile
according following despite due since then thus therefore instead both each every many most some several such
no not none one all any another other others yes
""".split())


def normalise(word: str) -> str:
    """A token as facts are compared: NFKC, case-folded, typographic apostrophes straightened, possessive 's and
    number separators dropped ("ISKP’s" -> "iskp", "6,500" -> "6500")."""
    word = unicodedata.normalize("NFKC", word).replace("’", "'").casefold()
    if word[:1].isdigit():
        return word.replace(",", "")
    if word.endswith("'s"):
        word = word[:-2]
    return word.strip("-'")


def facts(claim: str) -> list[str]:
    """The numbers, dates and capitalised names of a sentence, normalised: what must occur in what it cites."""
    found = []
    for position, match in enumerate(TOKEN.finditer(claim)):
        word = match.group(0)
        if word[0].isdigit():
            found.append(normalise(word))
        elif word[0].isupper():
            if position == 0 and word.casefold() in SENTENCE_OPENERS:
                continue
            found.append(normalise(word))
    return [fact for fact in found if fact]


@lru_cache(maxsize=1024)
def passage_words(text: str) -> frozenset[str]:
    """Every normalised token of a passage, and the parts of its hyphenated ones. Cached: passages recur."""
    words: set[str] = set()
    for match in TOKEN.finditer(text):
        word = normalise(match.group(0))
        words.add(word)
        if "-" in word:
            words.update(part for part in word.split("-") if part)
    return frozenset(words)


def missing_facts(claim: str, passages: Sequence[str]) -> list[str]:
    """The facts of `claim` that none of `passages` holds."""
    if not passages:
        return facts(claim)
    held = frozenset().union(*(passage_words(text) for text in passages))
    return [fact for fact in facts(claim) if fact not in held and not _parts_held(fact, held)]


def _parts_held(fact: str, held: frozenset[str]) -> bool:
    parts = [part for part in fact.split("-") if part]
    return len(parts) > 1 and all(part in held for part in parts)


def support_scores(reranker: Reranker, claim: str, passages: Sequence[str]) -> list[float]:
    """The cross-encoder's score for the claim read against each passage (the claim in the question's place)."""
    return [float(score) for score in reranker.score(claim, list(passages))] if passages else []


def is_supported(claim: str, passages: Sequence[str], reranker: Reranker | None, min_score: float) -> bool:
    """True when `passages` (those the sentence cites) hold every fact of the claim and, with a reranker, the
    best of them scores at least `min_score` against it. A sentence citing nothing is never supported."""
    if not passages or missing_facts(claim, passages):
        return False
    return reranker is None or max(support_scores(reranker, claim, passages)) >= min_score
