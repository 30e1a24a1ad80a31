"""What is indexed, for every shell: the document listing (optionally filtered) and a document's text or a passage
in its context, read from the loaded index only (no file is opened, whatever a doc_id contains)."""

from __future__ import annotations

from datetime import datetime, timezone

from .errors import DocumentNotFoundError, QueryError
from .filters import Filter, format_of
from .store import LoadedIndex

# Characters of context on each side of a passage (default and limit).
DEFAULT_CONTEXT_CHARS = 300
MAX_CONTEXT_CHARS = 5000


def document_info(index: LoadedIndex) -> list[dict]:
    """Every document's description, in manifest order."""
    return [
        {
            "doc_id": d["doc_id"],
            "title": d["title"],
            "characters": d["chars"],
            "passages": d["passage_count"],
            "pages": d.get("pages"),
            "sha256": d["sha256"],
            "format": d.get("format") or format_of(d["doc_id"]),
            "modified": None if d.get("mtime") is None
            else datetime.fromtimestamp(d["mtime"], timezone.utc).isoformat(),
        }
        for d in index.manifest["documents"]
    ]


def list_documents(index: LoadedIndex, filter: Filter | None = None) -> dict:
    """{"count", "documents"}: the documents `filter` keeps (all without one), by doc_id; FilterError when the
    filter needs what the index did not record."""
    documents = document_info(index)
    if filter is not None:
        keep = index.catalog.documents_matching(filter)  # in manifest order, as document_info lists them
        documents = [d for d, kept in zip(documents, keep.tolist()) if kept]
    # By name: an incremental build keeps its documents in the order they were first indexed.
    documents.sort(key=lambda d: d["doc_id"])
    return {"count": len(documents), "documents": documents}


def read_document(index: LoadedIndex, doc_id: str, start: int | None = None, end: int | None = None,
                  context: int = DEFAULT_CONTEXT_CHARS) -> dict:
    """The document's description and whole text; with `start` or `end`, the passage text[start:end] with up to
    `context` characters each side. DocumentNotFoundError for a doc_id the index does not hold, QueryError for
    offsets outside the text or a context out of range."""
    document = index.documents.get(doc_id)
    if document is None:
        raise DocumentNotFoundError(doc_id)
    if isinstance(context, bool) or not isinstance(context, int) or not 0 <= context <= MAX_CONTEXT_CHARS:
        raise QueryError(f"context must be a whole number from 0 to {MAX_CONTEXT_CHARS}, got {context!r}")
    if start is None and end is None:
        info = next(d for d in document_info(index) if d["doc_id"] == doc_id)
        return {**info, "text": document.text}
    length = len(document.text)
    start = 0 if start is None else start
    end = length if end is None else end
    if not 0 <= start <= end <= length:
        raise QueryError(
            f"start and end must satisfy 0 <= start <= end <= {length} (the document's length), "
            f"got start={start}, end={end}")
    return passage_context(doc_id, document.title, document.text, start, end, context)


def passage_context(doc_id: str, title: str, text: str, start: int, end: int, context: int) -> dict:
    before_start = max(0, start - context)
    after_end = min(len(text), end + context)
    return {
        "doc_id": doc_id,
        "title": title,
        "characters": len(text),
        "start": start,
        "end": end,
        "text": text[start:end],
        "before": text[before_start:start],
        "after": text[end:after_end],
        "context_start": before_start,
        "context_end": after_end,
    }
