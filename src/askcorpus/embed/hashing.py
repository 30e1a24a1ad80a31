"""A hashing bag-of-words stand-in for the model: deterministic, instant, no files. For tests only."""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

from .base import Embedder

HASHING_MODEL_PREFIX = "hashing"
_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder(Embedder):
    """Bag of hashed words: deterministic, instant, no model files. For tests and smoke checks only."""

    backend = "hashing"

    def __init__(self, dim: int = 64, max_tokens: int = 254) -> None:
        self.name = f"{HASHING_MODEL_PREFIX}-{dim}"
        self.dim = dim
        self.max_tokens = max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(_WORD.findall(text)) + len(re.findall(r"[^\w\s]", text)) for text in texts]

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                vectors[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return vectors / norms
