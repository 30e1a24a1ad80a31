"""Showing an EvalResult: the terminal table, the JSON object, the Markdown report with its recall@k chart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

from ..records import Document
from .metrics import evidence_coverage
from .suite import COVERAGE_CUTOFF, EvalResult

CHART_NAME = "recall_at_k.png"
REPORT_NAME = "report.md"
METRICS_NAME = "metrics.json"

DEFINITIONS = (
    "A passage is relevant when it comes from an evidence span's document and covers at least half of that "
    "span's characters. Recall@k: share of answerable questions with a relevant passage at rank <= k. "
    "MRR@10: mean 1/rank of the first relevant passage (0 if none in the top 10). nDCG@10: binary gains, "
    "ideal DCG from all relevant passages in the index (as ranx). coverage@5: share of evidence characters "
    "inside the top 5 passages (best of alternative spans). Answer accuracy: the extractive answer's span "
    "overlaps an evidence span. False abstention: answerable questions answered with nothing. Abstention "
    "accuracy: unanswerable questions answered with nothing. Latency: wall time of one search call, "
    "answer included. mean_tokens@k: mean length of the retrieved top-k passages in cl100k tokens."
)


def _label(metric: str) -> str:
    return {
        "answer_accuracy": "answer accuracy",
        "false_abstention": "false abstention",
        "abstention_accuracy": "abstention (unansw.)",
        "latency_p50_ms": "latency p50 ms",
        "latency_p95_ms": "latency p95 ms",
    }.get(metric, metric)


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.startswith(("latency", "mean_tokens")):
        return f"{value:.1f}"
    return f"{value:.3f}"


def _rows(result: EvalResult) -> list[tuple[str, list[str]]]:
    modes = list(result.modes)
    names = list(next(iter(result.modes.values())).metrics)
    return [(name, [_value(name, result.modes[m].metrics[name]) for m in modes]) for name in names]


def summary_line(result: EvalResult, split: str | None = None) -> str:
    answerable, unanswerable = len(result.answerable), len(result.unanswerable)
    split_text = f", split {split}" if split else ""
    return (
        f"{len(result.questions)} questions{split_text} ({answerable} answerable, {unanswerable} unanswerable), "
        f"top {result.k}. Retrieval metrics, coverage, answer accuracy and mean tokens are over the "
        f"{answerable} answerable questions; abstention over the {unanswerable} unanswerable."
    )


def format_table(result: EvalResult, split: str | None = None) -> str:
    """Modes side by side, one metric per row, for the terminal."""
    modes = list(result.modes)
    rows = _rows(result)
    width = max(len(_label(name)) for name, _ in rows)
    col = max(8, *(len(m) for m in modes))
    lines = [summary_line(result, split), ""]
    lines.append(f"{'metric':<{width}}  " + "  ".join(f"{m:>{col}}" for m in modes))
    lines.append("-" * (width + (col + 2) * len(modes)))
    for name, values in rows:
        lines.append(f"{_label(name):<{width}}  " + "  ".join(f"{v:>{col}}" for v in values))
    lines += ["", "Per kind: recall@5 / MRR@10 (abstention for unanswerable questions)", ""]
    lines += _plain_table(["kind", "n", *modes], by_kind_rows(result))
    sweeps = {mode: r.abstention_sweep for mode, r in result.modes.items() if r.abstention_sweep}
    for mode, sweep in sweeps.items():
        lines += ["", f"{mode}: abstention by confidence threshold", ""]
        lines += _plain_table(["threshold", "abstention (unansw.)", "false abstention"], sweep_rows(sweep))
    if result.unreachable:
        lines.append("")
        lines.append(
            f"warning: {len(result.unreachable)} answerable question(s) have no passage in the index covering half "
            f"of an evidence span, so they count as misses in every mode: {', '.join(result.unreachable[:10])}"
            + (" ..." if len(result.unreachable) > 10 else "")
        )
    return "\n".join(lines) + "\n"


def by_kind_rows(result: EvalResult) -> list[list[str]]:
    """One row per question kind: its count, then recall@5 / MRR@10 per mode, or abstention when unanswerable."""
    modes = list(result.modes)
    rows = []
    for kind in next(iter(result.modes.values())).by_kind:
        cells = []
        for mode in modes:
            stats = result.modes[mode].by_kind[kind]
            cells.append(f"abst. {_value('x', stats['abstention_accuracy'])}" if stats["recall@5"] is None
                         else f"{stats['recall@5']:.3f} / {stats['mrr@10']:.3f}")
        rows.append([kind, str(result.modes[modes[0]].by_kind[kind]["n"]), *cells])
    return rows


def sweep_rows(sweep: list[dict[str, float | None]]) -> list[list[str]]:
    return [[f"{row['threshold']:.2f}", _value("x", row["abstention_accuracy"]), _value("x", row["false_abstention"])]
            for row in sweep]


def _plain_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), "-" * (sum(widths) + 2 * (len(widths) - 1)), *(line(r) for r in rows)]


def to_json(result: EvalResult, **extra: object) -> str:
    data = result.to_dict()
    data.update({key: value for key, value in extra.items() if value is not None})
    return json.dumps(data, ensure_ascii=False, default=str)


def _snippet(text: str, limit: int = 160) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def write_chart(result: EvalResult, path: Path, label: str = "") -> Path:
    """A PNG of recall@k (k = 1..depth) per mode, drawn with matplotlib's Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ks = list(range(1, result.depth + 1))
    for mode, mode_result in result.modes.items():
        axes.plot(ks, mode_result.recall_curve, marker="o", markersize=4, label=mode)
    axes.set_xlabel("k (passages retrieved)")
    axes.set_ylabel("Recall@k")
    axes.set_xticks(ks)
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.set_title(f"Recall@k over {len(result.answerable)} answerable questions{label}")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_report(
    result: EvalResult,
    directory: Path,
    *,
    documents: Mapping[str, Document] | None = None,
    meta: Mapping[str, object] | None = None,
    worst: int = 10,
) -> Path:
    """Write report.md, recall_at_k.png and metrics.json into `directory`; return the report's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    split = (meta or {}).get("split")
    write_chart(result, directory / CHART_NAME, f" ({split} split)" if split else "")
    (directory / METRICS_NAME).write_text(to_json(result, **dict(meta or {})) + "\n", encoding="utf-8")
    modes = list(result.modes)
    out: list[str] = ["# askcorpus evaluation", ""]
    for key, value in (meta or {}).items():
        if value is not None:
            out.append(f"- {key}: `{value}`")
    out += ["", summary_line(result, (meta or {}).get("split")), ""]

    out += ["## Metrics", "", "| metric | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    for name, values in _rows(result):
        out.append(f"| {_label(name)} | " + " | ".join(values) + " |")
    out += ["", DEFINITIONS, "", f"![Recall@k per mode]({CHART_NAME})", ""]

    out += ["## Per kind", "", "Recall@5 / MRR@10 per mode (abstention accuracy for unanswerable questions).", ""]
    out += ["| kind | n | " + " | ".join(modes) + " |", "|---|---:|" + "---:|" * len(modes)]
    out += ["| " + " | ".join(row) + " |" for row in by_kind_rows(result)]
    out.append("")
    for mode, mode_result in result.modes.items():
        if mode_result.abstention_sweep:
            out += [f"## {mode}: abstention by confidence threshold", "",
                    "The answer abstains when the sigmoid of the top passage's reranker score is below the threshold.",
                    "", "| threshold | abstention (unansw.) | false abstention |", "|---:|---:|---:|"]
            out += ["| " + " | ".join(row) + " |" for row in sweep_rows(mode_result.abstention_sweep)]
            out.append("")

    missed = result.missed(worst)
    primary = result.primary_mode
    out += ["## Worst-missed questions", ""]
    if not missed:
        out += [f"Every answerable question has a relevant passage in the top {result.k} in every mode.", ""]
    else:
        out += [
            f"Answerable questions with no relevant passage in the top {result.k} in some mode, missed by the most "
            f"modes first, with what a missing mode ({primary} when it is one) retrieved instead (top 3).",
            "",
        ]
    for item in missed:
        runs = {mode: result.run(item.id, mode) for mode in modes}
        missed_by = [m for m in modes if not any(runs[m].relevance[: result.k])]
        shown = primary if primary in missed_by else missed_by[0]
        run = runs[shown]
        out.append(f"### {item.id} ({item.kind}, missed by {', '.join(missed_by)})")
        out.append("")
        out.append(f"- Question: {_md(item.question)}")
        out.append(f"- Expected answer: {_md(item.answer or '')}")
        for span in item.evidence:
            text = ""
            if documents is not None and span.doc_id in documents:
                text = f' — "{_md(_snippet(documents[span.doc_id].text[span.start:span.end]))}"'
            out.append(f"- Evidence `{span.label()}`{text}")
        ranks = ", ".join(f"{m} {runs[m].first_relevant_rank or '-'}" for m in modes)
        out.append(f"- First relevant rank (of {result.depth}): {ranks}")
        out.append(f"- Retrieved instead ({shown}):")
        for r in run.results[:3]:
            p = r.passage
            out.append(f"  {r.rank}. `{p.doc_id}:{p.start}-{p.end}` — \"{_md(_snippet(p.text))}\"")
        if not run.results:
            out.append("  (nothing)")
        coverage = evidence_coverage([r.passage for r in run.results], item.evidence, COVERAGE_CUTOFF)
        out.append(f"- {shown} coverage@5: {coverage:.2f}; answer given: "
                   + (f'"{_md(_snippet(run.answer.text, 120))}"' if run.answer else "none (abstained)"))
        out.append("")
    if result.unreachable:
        out += [
            "## Unreachable questions",
            "",
            "No passage of the index covers half of any of their evidence spans (spans longer than the passages, "
            "or documents missing from the index); they count as misses in every mode:",
            "",
            ", ".join(f"`{q}`" for q in result.unreachable),
            "",
        ]
    path = directory / REPORT_NAME
    path.write_text("\n".join(out), encoding="utf-8")
    return path
