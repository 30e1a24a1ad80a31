"""The `askcorpus` command: a thin shell over the library (index, ask, serve, mcp, eval, bench)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Mapping

from pydantic import ValidationError

from .config import MODES, Settings
from .errors import AskcorpusError
from .filters import filter_from_pairs
from .records import SearchResponse


def settings_problems(error: ValidationError) -> str:
    """A Settings validation error as one line naming each variable: "ASKCORPUS_K: Input should be ... (got '500')"."""
    problems = []
    for item in error.errors():
        name = "ASKCORPUS_" + "_".join(str(part) for part in item["loc"]).upper() if item["loc"] else "settings"
        got = f" (got {item['input']!r})" if item["loc"] else ""
        problems.append(f"{name}: {item['msg']}{got}")
    return "; ".join(problems)


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the command line's --corpus/--index/... on top."""
    overrides = {
        name: getattr(args, name, None)
        for name in ("corpus", "index", "host", "port", "model", "rerank_depth")
    }
    if getattr(args, "no_rerank", False):
        overrides["rerank"] = False  # the reranker is then not even loaded
    if getattr(args, "watch", False):
        overrides["watch"] = True
    return Settings().with_overrides(**overrides)


def _add_rerank(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-rerank", action="store_true",
                        help="first stage only: no cross-encoder (default: $ASKCORPUS_RERANK, on)")
    parser.add_argument("--rerank-depth", type=int, default=None,
                        help="candidates the cross-encoder reorders (default: $ASKCORPUS_RERANK_DEPTH, "
                             f"{Settings.model_fields['rerank_depth'].default})")


def _add_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", action="append", default=None, metavar="KEY=VALUE",
                        help="search only the documents this keeps; repeatable, all must hold: doc_ids=ID, "
                             "path=PREFIX or GLOB (notes/**), formats=pdf,md, modified_after=ISO-TIME, "
                             "modified_before=ISO-TIME, title=WORDS")


def _add_paths(parser: argparse.ArgumentParser, corpus: bool = True) -> None:
    if corpus:
        parser.add_argument("--corpus", type=Path, help="folder of documents (default: $ASKCORPUS_CORPUS or seeds/)")
    parser.add_argument("--index", type=Path, help="index folder (default: $ASKCORPUS_INDEX or index/)")


def cmd_index(args: argparse.Namespace) -> int:
    from .build import build_index
    from .embed import embedder_for
    from .ingest import check_corpus

    settings = _settings(args)
    check_corpus(settings.corpus)  # before the model loads (and exports itself under the index folder)
    if args.ray is not None:
        from .build_ray import require_ray

        require_ray()  # says how to install Ray before the model loads
    embedder = embedder_for(settings)
    backend = None
    if args.ray is not None:
        from .build_ray import RayBackend

        backend = RayBackend(settings, args.ray or settings.ray_address, embedder=embedder, progress=True)
    report = build_index(settings, embedder, progress=True, backend=backend)
    print(report.summary())
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from .engine import announce_builds, open_searcher
    from .generate import NOT_CONFIGURED, generator_for, with_generated

    settings = _settings(args)
    if args.generate and not settings.generation_configured:
        print(f"askcorpus: error: {NOT_CONFIGURED}", file=sys.stderr)  # before any model loads
        return 2
    search_filter = filter_from_pairs(args.filter)  # a malformed filter fails before any model loads
    searcher = open_searcher(
        settings,
        build_if_missing=True,
        on_build=announce_builds(settings),
    )
    response = searcher.search(args.question, k=args.k, mode=args.mode, filter=search_filter)
    titles = {doc_id: document.title for doc_id, document in searcher.index.documents.items()}
    if args.generate:
        generator = generator_for(settings)
        streaming = not args.json
        if streaming:
            print(format_response(response, color=sys.stdout.isatty(), titles=titles))
            print("Generated answer:", flush=True)
        response = with_generated(response, searcher.index.documents, generator, searcher.reranker, settings,
                                  on_text=(lambda piece: print(piece, end="", flush=True)) if streaming else None)
        generator.close()
        if streaming:
            print("\n")
            print(format_generated(response.generated, color=sys.stdout.isatty()))
            return 0
    if args.json:
        print(json.dumps(response.to_dict(), ensure_ascii=False))
    else:
        print(format_response(response, color=sys.stdout.isatty(), titles=titles))
    return 0


def format_generated(generated, color: bool = False) -> str:
    """What the written answer rests on: each sentence, whether its citations support it, and each passage cited
    with its document and offsets."""
    dim, warn, reset = ("\033[2m", "\033[1;31m", "\033[0m") if color else ("", "", "")
    if generated.error:
        return f"{warn}No answer written: {generated.error}{reset}\n"
    lines = []
    if generated.abstained:
        lines.append("Abstained: the passages do not answer this question.")
    for sentence in generated.sentences:
        mark = "supported  " if sentence.supported else f"{warn}UNSUPPORTED{reset}"
        cited = ", ".join(f"[{n}]" for n in sentence.citations) or "no citation"
        lines.append(f"  {mark} {' '.join(sentence.text.split())}  {dim}({cited}){reset}")
    lines.append("")
    lines.append("Citations:")
    for citation in generated.citations:
        page = f" p.{citation.page}" if citation.page else ""
        lines.append(f"  [{citation.n}] {citation.title}  {dim}{citation.doc_id}{page} "
                     f"[{citation.start}:{citation.end}]{reset}")
    tokens = f"{generated.prompt_tokens} prompt + {generated.completion_tokens} answer tokens"
    lines.append(f"{dim}{generated.model}, {tokens}, {generated.seconds:.1f} s{reset}")
    return "\n".join(lines) + "\n"


def format_response(response: SearchResponse, color: bool = False, titles: Mapping[str, str] | None = None) -> str:
    """Human-readable results: the answer, then each passage under its document's title with its citation,
    the answer marked."""
    titles = titles or {}
    bold, dim, reset = ("\033[1;33m", "\033[2m", "\033[0m") if color else ("", "", "")
    mark_open, mark_close = (bold, reset) if color else ("[[", "]]")
    lines = [f"Q: {response.query}  ({response.mode}{', reranked' if response.reranked else ''})", ""]
    answer = response.answer
    if answer is None:
        lines.append("Answer: none found in the corpus with enough confidence.")
    else:
        lines.append(f"Answer: {answer.text}")
        source = titles.get(answer.doc_id, answer.doc_id)
        lines.append(f"        {dim}{source} [{answer.start}:{answer.end}]  confidence {answer.score:.2f}{reset}")
    lines.append("")
    for result in response.results:
        passage = result.passage
        page = f" p.{result.page}" if result.page else ""
        scores = f"score {result.score:.4f}" if result.rerank_score is None \
            else f"rerank {result.rerank_score:+.2f} (first stage {result.score:.4f})"
        lines.append(f"{result.rank:>2}. {titles.get(passage.doc_id, passage.doc_id)}")
        lines.append(f"    {dim}{passage.doc_id}{page} [{passage.start}:{passage.end}]  {scores}  "
                     f"{passage.tokens} tokens{reset}")
        text = passage.text
        if answer is not None and answer.doc_id == passage.doc_id and passage.start <= answer.start < passage.end:
            a, b = answer.start - passage.start, min(answer.end, passage.end) - passage.start
            text = text[:a] + mark_open + text[a:b] + mark_close + text[b:]
        lines.extend("    " + line for line in text.splitlines() if line.strip())
        lines.append("")
    if not response.results:
        lines.append("No passage matched.")
    return "\n".join(lines).rstrip() + "\n"


def cmd_serve(args: argparse.Namespace) -> int:
    from .api import serve

    return serve(_settings(args))


def cmd_mcp(args: argparse.Namespace) -> int:
    from .engine import announce_builds, open_searcher
    from .mcp_server import require_mcp, serve_stdio

    require_mcp()  # says how to install the SDK before any model loads
    settings = _settings(args)
    # stdout carries the protocol: whatever loading or a build has to say goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        searcher = open_searcher(settings, build_if_missing=True, on_build=announce_builds(settings, sys.stderr))
    serve_stdio(searcher)
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    from .api.callers import add_token
    from .errors import ConfigError

    path = args.file or Settings().tokens_file
    if path is None:
        raise ConfigError("say which tokens file: --file PATH or ASKCORPUS_TOKENS_FILE")
    token = add_token(path, args.name, args.read, admin=args.admin)
    print(token)
    print(f"added token {args.name!r} to {path} (only its SHA-256 is stored: this is the one time it is shown)",
          file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import main as eval_main

    return eval_main(args, _settings(args))


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="askcorpus", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="build or update the index of a corpus folder")
    index.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="read, chunk and embed on a Ray cluster: 'auto' joins the running one, host:port "
                            "a given one, none starts a local one (default: $ASKCORPUS_RAY_ADDRESS)")
    _add_paths(index)
    index.set_defaults(func=cmd_index)

    ask = commands.add_parser("ask", help="ask a question; prints ranked passages with citations")
    ask.add_argument("question")
    ask.add_argument("-k", type=int, default=None, help="passages to return (1-100, default 10)")
    ask.add_argument("--mode", choices=MODES, default=None, help="retrieval mode (default hybrid)")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--generate", action="store_true",
                     help="have the configured language model write the answer from the top passages, streamed, "
                          "each sentence cited and checked (needs ASKCORPUS_LLM_URL or ASKCORPUS_LLM_GGUF)")
    _add_rerank(ask)
    _add_filter(ask)
    _add_paths(ask)
    ask.set_defaults(func=cmd_ask)

    serve = commands.add_parser("serve", help="run the web service and its page")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--watch", action="store_true",
                       help="watch the corpus folder and build changes in as they happen (default: $ASKCORPUS_WATCH, "
                            "off; docs/live.md)")
    _add_paths(serve)
    serve.set_defaults(func=cmd_serve)

    mcp = commands.add_parser("mcp", help="serve search and the documents to an agent over MCP on stdin/stdout "
                                          "(docs/mcp.md)")
    _add_rerank(mcp)
    _add_paths(mcp)
    mcp.set_defaults(func=cmd_mcp)

    token = commands.add_parser("token", help="manage the callers' tokens file (docs/security.md)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    token_add = token_commands.add_parser("add", help="print a new random token once and append its hash to the "
                                                      "tokens file (created with mode 0600)")
    token_add.add_argument("name", help="who holds it (unique in the file; shown in logs)")
    token_add.add_argument("--read", action="append", required=True, metavar="PREFIX",
                           help="a path prefix within the corpus folder it may read (repeatable; '' for everything)")
    token_add.add_argument("--admin", action="store_true", help="may also reindex and upload")
    token_add.add_argument("--file", type=Path, default=None,
                           help="the tokens file (default: $ASKCORPUS_TOKENS_FILE)")
    token_add.set_defaults(func=cmd_token_add)

    evaluate = commands.add_parser("eval", help="score retrieval against a question-and-answer set")
    evaluate.add_argument("--qa", type=Path, default=Path("evals/qa.jsonl"))
    evaluate.add_argument("--modes", default=None,
                          help="comma-separated, e.g. hybrid,hybrid+rerank (default: every mode, each also "
                               "reranked unless --no-rerank)")
    evaluate.add_argument("--split", default=None, help="only questions of this split (default: all questions)")
    evaluate.add_argument("--beir", type=Path, default=None, metavar="DIR",
                          help="score a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) instead: "
                               "nDCG@10 and Recall@100 per mode")
    evaluate.add_argument("--support", action="store_true",
                          help="measure the generated-answer support check instead: each answerable question's "
                               "evidence sentence, that sentence altered and another document's sentence, scored "
                               "against the passage holding the evidence at a range of thresholds")
    evaluate.add_argument("--generate", action="store_true",
                          help="score generated answers instead (hybrid search, reranked, then the configured "
                               "model): accuracy, token F1, citations, support, abstention, tokens, seconds")
    evaluate.add_argument("--limit", type=int, default=None, metavar="N",
                          help="only the first N questions (of the split)")
    evaluate.add_argument("-k", type=int, default=10)
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--report", type=Path, default=None)
    _add_rerank(evaluate)
    _add_filter(evaluate)
    _add_paths(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    bench = commands.add_parser("bench", help="measure latency, throughput, build cost and scale")
    bench.add_argument("--quick", action="store_true")
    bench.add_argument("--sections", default=None, metavar="NAMES",
                       help="only these sections, by name or number: inproc, http, build, scale, startup, encoder, "
                            "rerank, overload, ray, memory, generation, cost, live (default: "
                            "$ASKCORPUS_BENCH_SECTIONS, or all)")
    bench.add_argument("--report", type=Path, default=None)
    _add_paths(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows up here, in the handler below, not at exit
        return code
    except BrokenPipeError:
        # `askcorpus ask ... | head`: stop quietly with the shell's SIGPIPE status, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except AskcorpusError as error:
        print(f"askcorpus: error: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:  # a setting out of range, from the environment or the command line
        print(f"askcorpus: error: {settings_problems(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("askcorpus: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
