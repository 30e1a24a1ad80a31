"""The api package's shape (one router per group, small modules) and the settings' k and mode honoured over HTTP."""

from __future__ import annotations

import ast
import shutil
import typing
from pathlib import Path

import fastapi.routing
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError

from askcorpus import store
from askcorpus.api import create_app
from askcorpus.api.models import K_MAX, K_MIN, ModeName
from askcorpus.api.routes import admin, documents, service, uploads
from askcorpus.build import build_index
from askcorpus.config import MODES, Settings
from askcorpus.embed import HashingEmbedder
from askcorpus.errors import QueryError
from askcorpus.rerank import reranker_for
from askcorpus.search import Searcher, validate_query

API = Path(__file__).resolve().parent.parent / "src" / "askcorpus" / "api"
QUERY = "Taliban return to power"
# Each group's module, and the tag its routes are published under.
GROUPS = {
    "askcorpus.api.routes.search": ["search"],
    "askcorpus.api.routes.documents": ["documents"],
    "askcorpus.api.routes.service": ["service"],
    "askcorpus.api.routes.admin": ["service"],
    "askcorpus.api.routes.uploads": ["documents"],
}


def _without_highlights(data: dict) -> dict:
    return {**data, "results": [{k: v for k, v in r.items() if k != "highlights"} for r in data["results"]]}


@pytest.fixture(scope="module")
def template_index(tmp_path_factory, seeds_dir):
    root = tmp_path_factory.mktemp("routes-template")
    settings = Settings(corpus=seeds_dir, index=root / "index", model="hashing-64")
    build_index(settings, HashingEmbedder(dim=64))
    return settings.index


@pytest.fixture
def env_settings(monkeypatch, tmp_path, template_index, seeds_dir) -> Settings:
    """Settings with k and mode from the environment, as `ASKCORPUS_K=3 ASKCORPUS_MODE=bm25 askcorpus serve`."""
    monkeypatch.setenv("ASKCORPUS_K", "3")
    monkeypatch.setenv("ASKCORPUS_MODE", "bm25")
    shutil.copytree(template_index, tmp_path / "index")
    settings = Settings(corpus=seeds_dir, index=tmp_path / "index", model="hashing-64", rerank_model="overlap")
    assert (settings.k, settings.mode) == (3, "bm25")
    return settings


@pytest.fixture
def client(env_settings, fake_embedder):
    with TestClient(create_app(env_settings, embedder=fake_embedder)) as test_client:
        yield test_client


@pytest.fixture
def reference(env_settings, fake_embedder) -> Searcher:
    return Searcher(env_settings, fake_embedder, store.load(env_settings.index), reranker_for(env_settings))


# ---------------------------------------------------------------------------------------------- k and mode


def test_post_search_defaults_to_the_settings_k_and_mode(client, reference):
    data = client.post("/search", json={"query": QUERY}).json()
    assert data["mode"] == "bm25" and len(data["results"]) == 3
    assert _without_highlights(data) == reference.search(QUERY, 3, "bm25").to_dict()


def test_get_search_defaults_to_the_settings_k_and_mode(client):
    got = client.get("/search", params={"q": QUERY}).json()
    assert got["mode"] == "bm25" and len(got["results"]) == 3
    assert got == client.post("/search", json={"query": QUERY, "k": 3, "mode": "bm25"}).json()


def test_a_request_still_chooses_its_own_k_and_mode(client):
    posted = client.post("/search", json={"query": QUERY, "k": 5, "mode": "dense"}).json()
    got = client.get("/search", params={"q": QUERY, "k": 5, "mode": "dense"}).json()
    assert posted == got
    assert posted["mode"] == "dense" and len(posted["results"]) == 5


def _published(app) -> tuple[dict, dict]:
    """The POST body's properties and GET's query parameters, by name, as /openapi.json publishes them."""
    schema = app.openapi()
    body = schema["components"]["schemas"]["SearchRequest"]["properties"]
    query = {p["name"]: p["schema"] for p in schema["paths"]["/search"]["get"]["parameters"]}
    return body, query


def test_the_schema_publishes_the_settings_defaults(client):
    body, query = _published(client.app)
    assert body["k"]["default"] == query["k"]["default"] == 3
    assert body["mode"]["default"] == query["mode"]["default"] == "bm25"
    # Each app publishes its own: one made without the variables still says 10 and hybrid.
    plain_body, plain_query = _published(create_app(Settings(k=10, mode="hybrid")))
    assert plain_body["k"]["default"] == plain_query["k"]["default"] == 10
    assert plain_body["mode"]["default"] == plain_query["mode"]["default"] == "hybrid"


def test_one_range_for_k_and_one_list_of_modes(client):
    body, query = _published(client.app)
    for published in (body["k"], query["k"]):
        assert (published["minimum"], published["maximum"]) == (K_MIN, K_MAX)
    for published in (body["mode"], query["mode"]):
        assert sorted(published["enum"]) == sorted(MODES)
    assert set(typing.get_args(ModeName)) == set(MODES)
    # The library's own check and the settings agree with what HTTP publishes.
    for k in (K_MIN, K_MAX):
        validate_query("q", k, "hybrid", Settings())
        assert Settings(k=k).k == k
    for k in (K_MIN - 1, K_MAX + 1):
        with pytest.raises(QueryError):
            validate_query("q", k, "hybrid", Settings())
        with pytest.raises(ValidationError):
            Settings(k=k)
        assert client.post("/search", json={"query": QUERY, "k": k}).status_code == 422
        assert client.get("/search", params={"q": QUERY, "k": k}).status_code == 422
    assert client.post("/search", json={"query": QUERY, "k": K_MAX}).status_code == 200


# ---------------------------------------------------------------------------------------------- structure


def _api_routes(app) -> list:
    """The app's endpoints, whether FastAPI copies an included router's routes into the app (before 0.165) or keeps
    the router whole behind one entry."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = contexts(app.routes) if contexts else app.routes
    return [route for route in routes if isinstance(getattr(route, "original_route", route), APIRoute)]


def test_every_route_comes_from_one_group_router():
    routes = _api_routes(create_app(Settings()))
    modules = {route.endpoint.__module__ for route in routes}
    assert modules == set(GROUPS), "every group has routes, and no route is declared anywhere else"
    for route in routes:
        assert route.tags == GROUPS[route.endpoint.__module__], route.path_format
    served = {(route.endpoint, tuple(sorted(route.methods))) for route in routes}
    for group in (documents, service, admin, uploads):
        assert isinstance(group.router, APIRouter)
        assert group.router.routes, group.__name__
        for route in group.router.routes:
            assert (route.endpoint, tuple(sorted(route.methods))) in served, (group.__name__, route.path)
    assert {r.path_format for r in routes} == {"/search", "/documents", "/documents/{doc_id}", "/health", "/metrics",
                                               "/", "/admin/reindex"}


@pytest.mark.parametrize("method,path,allowed", [
    ("put", "/search", "GET, POST"),
    ("delete", "/documents", "GET, POST"),
    ("post", "/documents/some/file.txt", "DELETE, GET, PUT"),
    ("post", "/health", "GET"),
    ("get", "/admin/reindex", "POST"),
    ("delete", "/", "GET"),
])
def test_a_405_names_every_method_the_path_takes(client, method, path, allowed):
    response = client.request(method.upper(), path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def test_two_apps_share_no_search_route():
    first, second = create_app(Settings(k=3)), create_app(Settings(k=7))
    assert _published(first)[0]["k"]["default"] == 3 and _published(second)[0]["k"]["default"] == 7


@pytest.mark.parametrize("path", [API / "app.py", API / "deps.py", *sorted((API / "routes").glob("*.py"))],
                         ids=lambda p: p.name)
def test_api_modules_read_at_a_glance(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    assert ast.get_docstring(tree), f"{path.name} opens with no docstring saying what it owns"
    assert len(source.splitlines()) <= 400
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno < 60, f"{path.name}: {node.name} is over 60 lines"
