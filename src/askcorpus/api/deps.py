"""The dependencies routes reach the app's state through: what create_app and its lifespan put on app.state."""

from typing import Annotated

from fastapi import Depends, Request

from ..config import Settings
from ..generate import Generator
from ..watch import LiveIndex
from .batching import QueryEncoder
from .callers import SCOPE_KEY, Caller, scope_filter
from .filter_params import ScopedHolder
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


async def get_caller(request: Request) -> Caller | None:
    """Who is asking: the tokens file's caller CallerMiddleware resolved, or None with tokens off."""
    return request.scope.get(SCOPE_KEY)


async def get_readable(request: Request) -> IndexHolder | ScopedHolder:
    """The holder as this caller may read it: itself with tokens off or for a token reading everything, else the
    searcher of this moment held to the caller's prefixes (an implicit filter, AND-ed with a request's own)."""
    holder = request.app.state.holder
    caller = request.scope.get(SCOPE_KEY)
    if caller is None or caller.reads_everything:
        return holder
    searcher = holder.searcher
    return ScopedHolder(searcher.scoped(scope_filter(caller, searcher.index)))


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[IndexHolder, Depends(get_holder)]
CallerDep = Annotated[Caller | None, Depends(get_caller)]
# What search, answers and the document listing read: the holder held to the caller's prefixes.
ReadableDep = Annotated[IndexHolder | ScopedHolder, Depends(get_readable)]
EncoderDep = Annotated[QueryEncoder, Depends(get_encoder)]
GeneratorDep = Annotated[Generator | None, Depends(get_generator)]
PipelineDep = Annotated[SearchPipeline, Depends(get_pipeline)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LiveDep = Annotated[LiveIndex, Depends(get_live)]
