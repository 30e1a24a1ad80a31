"""Building the index: incremental by content hash, atomic under kills and concurrent builds, strict on load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from askcorpus import store
from askcorpus.build import build_index
from askcorpus.embed import HashingEmbedder
from askcorpus.engine import open_searcher
from askcorpus.errors import EmptyCorpusError, IndexFormatError, IndexNotFoundError, ModelMismatchError


class CountingEmbedder(HashingEmbedder):
    """The hashing fake, recording every text it embeds."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.name = "hashing-64"
        self.encoded: list[str] = []

    def encode(self, texts, batch_size=32, progress=False):
        self.encoded.extend(texts)
        return super().encode(texts, batch_size, progress)


def _passage_texts(settings, doc_id):
    index = store.load(settings.index)
    return [p.text for p in index.passages if p.doc_id == doc_id]


def test_first_build_indexes_every_seed(fake_settings):
    embedder = CountingEmbedder()
    report = build_index(fake_settings, embedder)
    assert sorted(report.added) == sorted(p.name for p in fake_settings.corpus.iterdir())
    assert report.embedded_passages == report.passages == len(embedder.encoded) > 0
    index = store.load(fake_settings.index)
    assert len(index.passages) == report.passages == index.vectors.shape[0] == len(index.dense)
    for passage in index.passages:
        assert index.documents[passage.doc_id].text[passage.start : passage.end] == passage.text
    manifest = index.manifest
    assert manifest["format_version"] == store.FORMAT_VERSION
    assert manifest["model"] == {"name": "hashing-64", "dim": 64, "max_tokens": 254}
    assert manifest["chunking"]["size"] == fake_settings.chunk_tokens
    assert {d["doc_id"]: d["sha256"] for d in manifest["documents"]}["000_455900a64ecf7b1d.txt"]


def test_incremental_build_embeds_only_what_changed(fake_settings):
    build_index(fake_settings, CountingEmbedder())
    corpus = fake_settings.corpus
    (corpus / "new" ).mkdir()
    (corpus / "new" / "added.md").write_text("A brand new document about Kunar province.\n\nIt has two paragraphs.",
                                             encoding="utf-8")
    changed = corpus / "000_455900a64ecf7b1d.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nAn appended paragraph.", encoding="utf-8")
    (corpus / "003_dc03f2a25593d1c1.txt").unlink()
    before = store.load(fake_settings.index)
    unchanged_vectors = {
        p.text: before.vectors[i].copy() for i, p in enumerate(before.passages) if p.doc_id.startswith("004")
    }

    embedder = CountingEmbedder()
    report = build_index(fake_settings, embedder)
    assert report.added == ["new/added.md"]
    assert report.changed == ["000_455900a64ecf7b1d.txt"]
    assert report.removed == ["003_dc03f2a25593d1c1.txt"]
    assert sorted(report.unchanged) == ["001_6ed2f81b91fb4ea5.txt", "002_820a792f755c5fcd.txt",
                                        "004_9b6637ebe242a1f9.txt"]
    expected = _passage_texts(fake_settings, "new/added.md") + _passage_texts(fake_settings, "000_455900a64ecf7b1d.txt")
    assert sorted(embedder.encoded) == sorted(expected)
    assert report.embedded_passages == len(expected)
    after = store.load(fake_settings.index)
    assert "003_dc03f2a25593d1c1.txt" not in after.documents
    for i, passage in enumerate(after.passages):
        if passage.doc_id.startswith("004"):
            np.testing.assert_array_equal(after.vectors[i], unchanged_vectors[passage.text])
    searcher = open_searcher(fake_settings, CountingEmbedder())
    top = searcher.search("Kunar province brand new", k=1, mode="bm25").results[0]
    assert top.passage.doc_id == "new/added.md"

    again = build_index(fake_settings, CountingEmbedder())
    assert again.up_to_date and again.embedded_passages == 0 and again.index_path == after.path


def _identities(index):
    return [(p.doc_id, p.start, p.end) for p in index.passages]


def test_adding_documents_extends_the_previous_hnsw_graph(fake_settings):
    settings = fake_settings.model_copy(update={"index_kind": "hnsw"})
    first = build_index(settings, CountingEmbedder())
    assert first.extended_vectors == 0
    before = store.load(settings.index)
    # Names that sort first and last: either way the new passages follow the previous ones.
    (settings.corpus / "000_aaa.md").write_text("Early notes on Kunar province.\n\nA second paragraph.",
                                                encoding="utf-8")
    (settings.corpus / "zzz.md").write_text("Late notes on Nangarhar province.", encoding="utf-8")
    report = build_index(settings, CountingEmbedder())
    assert report.added == ["000_aaa.md", "zzz.md"] and report.extended_vectors == len(before.passages)
    assert "graph extended" in report.summary()
    after = store.load(settings.index)
    assert _identities(after)[: len(before.passages)] == _identities(before)
    assert [d["doc_id"] for d in after.manifest["documents"]][-2:] == ["000_aaa.md", "zzz.md"]
    assert len(after.dense) == len(after.passages) == after.vectors.shape[0]
    # Every stored vector finds its own passage first: the graph's ids are the passage rows, old and new.
    hits = after.dense.search(np.asarray(after.vectors), 1)
    assert [h[0].passage_id for h in hits] == list(range(len(after.passages)))
    # The same corpus built from nothing ranks the same passages for a question.
    shutil.rmtree(settings.index)
    fresh = build_index(settings, CountingEmbedder())
    assert fresh.extended_vectors == 0
    rebuilt = store.load(settings.index)
    query = CountingEmbedder().encode(["Kunar province notes"])
    top = lambda index: [_identities(index)[h.passage_id] for h in index.dense.search(query, 5)[0]]
    assert top(after) == top(rebuilt)


@pytest.mark.parametrize("edit", ["change", "remove"])
def test_changing_or_removing_a_document_builds_the_hnsw_graph_again(fake_settings, edit):
    settings = fake_settings.model_copy(update={"index_kind": "hnsw"})
    build_index(settings, CountingEmbedder())
    target = settings.corpus / "001_6ed2f81b91fb4ea5.txt"
    if edit == "change":
        target.write_text(target.read_text(encoding="utf-8") + "\n\nOne more paragraph.", encoding="utf-8")
    else:
        target.unlink()
    report = build_index(settings, CountingEmbedder())
    assert report.extended_vectors == 0
    after = store.load(settings.index)
    hits = after.dense.search(np.asarray(after.vectors), 1)
    assert [h[0].passage_id for h in hits] == list(range(len(after.passages)))


def test_a_flat_index_is_not_extended_and_other_hnsw_settings_rebuild(fake_settings):
    build_index(fake_settings, CountingEmbedder())
    (fake_settings.corpus / "zzz.md").write_text("Late notes on Nangarhar province.", encoding="utf-8")
    assert build_index(fake_settings, CountingEmbedder()).extended_vectors == 0  # auto: flat at this size
    settings = fake_settings.model_copy(update={"index_kind": "hnsw", "hnsw_m": 16})
    build_index(settings, CountingEmbedder())
    (fake_settings.corpus / "zzz2.md").write_text("More notes on Kunar.", encoding="utf-8")
    other_m = settings.model_copy(update={"hnsw_m": 32})
    assert build_index(other_m, CountingEmbedder()).extended_vectors == 0


def test_changing_chunking_or_model_rebuilds_everything_and_says_why(fake_settings):
    build_index(fake_settings, CountingEmbedder())
    embedder = CountingEmbedder()
    report = build_index(fake_settings.with_overrides(chunk_tokens=96), embedder)
    assert "chunking changed" in report.full_rebuild_reason
    assert report.embedded_passages == report.passages
    other = HashingEmbedder(dim=32)
    report = build_index(fake_settings.with_overrides(chunk_tokens=96, model="hashing-32"), other)
    assert "model changed" in report.full_rebuild_reason
    assert store.load(fake_settings.index).manifest["model"]["dim"] == 32


def test_a_new_reader_version_reads_every_document_again(fake_settings, monkeypatch):
    """Titles and PDF text come from the readers: an index made by older readers is rebuilt, not reused."""
    import askcorpus.build as build

    build_index(fake_settings, CountingEmbedder())
    monkeypatch.setattr(build, "READER_VERSION", build.READER_VERSION + 1)
    embedder = CountingEmbedder()
    report = build_index(fake_settings, embedder)
    assert "documents are read differently now" in report.full_rebuild_reason
    assert report.embedded_passages == report.passages > 0
    assert build_index(fake_settings, CountingEmbedder()).up_to_date


def test_bad_files_are_skipped_counted_and_the_rest_indexed(fake_settings, caplog):
    (fake_settings.corpus / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (fake_settings.corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with caplog.at_level("WARNING"):
        report = build_index(fake_settings, CountingEmbedder())
    assert {s.doc_id for s in report.skipped} == {"broken.pdf", "latin1.txt"}
    assert len(report.added) == 5
    assert "skipped       2" in report.summary() and "broken.pdf" in report.summary()
    assert "latin1.txt" in caplog.text


def test_a_document_that_turns_bad_is_removed_and_the_rest_kept(fake_settings):
    build_index(fake_settings, CountingEmbedder())
    (fake_settings.corpus / "001_6ed2f81b91fb4ea5.txt").write_bytes(b"\x00\x01binary now")
    report = build_index(fake_settings, CountingEmbedder())
    assert report.removed == ["001_6ed2f81b91fb4ea5.txt"]
    assert [s.doc_id for s in report.skipped] == ["001_6ed2f81b91fb4ea5.txt"]
    assert len(store.load(fake_settings.index).documents) == 4


def test_an_empty_corpus_keeps_the_previous_index(fake_settings):
    build_index(fake_settings, CountingEmbedder())
    good = store.current_build(fake_settings.index)
    for path in fake_settings.corpus.iterdir():
        path.write_bytes(b"")
    with pytest.raises(EmptyCorpusError, match="previous index"):
        build_index(fake_settings, CountingEmbedder())
    assert store.current_build(fake_settings.index) == good
    assert len(store.load(fake_settings.index).documents) == 5


def test_loading_refuses_other_models_versions_and_damage(fake_settings):
    with pytest.raises(IndexNotFoundError, match="askcorpus index"):
        store.load(fake_settings.index)
    build_index(fake_settings, CountingEmbedder())
    with pytest.raises(ModelMismatchError, match="hashing-64"):
        store.load(fake_settings.index, expected_model="all-MiniLM-L6-v2")
    manifest_path = store.current_build(fake_settings.index) / store.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 999
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="format version 999"):
        store.load(fake_settings.index)
    manifest_path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="damaged"):
        store.load(fake_settings.index)
    # A damaged index is rebuilt from scratch, saying why.
    report = build_index(fake_settings, CountingEmbedder())
    assert "cannot be read" in report.full_rebuild_reason
    assert store.load(fake_settings.index).manifest["format_version"] == store.FORMAT_VERSION


_BUILD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from askcorpus import build, store
    from askcorpus.config import Settings
    from askcorpus.embed import HashingEmbedder

    corpus, index, phase = sys.argv[1:4]
    settings = Settings(corpus=Path(corpus), index=Path(index), model="hashing-64", batch_size=4)

    def stall(*_):
        print("STALLED", flush=True)
        time.sleep(120)

    if phase == "write":
        fsync_tree = store._fsync_tree
        def slow_fsync(directory):
            fsync_tree(directory)
            stall()
        store._fsync_tree = slow_fsync
        build.build_index(settings, HashingEmbedder(64))
    elif phase == "embed":
        build.build_index(settings, HashingEmbedder(64), on_embed_batch=stall)
    else:
        report = build.build_index(settings, HashingEmbedder(64))
        print("DONE", report.passages, flush=True)
    """
)


def _start_build(settings, phase):
    return subprocess.Popen(
        [sys.executable, "-c", _BUILD_SCRIPT, str(settings.corpus), str(settings.index), phase],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("phase", ["embed", "write"])
def test_a_killed_build_leaves_the_previous_index_serving(fake_settings, phase):
    build_index(fake_settings, CountingEmbedder())
    old_build = store.current_build(fake_settings.index)
    old_passages = len(store.load(fake_settings.index).passages)
    (fake_settings.corpus / "late.txt").write_text("A late addition about Nangarhar. " * 50, encoding="utf-8")

    process = _start_build(fake_settings, phase)
    try:
        line = process.stdout.readline()
        assert line.strip() == "STALLED", process.stderr.read()
    finally:
        process.kill()
        process.wait(timeout=30)

    assert store.current_build(fake_settings.index) == old_build
    survivor = store.load(fake_settings.index)
    assert len(survivor.passages) == old_passages and "late.txt" not in survivor.documents
    response = open_searcher(fake_settings, CountingEmbedder()).search("Taliban ISKP", k=3)
    assert len(response.results) == 3

    leftovers = list((fake_settings.index / store.BUILDS_DIR).glob(store.TEMP_PREFIX + "*"))
    if phase == "write":
        assert leftovers, "the killed build should have been caught mid-write"
    report = build_index(fake_settings, CountingEmbedder())
    assert report.added == ["late.txt"]
    assert not list((fake_settings.index / store.BUILDS_DIR).glob(store.TEMP_PREFIX + "*"))


def test_two_builds_at_once_do_not_corrupt_the_index(fake_settings):
    builds = [_start_build(fake_settings, "full") for _ in range(2)]
    outputs = []
    for process in builds:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out)
    assert sum("DONE" in out for out in outputs) == 2
    index = store.load(fake_settings.index)
    assert len(index.documents) == 5
    for passage in index.passages:
        assert index.documents[passage.doc_id].text[passage.start : passage.end] == passage.text
