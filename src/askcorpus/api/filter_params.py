"""The search filter as GET query parameters (`filter.path=...`), and a request's searcher held to its filter."""

from typing import Annotated

from fastapi import HTTPException, Query, Request

from ..errors import FilterError
from ..filters import FILTER_KEYS, Filter
from ..search import Searcher
from .holder import IndexHolder
from .models import MAX_FILTER_CHARS, MAX_FILTER_ITEMS, FormatName, IsoTime, to_filter

PREFIX = "filter."
PARAMETERS = frozenset(PREFIX + key for key in FILTER_KEYS)


async def query_filter(
    request: Request,
    doc_ids: Annotated[list[str], Query(alias="filter.doc_ids", max_length=MAX_FILTER_ITEMS,
                                               description="only these documents (repeat the parameter)")] = None,
    path: Annotated[str, Query(alias="filter.path", max_length=MAX_FILTER_CHARS,
                                      description="path prefix within the corpus folder, or a glob "
                                                  "(notes/**)")] = None,
    formats: Annotated[list[FormatName], Query(alias="filter.formats",
                                                      description="only these formats (repeat the "
                                                                  "parameter)")] = None,
    modified_after: Annotated[IsoTime, Query(alias="filter.modified_after",
                                                    description="files modified at or after this ISO 8601 "
                                                                "time")] = None,
    modified_before: Annotated[IsoTime, Query(alias="filter.modified_before",
                                                     description="files modified before this ISO 8601 "
                                                                 "time")] = None,
    title: Annotated[str, Query(alias="filter.title", max_length=MAX_FILTER_CHARS,
                                       description="titles holding every one of these words")] = None,
) -> Filter | None:
    """The same filter as POST's `"filter": {...}`, from `filter.<key>` parameters. async: FastAPI would run a plain
    function in a worker thread, a thread hop per request. The types are published without a null alternative (a
    query parameter is absent, never null), so the schema admits exactly the strings the server takes."""
    unknown = sorted(key for key in request.query_params if key.startswith(PREFIX) and key not in PARAMETERS)
    if unknown:
        raise HTTPException(422, f"{unknown[0]} is not a filter; the filters are "
                                 f"{', '.join(sorted(PARAMETERS))}")
    given = {"doc_ids": doc_ids, "path": path, "formats": formats, "modified_after": modified_after,
             "modified_before": modified_before, "title": title}
    return to_filter({key: value for key, value in given.items() if value is not None})


class ScopedHolder:
    """What SearchPipeline reads of an IndexHolder, its `searcher`, held to one request's filter: the pipeline and
    the second stage run as for any search, over hits that already keep to it."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher


def scoped(holder: IndexHolder, filter: Filter | None) -> "IndexHolder | ScopedHolder":
    """`holder` itself without a filter; with one, the searcher of this moment held to it. A filter the index
    cannot apply (a time filter on an index that recorded no times) is a 422 here, before any lane is taken."""
    if filter is None:
        return holder
    searcher = holder.searcher
    try:
        searcher.index.catalog.require(filter)
    except FilterError as error:
        raise HTTPException(422, str(error)) from None
    return ScopedHolder(searcher.scoped(filter))
