"""The same model exported to ONNX and run by ONNX Runtime: the vectors of PyTorch at a third of the cost per query.

The export is made once per model (it needs PyTorch), checked against the PyTorch model's own vectors, and kept
in a cache folder; later starts load only ONNX Runtime and the tokenizer (well under a second, no PyTorch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..errors import EncoderExportError
from ..jsonfile import write_json
from ..onnxrt import Lanes, lane_count, length_groups, load_session, padded_inputs
from .base import Embedder, resolve_model_location

if TYPE_CHECKING:
    from .torch_backend import SentenceTransformerEmbedder

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
ONNX_OPSET = 17
# float32 ONNX and PyTorch agree to ~2e-7 on this model; anything near 1e-4 means a different computation.
MAX_ABS_DIFFERENCE = 1e-4
# Each model call is padded to its own longest text and holds at most this many tokens with padding: 8 to 16
# questions, or 2 full passages, per call. Measured on 2 cores, texts per second, same process, alternating:
# 32 questions at a time 100 -> 123, 32 passages at a time 18.2 -> 23.1 (budgets of 128 to 4096 tokens all within
# noise of 256).
MAX_PADDED_TOKENS = 256
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Checked at export: a question, plain and odd characters, white space that sentence-transformers strips,
# and a text past the model's input limit (truncation must cut at the same token).
PROBE_TEXTS = (
    "Who leads the Islamic State Khorasan Province?",
    "  ISKP's attacks in Kabul, Kunduz and Kandahar (2021–2022) — über-violent, naïve résumé 東京 ✓  ",
    "a",
    "The Taliban and regional security. " * 80,
)


class OnnxEmbedder(Embedder):
    """Tokenizer + ONNX Runtime session + mean pooling + L2 normalisation, as the exported model was checked to do."""

    backend = "onnx"

    def __init__(self, name: str, folder: Path, threads: int = 0) -> None:
        from tokenizers import Tokenizer

        info = read_export_info(folder)
        self.session = load_session(folder / "model.onnx", intra_op_threads=threads)
        self._inputs = [i.name for i in self.session.get_inputs()]
        tokenizer_json = (folder / "tokenizer.json").read_text(encoding="utf-8")
        # Two tokenizers, each configured once: changing truncation on a shared one is not thread-safe.
        self._counter = Tokenizer.from_str(tokenizer_json)
        self._counter.no_truncation()
        self._counter.no_padding()
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.enable_truncation(max_length=int(info["max_seq_length"]))
        self._tokenizer.no_padding()  # each model call pads to its own longest text (see length_groups)
        self._pad_id = int(info["pad_id"])
        # Model calls running side by side: ONNX Runtime keeps more of the CPU busy with two short calls at
        # once than with one call spread over two threads (docs/performance.md: "Encoding in length groups").
        self.lanes = lane_count(threads)
        self._lanes = Lanes(self.lanes, "askcorpus-encode")
        self.name = name
        self.dim = int(info["dim"])
        self.max_tokens = int(info["max_tokens"])
        self.folder = folder

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        # The fast variant skips the offsets a count does not need (a fifth quicker, same ids).
        return [len(e.ids) for e in self._counter.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        # sentence-transformers strips each text before tokenizing; do the same so the vectors agree.
        stripped = [text.strip() for text in texts]
        encodings = self._tokenizer.encode_batch(stripped) if stripped else []
        vectors = np.zeros((len(encodings), self.dim), dtype=np.float32)
        groups = length_groups([len(e.ids) for e in encodings], max_texts=batch_size, lanes=self.lanes,
                               max_padded_tokens=MAX_PADDED_TOKENS)
        if progress and sys.stderr.isatty() and len(groups) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(groups), desc="Batches", unit="batch")
        else:
            bar = None

        def run(rows: list[int]) -> None:
            vectors[rows] = self._encode_group([encodings[i] for i in rows])
            if bar is not None:
                bar.update()

        try:
            self._lanes.run(groups, run)
        finally:
            if bar is not None:
                bar.close()
        return vectors

    def _encode_group(self, encodings: list) -> np.ndarray:
        inputs = padded_inputs(encodings, self._pad_id, self._inputs)
        hidden = self.session.run(None, inputs)[0]
        weights = inputs["attention_mask"].astype(np.float32)[..., None]
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)


def load_onnx_embedder(name: str, cache: Path, threads: int = 0,
                       load_torch: "Callable[[], SentenceTransformerEmbedder] | None" = None) -> OnnxEmbedder:
    """The ONNX export of `name` from `cache`, exporting it first if missing, stale or damaged.

    Exporting needs the PyTorch model, which `load_torch()` gives (by default it is loaded from `name`); it is
    not called when a valid export is cached.

    Raises EncoderExportError when the model cannot run on ONNX Runtime; the caller decides to fall back.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise EncoderExportError("onnxruntime is not installed (pip install onnxruntime onnx)") from error
    location = resolve_model_location(name)
    if not isinstance(location, Path) or not location.is_dir():
        raise EncoderExportError(f"model {name!r} is not a folder on disk, so it cannot be exported")
    fingerprint = model_fingerprint(location)
    folder = Path(cache) / f"{_slug(name)}-{fingerprint[:12]}"
    if _export_matches(folder, name, fingerprint):
        try:
            return OnnxEmbedder(name, folder, threads)
        except Exception as error:  # a truncated or damaged model.onnx: export again rather than fail the start
            log.warning("the ONNX export at %s cannot be loaded (%s); exporting it again", folder, error)
    if load_torch is None:
        from .torch_backend import SentenceTransformerEmbedder

        torch_embedder = SentenceTransformerEmbedder(name)
    else:
        torch_embedder = load_torch()
    export_onnx(torch_embedder, folder, fingerprint)
    return OnnxEmbedder(name, folder, threads)


def export_onnx(torch_embedder: "SentenceTransformerEmbedder", folder: Path, fingerprint: str) -> dict:
    """Export the transformer to `folder` (model.onnx, tokenizer.json, export.json), check it, then publish it.

    The export is written to a temporary sibling and renamed into place only after its vectors matched the
    PyTorch model's on PROBE_TEXTS, so a killed or failed export never leaves a folder that looks usable.
    """
    started = time.perf_counter()
    folder = Path(folder)
    temporary = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        temporary.mkdir(parents=True)
        info = _export_files(torch_embedder, temporary, fingerprint)
        candidate = OnnxEmbedder(torch_embedder.name, temporary, threads=1)
        probes = list(PROBE_TEXTS)
        difference = float(np.abs(candidate.encode(probes) - torch_embedder.encode(probes)).max())
        counts_agree = candidate.count_tokens(probes) == torch_embedder.count_tokens(probes)
        if not difference <= MAX_ABS_DIFFERENCE or not counts_agree:
            raise EncoderExportError(
                f"the ONNX export of {torch_embedder.name!r} does not reproduce its vectors "
                f"(largest difference {difference:.2e}, token counts agree: {counts_agree}); "
                "this model needs ASKCORPUS_ENCODER=torch"
            )
        info.update(max_abs_difference=difference, export_seconds=round(time.perf_counter() - started, 2))
        write_json(temporary / "export.json", info, indent=2, sync=True)
        _publish(temporary, folder)
    except EncoderExportError:
        raise
    except Exception as error:  # torch.onnx raises many kinds; the message is what the user needs
        raise EncoderExportError(f"exporting {torch_embedder.name!r} to ONNX failed: {error}") from error
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    log.info("exported %s to ONNX at %s in %.1fs (largest difference from PyTorch %.1e)",
             torch_embedder.name, folder, time.perf_counter() - started, difference)
    return info


def _export_files(torch_embedder: "SentenceTransformerEmbedder", folder: Path, fingerprint: str) -> dict:
    import onnxruntime
    import torch

    model = torch_embedder.model
    tokenizer = model.tokenizer
    names = [n for n in INPUT_NAMES if n in tokenizer.model_input_names]
    sample = tokenizer(["a sample sentence"], return_tensors="pt")

    class LastHiddenState(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(names, inputs))).last_hidden_state

    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow, harmless for BERT
        torch.onnx.export(
            LastHiddenState(model[0].auto_model).eval(), tuple(sample[n] for n in names), str(folder / "model.onnx"),
            input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET,
            dynamo=False,
        )
    (folder / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
    info = {
        "export_version": EXPORT_VERSION,
        "model": torch_embedder.name,
        "model_fingerprint": fingerprint,
        "dim": torch_embedder.dim,
        "max_tokens": torch_embedder.max_tokens,
        "max_seq_length": int(model.max_seq_length),
        "pad_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "pooling": "mean",
        "opset": ONNX_OPSET,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    write_json(folder / "export.json", info, indent=2, sync=True)
    return info


def read_export_info(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EncoderExportError(f"no readable export.json in {folder}: {error}") from error


def model_fingerprint(location: Path) -> str:
    """Names, sizes and modification times of the model's files: changes when the weights do, costs no reading."""
    entries = sorted(
        (str(path.relative_to(location)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in location.rglob("*")
        if path.is_file()
    )
    return hashlib.sha256(json.dumps([str(location), entries]).encode()).hexdigest()


def _export_matches(folder: Path, name: str, fingerprint: str) -> bool:
    try:
        info = read_export_info(folder)
    except EncoderExportError:
        return False
    return (info.get("export_version") == EXPORT_VERSION and info.get("model") == name
            and info.get("model_fingerprint") == fingerprint and (folder / "model.onnx").is_file())


def _publish(temporary: Path, folder: Path) -> None:
    """Rename the checked export into place; a stale folder of the same name is moved aside first."""
    if folder.exists():
        stale = folder.parent / f".stale-{folder.name}-{uuid.uuid4().hex[:8]}"
        os.replace(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(temporary, folder)
    except OSError:
        # Another process published the same export meanwhile; theirs is as good as ours.
        ours = read_export_info(temporary)
        if not _export_matches(folder, ours["model"], ours["model_fingerprint"]):
            raise


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:] or "model"
