"""The sentence-transformers model run by PyTorch: used for builds when ONNX is off, and to export the ONNX model."""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .base import Embedder, resolve_model_location


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model on the CPU, loaded from disk only."""

    backend = "torch"

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
