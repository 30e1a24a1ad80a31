"""The app: its endpoints over the same `Searcher.search` the CLI uses, the page, and `serve`."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, some of which name
# objects local to create_app (the per-app request model and query limit).
import asyncio
import gc
import hmac
import logging
import logging.config
import time
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Union

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, store
from ..config import Settings
from ..embed import Embedder
from ..errors import AskcorpusError
from ..generate import Generator, generator_for
from ..search import NOT_ONLY_WHITESPACE, Searcher
from .admission import AdmissionGate
from .batching import QueryEncoder
from .graceful import run_until_stopped
from .holder import IndexHolder, log_build, open_holder, SerializedEmbedder
from .metrics import CONTENT_TYPE, Metrics
from .middleware import AccessLogMiddleware, BodyLimitMiddleware
from .models import (DocumentList, DocumentText, ErrorOut, HealthOut, ModeName, PassageContext, ReindexOut,
                     SafeJSONResponse, SearchOut, generate_schema, search_request_model)
from .pipeline import SearchPipeline
from .validation import describe_errors, error_items

log = logging.getLogger("askcorpus.api")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Characters of context on each side of a passage for GET /documents/{id}?start=&end= (default and limit).
DEFAULT_CONTEXT_CHARS = 300
MAX_CONTEXT_CHARS = 5000


def _document_info(index: store.LoadedIndex) -> list[dict]:
    return [
        {
            "doc_id": d["doc_id"],
            "title": d["title"],
            "characters": d["chars"],
            "passages": d["passage_count"],
            "pages": d.get("pages"),
            "sha256": d["sha256"],
        }
        for d in index.manifest["documents"]
    ]


ERRORS = {"model": ErrorOut}


def create_app(settings: Settings, embedder: Embedder | None = None, *, searcher: Searcher | None = None,
               batching: bool = True, generator: Generator | None = None) -> FastAPI:
    """The askcorpus web app. The models and index load in the lifespan (or come in ready as `searcher` and
    `generator`; without one, the generator the settings configure, if any)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder = await asyncio.to_thread(open_holder, settings, embedder, searcher)
        app.state.generator = generator if generator is not None else \
            await asyncio.to_thread(generator_for, settings)

        def encode(texts: list[str]):
            started = time.perf_counter()
            vectors = holder.searcher.encode_queries(texts)
            metrics.stage_seconds.labels("encode").observe(time.perf_counter() - started)
            return vectors

        encoder = QueryEncoder(encode, batching=batching)
        await encoder.start()
        app.state.holder = holder
        app.state.encoder = encoder
        # What is loaded by now (models, index, modules: over 100,000 objects) lives as long as the server. Out of
        # the collector's reach, a full collection no longer stops the event loop for 60-100 ms, which every 503
        # and /health answer due at that moment would wait out. Refcounting still frees any of it.
        gc.freeze()
        watcher = asyncio.create_task(holder.watch(), name="askcorpus-index-watcher") \
            if settings.reload_interval > 0 else None
        index = holder.searcher.index
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info("askcorpus %s serving index %s (build %s, built %s: %d documents, %d passages) with model %s "
                 "(%s) at http://%s:%d/", __version__, settings.index, index.path.name, index.built_at,
                 len(index.documents), len(index.passages), holder.embedder.name, holder.embedder.backend, host,
                 settings.port)
        if app.state.generator is not None:
            log.info("answers written on request by %s (%s)", app.state.generator.name, app.state.generator.backend)
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                try:
                    await watcher
                except (asyncio.CancelledError, Exception):
                    pass
            await encoder.stop()
            if generator is None and app.state.generator is not None:
                app.state.generator.close()  # only what the lifespan loaded: a given one belongs to its caller
            gc.unfreeze()

    app = FastAPI(
        title="askcorpus",
        version=__version__,
        description="Ask questions over a folder of documents: ranked passages with exact citations "
                    "(document.text[start:end]) and an extractive answer.",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    max_chars = settings.max_query_chars
    max_deadline_ms = int(settings.search_deadline * 1000)  # the one bound POST and GET both publish
    generation = generator is not None or settings.generation_configured
    SearchRequest = search_request_model(max_chars, max_deadline_ms, generation)
    gate = AdmissionGate(settings.search_concurrency, settings.search_queue)
    metrics = Metrics(gate, lambda: getattr(app.state, "holder", None))
    generation_gate = AdmissionGate(settings.generate_concurrency, settings.generate_queue, noun="answer",
                                    plural="answers")
    pipeline = SearchPipeline(settings, gate, metrics, generation_gate)
    app.state.gate = gate  # for inspection: the counts behind the queue gauges
    app.state.generation_gate = generation_gate

    # async on purpose: FastAPI runs a plain-def dependency in a worker thread, two thread hops per search.
    async def get_holder(request: Request) -> IndexHolder:
        return request.app.state.holder

    async def get_encoder(request: Request) -> QueryEncoder:
        return request.app.state.encoder

    async def get_generator(request: Request) -> Generator | None:
        return request.app.state.generator

    search_errors = {422: {**ERRORS, "description": "the query, k or mode is not acceptable, or generate was asked "
                                                    "of a server with no language model"},
                     413: {**ERRORS, "description": f"body larger than {settings.max_body_bytes} bytes"},
                     503: {**ERRORS, "description": "server busy: the search queue is full or the search could not "
                                                    "start within its deadline; retry after Retry-After seconds"}}

    search_responses = {**search_errors, 200: {"content": {"text/event-stream": {
        "description": "with generate and Accept: text/event-stream: a `results` event (this response without "
                       "`generated`), `delta` events ({\"text\": ...}) as the model writes, and a `done` event "
                       "({\"generated\": ...}) after the check"}}}}

    @app.post("/search", response_model=SearchOut, responses=search_responses, tags=["search"],
              summary="Ranked passages with citations, an extractive answer and, with generate, a written one")
    async def post_search(request: Request, body: SearchRequest,  # type: ignore[valid-type]
                          holder: IndexHolder = Depends(get_holder),
                          encoder: QueryEncoder = Depends(get_encoder),
                          generator: Generator | None = Depends(get_generator)) -> Response:
        return await pipeline.respond(request, body.query, body.k, body.mode, body.rerank, body.deadline_ms,
                                      holder, encoder, body.generate, generator)

    @app.get("/search", response_model=SearchOut, responses=search_errors, tags=["search"],
             summary="Same as POST /search, for links and curl")
    async def get_search(
        request: Request,
        q: Annotated[str, Query(min_length=1, max_length=max_chars, pattern=NOT_ONLY_WHITESPACE,
                                description=f"the question: 1 to {max_chars} characters")],
        k: Annotated[int, Query(ge=1, le=100, description="passages to return")] = 10,
        mode: Annotated[ModeName, Query(description="hybrid, dense or bm25")] = "hybrid",
        rerank: Annotated[bool | None, Query(description="reorder with the cross-encoder (default: the server's "
                                                         "setting)")] = None,
        deadline_ms: Annotated[int | None, Query(ge=1, le=max_deadline_ms, description="time budget in ms "
                                                 "(default and limit: the server's search_deadline)")] = None,
        generate: Annotated[bool, Query(description="also have the language model write the answer",
                                        json_schema_extra=generate_schema(generation))] = False,
        holder: IndexHolder = Depends(get_holder),
        encoder: QueryEncoder = Depends(get_encoder),
        generator: Generator | None = Depends(get_generator),
    ) -> Response:
        return await pipeline.respond(request, q, k, mode, rerank, deadline_ms, holder, encoder, generate, generator)

    @app.get("/documents", response_model=DocumentList, tags=["documents"], summary="The indexed documents")
    async def list_documents(holder: IndexHolder = Depends(get_holder)) -> dict:
        # By name: an incremental build keeps its documents in the order they were first indexed.
        documents = sorted(_document_info(holder.searcher.index), key=lambda d: d["doc_id"])
        return {"count": len(documents), "documents": documents}

    @app.get(
        "/documents/{doc_id:path}",
        response_model=Union[DocumentText, PassageContext],
        responses={404: {**ERRORS, "description": "no such document in the index"},
                   422: {**ERRORS, "description": "start/end outside the document"}},
        tags=["documents"],
        summary="A document's text, or with start/end the passage text[start:end] with context around it",
    )
    async def get_document(
        doc_id: str,
        start: Annotated[int | None, Query(ge=0, description="passage start offset")] = None,
        end: Annotated[int | None, Query(ge=0, description="passage end offset")] = None,
        context: Annotated[int, Query(ge=0, le=MAX_CONTEXT_CHARS, description="characters of context each side")]
        = DEFAULT_CONTEXT_CHARS,
        holder: IndexHolder = Depends(get_holder),
    ) -> dict:
        index = holder.searcher.index
        # doc_id is only ever a key into the loaded index: no file is opened, whatever it contains.
        document = index.documents.get(doc_id)
        if document is None:
            raise HTTPException(404, f"no document {doc_id!r} in the index; GET /documents lists them")
        info = next(d for d in _document_info(index) if d["doc_id"] == doc_id)
        if start is None and end is None:
            return {**info, "text": document.text}
        length = len(document.text)
        start = 0 if start is None else start
        end = length if end is None else end
        if not 0 <= start <= end <= length:
            raise HTTPException(
                422, f"start and end must satisfy 0 <= start <= end <= {length} (the document's length), "
                     f"got start={start}, end={end}")
        before_start = max(0, start - context)
        after_end = min(length, end + context)
        return {
            "doc_id": doc_id,
            "title": document.title,
            "characters": length,
            "start": start,
            "end": end,
            "text": document.text[start:end],
            "before": document.text[before_start:start],
            "after": document.text[end:after_end],
            "context_start": before_start,
            "context_end": after_end,
        }

    @app.get("/health", response_model=HealthOut, tags=["service"], summary="Is the index loaded, and which")
    async def health(holder: IndexHolder = Depends(get_holder), encoder: QueryEncoder = Depends(get_encoder),
                     generator: Generator | None = Depends(get_generator)) -> dict:
        index = holder.searcher.index
        return {
            "status": "ok",
            "index_loaded": True,
            "index": str(settings.index),
            "build": index.path.name,
            "built_at": index.built_at,
            "loaded_at": holder.loaded_at,
            "documents": len(index.documents),
            "passages": len(index.passages),
            "model": index.model_name,
            "encoder": holder.embedder.backend,
            "reranker": None if holder.searcher.reranker is None else holder.searcher.reranker.name,
            "reload_interval": settings.reload_interval,
            "reloads": holder.reloads,
            "last_reload_error": holder.last_error,
            "batching": encoder.batching,
            # The model and its kind only: the endpoint's address and key are not the public's business.
            "generator": None if generator is None else {"model": generator.name, "backend": generator.backend},
        }

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics (text exposition format)",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def scrape() -> Response:
        return Response(metrics.scrape(), media_type=CONTENT_TYPE)

    bearer = HTTPBearer(auto_error=False, description="the value of ASKCORPUS_ADMIN_TOKEN")

    @app.post(
        "/admin/reindex",
        response_model=ReindexOut,
        responses={
            401: {**ERRORS, "description": "no token sent"},
            403: {**ERRORS, "description": "wrong token, or reindexing disabled (no ASKCORPUS_ADMIN_TOKEN set)"},
            409: {**ERRORS, "description": "the build failed (e.g. empty corpus, another build holds the lock)"},
            413: {**ERRORS, "description": "body too large"},
        },
        tags=["service"],
        summary="Rebuild the index from the corpus and serve the new one (needs the admin token)",
    )
    async def reindex(
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
        holder: IndexHolder = Depends(get_holder),
    ) -> dict:
        token = settings.admin_token
        if not token:
            raise HTTPException(403, "reindexing from the web is disabled: start the server with "
                                     "ASKCORPUS_ADMIN_TOKEN set to enable it")
        if credentials is None:
            raise HTTPException(401, "send the admin token as 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode("utf-8"), token.encode("utf-8")):
            raise HTTPException(403, "wrong admin token")
        try:
            report, swapped = await holder.reindex()
        except AskcorpusError as error:
            log.error("reindex failed: %s", error)
            raise HTTPException(409, f"reindex failed: {error}") from None
        log.info("reindex: %s", report.summary().replace("\n", "; "))
        return {
            "build": report.index_path.name if report.index_path else holder.searcher.index.path.name,
            "documents": report.documents,
            "passages": report.passages,
            "embedded_passages": report.embedded_passages,
            "added": report.added,
            "changed": report.changed,
            "removed": report.removed,
            "skipped": [{"doc_id": s.doc_id, "reason": s.reason} for s in report.skipped],
            "full_rebuild_reason": report.full_rebuild_reason,
            "seconds": round(report.seconds, 3),
            "swapped": swapped,
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'self'; img-src 'self' data:"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        return SafeJSONResponse({"detail": describe_errors(errors, settings), "errors": error_items(errors)},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:
            # Starlette names only the first route's methods; /search has a GET and a POST route.
            headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        return SafeJSONResponse({"detail": str(error.detail)}, status_code=error.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return SafeJSONResponse({"detail": f"internal error ({type(error).__name__}); see the server log"},
                            status_code=500)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # outermost: logs and counts every request, 413s included
    app.add_middleware(AccessLogMiddleware, observe=metrics.observe_request)
    return app


def _allowed_methods(request: Request) -> set[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route_methods)
    return methods


def log_config() -> dict:
    """uvicorn's logging set-up, plus askcorpus's own loggers at INFO on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = {key: (dict(value) if isinstance(value, dict) else value) for key, value in LOGGING_CONFIG.items()}
    config["loggers"] = dict(config["loggers"])
    config["loggers"]["askcorpus"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(settings: Settings) -> int:
    """Run the service in the foreground until interrupted: `askcorpus serve`."""
    import uvicorn

    from ..embed import embedder_for
    from ..engine import open_searcher

    config = log_config()
    logging.config.dictConfig(config)
    # Load (or build) before binding, so a missing model or a damaged index fails with the CLI's clear message.
    embedder = SerializedEmbedder(embedder_for(settings))
    searcher = open_searcher(settings, embedder, build_if_missing=True, on_build=partial(log_build, settings))
    generator = generator_for(settings)  # a GGUF that cannot load fails here, before the port is taken
    app = create_app(settings, embedder, searcher=searcher, generator=generator)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=config,
                                           access_log=False, timeout_graceful_shutdown=settings.shutdown_timeout))
    return run_until_stopped(server)
