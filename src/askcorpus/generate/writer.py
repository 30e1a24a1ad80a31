"""Writing an answer: the prompt sent, the reply streamed, then its citations resolved and each sentence checked."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from ..errors import GenerationError
from ..records import Document, Generated, GeneratedSentence, Result, SearchResponse
from ..rerank import Reranker
from .base import Generator, Usage
from .check import is_supported
from .citations import cited_sentences, clean_markers
from .prompt import NO_ANSWER, Prompt, build_prompt

if TYPE_CHECKING:
    from ..config import Settings

STOPPED = "stopped: the client went away before the answer was finished"


@dataclass(frozen=True)
class CheckedReply:
    text: str | None
    sentences: tuple[GeneratedSentence, ...]
    abstained: bool
    dropped_markers: int


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def says_no_answer(reply: str) -> bool:
    """Whether the reply is (or holds) the template's no-answer phrase, whatever its case and punctuation."""
    return _plain(NO_ANSWER) in _plain(reply)


def check_reply(reply: str, passages: Sequence[str], reranker: Reranker | None, min_score: float) -> CheckedReply:
    """The reply's markers resolved against the `passages` given (numbered from 1), each sentence checked against
    the ones it cites; abstained when the reply says the no-answer phrase or no sentence is supported."""
    text, dropped = clean_markers(reply.strip(), len(passages))
    if not text or says_no_answer(text):
        return CheckedReply(None, (), True, dropped)
    sentences = tuple(
        GeneratedSentence(s.text, s.start, s.end, s.citations,
                          is_supported(s.claim, [passages[n - 1] for n in s.citations], reranker, min_score))
        for s in cited_sentences(text))
    if not any(sentence.supported for sentence in sentences):
        return CheckedReply(None, sentences, True, dropped)
    return CheckedReply(text, sentences, False, dropped)


def write_answer(question: str, results: Sequence[Result], titles: Mapping[str, str], generator: Generator,
                 reranker: Reranker | None, settings: "Settings", *,
                 on_text: Callable[[str], None] | None = None,
                 stopped: Callable[[], bool] | None = None) -> Generated:
    """The model's answer to `question` from the top `results`, checked. Never raises for the model's failures:
    they come back as `Generated.error`, the passages and extractive answer standing beside it.

    `on_text` receives each piece of text as the model writes it; `stopped()` true ends generation early (the
    backend stops the model).
    """
    began = time.perf_counter()
    timings: dict[str, float] = {}
    model = generator.name
    try:
        prompt = build_prompt(question, results, titles, generator, passages=settings.llm_passages,
                              budget=settings.llm_context_tokens, template=settings.llm_template)
    except GenerationError as error:
        return Generated(None, model=model, error=str(error), seconds=time.perf_counter() - began)
    if not prompt.citations:
        return Generated(None, abstained=True, model=model, seconds=time.perf_counter() - began,
                         error=None if not results else "no passage fits the context budget "
                                                         "(ASKCORPUS_LLM_CONTEXT_TOKENS)")
    pieces: list[str] = []
    usage = Usage(None, None)
    stream = generator.stream(prompt.messages, max_tokens=settings.llm_max_tokens,
                              temperature=settings.llm_temperature)
    timings["prepare"] = time.perf_counter() - began
    error: str | None = None
    try:
        for item in stream:
            if isinstance(item, Usage):
                usage = item
                continue
            if not pieces:
                timings["first_token"] = time.perf_counter() - began
            pieces.append(item)
            if on_text is not None:
                on_text(item)
            if stopped is not None and stopped():
                error = STOPPED
                break
    except GenerationError as failure:
        error = str(failure)
    finally:
        stream.close()
    finished = time.perf_counter()
    model = generator.name  # an endpoint's first listed model is known once it has been asked
    reply = "".join(pieces)
    if error is None and not reply.strip():
        error = "the model returned no text"
    return _generated(prompt, reply, usage, error, reranker, settings, model, began, finished, timings)


def _generated(prompt: Prompt, reply: str, usage: Usage, error: str | None, reranker: Reranker | None,
               settings: "Settings", model: str, began: float, finished: float,
               timings: dict[str, float]) -> Generated:
    if error is not None:
        return Generated(None, citations=prompt.citations, model=model, prompt_tokens=usage.prompt_tokens,
                         completion_tokens=usage.completion_tokens, seconds=finished - began, error=error,
                         reply=reply or None, timings=timings)
    checked = check_reply(reply, prompt.passage_texts, reranker, settings.support_min_score)
    done = time.perf_counter()
    timings["check"] = done - finished
    return Generated(checked.text, checked.sentences, prompt.citations, checked.abstained, model,
                     usage.prompt_tokens if usage.prompt_tokens is not None else prompt.tokens,
                     usage.completion_tokens, done - began, None, checked.dropped_markers, reply=reply,
                     timings=timings)


def with_generated(response: SearchResponse, documents: Mapping[str, Document], generator: Generator,
                   reranker: Reranker | None, settings: "Settings", **options) -> SearchResponse:
    """`response` with the model's checked answer from its results (`options` as for write_answer)."""
    titles = {result.passage.doc_id: documents[result.passage.doc_id].title for result in response.results
              if result.passage.doc_id in documents}
    generated = write_answer(response.query, response.results, titles, generator, reranker, settings, **options)
    return replace(response, generated=generated)
