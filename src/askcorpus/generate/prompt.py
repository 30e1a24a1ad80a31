"""The prompt: the template filled with the question and the top passages, numbered, within a token budget."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Mapping, Sequence

from ..errors import ConfigError, GenerationError
from ..records import Citation, Result
from .base import Generator, Message

DEFAULT_TEMPLATE = Path(__file__).with_name("prompt.txt")
# What the model is told to reply when the passages do not answer; the response then abstains.
NO_ANSWER = "The passages do not answer this question."
# The line that divides the template's system message from its user message.
SEPARATOR = "---"
PLACEHOLDERS = ("question", "passages", "no_answer")


@dataclass(frozen=True)
class Prompt:
    messages: tuple[Message, ...]
    citations: tuple[Citation, ...]  # the passages given, as [1], [2], ... in the prompt
    passage_texts: tuple[str, ...]  # their texts, in the same order
    tokens: int  # the prompt's tokens as the generator counts them (template, question and passages)


@lru_cache(maxsize=8)
def load_template(path: Path | None) -> tuple[str, str]:
    """The (system, user) templates of a prompt file: the two parts around a line holding only `---`."""
    source = DEFAULT_TEMPLATE if path is None else path
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the prompt template {source} (ASKCORPUS_LLM_TEMPLATE): {error}") from None
    lines = text.splitlines()
    if SEPARATOR not in (line.strip() for line in lines):
        system, user = "", text
    else:
        cut = next(i for i, line in enumerate(lines) if line.strip() == SEPARATOR)
        system, user = "\n".join(lines[:cut]).strip(), "\n".join(lines[cut + 1:]).strip()
    for name in ("question", "passages"):
        if f"${name}" not in user and "${" + name + "}" not in user:
            raise ConfigError(f"the prompt template {source} has no ${name} in its user part (after the '---' line)")
    return system, user


def passage_block(n: int, title: str, text: str) -> str:
    return f"[{n}] {title}\n{text}"


def build_prompt(question: str, results: Sequence[Result], titles: Mapping[str, str], generator: Generator,
                 *, passages: int, budget: int, template: Path | None = None) -> Prompt:
    """The top `passages` results, in rank order, as many as fit `budget` tokens with the template and question.

    A passage that does not fit is left out and the next ones still tried, so a long passage never costs the
    shorter ones below it. Raises GenerationError when not even the template and question fit.
    """
    system, user = load_template(template)
    fixed = _fill(system, question, "") + _fill(user, question, "")
    candidates = results[:passages]
    blocks = [passage_block(0, titles.get(r.passage.doc_id, r.passage.doc_id), r.passage.text) for r in candidates]
    used, *costs = generator.count_tokens([fixed, *blocks])  # one call: a backend may count them in one request
    if used >= budget:
        raise GenerationError(f"the prompt template and question take {used} tokens, more than the context budget "
                              f"of {budget} (ASKCORPUS_LLM_CONTEXT_TOKENS)")
    chosen: list[Result] = []
    for result, cost in zip(candidates, costs):
        if used + cost + 2 <= budget:  # 2: the blank line between passages and the digits of [n]
            chosen.append(result)
            used += cost + 2
    citations = tuple(Citation(n, r.passage_id, r.passage.doc_id, r.passage.start, r.passage.end, r.page,
                               titles.get(r.passage.doc_id, r.passage.doc_id))
                      for n, r in enumerate(chosen, start=1))
    listed = "\n\n".join(passage_block(c.n, c.title, r.passage.text) for c, r in zip(citations, chosen))
    messages = tuple(Message(role, _fill(part, question, listed)) for role, part in (("system", system), ("user", user))
                     if part)
    return Prompt(messages, citations, tuple(r.passage.text for r in chosen), used)


def _fill(part: str, question: str, passages: str) -> str:
    return Template(part).safe_substitute(question=question, passages=passages, no_answer=NO_ANSWER)
