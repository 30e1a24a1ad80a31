"""The service itself: GET /health, GET /metrics and the page at / (its static files are mounted by create_app)."""

import hmac
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from ..callers import bearer_of
from ..deps import EncoderDep, GeneratorDep, HolderDep, LiveDep, MetricsDep, SettingsDep
from ..metrics import CONTENT_TYPE
from ..models import HealthOut

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"

router = APIRouter(tags=["service"])


class LiveBuildOut(BaseModel):
    number: int
    triggers: list[str] = Field(description="what asked for it: watch, upload, startup")
    status: str = Field(description="built (a new build serves), unchanged (nothing to do) or failed")
    build: str | None = Field(None, description="the build serving after it")
    error: str | None = None
    seconds: float
    finished_at: str
    skipped: list[dict] = Field(description="files passed over, each with its reason (a corrupt file, ...)")


class LiveOut(BaseModel):
    watching: bool = Field(description="whether the corpus folder is watched (serve --watch)")
    debounce: float = Field(description="seconds of quiet the folder needs before a build")
    pending: bool = Field(description="changes wait for a build that has not started")
    building: bool
    builds_started: int
    builds_finished: int = Field(description="a change acknowledged with build_number n is in once this reaches n")
    builds_failed: int
    builds_by_watch: int
    last_build: LiveBuildOut | None = None
    last_error: str | None = Field(None, description="why the last live build failed (an older build serves)")


class ServiceHealthOut(HealthOut):
    live: LiveOut = Field(description="builds started by watching the folder and by uploads")
    uploads: bool = Field(description="whether the bearer token this request carries may upload documents "
                                      "(POST /documents): the page shows its upload control only then")


def may_upload(request: Request, settings) -> bool:
    """Whether the request's bearer token is an admin one: an `admin = true` token of the tokens file, or
    ASKCORPUS_ADMIN_TOKEN; compared as the admin routes compare it. /health stays public: no token is no error."""
    token = bearer_of(request.headers.raw)
    if token is None:
        return False
    tokens = request.app.state.tokens
    if tokens is not None:
        caller = tokens.resolve(token)
        return caller is not None and caller.admin
    admin = settings.admin_token
    return bool(admin) and hmac.compare_digest(token.encode("utf-8"), admin.encode("utf-8"))


@router.get("/health", response_model=ServiceHealthOut, summary="Is the index loaded, and which")
async def health(request: Request, settings: SettingsDep, holder: HolderDep, encoder: EncoderDep,
                 generator: GeneratorDep, live: LiveDep) -> dict:
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
        "live": live.status(),
        "uploads": may_upload(request, settings),
    }


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def scrape(metrics: MetricsDep) -> Response:
    return Response(metrics.scrape(), media_type=CONTENT_TYPE)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'self'; img-src 'self' data:"})
