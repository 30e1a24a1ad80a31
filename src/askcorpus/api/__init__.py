"""The web service: FastAPI over the same `Searcher.search` the CLI uses, a page for people, hot index reload.

Nothing happens at import time. `create_app(settings)` returns an app whose lifespan loads the model and the
index once (building the index first if there is none); `serve(settings)` runs it under uvicorn.

- app: `create_app` (state, routers, error handlers, middleware), the lifespan, and `serve`
- routes: the endpoints, one router per group: search, documents, service (health, metrics, the page), admin,
  uploads (documents given to the corpus folder over HTTP)
- deps: the dependencies routes reach the settings and the app's state through
- models: request and response models (the OpenAPI schema) and the JSON they are written in
- holder: the index being served, swapped as one reference, and the model behind a lock
- batching: query encoding off the event loop, concurrent queries sharing one model call
- admission: the bound on searches computing and waiting, deadlines, 503 past them
- pipeline: one search request through the gate, computed in a worker thread and timed
- metrics: the Prometheus metrics behind GET /metrics
- graceful: stop on SIGTERM after finishing what is in flight, exit 0
- middleware: the access log line (and metrics per request) and the request body limit
- validation: validation errors as one readable sentence
"""

from .app import create_app, log_config, serve
from .batching import QueryEncoder
from .holder import IndexHolder
from .models import SearchOut

__all__ = ["IndexHolder", "QueryEncoder", "SearchOut", "create_app", "log_config", "serve"]
