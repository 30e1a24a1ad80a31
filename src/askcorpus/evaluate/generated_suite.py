"""Generated answers over a question set: each question searched (hybrid, reranked), answered by the configured
model beside the extractive answer, and scored overall and per kind (`askcorpus eval --generate`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ConfigError
from ..records import Answer, Generated
from . import generated as G
from . import metrics as M
from .qa import KINDS, QAItem, answer_in_evidence, answer_matches

if TYPE_CHECKING:
    from ..config import Settings
    from ..generate import Generator

MODE = "hybrid"
# Metrics in the order the table shows them; "n" and "errors" are counts, the last three means.
METRICS: tuple[str, ...] = (
    "n", "generated_accuracy", "extractive_accuracy", "extractive_contained", "generated_f1", "extractive_f1",
    "citation_precision", "citation_recall", "supported_sentences", "abstention", "extractive_abstention",
    "false_abstention", "extractive_false_abstention", "errors", "prompt_tokens", "completion_tokens", "seconds",
)
LABELS = {
    "generated_accuracy": "answer accuracy (generated)",
    "extractive_accuracy": "answer accuracy (extractive span)",
    "extractive_contained": "answer accuracy (extractive text)",
    "generated_f1": "token F1 (generated)",
    "extractive_f1": "token F1 (extractive)",
    "citation_precision": "citation precision",
    "citation_recall": "citation recall",
    "supported_sentences": "supported sentences",
    "abstention": "abstention (unansw., generated)",
    "extractive_abstention": "abstention (unansw., extractive)",
    "false_abstention": "false abstention (generated)",
    "extractive_false_abstention": "false abstention (extractive)",
    "prompt_tokens": "mean prompt tokens",
    "completion_tokens": "mean completion tokens",
    "seconds": "mean seconds",
}
COUNTS = frozenset({"n", "errors"})
MEANS = frozenset({"prompt_tokens", "completion_tokens", "seconds"})


@dataclass(frozen=True)
class GeneratedRun:
    """One question: the extractive answer the search gave and the answer the model wrote from its results."""

    item: QAItem
    answer: Answer | None
    generated: Generated


@dataclass(frozen=True)
class GeneratedEval:
    runs: tuple[GeneratedRun, ...]
    mode: str
    model: str | None
    metrics: dict[str, float | None]
    by_kind: dict[str, dict[str, float | None]]

    def to_dict(self) -> dict:
        return {"mode": self.mode, "model": self.model, "questions": len(self.runs), "metrics": self.metrics,
                "by_kind": self.by_kind}


def run_generated(searcher: Any, questions: Sequence[QAItem], generator: "Generator", settings: "Settings", *,
                  progress: Callable[[int, int], None] | None = None) -> list[GeneratedRun]:
    """Search each question (hybrid, reranked when the searcher has a reranker), then have `generator` write
    the answer from the results and check it with the searcher's reranker."""
    from ..generate import with_generated

    if not questions:
        raise ConfigError("no questions to evaluate")
    rerank = getattr(searcher, "reranker", None) is not None
    runs = []
    for done, item in enumerate(questions, start=1):
        response = searcher.search(item.question, k=settings.k, mode=MODE, rerank=rerank)
        response = with_generated(response, searcher.index.documents, generator, searcher.reranker, settings)
        runs.append(GeneratedRun(item, response.answer, response.generated))
        if progress is not None:
            progress(done, len(questions))
    return runs


def score_generated(runs: Sequence[GeneratedRun]) -> dict[str, float | None]:
    """The metrics of a group of runs: accuracy, F1, citations and false abstention over its answerable
    questions, abstention over its unanswerable ones, support over every sentence written, the rest over all."""
    answerable = [r for r in runs if r.item.answerable]
    unanswerable = [r for r in runs if not r.item.answerable]
    answered = [r.generated for r in runs if r.generated.error is None]
    return {
        "n": float(len(runs)),
        "generated_accuracy": M.mean([G.answer_contained(r.generated, r.item.answer, r.item.kind)
                                      for r in answerable]),
        "extractive_accuracy": M.mean([float(answer_matches(r.answer, r.item.evidence)) for r in answerable]),
        "extractive_contained": M.mean([_extractive_contained(r) for r in answerable]),
        "generated_f1": M.mean([G.token_f1(G.shown_text(r.generated), r.item.answer) for r in answerable]),
        "extractive_f1": M.mean([G.token_f1(r.answer.text if r.answer else None, r.item.answer) for r in answerable]),
        "citation_precision": M.mean(_present([G.citation_precision(r.generated, r.item.evidence)
                                               for r in answerable])),
        "citation_recall": M.mean(_present([G.citation_recall(r.generated, r.item.evidence) for r in answerable])),
        "supported_sentences": G.supported_share([r.generated for r in runs]),
        "abstention": M.mean([G.abstained(r.generated) for r in unanswerable]),
        "extractive_abstention": M.mean([float(r.answer is None) for r in unanswerable]),
        "false_abstention": M.mean([G.abstained(r.generated) for r in answerable]),
        "extractive_false_abstention": M.mean([float(r.answer is None) for r in answerable]),
        "errors": float(sum(G.failed(r.generated) for r in runs)),
        "prompt_tokens": M.mean(_present([g.prompt_tokens for g in answered])),
        "completion_tokens": M.mean(_present([g.completion_tokens for g in answered])),
        "seconds": M.mean([r.generated.seconds for r in runs]),
    }


def _extractive_contained(run: GeneratedRun) -> float:
    return float(run.answer is not None and answer_in_evidence(run.item.answer, [run.answer.text], run.item.kind))


def _present(values: Sequence[float | int | None]) -> list[float]:
    return [float(value) for value in values if value is not None]


def score_generated_by_kind(runs: Sequence[GeneratedRun]) -> dict[str, dict[str, float | None]]:
    """`score_generated` per question kind, the set's own kinds first in their order, then the others."""
    groups: dict[str, list[GeneratedRun]] = defaultdict(list)
    for run in runs:
        groups[run.item.kind].append(run)
    order = [kind for kind in KINDS if kind in groups] + sorted(set(groups) - set(KINDS))
    return {kind: score_generated(groups[kind]) for kind in order}


def evaluate_generated(searcher: Any, questions: Sequence[QAItem], generator: "Generator", settings: "Settings",
                       *, progress: Callable[[int, int], None] | None = None) -> GeneratedEval:
    """Run every question and score the runs, overall and per kind."""
    runs = run_generated(searcher, questions, generator, settings, progress=progress)
    mode = MODE + ("+rerank" if getattr(searcher, "reranker", None) is not None else "")
    return GeneratedEval(tuple(runs), mode, generator.name, score_generated(runs), score_generated_by_kind(runs))


def format_generated(result: GeneratedEval, split: str | None = None) -> str:
    """One metric per row; all questions, then each kind, as columns."""
    columns = {"all": result.metrics, **result.by_kind}
    answerable = sum(1 for r in result.runs if r.item.answerable)
    lines = [f"{len(result.runs)} questions{f', split {split}' if split else ''} ({answerable} answerable, "
             f"{len(result.runs) - answerable} unanswerable), {result.mode}, generated by {result.model}. "
             "Accuracy, F1, citations and false abstention are over answerable questions; abstention over "
             "unanswerable; supported over every sentence written.", ""]
    width = max(len(LABELS.get(name, name)) for name in METRICS)
    col = max(8, *(len(name) for name in columns))
    lines.append(f"{'metric':<{width}}  " + "  ".join(f"{name:>{col}}" for name in columns))
    lines.append("-" * (width + (col + 2) * len(columns)))
    for name in METRICS:
        cells = [_cell(name, scores.get(name)) for scores in columns.values()]
        lines.append(f"{LABELS.get(name, name):<{width}}  " + "  ".join(f"{cell:>{col}}" for cell in cells))
    return "\n".join(lines) + "\n"


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in COUNTS:
        return str(int(value))
    return f"{value:.1f}" if name in MEANS else f"{value:.3f}"
