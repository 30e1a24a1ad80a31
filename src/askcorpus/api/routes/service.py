"""The service itself: GET /health, GET /metrics and the page at / (its static files are mounted by create_app)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from ..deps import EncoderDep, GeneratorDep, HolderDep, MetricsDep, SettingsDep
from ..metrics import CONTENT_TYPE
from ..models import HealthOut

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"

router = APIRouter(tags=["service"])


@router.get("/health", response_model=HealthOut, summary="Is the index loaded, and which")
async def health(settings: SettingsDep, holder: HolderDep, encoder: EncoderDep, generator: GeneratorDep) -> dict:
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
