"""POST /documents, PUT and DELETE /documents/{doc_id}: documents given to (or taken from) the corpus folder over
HTTP by holders of the admin token, checked before they touch it, written atomically, then built in."""

import asyncio
import logging
from typing import Annotated, Any, Callable, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from pydantic import BaseModel, Field

from ...corpusfiles import Refused, Stored, check_document, name_for_upload, read_limited, remove_document, \
    safe_doc_id, write_document
from ...watch import LiveIndex
from ..deps import HolderDep, LiveDep, SettingsDep
from ..holder import IndexHolder
from ..models import ERRORS
from .admin import check_admin_token

log = logging.getLogger("askcorpus.api")

router = APIRouter(tags=["documents"])

# The most a ?wait=true request waits for its build before answering 202 anyway.
WAIT_SECONDS = 300.0
# Room for the multipart framing around the file (boundaries, part headers, the path field).
MULTIPART_OVERHEAD = 65_536


class ChangeOut(BaseModel):
    doc_id: str = Field(description="the document's id: its path within the corpus folder")
    action: Literal["added", "replaced", "removed"]
    bytes: int = Field(0, ge=0, description="size of the stored file (0 for a removal)")
    sha256: str | None = Field(None, description="of the stored file")
    build_number: int = Field(ge=1, description="the live build that will hold the change: it is searchable once "
                                                "/health's live.builds_finished reaches this number and that build "
                                                "succeeded")
    searchable: bool = Field(description="whether the index being served already reflects the change (with "
                                         "wait=true: the document is found, or is gone)")
    build: str | None = Field(None, description="with wait=true: the build being served when the answer was sent")
    build_error: str | None = Field(None, description="with wait=true: why the build failed, if it did (the file "
                                                      "is stored; the previous build keeps serving)")


Wait = Annotated[bool, Query(description="answer once the change is searchable (200), not at once (202)")]
RESPONSES: dict = {
    200: {"model": ChangeOut, "description": "with wait=true: the change is searchable"},
    400: {**ERRORS, "description": "a body that is not a readable multipart form"},
    401: {**ERRORS, "description": "no token sent"},
    403: {**ERRORS, "description": "wrong token, or uploads disabled (no ASKCORPUS_ADMIN_TOKEN set)"},
    413: {**ERRORS, "description": "larger than ASKCORPUS_UPLOAD_MAX_BYTES"},
    415: {**ERRORS, "description": "unsupported format, or content not of the kind its extension says"},
    422: {**ERRORS, "description": "an unsafe name, or a file its reader cannot read (the reason is given)"},
}


def body_limit(settings: Any) -> Callable[[dict], int | None]:
    """The body limit of the upload routes (which stream their bodies), for BodyLimitMiddleware; None elsewhere."""
    limit = settings.upload_max_bytes + MULTIPART_OVERHEAD

    def for_scope(scope: dict) -> int | None:
        method, path = scope.get("method"), scope.get("path", "")
        if (method == "POST" and path == "/documents") or (method == "PUT" and path.startswith("/documents/")):
            return limit
        return None

    return for_scope


def _refused(error: Refused) -> HTTPException:
    return HTTPException(error.status, error.message)


async def _store(settings: Any, doc_id_of: Callable[[], str], file: UploadFile, replace: str) -> Stored:
    """Name, size, format and reader checks, then the atomic write: all in a worker thread."""

    def work() -> Stored:
        doc_id = doc_id_of()
        data = read_limited(file.file, settings.upload_max_bytes)
        check_document(doc_id, data)
        return write_document(settings.corpus, doc_id, data, replace=replace)

    try:
        return await asyncio.to_thread(work)
    except Refused as error:
        raise _refused(error) from None


async def _acknowledge(stored: Stored, live: LiveIndex, holder: IndexHolder, wait: bool) -> Any:
    """Ask for the build that will hold the change, make that request durable, then answer 202 (or, waiting, once
    the build has finished: 200 if the change is searchable)."""
    live.expect(live.root / stored.doc_id)
    ticket = live.request("upload", immediate=True)
    await asyncio.to_thread(live.mark_pending)
    log.info("upload: %s %s (%d bytes); build %d will hold it", stored.action, stored.doc_id, stored.bytes, ticket)
    body = {"doc_id": stored.doc_id, "action": stored.action, "bytes": stored.bytes, "sha256": stored.sha256,
            "build_number": ticket, "searchable": _searchable(stored, holder)}
    if not wait:
        return _answer(202, body)
    outcome = await live.wait_for(ticket, WAIT_SECONDS)
    body["searchable"] = _searchable(stored, holder)
    body["build"] = holder.searcher.index.path.name
    if outcome is None:
        body["build_error"] = f"build {ticket} has not finished within {WAIT_SECONDS:.0f} s"
    elif outcome.status == "failed":
        body["build_error"] = outcome.error
    return _answer(200 if body["searchable"] else 202, body)


def _searchable(stored: Stored, holder: IndexHolder) -> bool:
    document = holder.searcher.index.documents.get(stored.doc_id)
    if stored.action == "removed":
        return document is None
    return document is not None and document.sha256 == stored.sha256


def _answer(status: int, body: dict):
    from ..models import SafeJSONResponse

    return SafeJSONResponse(ChangeOut(**body).model_dump(), status_code=status)


@router.post(
    "/documents",
    status_code=202,
    response_model=ChangeOut,
    responses={**RESPONSES, 409: {**ERRORS, "description": "a document of that name exists (send overwrite=true)"}},
    dependencies=[Depends(check_admin_token)],
    summary="Add a document to the corpus folder and index it (needs the admin token)",
)
async def upload_document(
    settings: SettingsDep,
    holder: HolderDep,
    live: LiveDep,
    file: Annotated[UploadFile, File(description="the document: .txt, .md, .html, .htm, .pdf or .docx")],
    path: Annotated[str | None, Form(description="its path within the corpus folder (default: the file's name; "
                                                 "ending in '/': a folder, the file's name appended)")] = None,
    overwrite: Annotated[bool, Query(description="replace a document of the same name")] = False,
    wait: Wait = False,
) -> Any:
    stored = await _store(settings, lambda: name_for_upload(path, file.filename), file,
                          "yes" if overwrite else "no")
    return await _acknowledge(stored, live, holder, wait)


@router.put(
    "/documents/{doc_id:path}",
    status_code=202,
    response_model=ChangeOut,
    responses={**RESPONSES, 404: {**ERRORS, "description": "no such document in the corpus folder"}},
    dependencies=[Depends(check_admin_token)],
    summary="Replace a document of the corpus folder and index it (needs the admin token)",
)
async def replace_document(
    doc_id: str,
    settings: SettingsDep,
    holder: HolderDep,
    live: LiveDep,
    file: Annotated[UploadFile, File(description="the document's new content")],
    wait: Wait = False,
) -> Any:
    stored = await _store(settings, lambda: safe_doc_id(doc_id), file, "only")
    return await _acknowledge(stored, live, holder, wait)


@router.delete(
    "/documents/{doc_id:path}",
    status_code=202,
    response_model=ChangeOut,
    responses={**{k: v for k, v in RESPONSES.items() if k not in (400, 413, 415)},
               404: {**ERRORS, "description": "no such document in the corpus folder or the index"}},
    dependencies=[Depends(check_admin_token)],
    summary="Remove a document from the corpus folder and from the index (needs the admin token)",
)
async def delete_document(doc_id: str, settings: SettingsDep, holder: HolderDep, live: LiveDep,
                          wait: Wait = False) -> Any:
    try:
        name = safe_doc_id(doc_id)
        removed = await asyncio.to_thread(remove_document, settings.corpus, name)
    except Refused as error:
        raise _refused(error) from None
    if not removed and name not in holder.searcher.index.documents:
        raise HTTPException(404, f"no document {name} in the corpus folder or the index")
    return await _acknowledge(Stored(name, "removed"), live, holder, wait)
