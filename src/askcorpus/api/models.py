"""The service's request and response models (the OpenAPI schema is generated from these), and its JSON."""

import json
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Le
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from ..config import Mode, Settings
from ..errors import FilterError
from ..filters import FORMATS, Filter, filter_from
from ..search import NOT_ONLY_WHITESPACE

# The modes ASKCORPUS_MODE takes are the ones a request may name.
ModeName = Mode


def _bounds(field: str) -> tuple[int, int]:
    """The range Settings allows `field`: a request's k is held to the same range as ASKCORPUS_K."""
    metadata = Settings.model_fields[field].metadata
    return (next(m.ge for m in metadata if isinstance(m, Ge)), next(m.le for m in metadata if isinstance(m, Le)))


K_MIN, K_MAX = _bounds("k")


class ErrorItem(BaseModel):
    loc: list[Union[str, int]]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer: `detail` says what is wrong; validation errors also list each problem."""

    detail: str
    errors: list[ErrorItem] | None = None


# What every error response in the schema is made of; each endpoint adds its own description.
ERRORS = {"model": ErrorOut}
# What uvicorn answers, before the app sees it, to a request line longer than it reads (about 64 KB): a GET with a
# very long query string, such as hundreds of filter.doc_ids.
REQUEST_TOO_LONG = {400: {"description": "the request line is longer than the server reads (about 64 KB); send "
                                         "long filters in a POST body",
                          "content": {"text/plain": {"schema": {"type": "string"}}}}}


class AnswerOut(BaseModel):
    text: str = Field(description="the answer sentence, exactly document.text[start:end]")
    doc_id: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    score: float = Field(description="confidence in [0, 1]: with reranking the sigmoid of the top passage's "
                                     "cross-encoder score, without it the cosine similarity of question and passage")


class ResultOut(BaseModel):
    rank: int = Field(ge=1)
    doc_id: str
    start: int = Field(ge=0, description="character offset of the passage in the document's text")
    end: int = Field(ge=0)
    text: str = Field(description="the passage, exactly document.text[start:end]")
    score: float = Field(description="the first stage's score: fused (hybrid), cosine (dense) or BM25; higher is "
                                     "better")
    rerank_score: float | None = Field(
        None, description="the cross-encoder's score (a logit; higher is better) when it read this passage; the "
                          "list is ordered by it, and null past the rerank depth or without reranking")
    tokens: int = Field(ge=0, description="cl100k_base tokens of the passage")
    page: int | None = Field(None, description="1-based PDF page of the passage start, null for other formats")
    passage_id: int = Field(ge=0)
    highlights: list[tuple[int, int]] = Field(
        default_factory=list,
        description="character spans [start, end) within `text` of words matching the query's terms",
    )


class SentenceOut(BaseModel):
    text: str = Field(description="the sentence with its [n] markers, exactly generated.text[start:end]")
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    citations: list[int] = Field(description="the numbers n of the passages it cites")
    supported: bool = Field(description="every number, date and name in it occurs in a passage it cites, and the "
                                        "cross-encoder reads that passage as saying it; false for no citation")


class CitationOut(BaseModel):
    n: int = Field(ge=1, description="the passage's number in the prompt, as the answer's [n] markers name it")
    doc_id: str
    start: int = Field(ge=0, description="the passage's offsets in the document, as for a search result")
    end: int = Field(ge=0)
    page: int | None = None
    title: str
    passage_id: int = Field(ge=0)


class GeneratedOut(BaseModel):
    text: str | None = Field(description="the answer the model wrote, markers included; null when it abstained "
                                         "or failed")
    sentences: list[SentenceOut]
    citations: list[CitationOut] = Field(description="the passages the model was given, numbered")
    abstained: bool = Field(description="the model said the passages do not answer, or no sentence was supported")
    model: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = Field(ge=0)
    error: str | None = Field(None, description="why no answer was written (model unreachable, refused, too slow, "
                                                "busy...); the passages and extractive answer still stand")
    dropped_markers: int = Field(0, ge=0, description="[n] markers naming no given passage, removed from text")
    reply: str | None = Field(None, description="the model's text as it came, before markers were resolved")


class SearchOut(BaseModel):
    """The same object as `askcorpus ask --json`, plus `highlights` on each result."""

    query: str
    mode: ModeName
    reranked: bool = Field(description="whether the cross-encoder reordered the list and chose the answer")
    answer: AnswerOut | None
    results: list[ResultOut]
    generated: GeneratedOut | None = Field(None, description="the language model's answer, when asked with "
                                                             "generate=true")


class DocumentInfo(BaseModel):
    doc_id: str = Field(description="the file's path relative to the corpus folder")
    title: str
    characters: int = Field(ge=0)
    passages: int = Field(ge=0)
    pages: int | None = None
    sha256: str
    format: str = Field(description="the file's format, as filter.formats names it")
    modified: str | None = Field(None, description="the file's modification time (ISO 8601, UTC) when the index was "
                                                   "built; null for an index built before these were recorded")


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


class GeneratorInfo(BaseModel):
    model: str
    backend: str = Field(description="openai (an OpenAI-compatible endpoint) or llamacpp (a GGUF in process)")


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
    reranker: str | None = Field(None, description="the cross-encoder reordering results, null when reranking is off")
    reload_interval: float = Field(description="seconds between checks for a new build; 0 = no automatic reload")
    reloads: int = Field(ge=0, description="index swaps since start-up")
    last_reload_error: str | None = Field(None, description="why the newest build could not be loaded, if so")
    batching: bool
    generator: GeneratorInfo | None = Field(None, description="the language model writing answers, null when none "
                                                              "is configured")


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


FormatName = Literal[FORMATS]  # type: ignore[valid-type]
# Lists in a filter are held to this many entries, the body's size limit aside.
MAX_FILTER_ITEMS = 1000
MAX_FILTER_CHARS = 1000


def _iso_time(value: Any) -> Any:
    """An ISO 8601 string as a datetime (a time without an offset is UTC); anything else, numbers included, is
    refused, as the published schema (a date-time string) says."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        # A custom error, so the message reads without pydantic's "Value error, " in front.
        raise PydanticCustomError("iso_time", "must be an ISO 8601 time such as 2025-01-31T12:00:00Z, got "
                                              "{given}", {"given": repr(value)}) from None


IsoTime = Annotated[datetime, BeforeValidator(_iso_time), Field(strict=False)]


class FilterIn(BaseModel):
    """Which documents a search (or the /documents listing) draws from: every field optional, all given must hold."""

    model_config = ConfigDict(strict=True, extra="forbid",
                              json_schema_extra={"examples": [{"path": "notes/**", "formats": ["pdf", "md"],
                                                               "modified_after": "2025-01-01T00:00:00Z"}]})

    doc_ids: list[str] | None = Field(None, max_length=MAX_FILTER_ITEMS, description="only these documents")
    path: str | None = Field(None, max_length=MAX_FILTER_CHARS,
                             description="a prefix of the path within the corpus folder (\"notes/\"), or with * ? "
                                         "or [ a glob over it (\"notes/**/*.md\"; ** crosses folders, * does not)")
    formats: list[FormatName] | None = Field(None, max_length=len(FORMATS), description="only these formats")
    modified_after: IsoTime | None = Field(None, description="files modified at or after this time (ISO 8601; "
                                                             "without an offset, UTC)")
    modified_before: IsoTime | None = Field(None, description="files modified before this time")
    title: str | None = Field(None, max_length=MAX_FILTER_CHARS,
                              description="documents whose title holds every one of these words (any case)")

    def to_filter(self) -> Filter | None:
        return to_filter(self.model_dump(exclude_none=True))


def to_filter(values: dict) -> Filter | None:
    """The library's Filter from validated request fields; a rule pydantic cannot state is still a 422."""
    from fastapi import HTTPException

    try:
        return filter_from(values)
    except FilterError as error:
        raise HTTPException(422, str(error)) from None


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


def generate_schema(available: bool) -> dict | None:
    """Where no language model is configured, the schema admits only generate=false: true is refused (422, with a
    message saying how to configure one), and the published schema says so."""
    return None if available else {"enum": [False]}


def max_deadline_ms(settings: Settings) -> int:
    """The largest deadline_ms a search may ask for, POST and GET alike: the server's search_deadline."""
    return int(settings.search_deadline * 1000)


def search_request_model(settings: Settings, generation: bool = True) -> type[BaseModel]:
    """The POST /search body; built per app so the documented limits and defaults (ASKCORPUS_K, ASKCORPUS_MODE,
    and whether it can generate) are the configured ones."""
    max_query_chars = settings.max_query_chars

    class SearchRequest(BaseModel):
        model_config = ConfigDict(
            strict=True,
            json_schema_extra={"examples": [{"query": "What did the report warn about?", "k": 5, "mode": "hybrid",
                                              "rerank": True}]},
        )

        query: str = Field(
            min_length=1,
            max_length=max_query_chars,
            pattern=NOT_ONLY_WHITESPACE,
            description=f"the question: 1 to {max_query_chars} characters, not only whitespace",
        )
        k: Annotated[int, BeforeValidator(_integral)] = Field(settings.k, ge=K_MIN, le=K_MAX,
                                                              description="passages to return")
        mode: ModeName = Field(settings.mode, description="dense vectors, BM25 words, or both fused (hybrid)")
        rerank: bool | None = Field(None, description="reorder the candidates with the cross-encoder (default: "
                                                      "the server's setting, on unless ASKCORPUS_RERANK=false)")
        generate: bool = Field(False, description="also have the configured language model write the answer from "
                                                  "the top passages, each sentence cited and checked; with "
                                                  "Accept: text/event-stream it streams as Server-Sent Events",
                               json_schema_extra=generate_schema(generation))
        # The bounds go on the integer, before its validator: on the optional, or after the validator, pydantic
        # publishes them as unknown "ge"/"le" keys, and the schema would admit what validation refuses.
        deadline_ms: Annotated[int, Field(ge=1, le=max_deadline_ms(settings)), BeforeValidator(_integral)] \
            | None = Field(
            None,
            description="time budget in milliseconds (default and limit: the server's search_deadline); a search "
                        "that cannot start in time gets 503")
        filter: FilterIn | None = Field(None, description="search only the documents this keeps, before ranking: "
                                                          "k results come back when k passages match")

    return SearchRequest
