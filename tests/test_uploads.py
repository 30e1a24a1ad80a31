"""Uploads over HTTP against a real server (uvicorn in a thread, fake embedder): every status, names that try to
escape the corpus folder, a zip bomb, concurrent uploads and deletions with searches running, a SIGKILL mid-way."""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from askcorpus import store
from askcorpus.api import create_app
from askcorpus.config import Settings
from askcorpus.watch import PENDING_FILE

from conftest import free_port, serve_in_thread, start_server, stop_server

TOKEN = "upload-token-5678"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOTE = b"Zorblaxian marmalade festivals are held every spring in the valley of Quenth.\n"


@pytest.fixture
def settings(tmp_path, fake_seeds_build) -> Settings:
    shutil.copytree(fake_seeds_build / "corpus", tmp_path / "corpus")
    shutil.copytree(fake_seeds_build / "index", tmp_path / "index")
    return Settings(corpus=tmp_path / "corpus", index=tmp_path / "index", model="hashing-64",
                    rerank_model="overlap", admin_token=TOKEN, upload_max_bytes=65_536)


@pytest.fixture
def base(settings, fake_embedder):
    with serve_in_thread(create_app(settings, embedder=fake_embedder)) as url:
        yield url


def _post(base: str, name: str, data: bytes, *, headers=AUTH, path: str | None = None, **params) -> httpx.Response:
    form = {"path": path} if path is not None else None
    return httpx.post(base + "/documents", files={"file": (name, data)}, data=form, headers=headers,
                      params=params, timeout=30)


def _top(base: str, query: str) -> str | None:
    results = httpx.get(base + "/search", params={"q": query, "mode": "bm25", "k": 1}, timeout=30).json()["results"]
    return results[0]["doc_id"] if results else None


def _indexed(index: Path) -> list[str]:
    """The document ids of the index's current build, as its manifest lists them."""
    return [d["doc_id"] for d in store.read_manifest(store.current_build(index))["documents"]]


def _corpus_files(settings: Settings) -> set[str]:
    return {p.relative_to(settings.corpus).as_posix() for p in settings.corpus.rglob("*") if p.is_file()}


def _docx(text: str = "A Word document about zorblaxian festivals.") -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- statuses


def test_upload_is_202_then_searchable_and_wait_answers_when_it_is(base, settings):
    response = _post(base, "zz_festival.txt", NOTE)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["doc_id"] == "zz_festival.txt" and body["action"] == "added" and body["build_number"] >= 1
    assert (settings.corpus / "zz_festival.txt").read_bytes() == NOTE
    waited = _post(base, "zz_word.docx", _docx(), wait="true")
    assert waited.status_code == 200, waited.text
    assert waited.json()["searchable"] is True and waited.json()["build"]
    assert _top(base, "zorblaxian marmalade quenth") == "zz_festival.txt"  # the first one is in by now too
    health = httpx.get(base + "/health").json()
    assert health["live"]["builds_finished"] >= waited.json()["build_number"]
    assert health["live"]["last_error"] is None
    assert not (settings.index / PENDING_FILE).exists()


def test_tokens(base, settings, fake_embedder, tmp_path):
    assert _post(base, "a.txt", NOTE, headers={}).status_code == 401
    wrong = _post(base, "a.txt", NOTE, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
    assert httpx.delete(base + "/documents/seed.txt").status_code == 401
    assert httpx.put(base + "/documents/x.txt", files={"file": ("x.txt", NOTE)}).status_code == 401
    assert "a.txt" not in _corpus_files(settings)
    disabled = Settings(corpus=settings.corpus, index=tmp_path / "index2", model="hashing-64", rerank_model="overlap")
    shutil.copytree(settings.index, disabled.index)
    with serve_in_thread(create_app(disabled, embedder=fake_embedder)) as other:
        refused = _post(other, "a.txt", NOTE)
        assert refused.status_code == 403 and "disabled" in refused.json()["detail"]


def test_size_limit_is_413_below_and_above_the_middleware(base, settings):
    assert _post(base, "big.txt", b"word " * 20_000).status_code == 413  # 100 kB > 64 KiB, streamed through
    huge = _post(base, "huge.txt", b"w" * (settings.upload_max_bytes + 200_000))  # past limit + framing
    assert huge.status_code == 413
    assert _post(base, "fits.txt", b"quokka " * 9000).status_code == 202  # 63 kB: more than max_body_bytes
    assert "big.txt" not in _corpus_files(settings) and "huge.txt" not in _corpus_files(settings)
    # The search routes keep their small limit.
    assert httpx.post(base + "/search", json={"query": "x" * 20_000}).status_code == 413


@pytest.mark.parametrize("name,data,says", [
    ("notes.exe", b"MZ\x90\x00", "unsupported format"),
    ("noext", b"plain text", "unsupported format"),
    ("report.pdf", b"just some text, not a PDF", "not a PDF"),
    ("picture.txt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG"),
    ("binary.md", b"abc\x00\x01\x02def", "binary"),
    ("sheet.docx", None, "not a Word document"),
    ("fake.docx", b"this is text named .docx", "not a ZIP"),
])
def test_wrong_format_is_415(base, settings, name, data, says):
    if data is None:  # a real ZIP (an .xlsx, say) under a .docx name
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("xl/workbook.xml", "<workbook/>")
        data = out.getvalue()
    response = _post(base, name, data)
    assert response.status_code == 415, response.text
    assert says in response.json()["detail"]
    assert name not in _corpus_files(settings)


@pytest.mark.parametrize("name,data,says", [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage", "cannot be read"),
    ("broken.docx", b"PK\x03\x04" + b"\x00" * 100, "Word document could not be read"),
    ("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "not valid UTF-8"),
    ("empty.md", b"   \n", "empty"),
])
def test_corrupt_file_is_422_with_its_reason_and_never_stored(base, settings, name, data, says):
    before = httpx.get(base + "/health").json()["live"]["builds_started"]
    response = _post(base, name, data)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
    assert name not in _corpus_files(settings)
    assert httpx.get(base + "/health").json()["live"]["builds_started"] == before  # nothing was built


def test_zip_bomb_named_docx_is_refused_without_expanding_it(base, settings):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\x00" * (40 << 20))  # 40 MB of zeros in ~40 kB
    data = out.getvalue()
    assert len(data) < 65_536
    started = time.perf_counter()
    response = _post(base, "bomb.docx", data)
    assert response.status_code == 422 and "zip bomb" in response.json()["detail"], response.text
    assert time.perf_counter() - started < 5
    assert "bomb.docx" not in _corpus_files(settings)


def test_overwrite_needs_asking_and_put_delete_need_a_known_id(base, settings):
    assert _post(base, "zz.txt", NOTE).status_code == 202
    conflict = _post(base, "zz.txt", b"other text about wombats\n")
    assert conflict.status_code == 409 and "overwrite=true" in conflict.json()["detail"]
    assert (settings.corpus / "zz.txt").read_bytes() == NOTE
    replaced = _post(base, "zz.txt", b"other text about wombats\n", overwrite="true", wait="true")
    assert replaced.status_code == 200 and replaced.json()["action"] == "replaced"
    assert _top(base, "wombats") == "zz.txt"
    put = httpx.put(base + "/documents/zz.txt", files={"file": ("x", b"now about numbats\n")}, headers=AUTH,
                    params={"wait": "true"}, timeout=30)
    assert put.status_code == 200 and put.json()["action"] == "replaced", put.text
    assert _top(base, "numbats") == "zz.txt"
    assert httpx.put(base + "/documents/unknown.txt", files={"file": ("x", NOTE)}, headers=AUTH).status_code == 404
    assert httpx.delete(base + "/documents/unknown.txt", headers=AUTH).status_code == 404
    gone = httpx.delete(base + "/documents/zz.txt", headers=AUTH, params={"wait": "true"}, timeout=30)
    assert gone.status_code == 200 and gone.json()["searchable"] is True
    assert "zz.txt" not in _corpus_files(settings) and _top(base, "numbats") != "zz.txt"
    assert httpx.get(base + "/documents/zz.txt").status_code == 404


def test_upload_into_a_folder(base, settings):
    assert _post(base, "q1.txt", NOTE, path="reports/2026/").json()["doc_id"] == "reports/2026/q1.txt"
    assert _post(base, "ignored.txt", NOTE, path="reports/summary.md", wait="true").status_code == 200
    assert {"reports/2026/q1.txt", "reports/summary.md"} <= _corpus_files(settings)
    listed = set(_indexed(settings.index))
    assert {"reports/2026/q1.txt", "reports/summary.md"} <= listed


ESCAPES = ["../escape.txt", "a/../../escape.txt", "/tmp/escape.txt", "C:/escape.txt", "a\\..\\escape.txt",
           "nul\x00.txt", "\uff0e\uff0e/escape.txt", "a\uff0fb.txt", "\u2024\u2024/escape.txt", "\u202etxt.exe.txt",
           "zero\u200bwidth.txt", ".hidden.txt", "a/./b.txt", "a//b.txt", " lead.txt", "x" * 300 + ".txt",
           "line\nbreak.txt"]


@pytest.mark.parametrize("path", ESCAPES, ids=lambda p: repr(p)[:30])
def test_names_that_try_to_escape_are_422_and_write_nothing(base, settings, path):
    outside = set(settings.corpus.parent.rglob("*"))
    response = _post(base, "fine.txt", NOTE, path=path)
    assert response.status_code == 422, response.text
    assert set(settings.corpus.parent.rglob("*")) == outside
    assert not Path("/tmp/escape.txt").exists()


@pytest.mark.parametrize("filename", ["../escape.txt", "a/b.txt", "..\\escape.txt"])
def test_a_file_name_with_folders_is_refused(base, settings, filename):
    assert _post(base, filename, NOTE).status_code == 422
    assert _corpus_files(settings) == {p.name for p in settings.corpus.iterdir()}


def test_a_linked_folder_leading_outside_is_refused(base, settings, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (settings.corpus / "linked").symlink_to(tmp_path / "elsewhere")
    assert _post(base, "x.txt", NOTE, path="linked/x.txt").status_code == 422
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert httpx.delete(base + "/documents/..%2F..%2Fetc%2Fpasswd", headers=AUTH).status_code in (404, 422)


def test_unicode_names_in_any_normal_form_are_one_document(base, settings):
    composed = _post(base, "caf\u00e9.txt", NOTE)
    assert composed.status_code == 202
    decomposed = _post(base, "cafe\u0301.txt", NOTE)
    assert decomposed.status_code == 409  # the same name, composed


# ---------------------------------------------------------------------------------------------- nothing lost


def _word(i: int) -> str:
    return "qz" + "".join("bcdfghjklmnpqrstvwxz"[int(d)] for d in f"{i:03d}") + "marker"


def _wait_until_built(base: str, ticket: int, seconds: float = 60.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        live = httpx.get(base + "/health", timeout=10).json()["live"]
        if live["builds_finished"] >= ticket and not live["pending"] and not live["building"]:
            return live
        time.sleep(0.1)
    raise AssertionError(f"build {ticket} not finished within {seconds} s: {live}")


def test_concurrent_uploads_and_deletes_with_searches_end_up_indexed_exactly_once(base, settings):
    for i in range(10):  # documents the burst then deletes
        assert _post(base, "n.txt", f"{_word(900 + i)} an old note.\n".encode(), path=f"old/{i}.txt").status_code == 202
    searches: list[int] = []
    stop = False

    def search_loop():
        while not stop:
            searches.append(httpx.get(base + "/search", params={"q": "festival valley", "k": 3}, timeout=30)
                            .status_code)

    def upload(i: int) -> httpx.Response:
        return _post(base, "n.txt", f"Note {i}: {_word(i)} about the valley.\n".encode(), path=f"new/{i}.txt")

    def delete(i: int) -> httpx.Response:
        return httpx.delete(base + f"/documents/old/{i}.txt", headers=AUTH, timeout=30)

    with ThreadPoolExecutor(max_workers=16) as pool:
        searchers = [pool.submit(search_loop) for _ in range(2)]
        futures = [pool.submit(upload, i) for i in range(50)] + [pool.submit(delete, i) for i in range(10)]
        answers = [f.result(timeout=120) for f in futures]
        stop = True
        for f in searchers:
            f.result(timeout=60)
    assert [a.status_code for a in answers] == [202] * 60, [a.text for a in answers if a.status_code != 202]
    live = _wait_until_built(base, max(a.json()["build_number"] for a in answers))
    assert live["builds_failed"] == 0
    assert searches and set(searches) == {200}
    ids = _indexed(settings.index)
    assert len(ids) == len(set(ids))
    assert {i for i in ids if i.startswith("new/")} == {f"new/{i}.txt" for i in range(50)}
    assert not any(i.startswith("old/") for i in ids)
    for i in (0, 17, 49):
        assert _top(base, _word(i)) == f"new/{i}.txt"
    assert not list(settings.corpus.rglob(".upload-*"))


@pytest.mark.slow
def test_sigkill_mid_upload_then_restart_has_every_acknowledged_upload(tmp_path, fake_seeds_build):
    shutil.copytree(fake_seeds_build / "corpus", tmp_path / "corpus")
    shutil.copytree(fake_seeds_build / "index", tmp_path / "index")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ASKCORPUS_MODEL": "hashing-64", "ASKCORPUS_RERANK_MODEL": "overlap",
           "ASKCORPUS_ADMIN_TOKEN": TOKEN, "ASKCORPUS_CORPUS": str(tmp_path / "corpus"),
           "ASKCORPUS_INDEX": str(tmp_path / "index")}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(port, ["--watch"], env, tmp_path / "first.log")
    acknowledged: list[str] = []
    bodies = {f"k/{i}.txt": f"Kill test {i}: {_word(i)}.\n".encode() * 200 for i in range(200)}

    def upload(name: str) -> None:
        try:
            response = _post(base, name.split("/")[1], bodies[name], path=name)
        except httpx.HTTPError:
            return
        if response.status_code == 202:
            acknowledged.append(name)

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(upload, name) for name in bodies]
            deadline = time.monotonic() + 60
            while len(acknowledged) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)  # mid-upload, most likely mid-build too
            process.wait(timeout=10)
            for f in futures:
                f.result(timeout=60)
    finally:
        stop_server(process)
    assert len(acknowledged) >= 40
    corpus = tmp_path / "corpus"
    for name in acknowledged:
        assert (corpus / name).read_bytes() == bodies[name]
    for path in (corpus / "k").glob("*.txt"):  # never a half-written file under its name
        assert path.read_bytes() == bodies["k/" + path.name]
    marked = (tmp_path / "index" / PENDING_FILE).exists()  # acknowledged changes waited for a build
    process = start_server(port, [], env, tmp_path / "second.log")  # not watching: the marker alone builds
    try:
        _wait_until_built(base, 1 if marked else 0)
        ids = set(_indexed(tmp_path / "index"))
        assert httpx.get(base + "/health").json()["build"] == store.current_build(tmp_path / "index").name
        assert set(acknowledged) <= ids
        assert not list(corpus.rglob(".upload-*"))
        assert not (tmp_path / "index" / PENDING_FILE).exists()
    finally:
        stop_server(process)
