"""Running a question set through a searcher in each mode and scoring it: `evaluate(...) -> EvalResult`."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from ..config import MODES
from ..errors import ConfigError
from ..records import Answer, Result, SearchResponse
from . import metrics as M
from .qa import KINDS, QAItem, answer_matches, is_relevant

RECALL_CUTOFFS: tuple[int, ...] = (1, 3, 5, 10)
RANK_CUTOFF = 10  # MRR@10, nDCG@10
COVERAGE_CUTOFF = 5  # coverage@5


# A mode name with this suffix asks the same first stage with the reranker on ("hybrid+rerank").
RERANK_SUFFIX = "+rerank"
# Abstention thresholds on the reranked answer's confidence that the eval reports side by side.
ABSTENTION_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class SearcherLike(Protocol):
    def search(self, query: str, k: int | None = None, mode: str | None = None, *,
               rerank: bool | None = None) -> SearchResponse: ...


def split_mode(name: str) -> tuple[str, bool]:
    """'hybrid+rerank' -> ('hybrid', True); 'dense' -> ('dense', False)."""
    if name.endswith(RERANK_SUFFIX):
        return name[: -len(RERANK_SUFFIX)], True
    return name, False


def default_modes(searcher: object) -> list[str]:
    """Every first-stage mode, and each again with reranking when the searcher has a reranker."""
    if getattr(searcher, "reranker", None) is None:
        return list(MODES)
    return [name for mode in MODES for name in (mode, mode + RERANK_SUFFIX)]


@dataclass(frozen=True)
class QuestionRun:
    """One question asked in one mode: what came back, how it was judged, how long it took."""

    item: QAItem
    mode: str
    results: tuple[Result, ...]
    relevance: tuple[bool, ...]
    # Relevant passages in the whole index (the ideal ranking for nDCG); None when the index is unknown.
    n_relevant: int | None
    answer: Answer | None
    latency_ms: float

    @property
    def first_relevant_rank(self) -> int | None:
        return next((rank for rank, relevant in enumerate(self.relevance, start=1) if relevant), None)

    @property
    def answer_correct(self) -> bool:
        """Answerable: the answer span overlaps the evidence. Unanswerable: it abstained."""
        if self.item.answerable:
            return answer_matches(self.answer, self.item.evidence)
        return self.answer is None


@dataclass
class ModeResult:
    mode: str
    runs: list[QuestionRun]
    metrics: dict[str, float | None]
    by_kind: dict[str, dict[str, float | None]]
    recall_curve: list[float]  # recall@1 .. recall@depth
    # Reranked modes: per confidence threshold, abstention on unanswerable and false abstention on answerable.
    abstention_sweep: list[dict[str, float | None]] | None = None


@dataclass
class EvalResult:
    """Everything one evaluation measured; `metrics` per mode are what the table and JSON show."""

    questions: list[QAItem]
    modes: dict[str, ModeResult]
    k: int
    depth: int
    unreachable: list[str] = field(default_factory=list)  # answerable ids no passage of the index can satisfy

    @property
    def answerable(self) -> list[QAItem]:
        return [q for q in self.questions if q.answerable]

    @property
    def unanswerable(self) -> list[QAItem]:
        return [q for q in self.questions if not q.answerable]

    @property
    def primary_mode(self) -> str:
        return "hybrid" if "hybrid" in self.modes else next(iter(self.modes))

    def to_dict(self) -> dict:
        return {
            "modes": {mode: dict(result.metrics) for mode, result in self.modes.items()},
            "questions": len(self.questions),
            "answerable": len(self.answerable),
            "unanswerable": len(self.unanswerable),
            "k": self.k,
            "by_kind": {mode: result.by_kind for mode, result in self.modes.items()},
            "abstention_sweep": {mode: result.abstention_sweep for mode, result in self.modes.items()
                                 if result.abstention_sweep is not None},
            "unreachable": list(self.unreachable),
        }

    def missed(self, limit: int = 10) -> list[QAItem]:
        """Answerable questions with no relevant passage in the top k, worst first: missed by the most
        modes, then the least evidence covered by the primary mode's top 5."""
        runs = {(run.item.id, run.mode): run for result in self.modes.values() for run in result.runs}
        scored = []
        for item in self.answerable:
            mode_runs = [runs[(item.id, mode)] for mode in self.modes]
            misses = sum(1 for run in mode_runs if not any(run.relevance[: self.k]))
            if misses == 0:
                continue
            primary = runs[(item.id, self.primary_mode)]
            coverage = M.evidence_coverage([r.passage for r in primary.results], item.evidence, COVERAGE_CUTOFF)
            scored.append((-misses, coverage, item.id, item))
        scored.sort(key=lambda entry: entry[:3])
        return [entry[3] for entry in scored[:limit]]

    def run(self, item_id: str, mode: str) -> QuestionRun:
        return next(run for run in self.modes[mode].runs if run.item.id == item_id)


def parse_modes(modes: str | Sequence[str]) -> list[str]:
    """'dense,bm25+rerank' -> ['dense', 'bm25+rerank'], each checked, duplicates dropped, order kept."""
    names = [m.strip() for m in (modes.split(",") if isinstance(modes, str) else modes) if m.strip()]
    unknown = [m for m in names if split_mode(m)[0] not in MODES]
    if unknown or not names:
        raise ConfigError(f"modes must be a comma-separated list of {', '.join(MODES)}, each optionally with "
                          f"{RERANK_SUFFIX} (e.g. hybrid{RERANK_SUFFIX}), got {modes!r}")
    return list(dict.fromkeys(names))


def relevant_counts(searcher: Any, questions: Sequence[QAItem]) -> dict[str, int] | None:
    """For each question, how many passages of the searcher's index are relevant; None if it has no index."""
    passages = getattr(getattr(searcher, "index", None), "passages", None)
    if passages is None:
        return None
    by_doc: dict[str, list] = defaultdict(list)
    for passage in passages:
        by_doc[passage.doc_id].append(passage)
    counts = {}
    for item in questions:
        docs = {span.doc_id for span in item.evidence}
        counts[item.id] = sum(1 for doc in docs for p in by_doc.get(doc, ()) if is_relevant(p, item.evidence))
    return counts


def evaluate(
    searcher: SearcherLike,
    questions: Sequence[QAItem],
    modes: str | Sequence[str] = MODES,
    k: int = 10,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Ask every question in every mode and score the answers.

    Retrieves max(k, 10) passages so Recall@10/MRR@10/nDCG@10 are always defined (a shorter list is a
    prefix of it); mean passage tokens are over the top k. Latency is time.perf_counter around
    `searcher.search`, after one untimed warm-up query per mode; modes are interleaved per question.
    """
    modes = parse_modes(modes)
    if not 1 <= k <= 100:
        raise ConfigError(f"k must be from 1 to 100, got {k}")
    if not questions:
        raise ConfigError("no questions to evaluate")
    depth = max(k, RANK_CUTOFF)
    counts = relevant_counts(searcher, questions)
    variants = {mode: split_mode(mode) for mode in modes}
    for base, rerank in variants.values():
        searcher.search(questions[0].question, k=depth, mode=base, rerank=rerank)  # warm-up, untimed
    runs: dict[str, list[QuestionRun]] = {mode: [] for mode in modes}
    for done, item in enumerate(questions, start=1):
        for mode, (base, rerank) in variants.items():
            started = time.perf_counter()
            response = searcher.search(item.question, k=depth, mode=base, rerank=rerank)
            elapsed = (time.perf_counter() - started) * 1000.0
            results = tuple(response.results[:depth])
            relevance = tuple(is_relevant(r.passage, item.evidence) for r in results)
            runs[mode].append(
                QuestionRun(
                    item=item,
                    mode=mode,
                    results=results,
                    relevance=relevance,
                    n_relevant=None if counts is None else counts[item.id],
                    answer=response.answer,
                    latency_ms=elapsed,
                )
            )
        if progress is not None:
            progress(done, len(questions))
    unreachable = [] if counts is None else [q.id for q in questions if q.answerable and counts[q.id] == 0]
    return EvalResult(
        questions=list(questions),
        modes={
            mode: ModeResult(
                mode=mode,
                runs=mode_runs,
                metrics=score(mode_runs, k),
                by_kind=score_by_kind(mode_runs),
                recall_curve=[
                    M.mean([M.recall_at_k(r.relevance, c) for r in mode_runs if r.item.answerable]) or 0.0
                    for c in range(1, depth + 1)
                ],
                abstention_sweep=abstention_sweep(mode_runs) if variants[mode][1] else None,
            )
            for mode, mode_runs in runs.items()
        },
        k=k,
        depth=depth,
        unreachable=unreachable,
    )


def cutoffs(k: int) -> list[int]:
    return sorted(set(RECALL_CUTOFFS) | {k})


def score(runs: Sequence[QuestionRun], k: int) -> dict[str, float | None]:
    """The metrics of one mode. Retrieval metrics, coverage, answer accuracy, false abstention and mean
    tokens are over answerable questions; abstention accuracy over unanswerable; latency over all."""
    answerable = [r for r in runs if r.item.answerable]
    unanswerable = [r for r in runs if not r.item.answerable]
    out: dict[str, float | None] = {}
    for cutoff in cutoffs(k):
        out[f"recall@{cutoff}"] = M.mean([M.recall_at_k(r.relevance, cutoff) for r in answerable])
    out[f"mrr@{RANK_CUTOFF}"] = M.mean([M.reciprocal_rank(r.relevance, RANK_CUTOFF) for r in answerable])
    out[f"ndcg@{RANK_CUTOFF}"] = M.mean([M.ndcg_at_k(r.relevance, RANK_CUTOFF, r.n_relevant) for r in answerable])
    out[f"coverage@{COVERAGE_CUTOFF}"] = M.mean(
        [M.evidence_coverage([x.passage for x in r.results], r.item.evidence, COVERAGE_CUTOFF) for r in answerable]
    )
    out["answer_accuracy"] = M.mean([float(r.answer_correct) for r in answerable])
    out["false_abstention"] = M.mean([float(r.answer is None) for r in answerable])
    out["abstention_accuracy"] = M.mean([float(r.answer is None) for r in unanswerable])
    out["latency_p50_ms"] = M.percentile([r.latency_ms for r in runs], 50)
    out["latency_p95_ms"] = M.percentile([r.latency_ms for r in runs], 95)
    out[f"mean_tokens@{k}"] = M.mean([x.passage.tokens for r in answerable for x in r.results[:k]])
    return out


def score_by_kind(runs: Sequence[QuestionRun]) -> dict[str, dict[str, float | None]]:
    """Recall@5 and MRR@10 per question kind (abstention accuracy for unanswerable ones)."""
    groups: dict[str, list[QuestionRun]] = defaultdict(list)
    for run in runs:
        groups[run.item.kind].append(run)
    order = [kind for kind in KINDS if kind in groups] + sorted(set(groups) - set(KINDS))
    out = {}
    for kind in order:
        group = groups[kind]
        answerable = [r for r in group if r.item.answerable]
        out[kind] = {
            "n": len(group),
            "recall@5": M.mean([M.recall_at_k(r.relevance, 5) for r in answerable]),
            f"mrr@{RANK_CUTOFF}": M.mean([M.reciprocal_rank(r.relevance, RANK_CUTOFF) for r in answerable]),
            "answer_accuracy": M.mean([float(r.answer_correct) for r in answerable]),
            "abstention_accuracy": M.mean([float(r.answer is None) for r in group if not r.item.answerable]),
        }
    return out


def abstention_sweep(runs: Sequence[QuestionRun],
                     thresholds: Sequence[float] = ABSTENTION_THRESHOLDS) -> list[dict[str, float | None]]:
    """For each threshold on the reranked answer's confidence (the sigmoid of the top passage's reranker
    score), the share of unanswerable questions that would abstain and of answerable ones that would."""
    from ..rerank import confidence

    def certainty(run: QuestionRun) -> float:
        top = run.results[0].rerank_score if run.results else None
        return 0.0 if top is None else confidence(top)

    answerable = [certainty(r) for r in runs if r.item.answerable]
    unanswerable = [certainty(r) for r in runs if not r.item.answerable]
    return [
        {
            "threshold": threshold,
            "abstention_accuracy": M.mean([float(c < threshold) for c in unanswerable]),
            "false_abstention": M.mean([float(c < threshold) for c in answerable]),
        }
        for threshold in thresholds
    ]
