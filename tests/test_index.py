"""Contract tests every dense index backend must pass, and the automatic choice of index type."""

from __future__ import annotations

import numpy as np
import pytest

from askcorpus.errors import ConfigError, IndexFormatError
from askcorpus.index import choose_kind, create_index, load_index

BACKENDS = ["flat", "hnsw", "ivf", "exact"]


def _unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", BACKENDS)
def test_each_stored_vector_finds_itself_first(kind):
    vectors = _unit_vectors(2000, 32, seed=1)
    index = create_index(kind, 32)
    index.add(vectors)
    assert len(index) == 2000
    hits = index.search(vectors[:50], 5)
    assert [row[0].passage_id for row in hits] == list(range(50))
    for row in hits:
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=True) and abs(scores[0] - 1.0) < 1e-4


@pytest.mark.parametrize("kind", BACKENDS)
def test_save_and_load_give_the_same_answers(kind, tmp_path):
    vectors = _unit_vectors(1500, 16, seed=2)
    queries = _unit_vectors(20, 16, seed=3)
    index = create_index(kind, 16)
    index.add(vectors)
    index.save(tmp_path)
    loaded = load_index(kind, tmp_path, 16)
    assert [[h.passage_id for h in row] for row in loaded.search(queries, 10)] == \
        [[h.passage_id for h in row] for row in index.search(queries, 10)]
    with pytest.raises(IndexFormatError, match="dimension"):
        load_index(kind, tmp_path, 17)


@pytest.mark.parametrize("kind", BACKENDS)
def test_k_larger_than_the_index_and_empty_index(kind):
    index = create_index(kind, 8)
    assert index.search(_unit_vectors(2, 8, seed=4), 5) == [[], []]
    index.add(_unit_vectors(3, 8, seed=5))
    assert all(len(row) == 3 for row in index.search(_unit_vectors(2, 8, seed=6), 10))


def _clustered_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 100 topics, the way sentence embeddings cluster (uniform noise is a worst case)."""
    rng = np.random.default_rng(seed)
    centres = _unit_vectors(100, dim, seed=99)
    vectors = centres[rng.integers(0, 100, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_against_exact(kind):
    vectors = _clustered_vectors(20_000, 64, seed=7)
    queries = _clustered_vectors(100, 64, seed=8)
    exact = create_index("exact", 64)
    exact.add(vectors)
    approximate = create_index(kind, 64)
    approximate.add(vectors)
    truth = [{h.passage_id for h in row} for row in exact.search(queries, 10)]
    found = [{h.passage_id for h in row} for row in approximate.search(queries, 10)]
    recall = np.mean([len(t & f) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.9


def test_wrong_vector_shape_is_refused():
    index = create_index("flat", 8)
    with pytest.raises(ValueError, match="shape"):
        index.add(np.zeros((3, 9), dtype=np.float32))


def test_choice_of_kind():
    assert choose_kind("auto", 10, 1000) == "flat"
    assert choose_kind("auto", 1001, 1000) == "hnsw"
    assert choose_kind("ivf", 10, 1000) == "ivf"
    with pytest.raises(ConfigError, match="unknown index kind"):
        create_index("annoy", 8)


def test_search_params_apply_after_loading(tmp_path):
    index = create_index("hnsw", 16, hnsw_ef_search=64)
    index.add(_unit_vectors(500, 16, seed=9))
    index.save(tmp_path)
    loaded = load_index("hnsw", tmp_path, 16)
    loaded.set_search_params(hnsw_ef_search=300)
    assert loaded.index.hnsw.efSearch == 300
    create_index("exact", 16).set_search_params(hnsw_ef_search=300)  # exact search has no knobs: no error
