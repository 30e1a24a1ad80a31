"""Reading, chunking and embedding a build's documents on a Ray cluster: Ray Data, the model in an actor pool.

The driver (build.py) still finds, hashes and plans, and writes the build; this backend receives the bytes
of the files to (re)embed (workers need no shared file system) and returns documents, passages and
vectors in the order it was given them, so a Ray build and a local build write the same index.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
from pathlib import Path
from typing import Sequence

import numpy as np

from .chunk import ChunkParams
from .config import Settings
from .errors import AskcorpusError, ClusterError, ConfigError
from .ingest import SourceFile
from .produce import Backend, EmbedStats, LocalBackend, Parsed, Pending, parse_one
from .records import Document, Passage

log = logging.getLogger(__name__)

INSTALL_HINT = "building on Ray needs Ray Data: pip install 'askcorpus[ray]'"
# Faults: Ray Data's defaults restart a model actor whose process dies and retry its batches, and re-run a
# read+chunk task whose worker dies, as often as it takes (docs/ray.md, Faults); nothing here overrides them.
# Each block is a unit of work Ray schedules and retries: a few model batches, so a lost worker costs little.
BATCHES_PER_BLOCK = 4
MAX_BLOCKS = 2000
PER_ACTOR_BLOCKS = 4
_WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def require_ray():
    """The ray module, or ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the data extra is what the build uses
    except ImportError as error:
        raise ConfigError(INSTALL_HINT) from error
    return ray


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """ClusterError naming `address` when nothing listens there; `None` (local) and `auto` are not checked."""
    if address is None or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not host:port (or 'auto'); nothing was written")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({error.strerror or error}); start one with "
            "`ray start --head` or give the head node's address; nothing was written"
        ) from None


def connect(address: str | None, *, local_cpus: int | None = None, progress: bool = False) -> bool:
    """Connect this process to Ray: True if this call connected (the caller then shuts it down), False if it
    already was. None starts a local cluster (of `local_cpus` CPUs, default all); else see RayBackend."""
    ray = require_ray()
    check_reachable(address)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, runtime_env={"env_vars": dict(_WORKER_ENV)},
                 **({"num_cpus": local_cpus} if address is None and local_cpus else {}))
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterError(f"cannot connect to the Ray cluster at {address or 'a new local cluster'} ({error}); "
                           "nothing was written") from error
    ray.data.DataContext.get_current().enable_progress_bars = progress
    return True


@functools.lru_cache(maxsize=2)
def _worker_embedder(spec: tuple):
    """The model in a worker process, loaded once per process (an actor, or a reused task worker)."""
    from .embed import load_embedder

    for key, value in _WORKER_ENV.items():
        os.environ.setdefault(key, value)
    name, device, backend, cache, threads = spec
    return load_embedder(name, device, backend=backend, cache=Path(cache), threads=threads)


def _parse_row(row: dict, *, spec: tuple, params: ChunkParams) -> dict:
    """Ray task: one file's bytes to its document and passage spans (Ray Data rows are plain columns)."""
    doc_id = str(row["doc_id"])
    # The reader is chosen by the file's suffix; the path itself is never opened.
    parsed = parse_one(Pending(SourceFile(doc_id, Path(doc_id)), bytes(row["data"])), params,
                       _worker_embedder(spec).count_tokens)
    document = parsed.document
    return {
        "seq": int(row["seq"]),
        "doc_id": doc_id,
        "error": parsed.error or "",
        "text": document.text if document else "",
        "title": document.title if document else "",
        "sha256": document.sha256 if document else "",
        "page_starts": list(document.page_starts) if document else [],
        "starts": [p.start for p in parsed.passages],
        "ends": [p.end for p in parsed.passages],
        "tokens": [p.tokens for p in parsed.passages],
    }


class _Encoder:
    """Ray Data actor: the model loaded once, then batch after batch of passage texts to vectors."""

    def __init__(self, spec: tuple) -> None:
        import ray

        self.embedder = _worker_embedder(spec)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        vectors = self.embedder.encode(texts, batch_size=max(1, len(texts)))
        return {"seq": batch["seq"], "vector": vectors, "node": np.array([self.node] * len(texts))}


class RayBackend(Backend):
    """Runs read+chunk as Ray tasks and embedding in a Ray Data actor pool, on the cluster at `address`.

    address: None starts a local cluster for this build (stopped after it), "auto" joins the running one,
    "host:port" joins that one. A connection made before (ray.init by the caller) is used as it is.
    Changes under `settings.ray_min_bytes` are done on the driver with `embedder` (same output, no start-up).
    """

    name = "ray"

    def __init__(self, settings: Settings, address: str | None = None, *, embedder=None, progress: bool = False,
                 on_embed_batch=None, local_cpus: int | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self._local: LocalBackend | None = None
        self.address = address
        self.progress = progress
        self.on_embed_batch = on_embed_batch
        self.local_cpus = local_cpus
        self._started = False
        # Absolute: a worker runs in its node's directory, not the driver's, and a relative cache there is
        # empty, so every worker would export the model again (seconds per process) before its first batch.
        cache = Path(settings.encoder_cache_dir).resolve()
        self.spec = (settings.model, settings.device, settings.encoder, str(cache), settings.ray_cpus_per_actor)

    # --- connection ---------------------------------------------------------------------------------

    def open(self) -> None:
        self._started = connect(self.address, local_cpus=self.local_cpus, progress=self.progress)

    def close(self) -> None:
        if self._started:
            require_ray().shutdown()
            self._started = False

    def pool(self) -> tuple[int, dict]:
        """Actors in the embedding pool and what each asks for: one per GPU if there are any, else CPUs."""
        ray = require_ray()
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus and self.settings.device != "cpu":
            return gpus, {"num_gpus": 1, "num_cpus": 1}
        per_actor = float(self.settings.ray_cpus_per_actor)
        return max(1, int(resources.get("CPU", 1) // per_actor)), {"num_cpus": per_actor}

    # --- the two stages -----------------------------------------------------------------------------

    def read_and_chunk(self, pending: Sequence[Pending], params: ChunkParams) -> list[Parsed]:
        if sum(len(p.data) for p in pending) < self.settings.ray_min_bytes:
            log.info("%d changed file(s) under ray_min_bytes: reading, chunking and embedding on the driver",
                     len(pending))
            self._local = LocalBackend(self.embedder or _worker_embedder(self.spec), self.settings.batch_size,
                                       on_embed_batch=self.on_embed_batch)
            return self._local.read_and_chunk(pending, params)
        self._local = None
        return self._cluster_read_and_chunk(pending, params)

    def _cluster_read_and_chunk(self, pending: Sequence[Pending], params: ChunkParams) -> list[Parsed]:
        import pyarrow as pa

        ray = require_ray()
        table = pa.table({
            "seq": pa.array(range(len(pending)), pa.int64()),
            "doc_id": [p.source.doc_id for p in pending],
            "data": pa.array([p.data for p in pending], pa.binary()),
        })
        blocks = _slices(table, min(len(pending), max(1, int(ray.cluster_resources().get("CPU", 1))) * 4))
        dataset = ray.data.from_arrow(blocks).map(
            _parse_row, fn_kwargs={"spec": self.spec, "params": params},
            num_cpus=1)
        rows = _run(lambda: dataset.take_all(), "reading and chunking")
        rows.sort(key=lambda r: r["seq"])
        if [r["seq"] for r in rows] != list(range(len(pending))):
            raise ClusterError(f"the Ray cluster returned {len(rows)} of {len(pending)} documents; nothing was written")
        return [_parsed_from_row(row) for row in rows]

    def embed(self, texts: Sequence[str], stats: EmbedStats) -> np.ndarray:
        if self._local is not None:
            vectors = self._local.embed(texts, stats)
            stats.per_node = {"driver": count for count in stats.per_node.values()}
            return vectors
        return self._cluster_embed(texts, stats)

    def _cluster_embed(self, texts: Sequence[str], stats: EmbedStats) -> np.ndarray:
        import pyarrow as pa

        ray = require_ray()
        size, resources = self.pool()
        batch = self.settings.batch_size
        table = pa.table({"seq": pa.array(range(len(texts)), pa.int64()), "text": pa.array(list(texts), pa.string())})
        # At least a few blocks per actor, so that an actor still loading its model does not leave the whole
        # corpus to the first one ready; at most one block per model batch.
        wanted = max(math.ceil(len(texts) / (batch * BATCHES_PER_BLOCK)), PER_ACTOR_BLOCKS * size)
        blocks = _slices(table, min(MAX_BLOCKS, wanted, math.ceil(len(texts) / batch)))
        size = min(size, len(blocks))
        dataset = ray.data.from_arrow(blocks).map_batches(
            _Encoder, fn_constructor_kwargs={"spec": self.spec}, batch_size=batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2),
            udf_modifying_row_count=False,
            **resources)
        log.info("embedding %d passages on %d Ray actor(s) (%s each)", len(texts), size, resources)

        def collect():
            seqs, vectors, nodes = [], [], []
            for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                seqs.append(out["seq"])
                vectors.append(out["vector"])
                nodes.append(out["node"])
                if self.on_embed_batch is not None:
                    self.on_embed_batch(sum(map(len, seqs)))
            return seqs, vectors, nodes

        seqs, vectors, nodes = _run(collect, "embedding")
        seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        if len(seq) != len(texts) or not np.array_equal(np.sort(seq), np.arange(len(texts))):
            raise ClusterError(f"the Ray cluster returned {len(seq)} vectors for {len(texts)} passages; "
                               "nothing was written")
        order = np.argsort(seq, kind="stable")
        for node, count in zip(*np.unique(np.concatenate(nodes), return_counts=True)):
            stats.per_node[str(node)] = int(count)
        return np.ascontiguousarray(np.concatenate(vectors)[order], dtype=np.float32)


def _slices(table, count: int) -> list:
    """`table` cut into `count` nearly equal row ranges: the blocks Ray schedules."""
    count = max(1, min(count, table.num_rows))
    bounds = np.linspace(0, table.num_rows, count + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _run(step, what: str):
    """Run a Ray Data step; Ray's own failures (a node lost past its retries) become a ClusterError."""
    try:
        return step()
    except AskcorpusError:
        raise
    except Exception as error:  # noqa: BLE001 - Ray raises many types; the user needs one clear message
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ClusterError(f"the Ray cluster failed while {what} ({type(error).__name__}: {first[:300]}); "
                           "the previous index is unchanged and still serves") from error


def _parsed_from_row(row: dict) -> Parsed:
    if row["error"]:
        return Parsed(row["doc_id"], None, (), row["error"])
    text = row["text"]
    document = Document(row["doc_id"], text, row["sha256"], row["title"], tuple(int(x) for x in row["page_starts"]))
    passages = tuple(Passage(document.doc_id, int(a), int(b), text[int(a) : int(b)], int(n))
                     for a, b, n in zip(row["starts"], row["ends"], row["tokens"]))
    return Parsed(document.doc_id, document, passages)
