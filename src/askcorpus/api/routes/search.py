"""POST and GET /search: ranked passages with citations, the extractive answer and, with generate, a written one."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and the body's names a model
# local to search_router.
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from ...config import Settings
from ...filters import Filter
from ...search import NOT_ONLY_WHITESPACE
from ..deps import EncoderDep, GeneratorDep, PipelineDep, ReadableDep
from ..filter_params import query_filter, scoped
from ..models import (ERRORS, K_MAX, K_MIN, REQUEST_TOO_LONG, ModeName, SearchOut, generate_schema,
                      max_deadline_ms, search_request_model)


def _responses(settings: Settings) -> tuple[dict, dict]:
    """The error responses both routes publish, and POST's with its event stream added."""
    errors = {422: {**ERRORS, "description": "the query, k, mode or filter is not acceptable, or generate was asked "
                                             "of a server with no language model"},
              413: {**ERRORS, "description": f"body larger than {settings.max_body_bytes} bytes"},
              503: {**ERRORS, "description": "server busy: the search queue is full or the search could not start "
                                             "within its deadline; retry after Retry-After seconds"}}
    streamed = {**errors, 200: {"content": {"text/event-stream": {
        "description": "with generate and Accept: text/event-stream: a `results` event (this response without "
                       "`generated`), `delta` events ({\"text\": ...}) as the model writes, and a `done` event "
                       "({\"generated\": ...}) after the check"}}}}
    return errors, streamed


def search_router(settings: Settings, generation: bool) -> APIRouter:
    """The search group's router, made per app rather than once per module: a route's parameters are fixed when it
    is declared, and these publish the server's own query length and deadline limits, its ASKCORPUS_K and
    ASKCORPUS_MODE defaults, and whether it can generate. Two apps in one process may differ in all of them."""
    router = APIRouter(tags=["search"])
    SearchRequest = search_request_model(settings, generation)
    max_chars = settings.max_query_chars
    deadline_limit = max_deadline_ms(settings)
    errors, streamed = _responses(settings)

    @router.post("/search", response_model=SearchOut, responses=streamed,
                 summary="Ranked passages with citations, an extractive answer and, with generate, a written one")
    async def post_search(request: Request, body: SearchRequest,  # type: ignore[valid-type]
                          holder: ReadableDep, encoder: EncoderDep, generator: GeneratorDep,
                          pipeline: PipelineDep) -> Response:
        within = scoped(holder, body.filter.to_filter() if body.filter is not None else None)
        return await pipeline.respond(request, body.query, body.k, body.mode, body.rerank, body.deadline_ms,
                                      within, encoder, body.generate, generator)

    @router.get("/search", response_model=SearchOut, responses={**errors, **REQUEST_TOO_LONG},
                summary="Same as POST /search, for links and curl")
    async def get_search(
        request: Request,
        holder: ReadableDep,
        encoder: EncoderDep,
        generator: GeneratorDep,
        pipeline: PipelineDep,
        q: Annotated[str, Query(min_length=1, max_length=max_chars, pattern=NOT_ONLY_WHITESPACE,
                                description=f"the question: 1 to {max_chars} characters")],
        k: Annotated[int, Query(ge=K_MIN, le=K_MAX, description="passages to return")] = settings.k,
        mode: Annotated[ModeName, Query(description="hybrid, dense or bm25")] = settings.mode,
        rerank: Annotated[bool | None, Query(description="reorder with the cross-encoder (default: the server's "
                                                         "setting)")] = None,
        deadline_ms: Annotated[int | None, Query(ge=1, le=deadline_limit, description="time budget in ms "
                                                 "(default and limit: the server's search_deadline)")] = None,
        generate: Annotated[bool, Query(description="also have the language model write the answer",
                                        json_schema_extra=generate_schema(generation))] = False,
        filter: Annotated[Filter | None, Depends(query_filter)] = None,
    ) -> Response:
        return await pipeline.respond(request, q, k, mode, rerank, deadline_ms, scoped(holder, filter), encoder,
                                      generate, generator)

    return router
