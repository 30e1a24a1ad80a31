"""Any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp's server, LM Studio, OpenAI) through `openai`."""

from __future__ import annotations

import threading
from typing import Iterator, Sequence

from ..errors import GenerationError
from .base import Generator, Message, Usage

# Seconds to open a connection: an endpoint that is not listening should be reported at once, not after the
# read timeout a long answer needs.
CONNECT_TIMEOUT = 5.0


class OpenAIEndpoint(Generator):
    """Chat completions streamed from `base_url`; the model is `model`, or the first one the endpoint lists."""

    backend = "openai"

    def __init__(self, base_url: str, model: str | None, api_key: str | None, timeout: float) -> None:
        import openai

        self.base_url = base_url.rstrip("/")
        self._model = model
        self._lock = threading.Lock()
        # No retries: a failure is reported in the response at once, the passages and extractive answer stand.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", max_retries=0,
                                     # openai's own Timeout: its HTTP library is not always httpx
                                     timeout=openai.Timeout(timeout, connect=CONNECT_TIMEOUT))

    @property
    def name(self) -> str:
        return self._model or f"(first model at {self.base_url})"

    def model(self) -> str:
        """The configured model, or the first the endpoint lists (asked once, when first needed)."""
        with self._lock:
            if self._model is None:
                try:
                    listed = [entry.id for entry in self._client.models.list()]
                except Exception as error:
                    raise GenerationError(describe(error, self.base_url)) from None
                if not listed:
                    raise GenerationError(f"the endpoint at {self.base_url} lists no model: set ASKCORPUS_LLM_MODEL")
                self._model = listed[0]
            return self._model

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float) -> Iterator[str | Usage]:
        model = self.model()
        try:
            reply = self._client.chat.completions.create(
                model=model, messages=[{"role": m.role, "content": m.content} for m in messages], stream=True,
                max_tokens=max_tokens, temperature=temperature, stream_options={"include_usage": True})
        except Exception as error:
            raise GenerationError(describe(error, self.base_url)) from None
        usage = Usage(None, None)
        finish: str | None = None
        try:
            for chunk in reply:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices or ():
                    finish = choice.finish_reason or finish
                    piece = choice.delta.content if choice.delta is not None else None
                    if piece:
                        yield piece
        except Exception as error:  # GeneratorExit (closed early) is no Exception: it passes through
            raise GenerationError(describe(error, self.base_url)) from None
        finally:
            reply.close()  # leaving early closes the connection: the server stops generating
        yield Usage(usage.prompt_tokens, usage.completion_tokens, finish)

    def close(self) -> None:
        self._client.close()


def describe(error: Exception, base_url: str) -> str:
    """An `openai` client error as a sentence saying what happened and what to do."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return f"the model endpoint at {base_url} did not answer in time (ASKCORPUS_LLM_TIMEOUT)"
    if isinstance(error, openai.APIConnectionError):
        return f"cannot reach the model endpoint at {base_url}: is it running? (ASKCORPUS_LLM_URL)"
    if isinstance(error, openai.AuthenticationError):
        return f"the model endpoint at {base_url} refused the API key (401): check ASKCORPUS_LLM_API_KEY"
    if isinstance(error, openai.PermissionDeniedError):
        return f"the model endpoint at {base_url} refused the request (403): check ASKCORPUS_LLM_API_KEY"
    if isinstance(error, openai.NotFoundError):
        return (f"the model endpoint at {base_url} has no such model or path (404): check ASKCORPUS_LLM_MODEL and "
                "that ASKCORPUS_LLM_URL ends in /v1")
    if isinstance(error, openai.BadRequestError):
        message = _message(error)
        if "context" in message.lower() or "too long" in message.lower() or "token" in message.lower():
            return (f"the prompt does not fit the model's context ({message}): lower ASKCORPUS_LLM_CONTEXT_TOKENS "
                    "or ASKCORPUS_LLM_MAX_TOKENS")
        return f"the model endpoint at {base_url} rejected the request (400): {message}"
    if isinstance(error, openai.RateLimitError):
        return f"the model endpoint at {base_url} is rate-limiting (429): retry later"
    if isinstance(error, openai.APIStatusError):
        return f"the model endpoint at {base_url} failed ({error.status_code}): {_message(error)}"
    return f"the model endpoint's reply could not be read ({type(error).__name__}: {error})"


def _message(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(inner, str):
            return inner[:300]
    return str(getattr(error, "message", error))[:300]
