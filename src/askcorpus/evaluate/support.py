"""Measuring the support check: reference, altered and foreign claims from a QA split, scored by the facts rule
and the cross-encoder at a range of thresholds, and the threshold chosen from them (`askcorpus eval --support`)."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..chunk import sentence_spans
from ..generate.check import SENTENCE_OPENERS, TOKEN, missing_facts, normalise, passage_words, support_scores
from ..records import Document, Passage
from ..rerank import Reranker
from . import metrics as M
from .qa import QAItem, _answer_parts, normalize, overlap

CLAIM_KINDS: tuple[str, ...] = ("reference", "altered", "foreign")
# Cross-encoder logits swept; the chosen threshold is one of these.
THRESHOLDS: tuple[float, ...] = tuple(x / 2 for x in range(-16, 17))
PRECISION_TARGET = 0.95  # share of altered claims, and of foreign ones, the check must reject
RECALL_TARGET = 0.90  # share of reference sentences it should accept
SEED = 22
YEAR = re.compile(r"(?:19|20)\d\d")
FOREIGN_MIN_WORDS = 8
POSSESSIVE = re.compile(r"['’]s?$")


@dataclass(frozen=True)
class Claim:
    """A sentence checked against one passage, and whether the check should accept it."""

    item_id: str
    kind: str  # "reference" (expected supported), "altered" or "foreign" (expected unsupported)
    text: str
    passage: str  # the text of the passage it cites
    change: str | None = None  # altered: "2015 -> 2016"; foreign: the document it came from


@dataclass(frozen=True)
class ScoredClaim:
    claim: Claim
    missing: tuple[str, ...]  # its facts the passage does not hold
    score: float  # the cross-encoder's logit for (claim, passage)

    def accepted(self, threshold: float) -> bool:
        """What `generate.check.is_supported` says at `threshold`: every fact held, score at least it."""
        return not self.missing and self.score >= threshold


@dataclass(frozen=True)
class SupportRow:
    threshold: float
    reference_accepted: float | None  # recall
    altered_rejected: float | None  # precision on altered claims
    foreign_rejected: float | None  # precision on foreign claims
    unsupported_rejected: float | None  # precision on altered and foreign claims together

    def meets(self, precision: float = PRECISION_TARGET) -> bool:
        return all(value is not None and value >= precision
                   for value in (self.altered_rejected, self.foreign_rejected))


@dataclass(frozen=True)
class SupportResult:
    scored: tuple[ScoredClaim, ...]
    rows: tuple[SupportRow, ...]
    chosen: float | None  # None when no threshold meets the precision target
    skipped: tuple[str, ...]  # "q012: no number or name to alter", ...

    def count(self, kind: str) -> int:
        return sum(1 for s in self.scored if s.claim.kind == kind)

    def facts_rejected(self, kind: str) -> float | None:
        return M.mean([float(bool(s.missing)) for s in self.scored if s.claim.kind == kind])

    def encoder_rejected(self, kind: str, threshold: float) -> float | None:
        """The share of `kind` claims the cross-encoder alone would reject at `threshold` (facts not checked)."""
        return M.mean([float(s.score < threshold) for s in self.scored if s.claim.kind == kind])

    def row(self, threshold: float | None) -> SupportRow | None:
        return next((row for row in self.rows if row.threshold == threshold), None)

    def to_dict(self) -> dict:
        return {
            "claims": {kind: self.count(kind) for kind in CLAIM_KINDS},
            "facts_rejected": {kind: self.facts_rejected(kind) for kind in CLAIM_KINDS},
            "thresholds": [row.__dict__ for row in self.rows],
            "chosen": self.chosen,
            "targets": {"precision": PRECISION_TARGET, "recall": RECALL_TARGET},
            "skipped": list(self.skipped),
        }


# --- the claims -----------------------------------------------------------------------------------------


def reference_sentence(item: QAItem, documents: Mapping[str, Document]) -> tuple[str, int, int] | None:
    """(doc_id, start, end) of the evidence sentence holding the answer: of the sentences an evidence span
    overlaps, the one holding the whole answer, else the most of its parts, else the most of the span."""
    answer = normalize(item.answer or "").rstrip(".")
    parts = _answer_parts(item.answer or "")
    best, best_key = None, None
    for span in item.evidence:
        text = documents[span.doc_id].text
        for start, end in sentence_spans(text):
            shared = overlap(start, end, span.start, span.end)
            if not shared:
                continue
            sentence = normalize(text[start:end])
            key = (answer in sentence, sum(part in sentence for part in parts), shared)
            if best_key is None or key > best_key:
                best, best_key = (span.doc_id, start, end), key
    return best


def holding_passage(passages: Sequence[Passage], start: int, end: int, evidence: tuple[int, int]) -> Passage:
    """The indexed passage (of the sentence's document) holding the sentence whole that covers the most of the
    evidence span; failing any, the one overlapping the sentence most."""
    whole = [p for p in passages if p.start <= start and end <= p.end]
    if whole:
        return max(whole, key=lambda p: overlap(p.start, p.end, *evidence))
    return max(passages, key=lambda p: overlap(p.start, p.end, start, end))


def corpus_names(documents: Iterable[Document]) -> tuple[str, ...]:
    """Every capitalised word the corpus uses past a sentence's first word (what the facts rule calls a name),
    a possessive or closing apostrophe taken off."""
    names: set[str] = set()
    for document in documents:
        for start, end in sentence_spans(document.text):
            for position, match in enumerate(TOKEN.finditer(document.text, start, end)):
                word = POSSESSIVE.sub("", match.group(0))
                if position and word[0].isupper() and word.casefold() not in SENTENCE_OPENERS and len(word) > 2:
                    names.add(word)
    return tuple(sorted(names))


def altered(sentence: str, passage: str, names: Sequence[str], rng: random.Random) -> tuple[str, str] | None:
    """The sentence with one number changed (a year by a few years, another number upwards) or, with no number,
    one capitalised name swapped for a corpus name; the new fact never one the passage holds. With the change."""
    held = passage_words(passage)
    matches = list(TOKEN.finditer(sentence))
    numbers = [m for m in matches if m.group(0)[0].isdigit()]
    if numbers:
        match = rng.choice(numbers)
        new = next(n for n in _other_numbers(match.group(0), rng) if normalise(n) not in held)
    else:
        # A name: capitalised past the first word, or a first word the corpus capitalises mid-sentence too.
        known = frozenset(names)
        capitalised = [m for i, m in enumerate(matches) if m.group(0)[0].isupper()
                       and (i > 0 or POSSESSIVE.sub("", m.group(0)) in known)]
        choices = [name for name in names if normalise(name) not in held]
        if not capitalised or not choices:
            return None
        match = rng.choice(capitalised)
        suffix = POSSESSIVE.search(match.group(0))
        new = rng.choice(choices) + (suffix.group(0) if suffix else "")
    old = match.group(0)
    return sentence[: match.start()] + new + sentence[match.end():], f"{old} -> {new}"


def _other_numbers(number: str, rng: random.Random) -> Iterable[str]:
    """Numbers other than `number`, nearest first: years a few years off (either way first, at random), any
    other number upwards, its thousands separators and decimals kept."""
    whole, _, decimals = number.replace(",", "").partition(".")
    value = int(whole)
    if YEAR.fullmatch(number):
        sign = rng.choice((1, -1))
        yield from (str(value + sign * step * turn) for step in range(1, 100) for turn in (1, -1))
        return
    for step in range(1, 10_000):
        text = f"{value + step:,}" if "," in number else str(value + step)
        yield text + ("." + decimals if decimals else "")


def foreign_sentence(doc_id: str, passage: str, documents: Mapping[str, Document],
                     rng: random.Random) -> tuple[str, str] | None:
    """A sentence of at least FOREIGN_MIN_WORDS words from another document than `doc_id`, not in `passage`;
    with the document it came from."""
    others = [d for d in sorted(documents) if d != doc_id]
    rng.shuffle(others)
    for other in others:
        text = documents[other].text
        sentences = [text[a:b] for a, b in sentence_spans(text) if len(text[a:b].split()) >= FOREIGN_MIN_WORDS]
        sentences = [s for s in sentences if s not in passage]
        if sentences:
            return rng.choice(sentences), other
    return None


def build_claims(questions: Sequence[QAItem], documents: Mapping[str, Document], passages: Sequence[Passage],
                 seed: int = SEED) -> tuple[list[Claim], list[str]]:
    """The three claims of each answerable question (its evidence sentence, that sentence altered, another
    document's sentence), each cited against the passage holding the evidence sentence; and what was left out.
    Each question's alteration and foreign sentence draw from their own RNGs, seeded by `seed`, its id and the
    kind: the same claims whatever the subset, and a change to one kind leaves the other's draws alone."""
    by_doc: dict[str, list[Passage]] = defaultdict(list)
    for passage in passages:
        by_doc[passage.doc_id].append(passage)
    names = corpus_names(documents.values())
    claims: list[Claim] = []
    skipped: list[str] = []
    for item in (q for q in questions if q.answerable):
        found = reference_sentence(item, documents)
        if found is None or not by_doc.get(found[0]):
            skipped.append(f"{item.id}: no evidence sentence in an indexed passage")
            continue
        doc_id, start, end = found
        span = next(s for s in item.evidence if s.doc_id == doc_id)
        passage = holding_passage(by_doc[doc_id], start, end, (span.start, span.end)).text
        sentence = documents[doc_id].text[start:end]
        claims.append(Claim(item.id, "reference", sentence, passage))
        change = altered(sentence, passage, names, random.Random(f"{seed}:{item.id}:altered"))
        if change is None:
            skipped.append(f"{item.id}: no number or name to alter")
        else:
            claims.append(Claim(item.id, "altered", change[0], passage, change[1]))
        foreign = foreign_sentence(doc_id, passage, documents, random.Random(f"{seed}:{item.id}:foreign"))
        if foreign is None:
            skipped.append(f"{item.id}: no other document to take a sentence from")
        else:
            claims.append(Claim(item.id, "foreign", foreign[0], passage, foreign[1]))
    return claims, skipped


# --- scoring and choosing -------------------------------------------------------------------------------


def score_claims(claims: Sequence[Claim], reranker: Reranker) -> list[ScoredClaim]:
    """Each claim's missing facts and cross-encoder score against its passage (one model call per claim)."""
    return [ScoredClaim(claim, tuple(missing_facts(claim.text, [claim.passage])),
                        support_scores(reranker, claim.text, [claim.passage])[0])
            for claim in claims]


def sweep(scored: Sequence[ScoredClaim], thresholds: Sequence[float] = THRESHOLDS) -> list[SupportRow]:
    """Per threshold: the share of reference claims accepted, and of altered and of foreign claims rejected."""
    def share(kinds: tuple[str, ...], threshold: float, accepted: bool) -> float | None:
        return M.mean([float(s.accepted(threshold) == accepted) for s in scored if s.claim.kind in kinds])

    return [SupportRow(t, share(("reference",), t, True), share(("altered",), t, False),
                       share(("foreign",), t, False), share(("altered", "foreign"), t, False))
            for t in thresholds]


def choose_threshold(rows: Sequence[SupportRow], precision: float = PRECISION_TARGET) -> float | None:
    """The threshold accepting the most reference claims among those rejecting at least `precision` of the
    altered and of the foreign ones; of several tied, the middle one (mid-gap). None when none qualifies."""
    qualified = [row for row in rows if row.meets(precision)]
    if not qualified:
        return None
    best = max(row.reference_accepted or 0.0 for row in qualified)
    tied = sorted(row.threshold for row in qualified if (row.reference_accepted or 0.0) == best)
    return tied[(len(tied) - 1) // 2]


def measure_support(questions: Sequence[QAItem], documents: Mapping[str, Document], passages: Sequence[Passage],
                    reranker: Reranker, thresholds: Sequence[float] = THRESHOLDS, seed: int = SEED) -> SupportResult:
    """Build the claims, score them, sweep the thresholds and choose one."""
    claims, skipped = build_claims(questions, documents, passages, seed)
    scored = score_claims(claims, reranker)
    rows = sweep(scored, thresholds)
    return SupportResult(tuple(scored), tuple(rows), choose_threshold(rows), tuple(skipped))


def format_support(result: SupportResult, split: str | None = None) -> str:
    """The threshold table for the terminal, the chosen one marked."""
    counts = ", ".join(f"{result.count(kind)} {kind}" for kind in CLAIM_KINDS)
    facts = ", ".join(f"{kind} {_share(result.facts_rejected(kind))}" for kind in CLAIM_KINDS)
    lines = [f"Support check{f', split {split}' if split else ''}: {counts} claims, each read against the indexed "
             "passage holding the evidence sentence.",
             f"Rejected by the facts rule alone (a number or name the passage lacks): {facts}.", "",
             f"{'threshold':>9}  {'reference accepted':>18}  {'altered rejected':>16}  {'foreign rejected':>16}  "
             f"{'both rejected':>13}", "-" * 82]
    for row in result.rows:
        mark = "  <- chosen" if row.threshold == result.chosen else ""
        lines.append(f"{row.threshold:>9.1f}  {_share(row.reference_accepted):>18}  {_share(row.altered_rejected):>16}"
                     f"  {_share(row.foreign_rejected):>16}  {_share(row.unsupported_rejected):>13}{mark}")
    lines.append("")
    if result.chosen is None:
        lines.append(f"No threshold rejects {PRECISION_TARGET:.2f} of both the altered and the foreign claims.")
    else:
        recall = result.row(result.chosen).reference_accepted or 0.0
        verdict = "meets" if recall >= RECALL_TARGET else "misses"
        alone = ", ".join(f"{kind} {_share(result.encoder_rejected(kind, result.chosen))}"
                          for kind in ("altered", "foreign"))
        lines.append(f"Chosen: {result.chosen:.1f} (the most reference sentences accepted with precision >= "
                     f"{PRECISION_TARGET:.2f} on altered and foreign); acceptance {recall:.3f} {verdict} the "
                     f"{RECALL_TARGET:.2f} target. The cross-encoder alone would reject: {alone}.")
    if result.skipped:
        lines.append(f"Left out: {'; '.join(result.skipped)}")
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
