"""One search request end to end: admission, then encode + retrieve + rerank + answer in a worker thread, timed;
with generate, the model's answer after it in a lane of its own, whole or streamed as Server-Sent Events."""

import asyncio
import json
import threading
from dataclasses import replace
from functools import partial
from typing import AsyncIterator, Callable

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import Response

from ..config import Settings
from ..errors import QueryError
from ..generate import Generator, require_generation, with_generated
from ..lexical import term_spans, terms
from ..records import Generated, SearchResponse
from ..search import Searcher, validate_query, validate_rerank
from .admission import DISCONNECTED, AdmissionGate, Rejected
from .batching import QueryEncoder
from .holder import IndexHolder
from .metrics import Metrics
from .models import SafeJSONResponse

# Status of a search whose client went away before its turn (nginx's "client closed request"): nobody reads
# it, and counting it apart keeps askcorpus_requests_total{status="503"} equal to the 503s clients saw.
CLIENT_CLOSED = 499
# How often a generation whose client may leave checks that it is still there (the streamed one learns at once).
DISCONNECT_POLL_SECONDS = 0.25


def _highlighted(response_dict: dict, query: str) -> dict:
    wanted = set(terms(query))
    for result in response_dict["results"]:
        result["highlights"] = [list(span) for span in term_spans(result["text"], wanted)] if wanted else []
    return response_dict


def _response_json(response: SearchResponse) -> bytes:
    return SafeJSONResponse(_highlighted(response.to_dict(), response.query)).body


def _run_search(searcher: Searcher, query: str, k: int, mode: str, rerank: bool | None,
                vector: np.ndarray) -> tuple[bytes, dict[str, float]]:
    """The search response as JSON bytes and its stage timings, made in a worker thread (FastAPI's own
    validation and encoding of a dict on the event loop cost more than the search; the dict is checked against
    SearchOut by the tests)."""
    response, timings = _search_response(searcher, query, k, mode, rerank, vector)
    return _response_json(response), timings


def _search_response(searcher: Searcher, query: str, k: int, mode: str, rerank: bool | None,
                     vector: np.ndarray) -> tuple[SearchResponse, dict[str, float]]:
    response = searcher.search(query, k, mode, query_vector=vector, rerank=rerank)
    return response, response.timings


async def _client_gone(request: Request) -> bool:
    # Twice: for a GET the first receive hands back the empty body BodyLimitMiddleware replays, which nobody
    # read; the second reaches the server and says whether the connection is still there.
    return await request.is_disconnected() or await request.is_disconnected()


def wants_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _event(name: str, data: dict) -> dict:
    return {"event": name, "data": json.dumps(data, ensure_ascii=False, separators=(",", ":"))}


class SearchPipeline:
    """Admits a search through the gate, computes it within its turn, and records what happened; a generated
    answer then waits for a turn of the generation gate, so slow models never hold up searches."""

    def __init__(self, settings: Settings, gate: AdmissionGate, metrics: Metrics,
                 generation_gate: AdmissionGate) -> None:
        self.settings = settings
        self.gate = gate
        self.metrics = metrics
        self.generation_gate = generation_gate

    async def respond(self, request: Request, query: str, k: int, mode: str, rerank: bool | None,
                      deadline_ms: int | None, holder: IndexHolder, encoder: QueryEncoder, generate: bool = False,
                      generator: Generator | None = None) -> Response:
        searcher = holder.searcher  # this request keeps this index even if a swap happens meanwhile
        try:
            text = validate_query(query, k, mode, self.settings)
            validate_rerank(rerank, None, searcher.reranker)
            require_generation(generate, generator)
        except QueryError as error:
            raise HTTPException(422, str(error)) from None
        work = _search_response if generate else _run_search
        outcome = await self._admitted(request, deadline_ms, encoder, text,
                                       partial(work, searcher, text, k, mode, rerank))
        if isinstance(outcome, Response):
            return outcome
        body, timings = outcome
        self.metrics.observe_stages(timings)
        if not generate:
            return Response(body, media_type="application/json")
        if wants_events(request):
            from sse_starlette.sse import EventSourceResponse

            return EventSourceResponse(self._events(request, body, searcher, generator),
                                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        generated = await self._generated(request, body, searcher, generator)
        return Response(_response_json(generated), media_type="application/json")

    async def _admitted(self, request: Request, deadline_ms: int | None, encoder: QueryEncoder, text: str,
                        then: Callable[[np.ndarray], tuple]) -> tuple | Response:
        """then(query vector) computed within a turn of the search gate; a 503 (or 499) Response if refused."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        budget = self.settings.search_deadline if deadline_ms is None else deadline_ms / 1000
        try:
            async with self.gate.turn(arrived + budget, partial(_client_gone, request)):
                self.metrics.queue_seconds.observe(loop.time() - arrived)
                # The encoder batches only what holds a turn, so the gate bounds its model calls too.
                return await encoder.run(text, then)
        except Rejected as rejected:
            self.metrics.reject(rejected.reason)
            if rejected.reason == DISCONNECTED:
                return Response(status_code=CLIENT_CLOSED)
            raise HTTPException(503, str(rejected), headers={"Retry-After": str(rejected.retry_after)}) from None

    async def _generated(self, request: Request, response: SearchResponse, searcher: Searcher,
                         generator: Generator, on_text: Callable[[str], None] | None = None) -> SearchResponse:
        """The response with the model's checked answer, written within a turn of the generation gate. A busy
        lane or a client gone is an answer too: `generated.error` says so."""
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            async with self.generation_gate.turn(loop.time() + self.settings.llm_timeout,
                                                 partial(_client_gone, request)):
                watcher = asyncio.create_task(self._watch(request, stop)) if on_text is None else None
                try:
                    answered = await asyncio.to_thread(
                        with_generated, response, searcher.index.documents, generator, searcher.reranker,
                        self.settings, on_text=on_text, stopped=stop.is_set)
                finally:
                    stop.set()
                    if watcher is not None:
                        watcher.cancel()
        except Rejected as rejected:
            self.metrics.observe_generation_rejected(rejected.reason)
            answered = replace(response, generated=Generated(None, model=generator.name,
                                                             error=f"no answer written: {rejected}"))
        self.metrics.observe_generated(answered.generated)
        return answered

    @staticmethod
    async def _watch(request: Request, stop: threading.Event) -> None:
        while not stop.is_set():
            if await _client_gone(request):
                stop.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)

    async def _events(self, request: Request, response: SearchResponse, searcher: Searcher,
                      generator: Generator) -> AsyncIterator[dict]:
        """`results` at once, a `delta` per piece of text the model writes, `done` with the checked answer. A
        client that leaves cancels this generator: the model is told to stop at its next token."""
        yield _event("results", _highlighted(response.to_dict(), response.query))
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        task = asyncio.ensure_future(self._generated(
            request, response, searcher, generator,
            on_text=lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)))
        try:
            while not task.done() or not pieces.empty():
                getter = asyncio.ensure_future(pieces.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield _event("delta", {"text": getter.result()})
                else:
                    getter.cancel()
            generated = task.result().generated
            yield _event("done", {"generated": generated.to_dict()})
        finally:
            if not task.done():
                task.cancel()  # the worker's stop flag is set as the turn unwinds
