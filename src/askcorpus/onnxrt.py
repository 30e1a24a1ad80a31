"""ONNX Runtime plumbing shared by the query encoder and the cross-encoder: sessions, lanes, padded calls."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

# Model calls run side by side, at most one per core and no more than this many.
MAX_LANES = 4


def lane_count(threads: int) -> int:
    """How many model calls run side by side: `threads`, or one per core when 0, at most MAX_LANES."""
    return max(1, min(MAX_LANES, threads or os.cpu_count() or 1))


def load_session(path: Path, *, intra_op_threads: int):
    """A CPU InferenceSession for `path`: `intra_op_threads` per call (0: one per physical core), one inter-op
    thread, and worker threads that sleep rather than spin between calls, so the web server's event loop gets the
    CPU between questions. Raises what ONNX Runtime raises for a file it cannot load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Lanes:
    """Runs model calls on `count` threads side by side (ONNX Runtime releases the GIL while it computes); with
    one lane, in the caller's thread. `niceness` lowers the lanes' scheduling priority on Linux."""

    def __init__(self, count: int, name: str, niceness: int = 0) -> None:
        self.count = count
        initializer = (lambda: _lower_priority(niceness)) if niceness else None
        self._pool = ThreadPoolExecutor(count, thread_name_prefix=name, initializer=initializer) \
            if count > 1 else None

    def run(self, groups: Sequence[list[int]], call: Callable[[list[int]], None]) -> None:
        """call(rows) for every group, side by side when there are lanes; the first error is raised."""
        if len(groups) <= 1 or self._pool is None:
            for rows in groups:
                call(rows)
            return
        for done in [self._pool.submit(call, rows) for rows in groups]:
            done.result()


def _lower_priority(niceness: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)  # Linux: per thread
    except (AttributeError, OSError):  # other systems, or not permitted: same results, only less fair
        pass


def padded_inputs(encodings: Sequence, pad_id: int, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """One model call's inputs for tokenizer encodings, padded to the longest of them: the session's inputs
    among input_ids, attention_mask and token_type_ids."""
    longest = max(len(e.ids) for e in encodings)
    shape = (len(encodings), longest)
    ids = np.full(shape, pad_id, dtype=np.int64)
    mask = np.zeros(shape, dtype=np.int64)
    types = np.zeros(shape, dtype=np.int64)
    for row, encoding in enumerate(encodings):
        width = len(encoding.ids)
        ids[row, :width] = encoding.ids
        mask[row, :width] = 1
        types[row, :width] = encoding.type_ids
    columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: columns[name] for name in input_names}


def length_groups(lengths: Sequence[int], *, max_texts: int, lanes: int = 1,
                  max_padded_tokens: int | None = None) -> list[list[int]]:
    """Row numbers in model calls: longest first, each call padding to its own longest text.

    A call holds at most `max_texts` texts and `max_padded_tokens` tokens counting padding (None: no limit), and
    no more than its share of `lanes`, so every lane gets work. Short queries of mixed length (9 to 30 tokens)
    batched together wasted ~30% of the model's work on padding; similar lengths side by side waste little.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    per_call = max(1, min(max_texts, -(-len(order) // max(1, lanes))))
    groups: list[list[int]] = []
    current: list[int] = []
    for row in order:
        longest = lengths[current[0]] if current else lengths[row]
        full = len(current) >= per_call or (max_padded_tokens is not None
                                             and (len(current) + 1) * longest > max_padded_tokens)
        if current and full:
            groups.append(current)
            current = []
        current.append(row)
    groups.append(current)
    return groups
