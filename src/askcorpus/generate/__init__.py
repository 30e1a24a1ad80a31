"""Generated answers: a language model writes the answer from the reranked passages, every sentence cited and checked.

- base: the Generator interface (text pieces streamed, then the token counts)
- openai_endpoint: any OpenAI-compatible chat endpoint, through the `openai` client
- llamacpp: a GGUF file run in process by llama.cpp (`xllamacpp`)
- prompt: the template filled with the numbered passages that fit the token budget
- citations: [n] markers parsed and the answer cut into cited sentences
- check: each sentence checked against the passages it cites
- writer: the whole turn, from results to a checked `Generated`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GenerationUnavailableError
from .base import Generator, Message, Usage
from .writer import with_generated, write_answer

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["NOT_CONFIGURED", "Generator", "Message", "Usage", "generator_for", "require_generation", "with_generated",
           "write_answer"]

NOT_CONFIGURED = ("no language model is configured here: set ASKCORPUS_LLM_URL (an OpenAI-compatible endpoint, e.g. "
                  "http://127.0.0.1:11434/v1 for Ollama) and ASKCORPUS_LLM_MODEL, or ASKCORPUS_LLM_GGUF (a local "
                  "GGUF file; pip install 'askcorpus[llm]'), then start again")


def generator_for(settings: "Settings") -> Generator | None:
    """The model `settings` configure, loaded once; None when none is (answers stay extractive)."""
    if settings.llm_gguf is not None:
        from .llamacpp import LlamaCppModel

        return LlamaCppModel(settings.llm_gguf, threads=settings.llm_threads, context=settings.llm_context,
                             parallel=settings.generate_concurrency)
    if settings.llm_url:
        from .openai_endpoint import OpenAIEndpoint

        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else None
        return OpenAIEndpoint(settings.llm_url, settings.llm_model, key, settings.llm_timeout)
    return None


def require_generation(generate: bool | None, generator: Generator | None) -> None:
    """GenerationUnavailableError (a QueryError: 422, exit 2) when an answer is asked of no model."""
    if generate and generator is None:
        raise GenerationUnavailableError(NOT_CONFIGURED)
