"""Synthetic data, all from a seeded RNG: a corpus reshuffled from the seeds' sentences, vectors, and text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from ..chunk import split_units
from ..ingest import load_corpus

# Questions about the seeds, for when evals/qa.jsonl is absent (latency only: no answers needed).
BUILTIN_QUESTIONS: tuple[str, ...] = (
    "Which think tank warned that terrorist threats in the region have grown since the Taliban returned?",
    "What is the Islamic State Khorasan Province?",
    "When was ISKP established?",
    "Where does ISKP have its main operating base?",
    "Who leads ISKP?",
    "How many fighters does ISKP have?",
    "Why did Taliban fighters defect to ISKP?",
    "Which minority communities has ISKP attacked?",
    "What happened at Kabul airport in August 2021?",
    "How many American soldiers died in the Kabul airport bombing?",
    "What is the Shanghai Cooperation Organisation's anti-terror structure called?",
    "Which countries does ISKP threaten besides Afghanistan?",
    "What does the Doha agreement say about terrorist groups?",
    "How does ISKP recruit new members?",
    "What role does propaganda play for ISKP?",
    "Which languages does ISKP publish its magazines in?",
    "How many people were killed in the attack in Iran?",
    "What is the relationship between the Taliban and al-Qaeda?",
    "Where is al-Qaeda's leadership based?",
    "What is the TTP and where does it operate?",
    "When did peace talks between the TTP and Pakistan break down?",
    "Why is regional cooperation needed against ISKP?",
    "How has the US counter-terrorism focus changed?",
    "What is the National Resistance Front?",
    "Who is Ahmad Massoud?",
    "What economic targets has ISKP sabotaged?",
    "Has any country recognised the Taliban government?",
    "What did the Global Terrorism Index say about ISKP?",
    "How many people died from terrorism in South Asia in 2021?",
    "Is ISKP likely to capture territory in Afghanistan?",
    "Which school of Islamic law do most Afghans follow?",
    "What attacks happened in Dasht-e-Barchi?",
)


def seed_sentences(corpus: Path) -> list[str]:
    """Every sentence (or line) of every readable document under `corpus`, in order."""
    documents, _ = load_corpus(corpus)
    sentences = []
    for document in documents:
        for unit in split_units(document.text):
            sentence = document.text[unit.start : unit.end]
            if len(sentence.split()) >= 3:
                sentences.append(sentence)
    return sentences


def synthetic_documents(
    sentences: list[str], count: int, seed: int = 0, sentences_per_doc: tuple[int, int] = (8, 30)
) -> list[str]:
    """`count` documents of reshuffled sentences, in paragraphs of 2-6 sentences each."""
    if not sentences:
        raise ValueError("no sentences to make documents from")
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(count):
        size = int(rng.integers(sentences_per_doc[0], sentences_per_doc[1] + 1))
        picked = [sentences[i] for i in rng.integers(0, len(sentences), size)]
        paragraphs, position = [], 0
        while position < len(picked):
            length = int(rng.integers(2, 7))
            paragraphs.append(" ".join(picked[position : position + length]))
            position += length
        documents.append("\n\n".join(paragraphs) + "\n")
    return documents


def write_corpus(documents: list[str], folder: Path) -> list[Path]:
    """Write documents as doc_00000.txt, ... into `folder` (created); their paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, text in enumerate(documents):
        path = folder / f"doc_{number:05d}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


class VectorModel:
    """Unit vectors shaped like sentence embeddings rather than uniform noise.

    Uniform random vectors in 384 dimensions have no neighbourhood structure at all (every point is
    nearly equidistant from every other), which no approximate index can search and no real corpus
    looks like. These come from a mixture of topics in a low-dimensional latent space, mapped into
    `dim` dimensions, plus a little isotropic noise; queries come from the same distribution.
    """

    def __init__(self, dim: int = 384, latent: int = 48, topics: int = 2000, spread: float = 0.6,
                 noise: float = 0.15, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.latent, self.spread, self.noise = dim, latent, spread, noise
        self.centres = rng.standard_normal((topics, latent)).astype(np.float32)
        self.projection = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
        self.seed = seed

    def sample(self, count: int, stream: int, chunk: int = 100_000) -> np.ndarray:
        """`count` unit vectors; different `stream` numbers give independent samples."""
        rng = np.random.default_rng([self.seed, stream])
        out = np.empty((count, self.dim), dtype=np.float32)
        for first in range(0, count, chunk):
            n = min(chunk, count - first)
            topics = rng.integers(0, len(self.centres), n)
            z = self.centres[topics] + self.spread * rng.standard_normal((n, self.latent), dtype=np.float32)
            x = z @ self.projection + self.noise * rng.standard_normal((n, self.dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[first : first + n] = x
        return out


_WORD = re.compile(r"[A-Za-z]{3,}")


def synthetic_texts(vocabulary: list[str], count: int, seed: int = 0, words: tuple[int, int] = (40, 90),
                    chunk: int = 50_000) -> Iterator[list[str]]:
    """Batches of passages of Zipf-distributed words from `vocabulary` (count passages in all)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(vocabulary, dtype=object)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    weights = 1.0 / ranks**1.1
    weights /= weights.sum()
    produced = 0
    while produced < count:
        n = min(chunk, count - produced)
        lengths = rng.integers(words[0], words[1] + 1, n)
        picks = rng.choice(len(vocab), size=int(lengths.sum()), p=weights)
        texts, position = [], 0
        for length in lengths:
            texts.append(" ".join(vocab[picks[position : position + length]]))
            position += length
        produced += n
        yield texts


def vocabulary_of(sentences: list[str], extra: int = 20_000, seed: int = 0) -> list[str]:
    """The seeds' words by frequency, padded with made-up words to a realistic vocabulary size."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for word in _WORD.findall(sentence.lower()):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen = set(words)
    while len(words) < len(counts) + extra:
        word = "".join(rng.choice(letters, int(rng.integers(4, 10))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words
