"""One search request end to end, lane by lane: the cheap stages (encode, first stage) within a turn of the search
lane, the cross-encoder within a turn of the rerank lane, and with generate the model's answer within a turn of the
generation lane, whole or streamed as Server-Sent Events."""

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import AsyncIterator, Callable

from fastapi import HTTPException, Request
from fastapi.responses import Response

from ..config import Settings
from ..errors import QueryError
from ..generate import Generator, require_generation, with_generated
from ..lexical import term_spans, terms
from ..records import Candidates, Generated, SearchResponse
from ..search import Searcher, validate_query, validate_rerank
from .admission import DISCONNECTED, Lanes, Rejected, Reservation
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


def _finished(searcher: Searcher, candidates: Candidates, as_json: bool) -> tuple[bytes | SearchResponse, dict]:
    """The second stage of a search and its stage timings, in a worker thread; as JSON bytes unless the response
    goes on to a language model (FastAPI's own validation and encoding of a dict on the event loop cost more than
    the search; the dict is checked against SearchOut by the tests)."""
    response = searcher.second_stage(candidates)
    return (_response_json(response) if as_json else response), response.timings


async def _client_gone(request: Request) -> bool:
    # Twice: for a GET the first receive hands back the empty body BodyLimitMiddleware replays, which nobody
    # read; the second reaches the server and says whether the connection is still there.
    return await request.is_disconnected() or await request.is_disconnected()


def wants_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _event(name: str, data: dict) -> dict:
    return {"event": name, "data": json.dumps(data, ensure_ascii=False, separators=(",", ":"))}


class _LaneRefusal(Exception):
    """A lane turned the search away: which lane, and why (the Rejected it gave)."""

    def __init__(self, lane: str, rejected: Rejected) -> None:
        super().__init__(str(rejected))
        self.lane = lane
        self.rejected = rejected


class SearchPipeline:
    """Admits each part of a search through its lane, computes it within its turn, and records what happened. A
    search holds no turn while it waits for the next lane's, so slow reranking never holds up cheap searches, and
    slow models never hold up either."""

    def __init__(self, settings: Settings, lanes: Lanes, metrics: Metrics) -> None:
        self.settings = settings
        self.lanes = lanes
        self.metrics = metrics

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
        outcome = await self._searched(request, deadline_ms, encoder, searcher, text, k, mode, rerank,
                                       as_json=not generate)
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

    async def _searched(self, request: Request, deadline_ms: int | None, encoder: QueryEncoder, searcher: Searcher,
                        text: str, k: int, mode: str, rerank: bool | None,
                        as_json: bool) -> tuple | Response:
        """The search through its lanes: (body, timings), or the 503 (or 499) Response of the lane that refused."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        deadline = arrived + (self.settings.search_deadline if deadline_ms is None else deadline_ms / 1000)
        gone = partial(_client_gone, request)
        reranking = searcher.reranker is not None and rerank is not False
        first = partial(searcher.first_stage, text, k, mode, rerank=rerank)
        place = None
        try:
            if reranking:  # a place in the rerank lane first: a full lane is told before any cheap work
                try:
                    place = self.lanes.rerank.reserve(deadline, arrived)
                except Rejected as rejected:
                    raise _LaneRefusal("rerank", rejected) from None
            async with self._turn("search", deadline, gone, arrived):
                if not reranking:  # the whole search is cheap: it finishes within this turn, in one thread
                    return await encoder.run(text, lambda vector: _finished(
                        searcher, first(query_vector=vector), as_json))
                candidates = await encoder.run(text, lambda vector: first(query_vector=vector))
            async with self._turn("rerank", deadline, gone, loop.time(), reservation=place):
                return await asyncio.to_thread(_finished, searcher, candidates, as_json)
        except _LaneRefusal as refusal:
            self.metrics.reject(refusal.lane, refusal.rejected.reason)
            if refusal.rejected.reason == DISCONNECTED:
                return Response(status_code=CLIENT_CLOSED)
            raise HTTPException(503, str(refusal.rejected),
                                headers={"Retry-After": str(refusal.rejected.retry_after)}) from None
        finally:
            if place is not None:
                place.release()  # a search that failed or was refused before its rerank turn frees its place

    @asynccontextmanager
    async def _turn(self, lane: str, deadline: float, gone: Callable, since: float,
                    reservation: Reservation | None = None) -> AsyncIterator[None]:
        """A turn of `lane` held for the body; its wait observed, its refusal raised as _LaneRefusal."""
        gate = self.lanes.named()[lane]
        try:
            async with gate.turn(deadline, gone, reservation=reservation):
                self.metrics.observe_wait(lane, asyncio.get_running_loop().time() - since)
                yield
        except Rejected as rejected:
            raise _LaneRefusal(lane, rejected) from None

    async def _generated(self, request: Request, response: SearchResponse, searcher: Searcher,
                         generator: Generator, on_text: Callable[[str], None] | None = None) -> SearchResponse:
        """The response with the model's checked answer, written within a turn of the generation gate. A busy
        lane or a client gone is an answer too: `generated.error` says so."""
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            async with self.lanes.generate.turn(loop.time() + self.settings.llm_timeout,
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
            self.metrics.reject("generate", rejected.reason)
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
