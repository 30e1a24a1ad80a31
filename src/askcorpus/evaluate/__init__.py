"""Evaluation: score retrieval, answers and abstention against a question-and-answer set.

    qa.py       the QA format: load_qa, check_qa, relevance and answer judgements
    metrics.py  pure metric functions over one question's ranked relevance list
    suite.py    evaluate(searcher, questions, modes, k) -> EvalResult
    report.py   terminal table, JSON, Markdown report with a recall@k chart
    beir.py     a BEIR-layout folder scored by document: nDCG@10, Recall@100
    support.py  the generated-answer support check measured: reference, altered and foreign claims per threshold
    generated.py         pure metric functions over one generated answer
    generated_suite.py   evaluate_generated(searcher, questions, generator, settings) -> GeneratedEval
`main` is the `askcorpus eval` command, a thin shell over these.
"""

from __future__ import annotations

import argparse
import sys

from ..config import Settings
from ..errors import ConfigError
from ..filters import filter_from_pairs
from .qa import KINDS, SPLITS, QAFormatError, QAItem, Span, blocking_problems, check_qa, is_relevant, load_qa
from .report import format_table, to_json, write_report
from .suite import EvalResult, ModeResult, QuestionRun, default_modes, evaluate, parse_modes

__all__ = [
    "KINDS", "SPLITS", "EvalResult", "ModeResult", "QAFormatError", "QAItem", "QuestionRun", "Span",
    "blocking_problems", "check_qa", "evaluate", "format_table", "is_relevant", "load_qa", "main", "parse_modes",
    "to_json", "write_report",
]


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`askcorpus eval`: load the set, open (or build) the index, run every mode, print and report."""
    from ..engine import announce_builds, open_searcher

    task = _task(args)
    if task == "beir":
        return _main_beir(args, settings)
    if task == "generate" and not settings.generation_configured:
        from ..generate import require_generation

        require_generation(True, None)  # GenerationUnavailableError (exit 2), before any model loads
    split = getattr(args, "split", None)
    questions = load_qa(args.qa, split=split)
    limit = getattr(args, "limit", None)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}")
        questions = questions[:limit]
    if not questions:
        raise ConfigError(f"no questions in {args.qa}" + (f" with split {split!r}" if split else ""))
    search_filter = filter_from_pairs(getattr(args, "filter", None))  # malformed: fails before a model loads
    searcher = open_searcher(
        settings,
        build_if_missing=True,
        on_build=announce_builds(settings),
    ).scoped(search_filter)  # every question is asked of only the documents the filter keeps
    requested = getattr(args, "modes", None)
    modes = parse_modes(requested) if requested else default_modes(searcher)
    blocking = blocking_problems(args.qa, searcher.index.documents)
    if blocking:
        shown = "\n  ".join(blocking[:10])
        more = f"\n  ... and {len(blocking) - 10} more" if len(blocking) > 10 else ""
        raise QAFormatError(f"{args.qa} does not fit the index at {settings.index}:\n  {shown}{more}")
    problems = check_qa(args.qa, searcher.index.documents)
    if problems:
        print(f"warning: {len(problems)} problem(s) with {args.qa} against the index at {settings.index}:",
              file=sys.stderr)
        for problem in problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        if len(problems) > 10:
            print(f"  ... and {len(problems) - 10} more (askcorpus.evaluate.check_qa lists them all)", file=sys.stderr)
    if task == "support":
        return _main_support(args, searcher, questions, split)
    if task == "generate":
        return _main_generate(args, settings, searcher, questions, split)
    result = evaluate(searcher, questions, modes, args.k, progress=_progress if sys.stderr.isatty() else None)
    meta = {"qa": str(args.qa), "split": split, "index": str(settings.index), "model": settings.model}
    if args.json:
        print(to_json(result, **meta))
    else:
        print(format_table(result, split), end="")
    report_dir = getattr(args, "report", None)
    if report_dir is not None:
        path = write_report(result, report_dir, documents=searcher.index.documents, meta=meta)
        print(f"report written to {path}", file=sys.stderr)
    return 0


def _task(args: argparse.Namespace) -> str:
    """Which evaluation the flags ask for: "retrieval" (the default), "beir", "support" or "generate"."""
    chosen = [name for name, flag in (("beir", getattr(args, "beir", None) is not None),
                                      ("support", getattr(args, "support", False)),
                                      ("generate", getattr(args, "generate", False))) if flag]
    if len(chosen) > 1:
        flags = " and ".join("--" + name for name in chosen)
        raise ConfigError(f"choose one of --beir, --support and --generate, not {flags}")
    if chosen and chosen[0] == "beir" and getattr(args, "filter", None):
        raise ConfigError("--filter does not apply to --beir: a BEIR set is scored over its whole corpus")
    if chosen and chosen[0] != "beir" and getattr(args, "report", None) is not None:
        raise ConfigError(f"--report writes the retrieval report; with --{chosen[0]} use --json")
    return chosen[0] if chosen else "retrieval"


def _progress(done: int, total: int) -> None:
    print(f"\r{done}/{total} questions", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _main_support(args: argparse.Namespace, searcher, questions: list[QAItem], split: str | None) -> int:
    """`askcorpus eval --support`: the support check's acceptance and precision per threshold, and the choice."""
    import json

    from .support import format_support, measure_support

    if searcher.reranker is None:
        raise ConfigError("eval --support measures the cross-encoder's threshold: leave out --no-rerank "
                          "(and ASKCORPUS_RERANK=false)")
    result = measure_support(questions, searcher.index.documents, searcher.index.passages, searcher.reranker)
    if args.json:
        print(json.dumps({"qa": str(args.qa), "split": split, "reranker": searcher.reranker.name,
                          **result.to_dict()}))
    else:
        print(format_support(result, split), end="")
    return 0


def _main_generate(args: argparse.Namespace, settings: Settings, searcher, questions: list[QAItem],
                   split: str | None) -> int:
    """`askcorpus eval --generate`: every question answered by the configured model, scored beside the
    extractive answer."""
    import json

    from ..generate import generator_for
    from .generated_suite import evaluate_generated, format_generated

    generator = generator_for(settings)
    try:
        result = evaluate_generated(searcher, questions, generator, settings,
                                    progress=_progress if sys.stderr.isatty() else None)
    finally:
        generator.close()
    if args.json:
        print(json.dumps({"qa": str(args.qa), "split": split, "index": str(settings.index), **result.to_dict()}))
    else:
        print(format_generated(result, split), end="")
    return 0


def _main_beir(args: argparse.Namespace, settings: Settings) -> int:
    """`askcorpus eval --beir DIR`: materialise the corpus, build (incrementally) its own index, score it."""
    import json

    from ..build import build_index
    from ..embed import embedder_for
    from ..engine import open_searcher
    from .beir import beir_settings, evaluate_beir, format_beir, load_beir, write_corpus
    from .suite import RERANK_SUFFIX

    beir = load_beir(args.beir)
    settings = beir_settings(settings, args.beir)
    requested = getattr(args, "modes", None)
    modes = parse_modes(requested) if requested else ["bm25", "dense", "hybrid"] + (
        ["hybrid" + RERANK_SUFFIX] if settings.rerank else [])
    write_corpus(beir, settings.corpus)
    embedder = embedder_for(settings)
    print(build_index(settings, embedder, progress=sys.stderr.isatty()).summary(), file=sys.stderr)
    searcher = open_searcher(settings, embedder)
    results = evaluate_beir(searcher, beir, modes)
    if args.json:
        print(json.dumps({"beir": str(args.beir), "queries": len(beir.queries), "documents": len(beir.corpus),
                          "modes": results}))
    else:
        print(format_beir(results, args.beir, len(beir.queries), len(beir.corpus)), end="")
    return 0
