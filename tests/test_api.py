"""The web API through FastAPI's TestClient, over a fake-embedder index: every endpoint and every bad input."""

from __future__ import annotations

import asyncio
import builtins
import io
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pytest
from fastapi.testclient import TestClient

from askcorpus import store
from askcorpus.api import QueryEncoder, create_app
from askcorpus.build import build_index
from askcorpus.config import Settings
from askcorpus.embed import HashingEmbedder
from askcorpus.lexical import terms
from askcorpus.rerank import reranker_for
from askcorpus.search import Searcher

TOKEN = "test-admin-token-1234"
QUESTIONS = [
    "What threat does ISKP pose to the region?",
    "Who published the report on regional terrorism?",
    "Taliban return to power",
    "Shanghai Cooperation Organisation counter-terrorism",
    "refugee flows and border security",
    "economic recovery in Afghanistan",
    "recruitment propaganda techniques",
    "al-Qaeda ally",
]


def _without_highlights(data: dict) -> dict:
    return {**data, "results": [{k: v for k, v in r.items() if k != "highlights"} for r in data["results"]]}


@pytest.fixture
def settings(fake_settings):
    return fake_settings.with_overrides(admin_token=TOKEN, reload_interval=0.1)


@pytest.fixture(scope="module")
def template_index(tmp_path_factory, seeds_dir):
    """One fake-embedder build of the seeds per module; each test gets a copy (building takes ~0.5 s)."""
    root = tmp_path_factory.mktemp("api-template")
    shutil.copytree(seeds_dir, root / "corpus")
    settings = Settings(corpus=root / "corpus", index=root / "index", model="hashing-64")
    build_index(settings, HashingEmbedder(dim=64))
    return settings.index


@pytest.fixture
def built(settings, template_index):
    shutil.copytree(template_index, settings.index)
    return settings


@pytest.fixture
def client(built, fake_embedder):
    with TestClient(create_app(built, embedder=fake_embedder)) as test_client:
        yield test_client


@pytest.fixture
def reference(built, fake_embedder) -> Searcher:
    """The library's own Searcher over the same index: what the CLI would answer."""
    return Searcher(built, fake_embedder, store.load(built.index), reranker_for(built))


# ---------------------------------------------------------------------------------------------- search


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_post_search_is_the_cli_json_plus_highlights(client, reference, mode):
    query = "What threat does ISKP pose to the region?"
    response = client.post("/search", json={"query": query, "k": 5, "mode": mode})
    assert response.status_code == 200
    data = response.json()
    assert _without_highlights(data) == reference.search(query, 5, mode).to_dict()
    assert data["query"] == query and data["mode"] == mode
    assert 1 <= len(data["results"]) <= 5
    assert [r["rank"] for r in data["results"]] == list(range(1, len(data["results"]) + 1))


def test_get_search_equals_post(client):
    posted = client.post("/search", json={"query": "Taliban return to power", "k": 3, "mode": "bm25"}).json()
    got = client.get("/search", params={"q": "Taliban return to power", "k": 3, "mode": "bm25"}).json()
    assert got == posted
    defaults = client.get("/search", params={"q": "Taliban return to power"}).json()
    assert defaults["mode"] == "hybrid" and len(defaults["results"]) == 10


def test_citations_index_into_the_document_text(client):
    data = client.post("/search", json={"query": "ISKP recruitment in Afghanistan", "k": 10}).json()
    texts = {}
    for result in data["results"] + ([data["answer"]] if data["answer"] else []):
        doc_id = result["doc_id"]
        if doc_id not in texts:
            texts[doc_id] = client.get(f"/documents/{doc_id}").json()["text"]
        assert texts[doc_id][result["start"] : result["end"]] == result["text"]


def test_highlights_are_query_terms_inside_the_passage(client):
    query = "regional cooperation against ISKP"
    data = client.post("/search", json={"query": query, "k": 5, "mode": "bm25"}).json()
    wanted = set(terms(query))
    assert any(r["highlights"] for r in data["results"])
    for result in data["results"]:
        for start, end in result["highlights"]:
            assert 0 <= start < end <= len(result["text"])
            assert set(terms(result["text"][start:end])) <= wanted


def test_query_is_stripped_like_the_cli(client, reference):
    data = client.post("/search", json={"query": "  Taliban return to power \n", "k": 3}).json()
    assert data["query"] == "Taliban return to power"
    assert _without_highlights(data) == reference.search("Taliban return to power", 3).to_dict()


def test_query_with_no_known_words_is_not_an_error(client):
    data = client.post("/search", json={"query": "zzqxj wvvk", "mode": "bm25"}).json()
    assert data["results"] == [] and data["answer"] is None


BAD_BODIES = [
    ({"query": ""}, "query is empty"),
    ({"query": "   \n\t "}, "query is empty"),
    ({"query": "x" * 2001}, "the limit is 2000"),
    ({"query": "ok", "k": 0}, "k must be a whole number from 1 to 100"),
    ({"query": "ok", "k": 101}, "k must be a whole number from 1 to 100"),
    ({"query": "ok", "k": -3}, "k must be a whole number from 1 to 100"),
    ({"query": "ok", "k": "5"}, "k must be a whole number"),
    ({"query": "ok", "k": 2.5}, "k must be a whole number"),
    ({"query": "ok", "k": True}, "k must be a whole number"),
    ({"query": "ok", "k": None}, "k must be a whole number"),
    ({"query": "ok", "mode": "semantic"}, "mode must be one of dense, bm25, hybrid"),
    ({"query": "ok", "mode": 3}, "mode must be one of"),
    ({"query": 42}, "query must be a string"),
    ({"query": ["a", "b"]}, "query must be a string"),
    ({"query": None}, "query must be a string"),
    ({}, "query is required"),
    ({"k": 5}, "query is required"),
    ([1, 2], "must be a JSON object"),
    ("just a string", "must be a JSON object"),
    (17, "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_post_bodies_get_422_saying_what_is_wrong(client, body, message):
    response = client.post("/search", json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "q is required"),
        ({"q": ""}, "query is empty"),
        ({"q": "  "}, "query is empty"),
        ({"q": "y" * 2001}, "the limit is 2000"),
        ({"q": "ok", "k": "0"}, "k must be a whole number from 1 to 100"),
        ({"q": "ok", "k": "1000"}, "k must be a whole number from 1 to 100"),
        ({"q": "ok", "k": "ten"}, "k must be a whole number"),
        ({"q": "ok", "mode": "fuzzy"}, "mode must be one of"),
    ],
)
def test_bad_get_parameters_get_422(client, params, message):
    response = client.get("/search", params=params)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_integral_numbers_are_integers(client):
    # JSON Schema's "integer" includes 5.0; 5.5, "5" and true are rejected above.
    assert client.post("/search", json={"query": "Taliban", "k": 5.0}).json()["results"][4]["rank"] == 5


def test_lone_surrogates_are_a_422_not_a_500(client):
    response = client.post("/search", content=b'{"query": "Taliban \\ud800 power"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "not valid Unicode" in response.json()["detail"]
    assert client.get("/documents/%ED%A0%80").status_code == 404
    assert client.get("/documents/%ff%fe").status_code == 404
    assert client.get("/search", params={"q": b"Taliban \xff power"}).status_code == 200


def test_query_at_the_limit_is_accepted(client):
    assert client.post("/search", json={"query": "word " * 399 + "end"}).status_code == 200  # 2000 chars


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (b'{"query": "ok",', {"content-type": "application/json"}, "not valid JSON"),
        (b"{'query': 'ok'}", {"content-type": "application/json"}, "not valid JSON"),
        (b"\xff\xfe\x00garbage", {"content-type": "application/json"}, "not valid JSON"),
        (b'{"query": "caf\xe9"}', {"content-type": "application/json"}, "not valid JSON"),
        (b"i\xa0JJ\xc3(", {"content-type": "application/json; charset=utf-8"}, "not valid JSON"),
        (b"", {"content-type": "application/json"}, "request body is missing"),
        (b"query=ok", {"content-type": "application/x-www-form-urlencoded"}, "must be JSON"),
        (b'{"query": "ok"}', {"content-type": "text/plain"}, "must be JSON"),
    ],
)
def test_malformed_bodies_get_422(client, content, headers, message):
    response = client.post("/search", content=content, headers=headers)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_body_over_the_limit_gets_413(client, built):
    big = b'{"query": "' + b"a" * (built.max_body_bytes + 10) + b'"}'
    response = client.post("/search", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert str(built.max_body_bytes) in response.json()["detail"]


def test_chunked_body_over_the_limit_gets_413(client, built):
    def chunks():  # no Content-Length: the limit must count what actually arrives
        for _ in range(built.max_body_bytes // 1000 + 5):
            yield b" " * 1000

    response = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_errors_never_500_on_odd_unicode(client):
    for query in ["\x00", "\u200b", "\ud7ff?", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🙂", "\x1c\x1d", "'; DROP TABLE passages; --", "<script>x</script>"]:
        response = client.post("/search", json={"query": query})
        assert response.status_code in (200, 422), (query, response.text)


# ---------------------------------------------------------------------------------------------- documents


def test_documents_are_listed(client, built):
    data = client.get("/documents").json()
    index = store.load(built.index)
    assert data["count"] == len(index.documents) == len(data["documents"]) == 5
    for doc in data["documents"]:
        assert set(doc) >= {"doc_id", "title", "characters", "passages"}
        assert doc["characters"] == len(index.documents[doc["doc_id"]].text)
        assert doc["passages"] == len(index.passages_of(doc["doc_id"]))


def test_document_text_and_passage_context(client, built):
    index = store.load(built.index)
    passage = index.passages[7]
    full = client.get(f"/documents/{passage.doc_id}").json()
    assert full["text"] == index.documents[passage.doc_id].text
    assert full["text"][passage.start : passage.end] == passage.text

    ctx = client.get(f"/documents/{passage.doc_id}", params={"start": passage.start, "end": passage.end,
                                                              "context": 50}).json()
    assert ctx["text"] == passage.text
    assert ctx["before"] == full["text"][max(0, passage.start - 50) : passage.start]
    assert ctx["after"] == full["text"][passage.end : passage.end + 50]
    assert ctx["context_start"] == max(0, passage.start - 50)
    assert full["text"][ctx["context_start"] : ctx["context_end"]] == ctx["before"] + ctx["text"] + ctx["after"]


def test_document_ids_with_slashes_work(fake_settings, fake_embedder):
    nested = fake_settings.corpus / "sub" / "dir"
    nested.mkdir(parents=True)
    (nested / "note.txt").write_text("Nested notes about quokkas living on Rottnest Island.\n", encoding="utf-8")
    build_index(fake_settings, fake_embedder)
    with TestClient(create_app(fake_settings, embedder=fake_embedder)) as client:
        ids = [d["doc_id"] for d in client.get("/documents").json()["documents"]]
        doc_id = next(i for i in ids if i.endswith("note.txt"))
        assert "/" in doc_id
        response = client.get(f"/documents/{doc_id}")
        assert response.status_code == 200 and "quokkas" in response.json()["text"]


@pytest.mark.parametrize(
    "params",
    [{"start": 10, "end": 5}, {"start": 0, "end": 10**7}, {"start": 10**7}, {"start": -1, "end": 5},
     {"start": "a", "end": 5}, {"context": 10**6}],
)
def test_bad_offsets_get_422(client, params):
    doc_id = client.get("/documents").json()["documents"][0]["doc_id"]
    response = client.get(f"/documents/{doc_id}", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_unknown_document_is_404(client):
    response = client.get("/documents/no-such-file.txt")
    assert response.status_code == 404
    assert "no-such-file.txt" in response.json()["detail"]
    assert client.get("/documents/").status_code == 404


@pytest.fixture
def opened_files(monkeypatch):
    """Every path opened through open()/io.open()/os.open() while the fixture is active."""
    seen: list[str] = []
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def spy(real):
        def opener(file, *args, **kwargs):
            seen.append(os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else repr(file))
            return real(file, *args, **kwargs)

        return opener

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(io, "open", spy(real_io_open))
    monkeypatch.setattr(os, "open", spy(real_os_open))
    return seen


def test_doc_ids_that_leave_the_corpus_are_404_and_read_nothing(client, built, opened_files):
    secret = built.corpus.parent / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", encoding="utf-8")
    absolute = str(secret)
    attempts = [
        "../secret.txt",
        "%2e%2e/secret.txt",
        "%2E%2E%2Fsecret.txt",
        "..%2fsecret.txt",
        "..%252fsecret.txt",
        "%252e%252e%252fsecret.txt",
        "..%5csecret.txt",
        "..\\secret.txt",
        "....//secret.txt",
        "./../secret.txt",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        absolute.lstrip("/"),
        "/" + absolute.lstrip("/"),
        absolute.replace("/", "%2F"),
        "secret.txt%00.txt",
        "%00",
        "000_455900a64ecf7b1d.txt%00../../secret.txt",
        "C:%5cWindows%5cwin.ini",
    ]
    opened_files.clear()
    for attempt in attempts:
        for suffix in ("", "?start=0&end=5"):
            response = client.get(f"/documents/{attempt}{suffix}")
            assert response.status_code == 404, (attempt, response.text)
            assert "TOP-SECRET" not in response.text and "root:" not in response.text
    assert not [p for p in opened_files if "secret" in p or "passwd" in p or "win.ini" in p]


# ---------------------------------------------------------------------------------------------- health, page


def test_health(client, built):
    data = client.get("/health").json()
    index = store.load(built.index)
    assert data["status"] == "ok" and data["index_loaded"] is True
    assert data["documents"] == len(index.documents)
    assert data["passages"] == len(index.passages)
    assert data["model"] == "hashing-64" and data["encoder"] == "hashing"
    assert data["built_at"] == index.built_at
    assert data["build"] == index.path.name
    assert data["last_reload_error"] is None


def test_page_and_static_files_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="q"' in page.text and "/static/app.js" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "innerHTML" not in client.get("/static/app.js").text  # text goes in as text nodes only
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/search", "/documents", "/documents/{doc_id}", "/health", "/admin/reindex"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["SearchRequest"]["properties"]["query"]
    assert body["maxLength"] == 2000 and body["minLength"] == 1


def test_published_bounds_are_json_schema_keywords(client, built):
    """Every bound validation enforces is in the schema as minimum/maximum, or a schema-driven client (and
    schemathesis) would send values the server refuses; pydantic's own "ge"/"le" keys mean nothing there."""
    schema = client.get("/openapi.json").json()

    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    assert not {"ge", "le", "gt", "lt"} & set(keys(schema))
    deadline = schema["components"]["schemas"]["SearchRequest"]["properties"]["deadline_ms"]["anyOf"][0]
    assert deadline["minimum"] == 1 and deadline["maximum"] == int(built.search_deadline * 1000)


def test_unknown_route_and_method(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").json()["detail"]
    assert client.put("/search", json={"query": "x"}).status_code == 405


# ---------------------------------------------------------------------------------------------- admin, reload


def _add_document(settings, name: str, text: str) -> None:
    (settings.corpus / name).write_text(text, encoding="utf-8")


NEW_TEXT = ("Zorblaxian marmalade festivals are held every spring in the valley of Quenth. "
            "The zorblaxian festival committee publishes its programme in March.\n")


def test_reindex_is_disabled_without_a_token(fake_settings, fake_embedder):
    build_index(fake_settings, fake_embedder)
    assert fake_settings.admin_token is None
    with TestClient(create_app(fake_settings, embedder=fake_embedder)) as client:
        for headers in ({}, {"Authorization": "Bearer anything"}):
            response = client.post("/admin/reindex", headers=headers)
            assert response.status_code == 403
            assert "disabled" in response.json()["detail"]


def test_reindex_needs_the_right_token(client):
    assert client.post("/admin/reindex").status_code == 401
    assert client.post("/admin/reindex", headers={"Authorization": "Basic abc"}).status_code == 401
    wrong = client.post("/admin/reindex", headers={"Authorization": "Bearer " + TOKEN + "x"})
    assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
    assert client.post("/admin/reindex", headers={"Authorization": "Bearer "}).status_code in (401, 403)


def test_reindex_rebuilds_and_swaps(client, built):
    before = client.get("/health").json()
    _add_document(built, "zz_festival.txt", NEW_TEXT)
    response = client.post("/admin/reindex", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["added"] == ["zz_festival.txt"] and report["swapped"] is True
    after = client.get("/health").json()
    assert after["build"] == report["build"] != before["build"]
    assert after["documents"] == before["documents"] + 1 and after["reloads"] >= 1
    hits = client.get("/search", params={"q": "zorblaxian marmalade", "mode": "bm25"}).json()["results"]
    assert hits[0]["doc_id"] == "zz_festival.txt"


def test_reindex_without_changes_keeps_the_build(client):
    before = client.get("/health").json()["build"]
    response = client.post("/admin/reindex", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.json()["swapped"] is False and response.json()["added"] == []
    assert client.get("/health").json()["build"] == before


def test_reindex_failure_is_409_and_keeps_serving(client, built):
    for path in built.corpus.iterdir():
        path.unlink()
    response = client.post("/admin/reindex", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 409 and "no readable text" in response.json()["detail"]
    assert client.get("/search", params={"q": "Taliban"}).status_code == 200


def _wait_for(predicate, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds}s")


def test_new_build_is_served_without_restart(client, built, fake_embedder):
    old_build = client.get("/health").json()["build"]
    _add_document(built, "zz_festival.txt", NEW_TEXT)
    build_index(built, fake_embedder)  # what `askcorpus index` does, from outside the server
    _wait_for(lambda: client.get("/health").json()["build"] != old_build)
    hits = client.get("/search", params={"q": "zorblaxian", "mode": "bm25"}).json()["results"]
    assert hits and hits[0]["doc_id"] == "zz_festival.txt"


def test_unloadable_build_keeps_the_old_index(client, built):
    old = client.get("/health").json()
    # Another model's build: load refuses it (model mismatch); the service keeps the last good index.
    build_index(built, HashingEmbedder(dim=32))
    data = _wait_for(lambda: (d := client.get("/health").json())["last_reload_error"] and d)
    assert "hashing-32" in data["last_reload_error"]
    assert data["build"] == old["build"]
    assert client.post("/search", json={"query": "Taliban"}).status_code == 200
    # A damaged pointer is reported too, and still the old index serves.
    (built.index / store.CURRENT_FILE).write_text("no-such-build\n", encoding="utf-8")
    _wait_for(lambda: "no-such-build" in (client.get("/health").json()["last_reload_error"] or ""))
    assert client.get("/search", params={"q": "Taliban"}).status_code == 200


def test_missing_index_is_built_at_start_up(fake_settings, fake_embedder, caplog):
    assert not (fake_settings.index / store.CURRENT_FILE).exists()
    with caplog.at_level(logging.INFO, logger="askcorpus"):
        with TestClient(create_app(fake_settings, embedder=fake_embedder)) as client:
            assert client.get("/health").json()["documents"] == 5
    assert any("building it" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- concurrency, logs


def test_concurrent_clients_get_their_own_answers(built, fake_embedder, reference):
    expected = {q: reference.search(q, 5).to_dict() for q in QUESTIONS}
    roomy = built.with_overrides(search_queue=16, rerank_queue=16)  # every client waits its turn: none is turned away

    def ask(client: TestClient, i: int):
        query = QUESTIONS[i % len(QUESTIONS)]
        response = client.post("/search", json={"query": query, "k": 5})
        return query, response.status_code, response.json()

    with TestClient(create_app(roomy, embedder=fake_embedder)) as client, ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(partial(ask, client), range(96)))
    for query, status, data in answers:
        assert status == 200
        assert _without_highlights(data) == expected[query]


@pytest.mark.parametrize("window", [0.0, 0.002])
def test_query_encoder_batches_and_keeps_order(window):
    batches: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        batches.append(list(texts))
        time.sleep(0.01)  # a busy model: queries pile up meanwhile
        return np.array([[float(t.split("-")[1])] for t in texts], dtype=np.float32)

    async def main():
        encoder = QueryEncoder(encode, batching=True, window=window, max_batch=8)
        await encoder.start()
        try:
            texts = [f"q-{i}" for i in range(40)] + ["q-3", "q-3"]
            vectors = await asyncio.gather(*(encoder.encode(t) for t in texts))
        finally:
            await encoder.stop()
        return texts, vectors

    texts, vectors = asyncio.run(main())
    for text, vector in zip(texts, vectors):
        assert vector[0] == float(text.split("-")[1])
    assert max(len(b) for b in batches) > 1 and max(len(b) for b in batches) <= 8
    assert all(len(b) == len(set(b)) for b in batches)  # a text asked twice at once is encoded once


def test_query_encoder_without_batching():
    async def main():
        encoder = QueryEncoder(lambda texts: np.ones((len(texts), 2), dtype=np.float32), batching=False)
        await encoder.start()
        vector = await encoder.encode("x")
        await encoder.stop()
        return vector

    assert asyncio.run(main()).shape == (2,)


def test_one_log_line_per_request_and_a_start_up_line(built, fake_embedder, caplog):
    with caplog.at_level(logging.INFO, logger="askcorpus.api"):
        with TestClient(create_app(built, embedder=fake_embedder)) as client:
            client.get("/search", params={"q": "Taliban"})
            client.post("/search", json={"query": ""})
            client.get("/documents/nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "askcorpus.api"]
    start = [line for line in lines if "serving index" in line]
    assert start and "hashing-64" in start[0] and "http://127.0.0.1:8000/" in start[0]
    assert "passages" in start[0]
    request_lines = [line for line in lines if line.split(" ")[0] in ("GET", "POST")]
    assert len(request_lines) == 3
    assert request_lines[0].startswith("GET /search 200 ") and request_lines[0].endswith("ms")
    assert request_lines[1].startswith("POST /search 422 ")
    assert request_lines[2].startswith("GET /documents/nope 404 ")


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_bodies_match_the_published_schema(client, mode):
    """/search sends JSON it made itself (not through FastAPI's response model): it must still be a SearchOut."""
    from askcorpus.api import SearchOut

    for query in ("Who leads ISKP?", "Taliban and Pakistan", "zebra crossing", "ÎSKP ünïcode ✓"):
        response = client.post("/search", json={"query": query, "k": 4, "mode": mode})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        parsed = SearchOut.model_validate_json(response.content)
        assert parsed.model_dump(mode="json", exclude_none=False).keys() == response.json().keys()
        assert client.get("/search", params={"q": query, "k": 4, "mode": mode}).json() == response.json()


def test_a_lone_query_goes_on_in_its_encode_thread_and_a_batch_fans_out():
    threads: dict[str, set[int]] = {"encode": set(), "then": set()}

    def encode(texts: list[str]) -> np.ndarray:
        threads["encode"].add(threading.get_ident())
        time.sleep(0.02)  # a busy model: the queries sent together below pile up meanwhile
        return np.array([[float(t.split("-")[1])] for t in texts], dtype=np.float32)

    def then(vector: np.ndarray) -> tuple[float, int]:
        return float(vector[0]) * 10, threading.get_ident()

    def fails(vector: np.ndarray) -> None:
        raise ValueError("search failed")

    async def main():
        encoder = QueryEncoder(encode, batching=True, max_batch=8)
        await encoder.start()
        try:
            alone = await encoder.run("q-1", then)
            together = await asyncio.gather(*(encoder.run(f"q-{i}", then) for i in range(2, 8)))
            with pytest.raises(ValueError, match="search failed"):
                await encoder.run("q-9", fails)
            after_failure = await encoder.run("q-3", then)
        finally:
            await encoder.stop()
        return alone, together, after_failure

    alone, together, after_failure = asyncio.run(main())
    assert alone[0] == 10.0 and alone[1] in threads["encode"]  # same worker thread: no second hop
    assert [value for value, _ in together] == [float(i) * 10 for i in range(2, 8)]
    assert after_failure[0] == 30.0  # a failing search does not stop the encoder
