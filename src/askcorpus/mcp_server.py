"""The MCP server: search, read_document and list_documents as tools for agents, over stdio or streamable HTTP."""

# No `from __future__ import annotations`: the SDK reads the tools' annotations, some of which name values local to
# build_mcp (the configured query length, k and mode).
import importlib.util
import logging
from contextlib import asynccontextmanager
from typing import Annotated, AsyncIterator, Callable, Union

from pydantic import BaseModel, Field

from . import __version__
from . import documents as library
from .api.models import (K_MAX, K_MIN, AnswerOut, DocumentList, DocumentText, FilterIn, ModeName, PassageContext,
                         ResultOut)
from .config import Settings
from .documents import DEFAULT_CONTEXT_CHARS, MAX_CONTEXT_CHARS
from .errors import ConfigError, DocumentNotFoundError, FilterError, QueryError
from .filters import Filter, filter_from
from .lexical import term_spans, terms
from .search import NOT_ONLY_WHITESPACE, Searcher

log = logging.getLogger("askcorpus.mcp")

# The path of the streamable HTTP endpoint on `askcorpus serve`.
MCP_PATH = "/mcp"

INSTRUCTIONS = (
    "askcorpus answers questions over a folder of documents. `search` returns ranked passages, each cited as "
    "doc_id with character offsets start and end (the passage is exactly the document's text[start:end]), and an "
    "extractive answer cited the same way, or null when nothing matches well. `read_document` returns a document's "
    "text, or with start/end a passage with context around it; `list_documents` lists what is indexed. A filter "
    "(doc_ids, path prefix or glob, formats, modified_after/before, title words) limits search and listing alike."
)


class PassageOut(ResultOut):
    """A search result as the HTTP API gives it, with its document's title."""

    title: str = Field(description="the title of the passage's document")


class SearchToolOut(BaseModel):
    """The search tool's result: POST /search's shape (without a generated answer), each passage titled."""

    query: str
    mode: ModeName
    reranked: bool = Field(description="whether the cross-encoder reordered the list and chose the answer")
    answer: AnswerOut | None = Field(description="the extractive answer, exactly document.text[start:end]; null "
                                                 "when no passage answers with enough confidence")
    results: list[PassageOut]


def require_mcp() -> None:
    """ConfigError saying how to install the MCP SDK when it is not installed."""
    if importlib.util.find_spec("mcp") is None:
        raise ConfigError("the MCP server needs the official MCP SDK: pip install 'askcorpus[mcp]' "
                          "(or make setup)")


def _filter(given: FilterIn | None) -> Filter | None:
    return None if given is None else filter_from(given.model_dump(exclude_none=True))


def search_result(searcher: Searcher, query: str, k: int, mode: str, rerank: bool | None,
                  filter: Filter | None) -> dict:
    """One search as the search tool returns it: the library's response (the same call as the HTTP API and the
    CLI make), each result with its document's title and the spans of the query's words."""
    response = searcher.search(query, k, mode, rerank=rerank, filter=filter)
    out = response.to_dict()
    out.pop("generated", None)
    wanted = set(terms(response.query))
    documents = searcher.index.documents
    for result in out["results"]:
        result["title"] = documents[result["doc_id"]].title
        result["highlights"] = [list(span) for span in term_spans(result["text"], wanted)] if wanted else []
    return out


def build_mcp(get_searcher: Callable[[], Searcher], settings: Settings | None = None,
              may_read: Callable[[str], bool] | None = None):
    """An `MCPServer` with the three tools, each reading the searcher `get_searcher` returns at the time of the
    call (so a server that reloads its index serves the new one). `settings` gives the defaults and limits the tool
    schemas publish (ASKCORPUS_K, ASKCORPUS_MODE, the query length), as the HTTP API's do."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    settings = settings or Settings()
    max_chars = settings.max_query_chars
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                open_world_hint=False)
    server = _quietly(lambda: MCPServer("askcorpus", version=__version__, instructions=INSTRUCTIONS))

    @server.tool(annotations=read_only)
    def search(
        query: Annotated[str, Field(min_length=1, max_length=max_chars, pattern=NOT_ONLY_WHITESPACE,
                                    description=f"the question: 1 to {max_chars} characters")],
        k: Annotated[int, Field(ge=K_MIN, le=K_MAX, description="passages to return")] = settings.k,
        mode: Annotated[ModeName, Field(description="dense vectors, BM25 words, or both fused (hybrid)")]
        = settings.mode,
        rerank: Annotated[bool | None, Field(description="reorder the candidates with the cross-encoder "
                                                         "(default: the server's setting)")] = None,
        filter: Annotated[FilterIn | None, Field(description="search only the documents this keeps, before "
                                                             "ranking: k results come back when k passages "
                                                             "match")] = None,
    ) -> SearchToolOut:
        """Ranked passages answering the question, each cited as doc_id with character offsets (the passage is
        exactly the document's text[start:end]) and titled, with their scores and the extractive answer."""
        try:
            return SearchToolOut.model_validate(search_result(get_searcher(), query, k, mode, rerank,
                                                              _filter(filter)))
        except QueryError as error:  # FilterError included
            raise ToolError(str(error)) from None

    @server.tool(annotations=read_only)
    def read_document(
        doc_id: Annotated[str, Field(description="the document's path within the corpus folder, as search and "
                                                 "list_documents give it")],
        start: Annotated[int | None, Field(ge=0, description="passage start offset")] = None,
        end: Annotated[int | None, Field(ge=0, description="passage end offset")] = None,
        context: Annotated[int, Field(ge=0, le=MAX_CONTEXT_CHARS, description="characters of context each "
                                                                              "side of the passage")]
        = DEFAULT_CONTEXT_CHARS,
    ) -> Union[DocumentText, PassageContext]:
        """A document's whole text (what every citation's offsets index into), or with start and/or end the
        passage text[start:end] with up to `context` characters before and after it; as GET /documents/{id}."""
        try:
            if may_read is not None and not may_read(doc_id):
                raise DocumentNotFoundError(doc_id)  # a document the caller may not read is not there for it
            return library.read_document(get_searcher().index, doc_id, start, end, context)
        except DocumentNotFoundError as error:
            raise ToolError(f"{error}; list_documents lists them") from None
        except QueryError as error:
            raise ToolError(str(error)) from None

    @server.tool(annotations=read_only)
    def list_documents(
        filter: Annotated[FilterIn | None, Field(description="only the documents this keeps")] = None,
    ) -> DocumentList:
        """The indexed documents by doc_id, or those the filter keeps: title, format, size, passages, modified
        time; as GET /documents."""
        try:
            listed = library.list_documents(get_searcher().index, _filter(filter))
            if may_read is not None:
                kept = [d for d in listed["documents"] if may_read(d["doc_id"])]
                listed = {"count": len(kept), "documents": kept}
            return listed
        except FilterError as error:
            raise ToolError(str(error)) from None

    return server


def _quietly(make: Callable):
    """`make()` with the root logger as it was: the SDK's server calls logging.basicConfig on construction, which
    would give an application that has not configured logging a root handler at INFO."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return make()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def serve_stdio(searcher: Searcher) -> None:
    """Serve the tools over stdin/stdout until the client closes them: `askcorpus mcp`."""
    build_mcp(lambda: searcher, searcher.settings).run("stdio")


class McpHttp:
    """The streamable HTTP endpoint at /mcp of the web app, an ASGI app. Stateless, answering JSON: every request
    stands alone and no stream stays open, so a server stops without waiting for an agent to hang up. Its session
    manager runs for as long as the app's lifespan (`running`), a new one each time the app starts."""

    def __init__(self, get_searcher: Callable[[], Searcher], settings: Settings,
                 may_read: Callable[[str], bool] | None = None) -> None:
        self.server = build_mcp(get_searcher, settings, may_read)
        self.settings = settings
        self._manager = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # streamable_http_app makes the session manager (one may run only once); the route is the app's own.
        self.server.streamable_http_app(streamable_http_path=MCP_PATH, json_response=True, stateless_http=True,
                                        max_request_body_size=self.settings.max_body_bytes,
                                        host=self.settings.host)
        manager = self.server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope, receive, send) -> None:
        manager = self._manager
        if manager is None:
            from starlette.responses import JSONResponse

            await JSONResponse({"detail": "the MCP endpoint is not running (the server is starting or stopping)"},
                               status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)


def mcp_http(get_searcher: Callable[[], Searcher], settings: Settings,
             may_read: Callable[[str], bool] | None = None) -> McpHttp | None:
    """The /mcp endpoint, or None (logged) when the MCP SDK is not installed. `get_searcher` and `may_read` are asked
    within each request, so they can answer for its caller."""
    try:
        require_mcp()
    except ConfigError as error:
        log.info("no MCP endpoint at %s: %s", MCP_PATH, error)
        return None
    return McpHttp(get_searcher, settings, may_read)
