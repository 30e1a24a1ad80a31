"""The build backend contract, and what `index --ray` says when Ray is missing or the cluster cannot be reached."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest

from askcorpus import store
from askcorpus.build import build_index, chunk_params
from askcorpus.cli import main
from askcorpus.errors import ClusterError
from askcorpus.ingest import find_sources
from askcorpus.produce import EmbedStats, LocalBackend, Pending


class RecordingBackend(LocalBackend):
    """The local backend, remembering what the driver handed it."""

    name = "recording"

    def __init__(self, embedder) -> None:
        super().__init__(embedder)
        self.pending: list[str] = []
        self.opened = self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1

    def read_and_chunk(self, pending, params):
        self.pending.extend(p.source.doc_id for p in pending)
        return super().read_and_chunk(pending, params)


def test_local_backend_keeps_order_and_reports_unreadable_files(fake_settings, fake_embedder):
    sources, _ = find_sources(fake_settings.corpus)
    empty = fake_settings.corpus / "empty.txt"
    empty.write_bytes(b"   ")
    sources, _ = find_sources(fake_settings.corpus)
    pending = [Pending(s, s.path.read_bytes()) for s in sources]
    parsed = LocalBackend(fake_embedder).read_and_chunk(pending, chunk_params(fake_settings, fake_embedder))
    assert [p.doc_id for p in parsed] == [s.doc_id for s in sources]
    bad = next(p for p in parsed if p.doc_id == "empty.txt")
    assert bad.document is None and bad.error == "file is empty"
    for item in parsed:
        if item.document is not None:
            assert item.passages and all(item.document.text[p.start : p.end] == p.text for p in item.passages)
    stats = EmbedStats()
    texts = [p.text for item in parsed for p in item.passages]
    vectors = LocalBackend(fake_embedder).embed(texts, stats)
    assert np.array_equal(vectors, fake_embedder.encode(texts))
    assert stats.per_node == {"local": len(texts)}


def test_the_driver_hands_only_new_and_changed_files_to_the_backend(fake_settings, fake_embedder):
    first = RecordingBackend(fake_embedder)
    build_index(fake_settings, fake_embedder, backend=first)
    assert first.pending == sorted(p.name for p in fake_settings.corpus.iterdir())
    assert (first.opened, first.closed) == (1, 1)
    (fake_settings.corpus / "new.md").write_text("A new note on Kunar.", encoding="utf-8")
    second = RecordingBackend(fake_embedder)
    report = build_index(fake_settings, fake_embedder, backend=second)
    assert second.pending == ["new.md"] and report.added == ["new.md"]
    assert store.load(fake_settings.index).manifest["stats"]["backend"] == "recording"
    third = RecordingBackend(fake_embedder)
    assert build_index(fake_settings, fake_embedder, backend=third).up_to_date and third.pending == []


def test_a_backend_that_fails_leaves_the_previous_build_serving(fake_settings, fake_embedder):
    before = build_index(fake_settings, fake_embedder)
    (fake_settings.corpus / "new.md").write_text("A new note on Kunar.", encoding="utf-8")

    class Broken(LocalBackend):
        def embed(self, texts, stats):
            raise ClusterError("the Ray cluster failed while embedding; the previous index is unchanged")

    with pytest.raises(ClusterError):
        build_index(fake_settings, fake_embedder, backend=Broken(fake_embedder))
    assert store.load(fake_settings.index).path == before.index_path
    assert not [p for p in (fake_settings.index / store.BUILDS_DIR).iterdir() if p.name.startswith(store.TEMP_PREFIX)]




def test_index_ray_without_ray_says_how_to_install_it(fake_settings, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["index", "--ray", "--corpus", str(fake_settings.corpus), "--index", str(fake_settings.index)])
    assert code == 2
    assert "pip install 'askcorpus[ray]'" in capsys.readouterr().err
    assert not fake_settings.index.exists()


@pytest.mark.parametrize("address", ["nonsense", "host:", ":123"])
def test_a_malformed_address_is_named(address):
    from askcorpus.build_ray import check_reachable

    with pytest.raises(ClusterError, match="is not host:port"):
        check_reachable(address)


def test_an_unreachable_cluster_fails_naming_the_address_with_nothing_written(fake_settings, fake_embedder):
    pytest.importorskip("ray")
    from askcorpus.build_ray import RayBackend

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ClusterError, match=address):
        build_index(fake_settings, fake_embedder, backend=RayBackend(fake_settings, address))
    assert not fake_settings.index.exists()


def test_a_change_under_ray_min_bytes_is_done_on_the_driver(fake_settings, fake_embedder):
    from askcorpus.build_ray import RayBackend

    sources, _ = find_sources(fake_settings.corpus)
    pending = [Pending(s, s.path.read_bytes()) for s in sources[:1]]
    params = chunk_params(fake_settings, fake_embedder)
    small = RayBackend(fake_settings.with_overrides(ray_min_bytes=len(pending[0].data) + 1), embedder=fake_embedder)
    parsed = small.read_and_chunk(pending, params)  # no cluster was opened: this never reaches Ray
    assert parsed == LocalBackend(fake_embedder).read_and_chunk(pending, params)
    stats = EmbedStats()
    texts = [p.text for p in parsed[0].passages]
    assert np.array_equal(small.embed(texts, stats), fake_embedder.encode(texts))
    assert stats.per_node == {"driver": len(texts)}
