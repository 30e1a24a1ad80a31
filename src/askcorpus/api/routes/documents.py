"""GET /documents and GET /documents/{id}: what is indexed, and a document's text or a passage in its context."""

from typing import Annotated, Union

from fastapi import APIRouter, HTTPException, Query

from ... import store
from ..deps import HolderDep
from ..models import ERRORS, DocumentList, DocumentText, PassageContext

# Characters of context on each side of a passage for GET /documents/{id}?start=&end= (default and limit).
DEFAULT_CONTEXT_CHARS = 300
MAX_CONTEXT_CHARS = 5000

router = APIRouter(tags=["documents"])


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


@router.get("/documents", response_model=DocumentList, summary="The indexed documents")
async def list_documents(holder: HolderDep) -> dict:
    # By name: an incremental build keeps its documents in the order they were first indexed.
    documents = sorted(_document_info(holder.searcher.index), key=lambda d: d["doc_id"])
    return {"count": len(documents), "documents": documents}


@router.get(
    "/documents/{doc_id:path}",
    response_model=Union[DocumentText, PassageContext],
    responses={404: {**ERRORS, "description": "no such document in the index"},
               422: {**ERRORS, "description": "start/end outside the document"}},
    summary="A document's text, or with start/end the passage text[start:end] with context around it",
)
async def get_document(
    doc_id: str,
    holder: HolderDep,
    start: Annotated[int | None, Query(ge=0, description="passage start offset")] = None,
    end: Annotated[int | None, Query(ge=0, description="passage end offset")] = None,
    context: Annotated[int, Query(ge=0, le=MAX_CONTEXT_CHARS, description="characters of context each side")]
    = DEFAULT_CONTEXT_CHARS,
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
    return _passage_context(doc_id, document.title, document.text, start, end, context)


def _passage_context(doc_id: str, title: str, text: str, start: int, end: int, context: int) -> dict:
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
