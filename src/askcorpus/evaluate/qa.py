"""The question-and-answer set: loading it, checking it against a corpus, and judging passages against it.

One JSON object per line:
    {"id": str, "question": str, "answer": str | null,
     "evidence": [{"doc_id": str, "start": int, "end": int}, ...],
     "split": str (optional), "kind": str}
`kind` is any non-empty label (askcorpus's own set uses factoid, paraphrase, why_how, list, multi_doc,
unanswerable); `split` is optional (a set without splits is evaluated whole). Evidence spans are character
offsets into the document text as `askcorpus.ingest` reads it; several spans are alternatives (any one of them
supports the answer). Unanswerable: answer null, evidence [].
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import AskcorpusError
from ..records import Document

# The labels of askcorpus's own set (evals/qa.jsonl); a user's set may use any others. The report lists these
# kinds first, in this order, then any others alphabetically.
SPLITS: tuple[str, ...] = ("dev", "test")
KINDS: tuple[str, ...] = ("factoid", "paraphrase", "why_how", "list", "multi_doc", "unanswerable")
# Kinds whose answer may be assembled from several pieces of the evidence ("A, B and C").
_COMPOSITE_KINDS = frozenset({"list", "multi_doc"})
# A passage is relevant when it covers at least this share of one evidence span.
RELEVANT_SHARE = 0.5


class QAFormatError(AskcorpusError):
    """The question-and-answer file cannot be read as the documented format."""


@dataclass(frozen=True)
class Span:
    """A cited stretch of a document: `document.text[start:end]`."""

    doc_id: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def label(self) -> str:
        return f"{self.doc_id}:{self.start}-{self.end}"


@dataclass(frozen=True)
class QAItem:
    """One question of the set."""

    id: str
    question: str
    answer: str | None
    evidence: tuple[Span, ...]
    split: str | None
    kind: str

    @property
    def answerable(self) -> bool:
        return self.answer is not None and bool(self.evidence)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "evidence": [{"doc_id": s.doc_id, "start": s.start, "end": s.end} for s in self.evidence],
            "split": self.split,
            "kind": self.kind,
        }


# --- reading ------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[tuple[str, Any]]:
    """(where, parsed object or the JSON error) for each non-blank line of a JSONL file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise QAFormatError(f"cannot read question file {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise QAFormatError(f"question file {path} is not valid UTF-8: {error}") from error
    rows: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as error:
            rows.append((f"line {number}", error))
    return rows


def _rows(source: str | Path | Iterable[Any]) -> list[tuple[str, Any]]:
    if isinstance(source, (str, Path)):
        return _read_lines(Path(source))
    rows = []
    for number, record in enumerate(source, start=1):
        rows.append((f"record {number}", record.to_dict() if isinstance(record, QAItem) else record))
    return rows


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _structure_problems(record: Any) -> list[str]:
    """What is wrong with one record's keys and types (nothing about the corpus)."""
    if isinstance(record, json.JSONDecodeError):
        return [f"not valid JSON: {record.msg} at column {record.colno}"]
    if not isinstance(record, dict):
        return [f"must be a JSON object, got {type(record).__name__}"]
    problems = []
    for key, kind in (("id", str), ("question", str), ("split", str), ("kind", str), ("evidence", list)):
        if key == "split" and record.get(key) is None:
            continue  # optional
        if key not in record:
            problems.append(f"missing key {key!r}")
        elif not isinstance(record[key], kind):
            problems.append(f"{key!r} must be a {'string' if kind is str else 'list'}, got {record[key]!r:.60}")
    if "answer" not in record:
        problems.append("missing key 'answer' (use null for an unanswerable question)")
    elif record["answer"] is not None and not isinstance(record["answer"], str):
        problems.append(f"'answer' must be a string or null, got {record['answer']!r:.60}")
    elif isinstance(record["answer"], str) and not record["answer"].strip():
        problems.append("'answer' is empty (use null for an unanswerable question)")
    if isinstance(record.get("id"), str) and not record["id"].strip():
        problems.append("'id' is empty")
    if isinstance(record.get("question"), str) and not record["question"].strip():
        problems.append("'question' is empty")
    for key in ("split", "kind"):
        if isinstance(record.get(key), str) and not record[key].strip():
            problems.append(f"{key!r} is empty (leave split out, or give a label)")
    for index, span in enumerate(record.get("evidence") if isinstance(record.get("evidence"), list) else []):
        where = f"evidence[{index}]"
        if not isinstance(span, dict):
            problems.append(f"{where} must be an object with doc_id, start, end")
            continue
        if not isinstance(span.get("doc_id"), str) or not span.get("doc_id"):
            problems.append(f"{where}.doc_id must be a non-empty string")
        for key in ("start", "end"):
            if not _is_int(span.get(key)):
                problems.append(f"{where}.{key} must be an integer, got {span.get(key)!r}")
        if _is_int(span.get("start")) and _is_int(span.get("end")) and not 0 <= span["start"] < span["end"]:
            problems.append(f"{where} must have 0 <= start < end, got {span['start']}..{span['end']}")
    return problems


def _item(record: dict) -> QAItem:
    return QAItem(
        id=record["id"],
        question=record["question"],
        answer=record["answer"],
        evidence=tuple(Span(s["doc_id"], s["start"], s["end"]) for s in record["evidence"]),
        split=record.get("split"),
        kind=record["kind"],
    )


def _where(location: str, record: Any) -> str:
    if isinstance(record, dict) and isinstance(record.get("id"), str):
        return f"{location} (id {record['id']})"
    return location


def load_qa(source: str | Path | Iterable[Any], split: str | None = None) -> list[QAItem]:
    """The questions of a QA file (or of records already parsed), optionally of one split.

    Raises QAFormatError listing every malformed record; whether spans fit the corpus is `check_qa`'s job.
    """
    problems: list[str] = []
    items: list[QAItem] = []
    for location, record in _rows(source):
        found = _structure_problems(record)
        if found:
            problems.extend(f"{_where(location, record)}: {problem}" for problem in found)
        else:
            items.append(_item(record))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise QAFormatError(f"{len(problems)} problem(s) in the question set:\n  {shown}{more}")
    if split is not None:
        present = sorted({item.split for item in items if item.split is not None})
        if split not in present:
            raise QAFormatError(f"no question has split {split!r}; splits in the set: "
                                f"{', '.join(present) if present else 'none (leave --split out)'}")
        items = [item for item in items if item.split == split]
    return items


# --- checking against a corpus ------------------------------------------------------------------

_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "′": "'", "“": '"', "”": '"', "„": '"', "″": '"',
                         "–": "-", "—": "-", "‑": "-", "−": "-", "\u00a0": " "})


def normalize(text: str) -> str:
    """Case, Unicode width, curly quotes, dashes and runs of white space folded, for 'appears in' checks."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return re.sub(r"\s+", " ", text).strip()


def _answer_parts(answer: str) -> list[str]:
    parts = re.split(r"\s*(?:;|,|\band\b|\bor\b|\n)\s*", normalize(answer))
    return [part.strip(" .") for part in parts if part.strip(" .")]


def answer_in_evidence(answer: str, evidence_texts: Sequence[str], kind: str) -> bool:
    """True when the answer appears in one evidence text (case, quotes and spacing aside).

    For list and multi_doc questions an answer like "A, B and C" also passes when every part appears
    in some evidence text.
    """
    wanted = normalize(answer).rstrip(".")
    texts = [normalize(text) for text in evidence_texts]
    if any(wanted in text for text in texts):
        return True
    if kind in _COMPOSITE_KINDS:
        parts = _answer_parts(answer)
        return bool(parts) and all(any(part in text for text in texts) for part in parts)
    return False


def _document_texts(corpus_documents: Mapping[str, Document | str] | Iterable[Document]) -> dict[str, str]:
    if isinstance(corpus_documents, Mapping):
        return {
            doc_id: doc.text if isinstance(doc, Document) else str(doc) for doc_id, doc in corpus_documents.items()
        }
    return {doc.doc_id: doc.text for doc in corpus_documents}


def check_qa(
    path_or_records: str | Path | Iterable[Any],
    corpus_documents: Mapping[str, Document | str] | Iterable[Document],
) -> list[str]:
    """Every problem with a question set against a corpus; an empty list means the set is sound.

    Checks keys and types, unique ids, unanswerable consistency (answer null <=> no evidence; kind
    'unanswerable' => answer null), that every evidence span lies inside a document of the corpus, and that
    the answer appears in the evidence text.
    """
    return [message for message, _ in _problems(path_or_records, corpus_documents)]


def blocking_problems(
    path_or_records: str | Path | Iterable[Any],
    corpus_documents: Mapping[str, Document | str] | Iterable[Document],
) -> list[str]:
    """The problems no score can be computed past: malformed records, duplicate ids, evidence in an unknown
    document or outside its document. The rest (an answer worded apart from its evidence, a repeated
    question) are warnings."""
    return [message for message, blocking in _problems(path_or_records, corpus_documents) if blocking]


def _problems(
    path_or_records: str | Path | Iterable[Any],
    corpus_documents: Mapping[str, Document | str] | Iterable[Document],
) -> list[tuple[str, bool]]:
    """(message, blocking) for each problem of the set against the corpus."""
    texts = _document_texts(corpus_documents)
    problems: list[tuple[str, bool]] = []
    seen_ids: dict[str, str] = {}
    seen_questions: dict[str, str] = {}
    rows = _rows(path_or_records)
    if not rows:
        return [("the question set is empty", True)]
    for location, record in rows:
        where = _where(location, record)
        structural = _structure_problems(record)
        if structural:
            problems.extend((f"{where}: {problem}", True) for problem in structural)
            continue
        item = _item(record)
        if item.id in seen_ids:
            problems.append((f"{where}: duplicate id (first used at {seen_ids[item.id]})", True))
        else:
            seen_ids[item.id] = location
        question_key = normalize(item.question)
        if question_key in seen_questions:
            problems.append((f"{where}: same question as {seen_questions[question_key]}", False))
        else:
            seen_questions[question_key] = where

        if item.kind == "unanswerable" and item.answer is not None:
            problems.append((f"{where}: kind 'unanswerable' but the answer is not null", False))
        if item.answer is None and item.evidence:
            problems.append((f"{where}: the answer is null (unanswerable) but it cites evidence", True))
        if item.answer is not None and not item.evidence:
            problems.append((f"{where}: an answer needs at least one evidence span", True))

        evidence_texts = []
        for index, span in enumerate(item.evidence):
            text = texts.get(span.doc_id)
            if text is None:
                problems.append((f"{where}: evidence[{index}] cites {span.doc_id!r}, which is not in the corpus",
                                 True))
                continue
            if span.end > len(text):
                problems.append((f"{where}: evidence[{index}] {span.label()} ends past the end of the document "
                                 f"({len(text)} characters)", True))
                continue
            cited = text[span.start : span.end]
            if not cited.strip():
                problems.append((f"{where}: evidence[{index}] {span.label()} is only white space", False))
            evidence_texts.append(cited)
        if item.answer is not None and evidence_texts and len(evidence_texts) == len(item.evidence):
            if not answer_in_evidence(item.answer, evidence_texts, item.kind):
                problems.append((f"{where}: answer {item.answer!r:.80} does not appear in its evidence text", False))
    return problems


# --- judging ------------------------------------------------------------------------------------


def overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    """Characters two half-open intervals share."""
    return max(0, min(a_end, b_end) - max(a_start, b_start))


def is_relevant(passage: Any, evidence: Sequence[Span], share: float = RELEVANT_SHARE) -> bool:
    """A passage (anything with doc_id/start/end) is relevant when it is from an evidence span's document
    and covers at least `share` of that span's characters."""
    return any(
        passage.doc_id == span.doc_id
        and overlap(passage.start, passage.end, span.start, span.end) >= share * (span.end - span.start)
        for span in evidence
    )


def answer_matches(answer: Any, evidence: Sequence[Span]) -> bool:
    """The extractive answer (doc_id/start/end) shares at least one character with an evidence span."""
    return answer is not None and any(
        answer.doc_id == span.doc_id and overlap(answer.start, answer.end, span.start, span.end) > 0
        for span in evidence
    )
