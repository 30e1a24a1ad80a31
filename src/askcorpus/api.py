"""The web service: FastAPI over the same `Searcher.search` the CLI uses, a page for people, hot index reload.

Nothing happens at import time. `create_app(settings)` returns an app whose lifespan loads the model and the
index once (building the index first if there is none); `serve(settings)` runs it under uvicorn.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, some of which name
# objects local to create_app (the per-app request model and query limit).
import asyncio
import hmac
import json
import logging
import logging.config
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence, TypeVar, Union

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, store
from .config import Settings
from .embed import Embedder
from .errors import AskcorpusError, QueryError
from .lexical import term_spans, terms
from .search import NOT_ONLY_WHITESPACE, Searcher, validate_query

log = logging.getLogger("askcorpus.api")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Characters of context on each side of a passage for GET /documents/{id}?start=&end= (default and limit).
DEFAULT_CONTEXT_CHARS = 300
MAX_CONTEXT_CHARS = 5000
# Micro-batching of query encodings: how long to wait for companions, and how many to encode at once.
# No waiting: a lone query is encoded at once, and queries that arrive while the model is busy form the next
# batch anyway (a 2 ms window cost every lone request 2 ms and added nothing under load).
BATCH_WINDOW_SECONDS = 0.0
BATCH_MAX_QUERIES = 32
T = TypeVar("T")

ModeName = Literal["hybrid", "dense", "bm25"]


# --------------------------------------------------------------------------------------------------------------
# Response and request models (the OpenAPI schema is generated from these).


class ErrorItem(BaseModel):
    loc: list[Union[str, int]]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer: `detail` says what is wrong; validation errors also list each problem."""

    detail: str
    errors: list[ErrorItem] | None = None


class AnswerOut(BaseModel):
    text: str = Field(description="the answer sentence, exactly document.text[start:end]")
    doc_id: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    score: float = Field(description="confidence in [0, 1]: cosine similarity of question and passage")


class ResultOut(BaseModel):
    rank: int = Field(ge=1)
    doc_id: str
    start: int = Field(ge=0, description="character offset of the passage in the document's text")
    end: int = Field(ge=0)
    text: str = Field(description="the passage, exactly document.text[start:end]")
    score: float = Field(description="fused (hybrid), cosine (dense) or BM25 score; higher is better")
    tokens: int = Field(ge=0, description="cl100k_base tokens of the passage")
    page: int | None = Field(None, description="1-based PDF page of the passage start, null for other formats")
    passage_id: int = Field(ge=0)
    highlights: list[tuple[int, int]] = Field(
        default_factory=list,
        description="character spans [start, end) within `text` of words matching the query's terms",
    )


class SearchOut(BaseModel):
    """The same object as `askcorpus ask --json`, plus `highlights` on each result."""

    query: str
    mode: ModeName
    answer: AnswerOut | None
    results: list[ResultOut]


class DocumentInfo(BaseModel):
    doc_id: str
    title: str
    characters: int = Field(ge=0)
    passages: int = Field(ge=0)
    pages: int | None = None
    sha256: str


class DocumentList(BaseModel):
    count: int = Field(ge=0)
    documents: list[DocumentInfo]


class DocumentText(DocumentInfo):
    text: str = Field(description="the document's extracted text: every citation's offsets index into it")


class PassageContext(BaseModel):
    doc_id: str
    title: str
    characters: int = Field(ge=0)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    text: str = Field(description="document.text[start:end]")
    before: str = Field(description="up to `context` characters preceding start")
    after: str = Field(description="up to `context` characters following end")
    context_start: int = Field(ge=0, description="offset where `before` starts")
    context_end: int = Field(ge=0, description="offset where `after` ends")


class HealthOut(BaseModel):
    status: Literal["ok"]
    index_loaded: bool
    index: str = Field(description="index folder")
    build: str = Field(description="name of the build being served")
    built_at: str
    loaded_at: str
    documents: int = Field(ge=0)
    passages: int = Field(ge=0)
    model: str
    encoder: str = Field(description="what runs the model for queries: onnx, torch or hashing")
    reload_interval: float = Field(description="seconds between checks for a new build; 0 = no automatic reload")
    reloads: int = Field(ge=0, description="index swaps since start-up")
    last_reload_error: str | None = Field(None, description="why the newest build could not be loaded, if so")
    batching: bool


class SkippedOut(BaseModel):
    doc_id: str
    reason: str


class ReindexOut(BaseModel):
    build: str
    documents: int
    passages: int
    embedded_passages: int
    added: list[str]
    changed: list[str]
    removed: list[str]
    skipped: list[SkippedOut]
    full_rebuild_reason: str | None = Field(None, description="why every document was embedded again, if so")
    seconds: float
    swapped: bool


def _integral(value: Any) -> Any:
    """JSON numbers like 10.0 are integers (as JSON Schema says); 10.5, "10" and true stay wrong types."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class SafeJSONResponse(JSONResponse):
    """JSON as UTF-8; falls back to ASCII escapes if some text cannot be encoded (never a 500 for that)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _search_request_model(max_query_chars: int) -> type[BaseModel]:
    """The POST /search body; built per app so the documented length limit is the configured one."""

    class SearchRequest(BaseModel):
        model_config = ConfigDict(
            strict=True,
            json_schema_extra={"examples": [{"query": "What did the report warn about?", "k": 5, "mode": "hybrid"}]},
        )

        query: str = Field(
            min_length=1,
            max_length=max_query_chars,
            pattern=NOT_ONLY_WHITESPACE,
            description=f"the question: 1 to {max_query_chars} characters, not only whitespace",
        )
        k: Annotated[int, BeforeValidator(_integral)] = Field(10, ge=1, le=100, description="passages to return")
        mode: ModeName = Field("hybrid", description="dense vectors, BM25 words, or both fused (hybrid)")

    return SearchRequest


# --------------------------------------------------------------------------------------------------------------
# The loaded index, swapped as one reference.


class _SerializedEmbedder(Embedder):
    """The model behind a lock, so searches and a web reindex never use the tokenizer at the same time.

    Hugging Face fast tokenizers fail ("Already borrowed") when one thread changes their truncation settings
    while another encodes; long encodes are split into batches so searches interleave with a rebuild.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.name = inner.name
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens
        self._lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            return self.inner.count_tokens(texts)

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        texts = list(texts)
        step = max(1, batch_size)
        if len(texts) <= step:
            with self._lock:
                return self.inner.encode(texts, batch_size=step)
        parts = []
        for first in range(0, len(texts), step):
            with self._lock:
                parts.append(self.inner.encode(texts[first : first + step], batch_size=step))
        return np.vstack(parts)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class IndexHolder:
    """The one Searcher being served. Readers take `holder.searcher` once per request; a swap replaces it."""

    def __init__(self, settings: Settings, embedder: Embedder, searcher: Searcher) -> None:
        self.settings = settings
        self.embedder = embedder
        self._searcher = searcher
        self.loaded_at = _now()
        self.reloads = 0
        self.last_error: str | None = None
        self._failed_build: str | None = None
        self._lock = asyncio.Lock()  # one load or build at a time

    @property
    def searcher(self) -> Searcher:
        return self._searcher

    def swap(self, searcher: Searcher) -> None:
        old = self._searcher.index
        self._searcher = searcher
        self.loaded_at = _now()
        self.reloads += 1
        self.last_error = None
        self._failed_build = None
        new = searcher.index
        log.info("now serving index build %s (%d documents, %d passages; was %s)",
                 new.path.name, len(new.documents), len(new.passages), old.path.name)

    async def reload_if_changed(self) -> bool:
        """Load and swap in the build CURRENT names if it is not the one served. Failures keep the old index."""
        try:
            build = await asyncio.to_thread(store.current_build, self.settings.index)
        except AskcorpusError as error:
            self._note_failure(None, str(error))
            return False
        if build.name in (self._searcher.index.path.name, self._failed_build):
            return False
        async with self._lock:
            if build.name == self._searcher.index.path.name:
                return False
            return await self._load_and_swap(build.name)

    async def _load_and_swap(self, build_name: str) -> bool:
        from .engine import load_index_for

        try:
            index = await asyncio.to_thread(load_index_for, self.settings, self.embedder)
        except Exception as error:  # a damaged or foreign build must never take the service down
            self._note_failure(build_name, f"{type(error).__name__}: {error}" if not isinstance(error, AskcorpusError)
                               else str(error))
            return False
        if index.path.name == self._searcher.index.path.name:
            return False
        self.swap(Searcher(self.settings, self.embedder, index))
        return True

    def _note_failure(self, build_name: str | None, message: str) -> None:
        if message != self.last_error:
            log.error("cannot load the new index (%s); still serving build %s", message,
                      self._searcher.index.path.name)
        self.last_error = message
        self._failed_build = build_name

    async def reindex(self) -> tuple[Any, bool]:
        """Rebuild from the corpus (incrementally) in a worker thread, then swap to the new build."""
        from .build import build_index

        async with self._lock:
            report = await asyncio.to_thread(build_index, self.settings, self.embedder)
            swapped = False
            if report.index_path is not None and report.index_path.name != self._searcher.index.path.name:
                swapped = await self._load_and_swap(report.index_path.name)
            return report, swapped

    async def watch(self) -> None:
        interval = self.settings.reload_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching whatever happens
                log.exception("index watcher failed; will retry")


# --------------------------------------------------------------------------------------------------------------
# Query encoding off the event loop, in small batches.


class QueryEncoder:
    """Encodes queries in a worker thread, then runs what each request does with its vector (`then`).

    One batch is encoded at a time: queries that arrive while the model is busy, or within `window` seconds of
    the first (none by default), share the next model call (at most `max_batch` texts). A query encoded alone
    goes on with its `then` in the same worker thread (one thread hop fewer for the common, quiet case); in a
    shared batch each request runs its `then` in a thread of its own, so the next batch can start encoding.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], *, batching: bool = True,
                 window: float = BATCH_WINDOW_SECONDS, max_batch: int = BATCH_MAX_QUERIES) -> None:
        self._encode = encode
        self.batching = batching
        self.window = window
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        if self.batching:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="askcorpus-query-encoder")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None

    async def encode(self, text: str) -> np.ndarray:
        return await self.run(text, lambda vector: vector)

    async def run(self, text: str, then: Callable[[np.ndarray], T]) -> T:
        """then(vector of text), computed off the event loop."""
        if self._queue is None:
            return await asyncio.to_thread(lambda: then(self._encode([text])[0]))
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, then, future))
        finished, value = await future
        return value if finished else await asyncio.to_thread(then, value)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.window
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                if self.window <= 0:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.TimeoutError, TimeoutError):
                    break
            batch = [item for item in batch if not item[2].done()]
            if not batch:
                continue
            unique = list(dict.fromkeys(text for text, _, _ in batch))
            try:
                finished, value = await asyncio.to_thread(self._encode_batch, unique, batch)
            except Exception as error:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            if finished:
                if not batch[0][2].done():
                    batch[0][2].set_result((True, value))
                continue
            row = {text: i for i, text in enumerate(unique)}
            for text, _, future in batch:
                if not future.done():
                    future.set_result((False, value[row[text]]))

    def _encode_batch(self, unique: list[str], batch: list[tuple]) -> tuple[bool, Any]:
        """In the worker thread: the batch's vectors, or for a lone query the result of its `then`."""
        vectors = self._encode(unique)
        if len(batch) == 1:
            return True, batch[0][1](vectors[0])
        return False, vectors


# --------------------------------------------------------------------------------------------------------------
# Middleware: one log line per request, and a request body size limit.


class AccessLogMiddleware:
    """Logs `METHOD /path STATUS 12.3ms` once per HTTP request (the raw, still percent-encoded path)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
            if isinstance(path, bytes):
                path = path.split(b"?", 1)[0].decode("latin-1")
            log.info("%s %s %d %.1fms", scope["method"], path, status, (time.perf_counter() - started) * 1000)


class BodyLimitMiddleware:
    """Answers 413 to any request whose body is larger than `max_bytes` (declared or actually sent).

    It holds the whole (small) body anyway, so it also answers 422 to a JSON body that is not text at all.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"detail": "Content-Length is not a number"})
                    return
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        # Read the whole (small) body up front so an over-long chunked body is refused before any handler runs.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and _is_json(scope):
            try:
                body.decode(json.detect_encoding(body))
            except UnicodeDecodeError:  # FastAPI would answer 400 "error parsing the body"
                await _send_json(send, 422, {"detail": "request body is not valid JSON (not UTF-8 text)"})
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Callable) -> None:
        await _send_json(send, 413, {"detail": f"request body is larger than the limit of {self.max_bytes} bytes"})


def _is_json(scope: dict) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    return False


async def _send_json(send: Callable, status: int, data: dict) -> None:
    response = JSONResponse(data, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


# --------------------------------------------------------------------------------------------------------------
# Validation errors as one readable sentence.


def _describe_errors(errors: Sequence[dict], settings: Settings) -> str:
    messages = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]  # where the value came from; the field name says enough
        field = str(loc[-1]) if loc else ""
        kind = error.get("type", "")
        value = error.get("input")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            messages.append(f"request body is not valid JSON ({reason})")
            continue
        if kind == "missing":
            if not loc:
                messages.append('request body is missing: send a JSON object like {"query": "your question"}')
            else:
                messages.append(f"{field} is required")
            continue
        if not loc and isinstance(value, (bytes, bytearray)):
            messages.append("request body must be JSON, sent with Content-Type: application/json")
            continue
        if not loc and kind in ("model_type", "dict_type", "model_attributes_type"):
            messages.append('request body must be a JSON object like {"query": "your question", "k": 10}')
            continue
        if kind == "string_unicode":
            messages.append(f"{field} is not valid Unicode text (it has a lone surrogate escape such as \\ud800)")
            continue
        message = None
        try:
            if field in ("query", "q"):
                validate_query(value, 10, "hybrid", settings)
            elif field == "k":
                validate_query("q", value, "hybrid", settings)
            elif field == "mode":
                validate_query("q", 10, value, settings)
        except QueryError as query_error:
            message = str(query_error)
        if message is None:
            message = f"{'.'.join(str(p) for p in loc) or 'request'}: {error.get('msg', 'is not valid')}"
        messages.append(message)
    return "; ".join(dict.fromkeys(messages)) or "the request is not valid"


def _error_items(errors: Sequence[dict]) -> list[dict]:
    return [
        {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
         "type": str(e.get("type", ""))}
        for e in errors
    ]


# --------------------------------------------------------------------------------------------------------------
# The app.


def _highlighted(response_dict: dict, query: str) -> dict:
    wanted = set(terms(query))
    for result in response_dict["results"]:
        result["highlights"] = [list(span) for span in term_spans(result["text"], wanted)] if wanted else []
    return response_dict


def _run_search(searcher: Searcher, query: str, k: int, mode: str, vector: np.ndarray) -> bytes:
    """The search response as JSON bytes, made in a worker thread (FastAPI's own validation and encoding of
    a dict on the event loop cost more than the search; the dict is checked against SearchOut by the tests)."""
    response = searcher.search(query, k, mode, query_vector=vector)
    return SafeJSONResponse(_highlighted(response.to_dict(), response.query)).body


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
               batching: bool = True) -> FastAPI:
    """The askcorpus web app. The model and index load in the lifespan (or come in ready as `searcher`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder = await asyncio.to_thread(_open_holder, settings, embedder, searcher)
        encoder = QueryEncoder(lambda texts: holder.searcher.encode_queries(texts), batching=batching)
        await encoder.start()
        app.state.holder = holder
        app.state.encoder = encoder
        watcher = asyncio.create_task(holder.watch(), name="askcorpus-index-watcher") \
            if settings.reload_interval > 0 else None
        index = holder.searcher.index
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info("askcorpus %s serving index %s (build %s, built %s: %d documents, %d passages) with model %s "
                 "(%s) at http://%s:%d/", __version__, settings.index, index.path.name, index.built_at,
                 len(index.documents), len(index.passages), holder.embedder.name, holder.embedder.backend, host,
                 settings.port)
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

    app = FastAPI(
        title="askcorpus",
        version=__version__,
        description="Ask questions over a folder of documents: ranked passages with exact citations "
                    "(document.text[start:end]) and an extractive answer.",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    SearchRequest = _search_request_model(settings.max_query_chars)
    max_chars = settings.max_query_chars

    # async on purpose: FastAPI runs a plain-def dependency in a worker thread, two thread hops per search.
    async def get_holder(request: Request) -> IndexHolder:
        return request.app.state.holder

    async def get_encoder(request: Request) -> QueryEncoder:
        return request.app.state.encoder

    async def search(query: str, k: int, mode: str, holder: IndexHolder, encoder: QueryEncoder) -> Response:
        try:
            text = validate_query(query, k, mode, settings)
        except QueryError as error:
            raise HTTPException(422, str(error)) from None
        searcher_now = holder.searcher  # this request keeps this index even if a swap happens meanwhile
        body = await encoder.run(text, partial(_run_search, searcher_now, text, k, mode))
        return Response(body, media_type="application/json")

    search_errors = {422: {**ERRORS, "description": "the query, k or mode is not acceptable"},
                     413: {**ERRORS, "description": f"body larger than {settings.max_body_bytes} bytes"}}

    @app.post("/search", response_model=SearchOut, responses=search_errors, tags=["search"],
              summary="Ranked passages with citations and an extractive answer")
    async def post_search(body: SearchRequest, holder: IndexHolder = Depends(get_holder),  # type: ignore[valid-type]
                          encoder: QueryEncoder = Depends(get_encoder)) -> Response:
        return await search(body.query, body.k, body.mode, holder, encoder)

    @app.get("/search", response_model=SearchOut, responses=search_errors, tags=["search"],
             summary="Same as POST /search, for links and curl")
    async def get_search(
        q: Annotated[str, Query(min_length=1, max_length=max_chars, pattern=NOT_ONLY_WHITESPACE,
                                description=f"the question: 1 to {max_chars} characters")],
        k: Annotated[int, Query(ge=1, le=100, description="passages to return")] = 10,
        mode: Annotated[ModeName, Query(description="hybrid, dense or bm25")] = "hybrid",
        holder: IndexHolder = Depends(get_holder),
        encoder: QueryEncoder = Depends(get_encoder),
    ) -> Response:
        return await search(q, k, mode, holder, encoder)

    @app.get("/documents", response_model=DocumentList, tags=["documents"], summary="The indexed documents")
    async def list_documents(holder: IndexHolder = Depends(get_holder)) -> dict:
        documents = _document_info(holder.searcher.index)
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
    async def health(holder: IndexHolder = Depends(get_holder), encoder: QueryEncoder = Depends(get_encoder)) -> dict:
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
            "reload_interval": settings.reload_interval,
            "reloads": holder.reloads,
            "last_reload_error": holder.last_error,
            "batching": encoder.batching,
        }

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
        return SafeJSONResponse({"detail": _describe_errors(errors, settings), "errors": _error_items(errors)},
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
    app.add_middleware(AccessLogMiddleware)  # outermost: logs every request, 413s included
    return app


def _allowed_methods(request: Request) -> set[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route_methods)
    return methods


def _open_holder(settings: Settings, embedder: Embedder | None, searcher: Searcher | None) -> IndexHolder:
    from .embed import embedder_for
    from .engine import open_searcher

    if searcher is not None:
        base = searcher.embedder
    else:
        base = embedder or embedder_for(settings)
    locked = base if isinstance(base, _SerializedEmbedder) else _SerializedEmbedder(base)
    if searcher is None:
        searcher = open_searcher(settings, locked, build_if_missing=True, on_build=partial(_log_build, settings))
    return IndexHolder(settings, locked, Searcher(settings, locked, searcher.index))


def _log_build(settings: Settings, report: Any = None) -> None:
    if report is None:
        log.info("no index at %s: building it from %s first...", settings.index, settings.corpus)
    else:
        log.info("built the index: %s", report.summary().replace("\n", "; "))


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

    from .embed import embedder_for
    from .engine import open_searcher

    config = log_config()
    logging.config.dictConfig(config)
    # Load (or build) before binding, so a missing model or a damaged index fails with the CLI's clear message.
    embedder = _SerializedEmbedder(embedder_for(settings))
    searcher = open_searcher(settings, embedder, build_if_missing=True, on_build=partial(_log_build, settings))
    app = create_app(settings, embedder, searcher=searcher)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=config, access_log=False,
                timeout_graceful_shutdown=5)
    return 0
