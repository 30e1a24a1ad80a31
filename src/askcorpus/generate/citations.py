"""Citation markers in a generated answer: `[n]`, `[n, m]` and `[n][m]` parsed, out-of-range ones dropped, and the
answer cut into sentences, each with the passages it cites."""

from __future__ import annotations

import re
from dataclasses import dataclass

# One bracket of passage numbers: [3], [1, 2], [1,2 ,4].
MARKER = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")
# A sentence ends at . ! or ? (closing quotes or brackets kept with it), then any markers the model put after the
# stop on the same line, before white space and a capital, digit, quote or marker, or at the end of the text; a
# line break ends one too (lists, and models that put each passage's number at the start of a line).
SENTENCE_END = re.compile(
    r"[.!?]+[\"”’)]*(?:[ \t]*\[\s*\d+(?:\s*,\s*\d+)*\s*\])*(?=\s+[\"“‘(\[A-Z0-9]|\s*$)|\n+")


@dataclass(frozen=True)
class CitedSentence:
    start: int  # offsets into the cleaned answer text
    end: int
    text: str  # with its markers, as the answer shows it
    claim: str  # without markers: what is checked against the passages
    citations: tuple[int, ...]  # passage numbers, in the order cited, each once


def clean_markers(text: str, count: int) -> tuple[str, int]:
    """`text` with every number outside 1..`count` removed from its marker (a marker left empty goes, with the
    space before it), and how many numbers were removed."""
    dropped = 0

    def keep(match: re.Match) -> str:
        nonlocal dropped
        numbers = [int(part) for part in match.group(1).split(",")]
        valid = [n for n in numbers if 1 <= n <= count]
        dropped += len(numbers) - len(valid)
        if len(valid) == len(numbers):
            return match.group(0)
        return "[" + ", ".join(str(n) for n in valid) + "]" if valid else ""

    cleaned = MARKER.sub(keep, text)
    if dropped:
        cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip()
    return cleaned, dropped


def cited_sentences(text: str) -> list[CitedSentence]:
    """The sentences of `text` (already cleaned), each with the numbers of its markers."""
    sentences: list[CitedSentence] = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        _add(sentences, text, start, match.end())
        start = match.end()
    _add(sentences, text, start, len(text))
    return sentences


def _add(sentences: list[CitedSentence], text: str, start: int, end: int) -> None:
    span = text[start:end]
    stripped = span.strip()
    if not stripped:
        return
    first = start + (len(span) - len(span.lstrip()))
    last = first + len(stripped)
    cited: list[int] = []
    for match in MARKER.finditer(stripped):
        for part in match.group(1).split(","):
            if int(part) not in cited:
                cited.append(int(part))
    claim = " ".join(MARKER.sub(" ", stripped).split())
    claim = re.sub(r"\s+([.,;:!?])", r"\1", claim)
    if not re.search(r"\w", claim):
        # Markers alone on a line belong to the sentence before them.
        if sentences and cited:
            prior = sentences.pop()
            merged = prior.citations + tuple(n for n in cited if n not in prior.citations)
            sentences.append(CitedSentence(prior.start, last, text[prior.start:last], prior.claim, merged))
        return
    sentences.append(CitedSentence(first, last, text[first:last], claim, tuple(cited)))
