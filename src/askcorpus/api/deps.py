"""The dependencies routes reach the app's state through: what create_app and its lifespan put on app.state."""

from typing import Annotated

from fastapi import Depends, Request

from ..config import Settings
from ..generate import Generator
from ..watch import LiveIndex
from .batching import QueryEncoder
from .holder import IndexHolder
from .metrics import Metrics
from .pipeline import SearchPipeline


# async on purpose: FastAPI runs a plain-def dependency in a worker thread, two thread hops per search.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_holder(request: Request) -> IndexHolder:
    return request.app.state.holder


async def get_encoder(request: Request) -> QueryEncoder:
    return request.app.state.encoder


async def get_generator(request: Request) -> Generator | None:
    return request.app.state.generator


async def get_pipeline(request: Request) -> SearchPipeline:
    return request.app.state.pipeline


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_live(request: Request) -> LiveIndex:
    return request.app.state.live


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[IndexHolder, Depends(get_holder)]
EncoderDep = Annotated[QueryEncoder, Depends(get_encoder)]
GeneratorDep = Annotated[Generator | None, Depends(get_generator)]
PipelineDep = Annotated[SearchPipeline, Depends(get_pipeline)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LiveDep = Annotated[LiveIndex, Depends(get_live)]
