"""POST /admin/reindex: rebuild the index from the corpus and serve the new build, for holders of the admin token."""

import hmac
import logging

from fastapi import APIRouter, Depends, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ...errors import AskcorpusError
from ..deps import CallerDep, HolderDep, SettingsDep
from ..models import ERRORS, ReindexOut

log = logging.getLogger("askcorpus.api")

# Published under the service tag, beside /health and /metrics: reindexing operates the server, it reads nothing.
router = APIRouter(prefix="/admin", tags=["service"])

bearer = HTTPBearer(auto_error=False, description="the value of ASKCORPUS_ADMIN_TOKEN")


async def check_admin_token(settings: SettingsDep, caller: CallerDep,
                            credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    """Nothing when the request carries the admin token; 403 when none is set or it is wrong, 401 when none came.
    With a tokens file the caller is already known (CallerMiddleware): an `admin = true` token of the file or
    ASKCORPUS_ADMIN_TOKEN passes, any other token is 403."""
    if caller is not None:
        if not caller.admin:
            raise HTTPException(403, f"the token {caller.name!r} may read but not reindex or upload "
                                     "(admin = false in the tokens file)")
        return
    token = settings.admin_token
    if not token:
        raise HTTPException(403, "the admin endpoints (reindexing, uploads) are disabled: start the server with "
                                 "ASKCORPUS_ADMIN_TOKEN set to enable them")
    if credentials is None:
        raise HTTPException(401, "send the admin token as 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode("utf-8"), token.encode("utf-8")):
        raise HTTPException(403, "wrong admin token")


@router.post(
    "/reindex",
    response_model=ReindexOut,
    responses={
        401: {**ERRORS, "description": "no token sent"},
        403: {**ERRORS, "description": "wrong token, or reindexing disabled (no ASKCORPUS_ADMIN_TOKEN set)"},
        409: {**ERRORS, "description": "the build failed (e.g. empty corpus, another build holds the lock)"},
        413: {**ERRORS, "description": "body too large"},
    },
    dependencies=[Depends(check_admin_token)],
    summary="Rebuild the index from the corpus and serve the new one (needs the admin token)",
)
async def reindex(holder: HolderDep) -> dict:
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
