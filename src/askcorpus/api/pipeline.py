"""One search request end to end: admission, then encode + retrieve + rerank + answer in a worker thread, timed."""

import asyncio
from functools import partial

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import Response

from ..config import Settings
from ..errors import QueryError
from ..lexical import term_spans, terms
from ..search import Searcher, validate_query, validate_rerank
from .admission import DISCONNECTED, AdmissionGate, Rejected
from .batching import QueryEncoder
from .holder import IndexHolder
from .metrics import Metrics
from .models import SafeJSONResponse

# Status of a search whose client went away before its turn (nginx's "client closed request"): nobody reads
# it, and counting it apart keeps askcorpus_requests_total{status="503"} equal to the 503s clients saw.
CLIENT_CLOSED = 499


def _highlighted(response_dict: dict, query: str) -> dict:
    wanted = set(terms(query))
    for result in response_dict["results"]:
        result["highlights"] = [list(span) for span in term_spans(result["text"], wanted)] if wanted else []
    return response_dict


def _run_search(searcher: Searcher, query: str, k: int, mode: str, rerank: bool | None,
                vector: np.ndarray) -> tuple[bytes, dict[str, float]]:
    """The search response as JSON bytes and its stage timings, made in a worker thread (FastAPI's own
    validation and encoding of a dict on the event loop cost more than the search; the dict is checked against
    SearchOut by the tests)."""
    response = searcher.search(query, k, mode, query_vector=vector, rerank=rerank)
    return SafeJSONResponse(_highlighted(response.to_dict(), response.query)).body, response.timings


async def _client_gone(request: Request) -> bool:
    # Twice: for a GET the first receive hands back the empty body BodyLimitMiddleware replays, which nobody
    # read; the second reaches the server and says whether the connection is still there.
    return await request.is_disconnected() or await request.is_disconnected()


class SearchPipeline:
    """Admits a search through the gate, computes it within its turn, and records what happened."""

    def __init__(self, settings: Settings, gate: AdmissionGate, metrics: Metrics) -> None:
        self.settings = settings
        self.gate = gate
        self.metrics = metrics

    async def respond(self, request: Request, query: str, k: int, mode: str, rerank: bool | None,
                      deadline_ms: int | None, holder: IndexHolder, encoder: QueryEncoder) -> Response:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        searcher = holder.searcher  # this request keeps this index even if a swap happens meanwhile
        try:
            text = validate_query(query, k, mode, self.settings)
            validate_rerank(rerank, None, searcher.reranker)
        except QueryError as error:
            raise HTTPException(422, str(error)) from None
        budget = self.settings.search_deadline if deadline_ms is None else deadline_ms / 1000
        try:
            async with self.gate.turn(arrived + budget, partial(_client_gone, request)):
                self.metrics.queue_seconds.observe(loop.time() - arrived)
                # The encoder batches only what holds a turn, so the gate bounds its model calls too.
                body, timings = await encoder.run(text, partial(_run_search, searcher, text, k, mode, rerank))
        except Rejected as rejected:
            self.metrics.reject(rejected.reason)
            if rejected.reason == DISCONNECTED:
                return Response(status_code=CLIENT_CLOSED)
            raise HTTPException(503, str(rejected), headers={"Retry-After": str(rejected.retry_after)}) from None
        self.metrics.observe_stages(timings)
        return Response(body, media_type="application/json")
