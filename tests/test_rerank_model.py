"""The real cross-encoder: loading and verifying its files, its scores, and what it does to the eval on the seeds."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from askcorpus.errors import RerankerError
from askcorpus.evaluate import evaluate, load_qa
from askcorpus.rerank import load_reranker
from askcorpus.rerank.cross_encoder import (BUNDLED_RERANKER, BUNDLED_SHA256, CrossEncoderReranker,
                                            resolve_reranker_folder)
from askcorpus.search import Searcher
from conftest import QA_FILE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def cross_encoder():
    return load_reranker(BUNDLED_RERANKER)


@pytest.fixture
def model_copy(tmp_path):
    """A copy of the bundled model's two files, to damage."""
    folder = tmp_path / "reranker"
    folder.mkdir()
    source = resolve_reranker_folder(BUNDLED_RERANKER)
    for name in ("model.onnx", "tokenizer.json"):
        shutil.copy(source / name, folder / name)
    return folder


def test_the_bundled_model_is_found_in_the_installed_wheel_and_verified(cross_encoder):
    assert cross_encoder.sha256 == BUNDLED_SHA256
    assert cross_encoder.name == BUNDLED_RERANKER and cross_encoder.max_tokens == 512


def test_it_scores_an_answering_passage_above_unrelated_ones(cross_encoder):
    scores = cross_encoder.score("Who leads ISKP?", [
        "The weather in the valley was mild for most of the year.",
        "As of 2022, ISKP is led by Sanaullah Ghafari alias Shahab al-Muhajir.",
        "Trade between the two countries grew in 2021.",
    ])
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert int(np.argmax(scores)) == 1 and scores[1] > 0 > max(scores[0], scores[2])


def test_a_pairs_score_does_not_depend_on_the_pairs_scored_with_it(cross_encoder, searcher):
    texts = [p.text for p in searcher.index.passages[:24]] + ["short one", "a " * 300]
    query = "What threat does ISKP pose to Central Asia?"
    together = cross_encoder.score_uncached(query, texts)
    alone = np.array([cross_encoder.score_uncached(query, [text])[0] for text in texts])
    assert np.array_equal(together, alone)
    # One call padded to the longest pair (what the bench's floor runs) differs a little: the int8 model
    # quantises activations per call. Never by an order of magnitude, and not in what comes first.
    one_call = cross_encoder.run_model(cross_encoder.encode_pairs(query, texts))
    np.testing.assert_allclose(together, one_call, atol=1.0)
    assert int(np.argmax(together)) == int(np.argmax(one_call))


def test_cached_scores_are_the_computed_ones(cross_encoder):
    texts = ["ISKP attacked Kabul airport in 2021.", "Rainfall was average."]
    first = cross_encoder.score("When did ISKP attack Kabul airport?", texts)
    hits_before = cross_encoder.cache.hits
    second = cross_encoder.score("When did ISKP attack Kabul airport?", texts)
    assert np.array_equal(first, second) and cross_encoder.cache.hits == hits_before + 2


def test_a_damaged_model_file_fails_its_sha256_check_naming_the_file(model_copy):
    with open(model_copy / "model.onnx", "r+b") as handle:
        handle.seek(10_000)
        byte = handle.read(1)
        handle.seek(10_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(RerankerError, match=r"model\.onnx has sha256 [0-9a-f]{64}, expected " + BUNDLED_SHA256):
        CrossEncoderReranker("copy", model_copy, expected_sha256=BUNDLED_SHA256)
    with pytest.raises(RerankerError, match="expected"):
        load_reranker(str(model_copy), sha256=BUNDLED_SHA256)


def test_a_user_folder_loads_and_its_optional_sha256_is_checked(model_copy):
    reranker = load_reranker(str(model_copy), sha256=BUNDLED_SHA256)
    assert reranker.name == str(model_copy) and reranker.sha256 == BUNDLED_SHA256
    with pytest.raises(RerankerError, match="has sha256"):
        load_reranker(str(model_copy), sha256="0" * 64)


@pytest.mark.parametrize("missing", ["model.onnx", "tokenizer.json"])
def test_a_missing_file_is_named(model_copy, missing):
    (model_copy / missing).unlink()
    with pytest.raises(RerankerError, match=f"{missing} is missing"):
        load_reranker(str(model_copy))


def test_a_missing_folder_and_unreadable_files_are_clear_errors(model_copy, tmp_path):
    with pytest.raises(RerankerError, match="does not exist"):
        load_reranker(str(tmp_path / "nowhere"))
    (model_copy / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RerankerError, match="tokenizer.json is not a readable tokenizer"):
        load_reranker(str(model_copy))


def test_an_onnx_file_that_is_not_a_model_or_not_a_cross_encoder_is_refused(model_copy, real_embedder):
    (model_copy / "model.onnx").write_bytes(b"\x08\x07 not a protobuf")
    with pytest.raises(RerankerError, match="not a loadable ONNX model"):
        load_reranker(str(model_copy))
    # The embedding model's export: right inputs, but a hidden state per token instead of one score per pair.
    shutil.copy(real_embedder.folder / "model.onnx", model_copy / "model.onnx")
    with pytest.raises(RerankerError, match="not a cross-encoder"):
        load_reranker(str(model_copy))


def test_reranking_improves_the_ranking_and_the_answers_on_the_dev_questions(searcher, cross_encoder):
    reranking = Searcher(searcher.settings, searcher.embedder, searcher.index, cross_encoder)
    questions = load_qa(QA_FILE, split="dev")
    result = evaluate(reranking, questions, "hybrid,hybrid+rerank", k=10)
    first, second = result.modes["hybrid"].metrics, result.modes["hybrid+rerank"].metrics
    assert second["recall@1"] > first["recall@1"] + 0.05
    assert second["mrr@10"] > first["mrr@10"] + 0.03
    assert second["answer_accuracy"] > first["answer_accuracy"]
    assert second["false_abstention"] <= 0.02
