"""Callers and what they may read: the tokens file, against a real server (docs/security.md)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
from pathlib import Path

import httpx
import pytest

from askcorpus.api import callers, create_app
from askcorpus.api.callers import Tokens, add_token, token_hash
from askcorpus.api.graceful import serve_in_thread
from askcorpus.build import build_index
from askcorpus.config import Settings
from askcorpus.embed import HashingEmbedder

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
NOTES_TOKEN = "notes-reader-token"
ALL_TOKEN = "reads-everything-token-of-some-length"
ADMIN_TOKEN = "the-admin-of-the-file"
ENV_ADMIN = "env-admin-token"
# A word only the reports/ documents hold, to search for; and one they hold that is never asked for, so never echoed:
# a notes/ token must not see it (nor a reports/ doc_id) in any answer.
SECRET = "zanzibarquokka"
HIDDEN = "vexillumhidden"


def _table(name: str, token: str, read: list[str], admin: bool = False) -> str:
    quoted = ", ".join(f'"{p}"' for p in read)
    return (f'[[token]]\nname = "{name}"\nsha256 = "{token_hash(token)}"\nread = [{quoted}]\n'
            f"admin = {'true' if admin else 'false'}\n\n")


def _write_tokens(path: Path, *tables: str) -> None:
    path.write_text("".join(tables), encoding="utf-8")


TABLES = (_table("notes", NOTES_TOKEN, ["notes/"]), _table("all", ALL_TOKEN, [""]),
          _table("ops", ADMIN_TOKEN, [""], admin=True))


@pytest.fixture
def corpus_settings(tmp_path) -> Settings:
    """The seeds split into notes/ and reports/ (every reports/ file holding SECRET), built with the fake model,
    and a tokens file."""
    corpus = tmp_path / "corpus"
    (corpus / "notes").mkdir(parents=True)
    (corpus / "reports").mkdir()
    for i, seed in enumerate(sorted(SEEDS.iterdir())):
        folder = "notes" if i % 2 == 0 else "reports"
        text = seed.read_text(encoding="utf-8")
        if folder == "reports":
            text = f"{SECRET} {HIDDEN} report.\n\n{text}\n\nThe {SECRET} figure is {HIDDEN} 42.\n"
        (corpus / folder / seed.name).write_text(text, encoding="utf-8")
    tokens = tmp_path / "tokens.toml"
    _write_tokens(tokens, *TABLES)
    settings = Settings(corpus=corpus, index=tmp_path / "index", model="hashing-64", rerank_model="overlap",
                        reload_interval=0, tokens_file=tokens, admin_token=ENV_ADMIN)
    build_index(settings, HashingEmbedder(dim=64))
    return settings


@pytest.fixture
def server(corpus_settings):
    with serve_in_thread(create_app(corpus_settings, embedder=HashingEmbedder(dim=64))) as base:
        yield base


def _auth(token: str | None) -> dict:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def _get(base: str, path: str, token: str | None = None, **params) -> httpx.Response:
    return httpx.get(base + path, headers=_auth(token), params=params, timeout=30)


def _reports(settings: Settings) -> list[str]:
    return sorted(f"reports/{p.name}" for p in (settings.corpus / "reports").iterdir())


def _refusals(base: str, reason: str) -> float:
    for line in _get(base, "/metrics", ALL_TOKEN).text.splitlines():
        if line.startswith(f'askcorpus_auth_refusals_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no askcorpus_auth_refusals_total for {reason}")


# --- who may ask ---

def test_without_a_token_only_health_and_the_page_answer(server):
    assert _get(server, "/health").status_code == 200
    assert _get(server, "/").status_code == 200
    assert _get(server, "/static/app.js").status_code in (200, 404)  # a static file: never 401
    for path, params in (("/search", {"q": "solar"}), ("/documents", {}), ("/documents/notes/x", {}),
                         ("/metrics", {}), ("/openapi.json", {}), ("/mcp", {}), ("/no-such-route", {})):
        reply = _get(server, path, **params)
        assert reply.status_code == 401, (path, reply.text)
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    reply = httpx.post(server + "/search", json={"query": "solar"}, timeout=30)
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert _refusals(server, "missing") == 8


def test_a_wrong_token_is_401_and_counted(server):
    before = _refusals(server, "unknown")
    for token in ("nope", NOTES_TOKEN + "x", token_hash(NOTES_TOKEN), "a" * 5000):
        reply = _get(server, "/search", token, q="solar")
        assert reply.status_code == 401, token
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    reply = httpx.get(server + "/documents", headers={"Authorization": f"Basic {ALL_TOKEN}"}, timeout=30)
    assert reply.status_code == 401
    assert _refusals(server, "unknown") == before + 4
    assert _get(server, "/metrics", ALL_TOKEN).status_code == 200


def test_a_revoked_token_stops_working_without_a_restart(server, corpus_settings):
    assert _get(server, "/documents", NOTES_TOKEN).status_code == 200
    _write_tokens(corpus_settings.tokens_file, *TABLES[1:])  # the notes token's table removed
    assert _get(server, "/documents", NOTES_TOKEN).status_code == 401
    assert _get(server, "/documents", ALL_TOKEN).status_code == 200
    new = "a-token-added-later"
    _write_tokens(corpus_settings.tokens_file, *TABLES[1:], _table("later", new, ["notes/"]))
    assert _get(server, "/documents", new).status_code == 200


def test_an_unreadable_tokens_file_refuses_everyone(server, corpus_settings):
    corpus_settings.tokens_file.write_text("[[token]\nname = ", encoding="utf-8")
    reply = _get(server, "/documents", ALL_TOKEN)
    assert reply.status_code == 503
    assert _get(server, "/health").status_code == 200
    _write_tokens(corpus_settings.tokens_file, *TABLES)
    assert _get(server, "/documents", ALL_TOKEN).status_code == 200


# --- what a notes/ token may read ---

def _assert_no_reports(text: str, settings: Settings) -> None:
    assert HIDDEN not in text
    assert "reports/" not in text
    for doc_id in _reports(settings):
        assert doc_id not in text


def test_a_notes_token_never_sees_reports(server, corpus_settings):
    reports = _reports(corpus_settings)
    assert reports
    # The everything token finds them, so the probes below can fail.
    found = _get(server, "/search", ALL_TOKEN, q=f"{SECRET} figure", k=10, mode="bm25").json()
    assert any(r["doc_id"].startswith("reports/") for r in found["results"])
    assert found["answer"] is not None and found["answer"]["doc_id"].startswith("reports/")
    listed = _get(server, "/documents", ALL_TOKEN).json()
    assert {d["doc_id"] for d in listed["documents"]} >= set(reports)

    for mode in ("bm25", "dense", "hybrid"):
        for reply in (_get(server, "/search", NOTES_TOKEN, q=f"{SECRET} figure", k=100, mode=mode),
                      httpx.post(server + "/search", headers=_auth(NOTES_TOKEN), timeout=30,
                                 json={"query": f"{SECRET} figure", "k": 100, "mode": mode}),
                      # a request filter naming reports/ is AND-ed with the token's: nothing
                      httpx.post(server + "/search", headers=_auth(NOTES_TOKEN), timeout=30,
                                 json={"query": f"{SECRET} figure", "k": 100, "mode": mode,
                                       "filter": {"path": "reports/"}}),
                      _get(server, "/search", NOTES_TOKEN, q=SECRET, mode=mode, **{"filter.path": "reports/"}),
                      _get(server, "/search", NOTES_TOKEN, q=SECRET, mode=mode,
                           **{"filter.doc_ids": reports[0]})):
            assert reply.status_code == 200, reply.text
            _assert_no_reports(reply.text, corpus_settings)
            data = reply.json()
            assert all(r["doc_id"].startswith("notes/") for r in data["results"])
    # notes/ is still searchable
    notes = _get(server, "/search", NOTES_TOKEN, q="the", k=100, mode="dense").json()["results"]
    assert notes and all(r["doc_id"].startswith("notes/") for r in notes)

    listed = _get(server, "/documents", NOTES_TOKEN)
    assert listed.status_code == 200
    _assert_no_reports(listed.text, corpus_settings)
    assert listed.json()["count"] == len(listed.json()["documents"]) > 0
    assert _get(server, "/documents", NOTES_TOKEN, **{"filter.path": "reports/"}).json() == \
        {"count": 0, "documents": []}

    missing = _get(server, "/documents/reports/no-such-file.txt", NOTES_TOKEN)
    assert missing.status_code == 404
    before = _refusals(server, "outside")
    for doc_id in reports:
        assert _get(server, f"/documents/{doc_id}", ALL_TOKEN).status_code == 200
        for params in ({}, {"start": 0, "end": 10}, {"start": 0, "end": 10**6}, {"start": 5, "context": 2000}):
            reply = _get(server, f"/documents/{doc_id}", NOTES_TOKEN, **params)
            assert reply.status_code == 404, reply.text
            # the same answer as a document that does not exist
            unknown = _get(server, f"/documents/{doc_id}.nope", NOTES_TOKEN, **params)
            assert reply.json()["detail"] == unknown.json()["detail"].replace(".nope", "")
            _assert_no_reports(reply.text.replace(doc_id, ""), corpus_settings)
    assert _refusals(server, "outside") == before + 8 * len(reports)  # the .nope probes lie under reports/ too
    note = listed.json()["documents"][0]["doc_id"]
    assert _get(server, f"/documents/{note}", NOTES_TOKEN, start=0, end=5).status_code == 200


def test_several_prefixes_are_any_of(corpus_settings, tmp_path):
    first_report = _reports(corpus_settings)[0]
    _write_tokens(corpus_settings.tokens_file, _table("two", NOTES_TOKEN, ["notes/", first_report]),
                  _table("all", ALL_TOKEN, [""]))
    with serve_in_thread(create_app(corpus_settings, embedder=HashingEmbedder(dim=64))) as base:
        listed = {d["doc_id"] for d in _get(base, "/documents", NOTES_TOKEN).json()["documents"]}
        assert first_report in listed and not any(d.startswith("reports/") and d != first_report for d in listed)
        results = _get(base, "/search", NOTES_TOKEN, q=SECRET, k=100, mode="bm25").json()["results"]
        assert {r["doc_id"] for r in results if r["doc_id"].startswith("reports/")} == {first_report}
        assert _get(base, f"/documents/{_reports(corpus_settings)[1]}", NOTES_TOKEN).status_code == 404


def test_a_generated_answer_is_written_from_notes_only(corpus_settings, scripted_llm):
    from askcorpus.generate import generator_for

    llm, url = scripted_llm
    llm.say("Nothing to add [1].")
    settings = corpus_settings.with_overrides(llm_url=url, llm_model="scripted-model")
    with serve_in_thread(create_app(settings, embedder=HashingEmbedder(dim=64),
                                    generator=generator_for(settings))) as base:
        reply = httpx.post(base + "/search", headers=_auth(NOTES_TOKEN), timeout=60,
                           json={"query": f"{SECRET} figure", "k": 5, "generate": True})
        assert reply.status_code == 200, reply.text
        assert llm.requests, "the model was asked"
        prompt = str(llm.requests[-1])
        assert HIDDEN not in prompt and "reports/" not in prompt
        _assert_no_reports(reply.text, corpus_settings)
        # and the everything token's prompt does hold them (the check above can fail)
        httpx.post(base + "/search", headers=_auth(ALL_TOKEN), timeout=60,
                   json={"query": f"{SECRET} figure", "k": 5, "generate": True, "mode": "bm25"})
        assert HIDDEN in str(llm.requests[-1])


def test_mcp_needs_a_token(server):
    pytest.importorskip("mcp")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    assert httpx.post(server + "/mcp", json=body, headers=headers, timeout=30).status_code == 401
    reply = httpx.post(server + "/mcp", json=body, headers={**headers, **_auth("wrong")}, timeout=30)
    assert reply.status_code == 401


def _mcp_exchange(server: str, token: str, report: str) -> tuple[set, list]:
    """Over streamable HTTP with `token`: the tool names, then what search, list_documents and read_document (of
    `report`, a document under reports/) answer, each as text."""
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def exchange():
        async with create_mcp_http_client(headers=_auth(token)) as client:
            async with streamable_http_client(server + "/mcp", http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = {tool.name for tool in (await session.list_tools()).tools}
                    replies = [await session.call_tool("search", {"query": f"{SECRET} figure", "k": 10,
                                                                  "mode": "bm25"}),
                               await session.call_tool("list_documents", {}),
                               await session.call_tool("read_document", {"doc_id": report}),
                               await session.call_tool("read_document", {"doc_id": report, "start": 0, "end": 5})]
                    return tools, replies

    return anyio.run(exchange)


def test_mcp_tools_answer_within_the_tokens_prefixes(server, corpus_settings):
    pytest.importorskip("mcp")
    report = sorted(_reports(corpus_settings))[0]
    tools, everything = _mcp_exchange(server, ALL_TOKEN, report)
    assert {"search", "read_document", "list_documents"} <= tools
    assert HIDDEN in everything[0].content[0].text and "reports/" in everything[1].content[0].text
    assert not everything[2].is_error and not everything[3].is_error
    tools, notes = _mcp_exchange(server, NOTES_TOKEN, report)
    assert {"search", "read_document", "list_documents"} <= tools
    for reply in notes[:2]:
        assert not reply.is_error
        _assert_no_reports(reply.content[0].text, corpus_settings)
    for reply in notes[2:]:  # a document outside the prefixes is not there for this token
        assert reply.is_error and "no document" in reply.content[0].text
        assert HIDDEN not in reply.content[0].text
    assert '"count":' in notes[1].content[0].text.replace(" ", "")


# --- admin ---

def test_admin_tokens_reindex_and_read_tokens_do_not(server):
    for token in (NOTES_TOKEN, ALL_TOKEN):
        reply = httpx.post(server + "/admin/reindex", headers=_auth(token), timeout=60)
        assert reply.status_code == 403, reply.text
    assert httpx.post(server + "/admin/reindex", timeout=60).status_code == 401
    assert httpx.post(server + "/admin/reindex", headers=_auth("wrong"), timeout=60).status_code == 401
    for token in (ADMIN_TOKEN, ENV_ADMIN):
        reply = httpx.post(server + "/admin/reindex", headers=_auth(token), timeout=60)
        assert reply.status_code == 200, reply.text
    # uploads: a read token is refused before anything is stored
    reply = httpx.post(server + "/documents", headers=_auth(ALL_TOKEN), timeout=60,
                       files={"file": ("x.txt", b"hello there", "text/plain")})
    assert reply.status_code == 403
    reply = httpx.post(server + "/documents", headers=_auth(ADMIN_TOKEN), timeout=60,
                       files={"file": ("x.txt", b"hello there, a new note", "text/plain")},
                       data={"path": "notes/"})
    assert reply.status_code == 202, reply.text


# --- the file and the command ---

def test_token_add_writes_a_hash_that_then_authenticates(corpus_settings, tmp_path, capsys):
    from askcorpus.cli import main

    path = tmp_path / "new-tokens.toml"
    assert main(["token", "add", "carol", "--read", "notes/", "--file", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    assert token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert main(["token", "add", "dave", "--read", "", "--admin", "--file", str(path)]) == 0
    admin = capsys.readouterr().out.strip()
    assert main(["token", "add", "carol", "--read", "x/", "--file", str(path)]) == 2  # names are unique

    tokens = Tokens(path)
    assert tokens.resolve(token).name == "carol" and tokens.resolve(token).read == ("notes/",)
    assert tokens.resolve(admin).admin and tokens.resolve(admin).reads_everything
    assert tokens.resolve(token + "x") is None

    settings = corpus_settings.with_overrides(tokens_file=path)
    with serve_in_thread(create_app(settings, embedder=HashingEmbedder(dim=64))) as base:
        listed = _get(base, "/documents", token)
        assert listed.status_code == 200
        assert listed.json()["documents"] and all(d["doc_id"].startswith("notes/")
                                                  for d in listed.json()["documents"])
        assert _get(base, "/documents", "not-it").status_code == 401


def test_every_stored_hash_is_compared_in_constant_time(tmp_path, monkeypatch):
    path = tmp_path / "tokens.toml"
    _write_tokens(path, *TABLES)
    tokens = Tokens(path, admin_token=ENV_ADMIN)
    calls = []
    real = callers.hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(callers.hmac, "compare_digest", recording)
    stored = {token_hash(t) for t in (NOTES_TOKEN, ALL_TOKEN, ADMIN_TOKEN, ENV_ADMIN)}
    for presented, name in ((NOTES_TOKEN, "notes"), ("x", None), ("y" * 10_000, None), (ENV_ADMIN,
                                                                                         "ASKCORPUS_TOKEN")):
        calls.clear()
        found = tokens.resolve(presented)
        assert (found.name if found else None) == (name if name != "ASKCORPUS_TOKEN" else "ASKCORPUS_ADMIN_TOKEN")
        # every stored hash, even after a match on the first; always two 64-digit strings
        assert {b for _, b in calls} == stored and len(calls) == len(stored)
        assert all(a == token_hash(presented) and len(a) == len(b) == 64 for a, b in calls)


@pytest.mark.parametrize("text, words", [
    ('[[token]]\nname = "a"\nsha256 = "secret-in-clear"\nread = [""]\n', "sha256"),
    ('[[token]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nread = "notes/"\n', "read"),
    ('[[token]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nread = [""]\nadmin = "yes"\n', "admin"),
    ('[[token]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nread = [""]\nwrite = true\n', "unknown key"),
    (('[[token]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nread = [""]\n') * 2, "taken"),
    ("[[token]\n", "TOML"),
])
def test_a_malformed_tokens_file_fails_at_start(tmp_path, text, words):
    from askcorpus.errors import ConfigError

    path = tmp_path / "tokens.toml"
    path.write_text(text, encoding="utf-8")
    settings = Settings(corpus=SEEDS, index=tmp_path / "index", model="hashing-64", tokens_file=path)
    with pytest.raises(ConfigError, match=words):
        create_app(settings, embedder=HashingEmbedder(dim=64))


def test_tokens_off_by_default_needs_none(fake_settings, fake_embedder):
    build_index(fake_settings, fake_embedder)
    with serve_in_thread(create_app(fake_settings.with_overrides(reload_interval=0), embedder=fake_embedder)) \
            as base:
        assert httpx.get(base + "/documents", timeout=30).status_code == 200
        assert httpx.get(base + "/search", params={"q": "solar"}, timeout=30).status_code == 200


def test_serving_beyond_loopback_without_tokens_warns(fake_settings, caplog):
    from askcorpus.api.app import _log_serving

    class Index:
        path, built_at, documents, passages = Path("build-1"), "now", {}, []

    class Holder:
        class searcher:
            index = Index()

        class embedder:
            name, backend = "hashing-64", "hashing"

    with caplog.at_level(logging.WARNING, logger="askcorpus.api"):
        _log_serving(fake_settings.with_overrides(host="0.0.0.0"), Holder, None)
    assert any("ASKCORPUS_TOKENS_FILE" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="askcorpus.api"):
        _log_serving(fake_settings.with_overrides(host="127.0.0.1"), Holder, None)
        _log_serving(fake_settings.with_overrides(host="::1"), Holder, None)
        _log_serving(fake_settings.with_overrides(host="0.0.0.0", tokens_file=Path("t.toml")), Holder, None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


