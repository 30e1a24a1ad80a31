"""The encoder backends: the ONNX export reproduces PyTorch's vectors, is cached, and is redone when damaged."""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from askcorpus import embed, onnxrt
from askcorpus.config import Settings
from askcorpus.embed import onnx_backend
from askcorpus.embed.onnx_backend import OnnxEmbedder, load_onnx_embedder
from askcorpus.errors import ConfigError, EncoderExportError
from askcorpus.ingest import load_corpus

MODEL = "all-MiniLM-L6-v2"


class NoTorch:
    """Stands in for the PyTorch model where a test expects the cached export to be used without it."""

    name = MODEL

    def __getattr__(self, item):
        raise AssertionError(f"the PyTorch model was used ({item}) although a valid export was cached")


def seed_passages(seeds_dir: Path, count: int = 60) -> list[str]:
    documents, _ = load_corpus(seeds_dir)
    texts = [d.text[i : i + 700] for d in documents for i in range(0, len(d.text), 700)]
    return texts[:: max(1, len(texts) // count)][:count]


def export_folder(cache: Path) -> Path:
    (folder,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return folder


# Fast: the factory and settings, without a model.


def test_encoder_cache_defaults_to_a_folder_inside_the_index(tmp_path):
    assert Settings(index=tmp_path / "ix").encoder_cache_dir == tmp_path / "ix" / "encoders"
    assert Settings(index=tmp_path / "ix", encoder_cache=tmp_path / "c").encoder_cache_dir == tmp_path / "c"
    assert Settings().encoder == "onnx"


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="'onnx' or 'torch'"):
        embed.load_embedder(MODEL, backend="tensorflow")


def test_a_model_onnx_cannot_run_falls_back_to_pytorch_and_says_why(monkeypatch, tmp_path, caplog):
    def refuse(torch_model, *args, **kwargs):
        assert torch_model == "torch model"  # the export is checked against the PyTorch model...
        raise EncoderExportError("the ONNX export of 'x' does not reproduce its vectors")

    made = []
    monkeypatch.setattr(onnx_backend, "export_onnx", refuse)
    monkeypatch.setattr("askcorpus.embed.torch_backend.SentenceTransformerEmbedder",
                        lambda name, device: made.append((name, device)) or "torch model")
    with caplog.at_level(logging.WARNING, logger="askcorpus.embed"):
        assert embed.load_embedder(MODEL, backend="onnx", cache=tmp_path) == "torch model"
    assert made == [(MODEL, "cpu")]  # ...which is loaded once, for the export and the fallback
    assert "does not reproduce its vectors" in caplog.text


def test_length_groups_cover_every_row_once_longest_first_within_their_limits():
    rng = np.random.default_rng(3)
    for _ in range(200):
        lengths = [int(x) for x in rng.integers(3, 260, size=int(rng.integers(1, 80)))]
        max_texts, lanes, budget = int(rng.integers(1, 40)), int(rng.integers(1, 5)), int(rng.integers(64, 2048))
        groups = onnxrt.length_groups(lengths, max_texts=max_texts, lanes=lanes, max_padded_tokens=budget)
        assert sorted(row for group in groups for row in group) == list(range(len(lengths)))
        flat = [lengths[row] for group in groups for row in group]
        assert flat == sorted(lengths, reverse=True)
        share = -(-len(lengths) // lanes)
        for group in groups:
            assert len(group) <= min(max_texts, share)
            assert len(group) == 1 or len(group) * lengths[group[0]] <= budget
    assert onnxrt.length_groups([], max_texts=8) == []
    # Two queries and two lanes: one model call each, side by side; one lane: one call with both.
    assert onnxrt.length_groups([12, 20], max_texts=32, lanes=2) == [[1], [0]]
    assert onnxrt.length_groups([12, 20], max_texts=32, lanes=1) == [[1, 0]]


def test_export_matching_checks_model_fingerprint_and_version(tmp_path):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    info = {"export_version": onnx_backend.EXPORT_VERSION, "model": MODEL, "model_fingerprint": "abc"}
    (folder / "export.json").write_text(json.dumps(info))
    assert onnx_backend._export_matches(folder, MODEL, "abc")
    assert not onnx_backend._export_matches(folder, MODEL, "abd")
    assert not onnx_backend._export_matches(folder, "other-model", "abc")
    (folder / "export.json").write_text(json.dumps({**info, "export_version": onnx_backend.EXPORT_VERSION + 1}))
    assert not onnx_backend._export_matches(folder, MODEL, "abc")
    (folder / "export.json").write_text("{truncated")
    assert not onnx_backend._export_matches(folder, MODEL, "abc")


# The real model.


@pytest.mark.slow
def test_onnx_vectors_and_token_counts_match_pytorch_on_the_seeds(real_embedder, torch_embedder, seeds_dir):
    assert isinstance(real_embedder, OnnxEmbedder) and torch_embedder.backend == "torch"
    assert (real_embedder.name, real_embedder.dim, real_embedder.max_tokens) == \
        (torch_embedder.name, torch_embedder.dim, torch_embedder.max_tokens)
    texts = seed_passages(seeds_dir) + ["Who leads ISKP?", "  padded question  ", "x" * 5000]
    onnx_vectors, torch_vectors = real_embedder.encode(texts, batch_size=8), torch_embedder.encode(texts, batch_size=8)
    assert onnx_vectors.shape == torch_vectors.shape == (len(texts), 384) and onnx_vectors.dtype == np.float32
    assert np.abs(onnx_vectors - torch_vectors).max() < 1e-5
    assert np.allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)
    assert real_embedder.count_tokens(texts) == torch_embedder.count_tokens(texts)
    assert max(real_embedder.count_tokens(["x " * 400])) == 400  # counting never truncates
    assert real_embedder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_concurrent_encodes_give_the_same_vectors(real_embedder, seeds_dir):
    texts = seed_passages(seeds_dir, 24)
    expected = real_embedder.encode(texts)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: real_embedder.encode(texts[i::4]), range(4)))
    for i, vectors in enumerate(results):
        assert np.abs(vectors - expected[i::4]).max() < 1e-6


@pytest.mark.slow
def test_lanes_and_grouping_do_not_change_the_vectors(real_embedder, seeds_dir):
    texts = seed_passages(seeds_dir, 20) + ["Who leads ISKP?", "Why did the Taliban fight ISKP in Nangarhar?", "a"]
    one_lane = OnnxEmbedder(real_embedder.name, real_embedder.folder, threads=1)
    assert one_lane.lanes == 1 and real_embedder.lanes == min(onnxrt.MAX_LANES, os.cpu_count() or 1)
    alone = np.vstack([one_lane.encode([text]) for text in texts])  # no padding at all
    for embedder, batch_size in ((real_embedder, 32), (real_embedder, 3), (one_lane, 32)):
        assert np.abs(embedder.encode(texts, batch_size=batch_size) - alone).max() < 1e-5


@pytest.mark.slow
def test_a_cached_export_is_used_without_pytorch(real_embedder, encoder_cache):
    folder = export_folder(encoder_cache)
    before = (folder / "export.json").stat().st_mtime_ns
    again = load_onnx_embedder(MODEL, encoder_cache, load_torch=NoTorch)
    assert again.folder == folder and (folder / "export.json").stat().st_mtime_ns == before
    assert np.array_equal(again.encode(["Who leads ISKP?"]), real_embedder.encode(["Who leads ISKP?"]))


@pytest.mark.slow
def test_a_damaged_export_is_made_again(real_embedder, torch_embedder, encoder_cache, tmp_path, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(encoder_cache, cache)
    model_file = export_folder(cache) / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:1000])  # as if the disk filled up mid-write
    with caplog.at_level(logging.WARNING, logger="askcorpus.embed"):
        repaired = load_onnx_embedder(MODEL, cache, load_torch=lambda: torch_embedder)
    assert "cannot be loaded" in caplog.text and "exporting it again" in caplog.text
    assert model_file.stat().st_size > 1_000_000
    assert np.abs(repaired.encode(["Who leads ISKP?"]) - real_embedder.encode(["Who leads ISKP?"])).max() < 1e-6


@pytest.mark.slow
def test_an_export_that_disagrees_with_pytorch_is_refused_and_leaves_nothing(torch_embedder, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_backend, "MAX_ABS_DIFFERENCE", -1.0)  # no export can pass: as if its vectors were off
    with pytest.raises(EncoderExportError, match="does not reproduce its vectors"):
        load_onnx_embedder(MODEL, tmp_path / "cache", load_torch=lambda: torch_embedder)
    assert list((tmp_path / "cache").iterdir()) == []  # no half-made folder that a later start could trust
