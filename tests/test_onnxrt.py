"""The ONNX Runtime plumbing the encoder and the cross-encoder share: padded inputs, lanes, length groups."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from askcorpus import onnxrt


def _encoding(ids, types=None):
    return SimpleNamespace(ids=list(ids), type_ids=list(types or [0] * len(ids)))


def test_padded_inputs_pad_to_the_longest_and_give_only_the_sessions_inputs():
    inputs = onnxrt.padded_inputs([_encoding([5, 6, 7], [0, 1, 1]), _encoding([8])], 0,
                                  ["input_ids", "attention_mask", "token_type_ids"])
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert inputs["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 0]]
    assert all(a.dtype == np.int64 for a in inputs.values())
    only = onnxrt.padded_inputs([_encoding([1, 2])], 9, ["input_ids", "attention_mask"])
    assert set(only) == {"input_ids", "attention_mask"}


@pytest.mark.parametrize("count", [1, 2, 3])
def test_lanes_run_every_group_once_and_side_by_side_when_there_are_several(count):
    lanes = onnxrt.Lanes(count, "test-lane")
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def call(rows):
        with lock:
            seen.extend((row, threading.current_thread().name) for row in rows)

    lanes.run([[0, 1], [2], [3]], call)
    assert sorted(row for row, _ in seen) == [0, 1, 2, 3]
    names = {name for _, name in seen}
    assert all(n.startswith("test-lane") for n in names) if count > 1 else names == {threading.current_thread().name}


def test_lanes_raise_the_first_error_of_a_call():
    def call(rows):
        if rows == [2]:
            raise ValueError("bad group")

    with pytest.raises(ValueError, match="bad group"):
        onnxrt.Lanes(2, "test-lane").run([[0], [1], [2]], call)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread priority is Linux's")
def test_lanes_with_a_niceness_run_their_calls_at_a_lower_priority():
    seen: list[int] = []
    lanes = onnxrt.Lanes(2, "test-nice", niceness=3)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    lanes.run([[0], [1]], lambda rows: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    assert seen and all(value >= own for value in seen) and any(value > own for value in seen)


def test_lane_count_is_one_per_core_by_default_and_bounded():
    assert onnxrt.lane_count(1) == 1
    assert onnxrt.lane_count(64) == onnxrt.MAX_LANES
    assert onnxrt.lane_count(0) == max(1, min(onnxrt.MAX_LANES, os.cpu_count() or 1))
