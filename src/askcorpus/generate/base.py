"""The Generator interface: a chat model that streams an answer's text, one backend per module."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..chunk import count_llm_tokens


@dataclass(frozen=True)
class Message:
    role: str  # "system" or "user"
    content: str


@dataclass(frozen=True)
class Usage:
    """What the model reports once it has finished: token counts (None when the backend does not say)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None = None


class Generator(ABC):
    """Writes a reply to chat messages, streamed as text pieces.

    `stream` yields `str` pieces as the model produces them, then exactly one `Usage`. Closing the iterator early
    (`close()`, or leaving a `for` loop) stops the model producing tokens. Failures raise GenerationError with a
    message a user can act on.
    """

    name: str  # the model, as /health and the response name it
    backend: str  # "openai" (an OpenAI-compatible endpoint) or "llamacpp" (a GGUF in process)

    @abstractmethod
    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float) -> Iterator[str | Usage]:
        """The reply's text pieces, then its Usage."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the prompt. An endpoint's tokenizer is unknown here: cl100k_base estimates it."""
        return count_llm_tokens(texts)

    def close(self) -> None:
        """Free what the backend holds (a model in memory, connections)."""
