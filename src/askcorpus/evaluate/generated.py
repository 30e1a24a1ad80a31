"""Pure metric functions over one generated answer (a `records.Generated`) and its question's reference.

Accuracy and F1 read the answer's text with its [n] markers taken out, normalised as `qa.normalize` does for
the set's own "answer appears in its evidence" check. Citations are the passages the answer's sentences cite;
one overlaps the evidence when it shares a character with an evidence span of the same document.
Averaging over questions is the caller's job (`metrics.mean`).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from ..generate.citations import MARKER
from ..records import Citation, Generated
from .qa import Span, answer_in_evidence, normalize, overlap

# Dropped before token F1, as SQuAD's evaluation does.
ARTICLES = frozenset({"a", "an", "the"})


def shown_text(generated: Generated) -> str | None:
    """The answer a reader is shown, markers removed; None when it abstained or failed."""
    if generated.text is None:
        return None
    return " ".join(MARKER.sub(" ", generated.text).split())


def answer_contained(generated: Generated, answer: str, kind: str) -> float:
    """1.0 when the reference answer appears in the shown text (for list and multi_doc questions, every part of
    it does), after normalisation; 0.0 otherwise, and for an answer not shown."""
    text = shown_text(generated)
    return float(text is not None and answer_in_evidence(answer, [text], kind))


def answer_tokens(text: str) -> list[str]:
    """The words of `text`, normalised, articles dropped."""
    return [word for word in re.findall(r"\w+", normalize(text)) if word not in ARTICLES]


def token_f1(text: str | None, answer: str) -> float:
    """Harmonic mean of token precision and recall of `text` against the reference `answer` (0.0 for None)."""
    if text is None:
        return 0.0
    ours, theirs = Counter(answer_tokens(text)), Counter(answer_tokens(answer))
    common = sum((ours & theirs).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(ours.values()), common / sum(theirs.values())
    return 2 * precision * recall / (precision + recall)


def cited_passages(generated: Generated) -> tuple[Citation, ...]:
    """The passages the answer's sentences cite, each once, in the order first cited."""
    by_number = {citation.n: citation for citation in generated.citations}
    numbers = dict.fromkeys(n for sentence in generated.sentences for n in sentence.citations if n in by_number)
    return tuple(by_number[n] for n in numbers)


def overlaps_evidence(citation: Citation, evidence: Sequence[Span]) -> bool:
    """The cited passage shares at least one character with an evidence span."""
    return any(citation.doc_id == span.doc_id and overlap(citation.start, citation.end, span.start, span.end) > 0
               for span in evidence)


def citation_precision(generated: Generated, evidence: Sequence[Span]) -> float | None:
    """Share of the shown answer's cited passages that overlap the evidence; None when it shows no answer or
    cites nothing (the question does not count)."""
    cited = cited_passages(generated) if generated.text is not None else ()
    if not cited:
        return None
    return sum(overlaps_evidence(citation, evidence) for citation in cited) / len(cited)


def citation_recall(generated: Generated, evidence: Sequence[Span]) -> float | None:
    """Share of the evidence spans some cited passage of the shown answer overlaps: 0.0 when no answer is shown,
    None for a question without evidence."""
    if not evidence:
        return None
    cited = cited_passages(generated) if generated.text is not None else ()
    return sum(any(overlaps_evidence(citation, [span]) for citation in cited) for span in evidence) / len(evidence)


def supported_share(records: Sequence[Generated]) -> float | None:
    """Share of all the sentences the model wrote (over `records`) that the check found supported; None for no
    sentence."""
    flags = [sentence.supported for generated in records for sentence in generated.sentences]
    return sum(flags) / len(flags) if flags else None


def abstained(generated: Generated) -> float:
    """1.0 when the answer abstained: the model said the passages do not answer, or no sentence was supported."""
    return float(generated.abstained)


def failed(generated: Generated) -> float:
    """1.0 when no answer could be written (the model failed, or no passage fit its context)."""
    return float(generated.error is not None)
