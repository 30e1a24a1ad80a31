"""The MCP server: the SDK's own client over stdio against `askcorpus mcp` and over streamable HTTP against the web
app's /mcp, listing the tools and calling each; citations exact, schemas the HTTP API's, errors naming the problem."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP SDK is an optional extra: pip install -e '.[mcp]'")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from askcorpus.api import create_app  # noqa: E402
from askcorpus.api.graceful import serve_in_thread  # noqa: E402
from askcorpus.api.models import DocumentList, FilterIn  # noqa: E402
from askcorpus.build import build_index  # noqa: E402
from askcorpus.config import Settings  # noqa: E402
from askcorpus.embed import HashingEmbedder  # noqa: E402
from askcorpus.engine import open_searcher  # noqa: E402
from askcorpus.mcp_server import SearchToolOut, build_mcp  # noqa: E402

from conftest import free_port, start_server, stop_server  # noqa: E402

# Every exchange with a server is bounded: a hung server fails the test instead of stalling the suite.
FAST_SECONDS = 60
SLOW_SECONDS = 300
QUESTION = "Who leads ISKP?"


@pytest.fixture
def fake_index(fake_settings: Settings, fake_embedder: HashingEmbedder) -> Settings:
    build_index(fake_settings, fake_embedder)
    return fake_settings


def _fake_env(settings: Settings) -> dict[str, str]:
    """What `askcorpus mcp` in a subprocess needs to open the fake-embedder index (the SDK's client passes only a
    few variables of its own environment on)."""
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ASKCORPUS_MODEL": "hashing-64",
            "ASKCORPUS_RERANK_MODEL": "overlap", "ASKCORPUS_CORPUS": str(settings.corpus),
            "ASKCORPUS_INDEX": str(settings.index)}


def _corpus_files(settings: Settings) -> int:
    return len([p for p in Path(settings.corpus).rglob("*") if p.is_file()])


def _run(exchange, seconds: float):
    """Run the async `exchange()` to its end, failing after `seconds`."""
    async def bounded():
        with anyio.fail_after(seconds):
            return await exchange()

    return anyio.run(bounded)


async def _stdio_session(env: dict[str, str], errlog, exchange, cwd: Path):
    params = StdioServerParameters(command=sys.executable, args=["-m", "askcorpus.cli", "mcp"], env=env, cwd=cwd)
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await exchange(session)


async def _http_session(url: str, exchange):
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await exchange(session)


def _structured(result) -> dict:
    assert not result.is_error, result.content
    data = result.structured_content
    # The text block carries the same JSON, for clients that read only text.
    text = json.loads(result.content[0].text)
    return data if "result" not in data or len(data) > 1 else data["result"], text


async def _exercise(session: ClientSession) -> dict:
    """List the tools and call each the way an agent would: search, read each cited passage back, list."""
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    found, found_text = _structured(await session.call_tool("search", {"query": QUESTION, "k": 3}))
    documents = {}
    for result in found["results"]:
        doc_id = result["doc_id"]
        if doc_id not in documents:
            whole, _ = _structured(await session.call_tool("read_document", {"doc_id": doc_id}))
            documents[doc_id] = whole
    passage = found["results"][0]
    around, _ = _structured(await session.call_tool(
        "read_document", {"doc_id": passage["doc_id"], "start": passage["start"], "end": passage["end"],
                          "context": 40}))
    listed, _ = _structured(await session.call_tool("list_documents", {}))
    notes, _ = _structured(await session.call_tool("list_documents", {"filter": {"doc_ids": [passage["doc_id"]]}}))
    only = _structured(await session.call_tool("search", {"query": QUESTION, "k": 2,
                                                          "filter": {"doc_ids": [passage["doc_id"]]}}))[0]
    bad_filter = await session.call_tool("search", {"query": QUESTION, "filter": {"formats": ["exe"]}})
    unknown_key = await session.call_tool("list_documents", {"filter": {"colour": "red"}})
    unknown_doc = await session.call_tool("read_document", {"doc_id": "no/such.txt"})
    bad_offsets = await session.call_tool("read_document", {"doc_id": passage["doc_id"], "start": 5, "end": 10 ** 9})
    return {"tools": tools, "found": found, "found_text": found_text, "documents": documents, "around": around,
            "listed": listed, "one": notes, "only": only, "bad_filter": bad_filter, "unknown_key": unknown_key,
            "unknown_doc": unknown_doc, "bad_offsets": bad_offsets}


def _error_text(result) -> str:
    assert result.is_error
    return " ".join(block.text for block in result.content)


def _check(seen: dict, index_documents: int) -> None:
    """What every transport must give: the three tools with the HTTP API's schemas, exact citations, the same
    document text as GET /documents/{id}, filters applied, and errors that say what is wrong."""
    tools = seen["tools"]
    assert set(tools) == {"search", "read_document", "list_documents"}
    for name in ("search", "list_documents"):
        schema = tools[name].input_schema
        assert schema["$defs"]["FilterIn"] == FilterIn.model_json_schema()  # the HTTP API's filter model
    assert tools["search"].input_schema["required"] == ["query"]
    assert all(tool.annotations.read_only_hint for tool in tools.values())

    found = seen["found"]
    SearchToolOut.model_validate(found)
    assert seen["found_text"] == found
    assert found["query"] == QUESTION and 1 <= len(found["results"]) <= 3
    for result in found["results"]:
        document = seen["documents"][result["doc_id"]]
        assert document["text"][result["start"]:result["end"]] == result["text"]  # citations exact
        assert result["title"] == document["title"]
        assert isinstance(result["score"], float)
    answer = found["answer"]
    if answer is not None and answer["doc_id"] in seen["documents"]:
        assert seen["documents"][answer["doc_id"]]["text"][answer["start"]:answer["end"]] == answer["text"]

    top = found["results"][0]
    around = seen["around"]
    text = seen["documents"][top["doc_id"]]["text"]
    assert around["text"] == top["text"] == text[top["start"]:top["end"]]
    assert around["before"] == text[around["context_start"]:top["start"]]
    assert around["after"] == text[top["end"]:around["context_end"]]
    assert top["start"] - around["context_start"] <= 40

    listed = DocumentList.model_validate(seen["listed"])
    assert listed.count == index_documents == len(listed.documents)
    assert [d.doc_id for d in listed.documents] == sorted(d.doc_id for d in listed.documents)
    assert [d["doc_id"] for d in seen["one"]["documents"]] == [top["doc_id"]]
    assert {r["doc_id"] for r in seen["only"]["results"]} == {top["doc_id"]}

    assert "formats" in _error_text(seen["bad_filter"])
    assert "colour" in _error_text(seen["unknown_key"])
    assert "no/such.txt" in _error_text(seen["unknown_doc"]) and "list_documents" in _error_text(seen["unknown_doc"])
    assert "start and end must satisfy" in _error_text(seen["bad_offsets"])


def test_tools_in_process(fake_index, fake_embedder):
    """The tools through the SDK's in-memory client: the quickest full check of what they return."""
    from mcp import Client

    searcher = open_searcher(fake_index, fake_embedder)

    async def exchange():
        async with Client(build_mcp(lambda: searcher, fake_index)) as client:
            return await _exercise(client.session)

    _check(_run(exchange, FAST_SECONDS), len(searcher.index.documents))


def test_tool_errors_name_the_problem(fake_index, fake_embedder):
    from mcp import Client

    searcher = open_searcher(fake_index, fake_embedder)

    async def exchange():
        async with Client(build_mcp(lambda: searcher, fake_index)) as client:
            session = client.session
            return [await session.call_tool("search", arguments) for arguments in (
                {"query": "   "}, {"query": QUESTION, "k": 0}, {"query": QUESTION, "mode": "fuzzy"},
                {"query": QUESTION, "filter": {"modified_after": "yesterday"}},
                {"query": QUESTION, "filter": {"doc_ids": "a.txt"}})]

    blank, zero, mode, when, not_a_list = _run(exchange, FAST_SECONDS)
    assert "query" in _error_text(blank)
    assert "k" in _error_text(zero)
    assert "mode" in _error_text(mode)
    assert "modified_after" in _error_text(when) and "ISO 8601" in _error_text(when)
    assert "doc_ids" in _error_text(not_a_list)


def test_filter_matching_nothing_is_an_empty_list(fake_index, fake_embedder):
    from mcp import Client

    searcher = open_searcher(fake_index, fake_embedder)

    async def exchange():
        async with Client(build_mcp(lambda: searcher, fake_index)) as client:
            nothing = {"filter": {"path": "no-such-folder/"}}
            return (await client.session.call_tool("search", {"query": QUESTION, **nothing}),
                    await client.session.call_tool("list_documents", nothing))

    found, listed = _run(exchange, FAST_SECONDS)
    assert _structured(found)[0]["results"] == [] and _structured(found)[0]["answer"] is None
    assert _structured(listed)[0] == {"count": 0, "documents": []}


def test_stdio(fake_index, tmp_path):
    """`askcorpus mcp` as a desktop client runs it: a subprocess speaking MCP on stdin/stdout."""
    errlog_path = tmp_path / "mcp-stderr.log"
    with open(errlog_path, "w") as errlog:
        seen = _run(lambda: _stdio_session(_fake_env(fake_index), errlog, _exercise, tmp_path), FAST_SECONDS)
    _check(seen, _corpus_files(fake_index))


def test_stdio_builds_a_missing_index_quietly(fake_settings, tmp_path):
    """With no index yet, `askcorpus mcp` builds one first, saying so on stderr only: stdout is the protocol."""
    errlog_path = tmp_path / "mcp-stderr.log"

    async def count(session):
        return _structured(await session.call_tool("list_documents", {}))[0]["count"]

    with open(errlog_path, "w") as errlog:
        documents = _run(lambda: _stdio_session(_fake_env(fake_settings), errlog, count, tmp_path), FAST_SECONDS)
    assert documents == _corpus_files(fake_settings)
    assert "building it from" in errlog_path.read_text()


def test_streamable_http(fake_settings, fake_embedder):
    """The same tools at /mcp of the web app, on the searcher it serves."""
    with serve_in_thread(create_app(fake_settings, embedder=fake_embedder)) as base:
        seen = _run(lambda: _http_session(base + "/mcp", _exercise), FAST_SECONDS)
    _check(seen, _corpus_files(fake_settings))


def test_mcp_route_is_not_in_the_openapi_schema(fake_settings, fake_embedder):
    app = create_app(fake_settings, embedder=fake_embedder)
    assert "/mcp" not in app.openapi()["paths"]
    assert any(getattr(route, "path", None) == "/mcp" for route in app.router.routes)


@pytest.mark.slow
def test_stdio_with_the_real_model(seeds_settings, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ASKCORPUS_CORPUS": str(seeds_settings.corpus),
           "ASKCORPUS_INDEX": str(seeds_settings.index),
           "ASKCORPUS_ENCODER_CACHE": str(seeds_settings.encoder_cache_dir)}
    errlog_path = tmp_path / "mcp-stderr.log"
    with open(errlog_path, "w") as errlog:
        seen = _run(lambda: _stdio_session(env, errlog, _exercise, tmp_path), SLOW_SECONDS)
    _check(seen, seen["listed"]["count"])
    assert seen["found"]["reranked"]  # the real cross-encoder reorders, as for the HTTP API


@pytest.mark.slow
def test_streamable_http_on_askcorpus_serve(seeds_settings, tmp_path):
    """Against a running `askcorpus serve`, as the issue asks: a real process, the real model."""
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(seeds_settings.corpus, corpus)
    shutil.copytree(seeds_settings.index, index)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "ASKCORPUS_ENCODER_CACHE": str(seeds_settings.encoder_cache_dir)}
    env.pop("ASKCORPUS_HOST", None)
    port = free_port()
    process = start_server(port, ["--index", str(index), "--corpus", str(corpus)], env, tmp_path / "server.log")
    try:
        seen = _run(lambda: _http_session(f"http://127.0.0.1:{port}/mcp", _exercise), SLOW_SECONDS)
    finally:
        stop_server(process)
    _check(seen, seen["listed"]["count"])
    assert process.returncode == 0  # stopped promptly with MCP clients having come and gone
