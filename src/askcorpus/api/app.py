"""The app: `create_app` puts together the state, the routers and the error handlers; `serve` runs it."""

import asyncio
import gc
import logging
import logging.config
import time
from contextlib import asynccontextmanager, nullcontext
from functools import partial
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from .. import __version__
from ..config import Settings
from ..embed import Embedder
from ..generate import Generator, generator_for
from ..search import Searcher
from ..system import is_loopback
from ..watch import start_live
from .admission import Lanes
from .batching import QueryEncoder
from .callers import CallerMiddleware, current_caller, scope_filter, tokens_for
from .graceful import run_until_stopped
from .holder import IndexHolder, log_build, open_holder, SerializedEmbedder
from .metrics import Metrics
from .middleware import AccessLogMiddleware, BodyLimitMiddleware
from .models import SafeJSONResponse
from .pipeline import SearchPipeline
from .routes import admin, documents, service, uploads
from .routes.search import search_router
from .routes.service import STATIC_DIR
from .validation import describe_errors, error_items

log = logging.getLogger("askcorpus.api")


def create_app(settings: Settings, embedder: Embedder | None = None, *, searcher: Searcher | None = None,
               batching: bool = True, generator: Generator | None = None) -> FastAPI:
    """The askcorpus web app. The models and index load in the lifespan (or come in ready as `searcher` and
    `generator`; without one, the generator the settings configure, if any)."""
    app = FastAPI(
        title="askcorpus",
        version=__version__,
        description="Ask questions over a folder of documents: ranked passages with exact citations "
                    "(document.text[start:end]) and an extractive answer.",
        lifespan=_lifespan(settings, embedder, searcher, generator, batching),
        default_response_class=SafeJSONResponse,
    )
    app.state.settings = settings
    app.state.pipeline = _build_pipeline(settings, app)
    generation = generator is not None or settings.generation_configured
    app.include_router(search_router(settings, generation))
    app.include_router(documents.router)
    app.include_router(service.router)
    app.include_router(admin.router)
    app.include_router(uploads.router)
    _add_mcp(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       streamed=uploads.body_limit(settings))  # uploads: their own limit, streamed
    # the bearer check (tokens file on) before any body is read; /mcp included
    app.state.tokens = tokens_for(settings)
    app.add_middleware(CallerMiddleware, tokens=app.state.tokens, refuse=app.state.metrics.refuse)
    # outermost: logs and counts every request, 413s included
    app.add_middleware(AccessLogMiddleware, observe=app.state.metrics.observe_request)
    return app


def _add_mcp(app: FastAPI, settings: Settings) -> None:
    """The MCP tools over streamable HTTP at /mcp (docs/mcp.md), on the searcher being served and within what the
    request's token may read; its sessions run in the lifespan. None at app.state.mcp when the MCP SDK is not
    installed."""
    from ..mcp_server import MCP_PATH, mcp_http  # here: askcorpus.mcp_server imports this package's models

    def caller_searcher():  # the served searcher, held to the prefixes of the request's token
        searcher = app.state.holder.searcher
        return searcher.scoped(scope_filter(current_caller.get(), searcher.index))

    def may_read(doc_id: str) -> bool:
        caller = current_caller.get()
        return caller is None or caller.may_read(doc_id)

    app.state.mcp = mcp_http(caller_searcher, settings, may_read)
    if app.state.mcp is not None:
        app.add_route(MCP_PATH, app.state.mcp, include_in_schema=False)


def _build_pipeline(settings: Settings, app: FastAPI) -> SearchPipeline:
    """The admission lanes, the metrics over them and the pipeline every search goes through."""
    lanes = Lanes.from_settings(settings)
    metrics = Metrics(lanes, lambda: getattr(app.state, "holder", None))
    pipeline = SearchPipeline(settings, lanes, metrics)
    app.state.lanes = lanes  # for inspection: the counts behind the queue gauges
    app.state.metrics = metrics
    return pipeline


def _lifespan(settings: Settings, embedder: Embedder | None, searcher: Searcher | None,
              generator: Generator | None, batching: bool) -> Callable:
    """Loads what the server needs for as long as it runs (what is not given ready), and lets go of it after."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder = await asyncio.to_thread(open_holder, settings, embedder, searcher)
        app.state.generator = generator if generator is not None else \
            await asyncio.to_thread(generator_for, settings)
        encoder = QueryEncoder(partial(_encode, holder, app.state.metrics), batching=batching)
        await encoder.start()
        app.state.holder = holder
        app.state.encoder = encoder
        # What is loaded by now (models, index, modules: over 100,000 objects) lives as long as the server. Out of
        # the collector's reach, a full collection no longer stops the event loop for 60-100 ms, which every 503
        # and /health answer due at that moment would wait out. Refcounting still frees any of it.
        gc.freeze()
        watcher = asyncio.create_task(holder.watch(), name="askcorpus-index-watcher") \
            if settings.reload_interval > 0 else None
        _log_serving(settings, holder, app.state.generator)
        app.state.live = await start_live(settings, holder, app.state.metrics)
        try:
            async with app.state.mcp.running() if app.state.mcp is not None else nullcontext():
                yield
        finally:
            await app.state.live.stop()
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

    return lifespan


def _encode(holder: IndexHolder, metrics: Metrics, texts: list[str]):
    started = time.perf_counter()
    vectors = holder.searcher.encode_queries(texts)
    metrics.stage_seconds.labels("encode").observe(time.perf_counter() - started)
    return vectors


def _log_serving(settings: Settings, holder: IndexHolder, generator: Generator | None) -> None:
    index = holder.searcher.index
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("askcorpus %s serving index %s (build %s, built %s: %d documents, %d passages) with model %s "
             "(%s) at http://%s:%d/", __version__, settings.index, index.path.name, index.built_at,
             len(index.documents), len(index.passages), holder.embedder.name, holder.embedder.backend, host,
             settings.port)
    if generator is not None:
        log.info("answers written on request by %s (%s)", generator.name, generator.backend)
    if settings.tokens_file is not None:
        log.info("callers need a token of %s (docs/security.md)", settings.tokens_file)
    elif not is_loopback(settings.host):
        log.warning("serving on %s without ASKCORPUS_TOKENS_FILE: anyone who can reach the port can read every "
                    "document (docs/security.md)", settings.host)


async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = error.errors()
    return SafeJSONResponse({"detail": describe_errors(errors, request.app.state.settings),
                             "errors": error_items(errors)}, status_code=422)


async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    headers = dict(getattr(error, "headers", None) or {})
    if error.status_code == 405:
        # Starlette names only the first route's methods; /search has a GET and a POST route.
        headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
    return SafeJSONResponse({"detail": str(error.detail)}, status_code=error.status_code, headers=headers or None)


async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return SafeJSONResponse({"detail": f"internal error ({type(error).__name__}); see the server log"},
                            status_code=500)


# What a route may be asked, for the Allow header of a 405.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route takes at the request's path. Each top-level route is asked per method, as FastAPI
    may keep an included router's routes behind one entry that only answers `matches`."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Mount):  # a mount takes every method at its paths and says nothing about them
            continue
        for method in _METHODS:
            if route.matches({**request.scope, "method": method})[0] == Match.FULL:
                methods.add(method)
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
