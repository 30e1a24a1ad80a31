"""Turning text into normalised vectors: one backend per module, and the factory that picks one.

- base: the Embedder interface, and where a model's files are found
- torch_backend: sentence-transformers on PyTorch (the reference; it also makes the ONNX export)
- onnx_backend: the same model exported to ONNX, run by ONNX Runtime (the default: same vectors, faster)
- hashing: a bag-of-words stand-in for fast unit tests
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, EncoderExportError
from .base import BUNDLED_MODEL_NAMES, Embedder, resolve_model_location
from .hashing import HASHING_MODEL_PREFIX, HashingEmbedder

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "BUNDLED_MODEL_NAMES", "HASHING_MODEL_PREFIX", "Embedder", "HashingEmbedder", "embedder_for", "load_embedder",
    "resolve_model_location",
]

log = logging.getLogger(__name__)


def load_embedder(name: str, device: str = "cpu", *, backend: str = "torch", cache: Path | None = None,
                  threads: int = 0) -> Embedder:
    """The embedder a model name denotes: 'hashing-<dim>' for the test stand-in, else the model on `backend`.

    backend="onnx" runs the model's ONNX export from `cache` (made there first if missing). When the model
    cannot run on ONNX Runtime, the reason is logged and PyTorch runs it instead: slower, same vectors.
    """
    if name.startswith(HASHING_MODEL_PREFIX):
        suffix = name[len(HASHING_MODEL_PREFIX) :].lstrip("-")
        try:
            return HashingEmbedder(dim=int(suffix) if suffix else 64)
        except ValueError as error:
            raise ConfigError(f"model {name!r}: write hashing-<dimension>, e.g. hashing-64") from error
    if backend not in ("torch", "onnx"):
        raise ConfigError(f"encoder backend {backend!r}: use 'onnx' or 'torch'")
    from .torch_backend import SentenceTransformerEmbedder

    loaded: list[SentenceTransformerEmbedder] = []

    def torch_model() -> SentenceTransformerEmbedder:
        # Loaded at most once: an export that fails has already loaded it, and the fallback reuses it.
        if not loaded:
            log.info("loading embedding model %s (PyTorch)", name)
            loaded.append(SentenceTransformerEmbedder(name, device=device))
        return loaded[0]

    if backend == "onnx" and device == "cpu":
        if cache is None:
            raise ConfigError("the ONNX encoder needs a cache folder for its export (ASKCORPUS_ENCODER_CACHE)")
        from .onnx_backend import load_onnx_embedder

        try:
            return load_onnx_embedder(name, Path(cache), threads, load_torch=torch_model)
        except EncoderExportError as error:
            log.warning("running %s on PyTorch: %s", name, error)
    return torch_model()


def embedder_for(settings: "Settings") -> Embedder:
    """The embedder `settings` ask for: model, device, backend, export cache and threads."""
    return load_embedder(settings.model, settings.device, backend=settings.encoder,
                         cache=settings.encoder_cache_dir, threads=settings.encoder_threads)
