"""GET /documents and GET /documents/{id}: what is indexed, and a document's text or a passage in its context."""

from typing import Annotated, Union

from fastapi import APIRouter, Depends, HTTPException, Query

from ... import documents as library
from ...documents import DEFAULT_CONTEXT_CHARS, MAX_CONTEXT_CHARS
from ...errors import DocumentNotFoundError, FilterError, QueryError
from ...filters import Filter
from ..deps import CallerDep, HolderDep, MetricsDep
from ..filter_params import query_filter
from ..models import ERRORS, REQUEST_TOO_LONG, DocumentList, DocumentText, PassageContext

router = APIRouter(tags=["documents"])


@router.get("/documents", response_model=DocumentList, summary="The indexed documents, or those a filter keeps",
            responses={422: {**ERRORS, "description": "the filter is not acceptable"}, **REQUEST_TOO_LONG})
async def list_documents(holder: HolderDep, caller: CallerDep,
                         filter: Annotated[Filter | None, Depends(query_filter)] = None) -> dict:
    try:
        listed = library.list_documents(holder.searcher.index, filter)
    except FilterError as error:
        raise HTTPException(422, str(error)) from None
    if caller is not None and not caller.reads_everything:  # the token's prefixes: an implicit filter
        kept = [d for d in listed["documents"] if caller.may_read(d["doc_id"])]
        listed = {"count": len(kept), "documents": kept}
    return listed


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
    caller: CallerDep,
    metrics: MetricsDep,
    start: Annotated[int | None, Query(ge=0, description="passage start offset")] = None,
    end: Annotated[int | None, Query(ge=0, description="passage end offset")] = None,
    context: Annotated[int, Query(ge=0, le=MAX_CONTEXT_CHARS, description="characters of context each side")]
    = DEFAULT_CONTEXT_CHARS,
) -> dict:
    # doc_id is only ever a key into the loaded index: no file is opened, whatever it contains.
    try:
        if caller is not None and not caller.may_read(doc_id):
            # outside the token's prefixes: the same 404 as a document that does not exist
            metrics.refuse("outside")
            raise DocumentNotFoundError(doc_id)
        return library.read_document(holder.searcher.index, doc_id, start, end, context)
    except DocumentNotFoundError as error:
        raise HTTPException(404, f"{error}; GET /documents lists them") from None
    except QueryError as error:
        raise HTTPException(422, str(error)) from None
