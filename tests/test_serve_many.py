"""Serving past one process: two `askcorpus serve` processes on one index folder both pick up a new build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from askcorpus import store

from conftest import free_port, start_server, stop_server

pytestmark = pytest.mark.slow

NOTE = ("The Quillmere ferry crossed the Tarn estuary twice a day until 1931. "
        "Its last captain, Ada Brenlow, kept the quillmere logbooks that the museum now shows.\n")


@contextmanager
def _serve(index: Path, corpus: Path, env: dict, log: Path) -> Iterator[str]:
    """One real `askcorpus serve` process on a free loopback port; yields its base URL, always stops it."""
    port = free_port()
    process = start_server(port, ["--index", str(index), "--corpus", str(corpus)], env, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


def _top_doc(base: str, query: str) -> str | None:
    results = httpx.get(base + "/search", params={"q": query, "mode": "bm25", "k": 1}, timeout=30).json()["results"]
    return results[0]["doc_id"] if results else None


def test_two_servers_on_one_index_both_serve_the_new_build_without_restart(tmp_path, seeds_settings):
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(seeds_settings.corpus, corpus)
    shutil.copytree(seeds_settings.index, index)  # the session's real-model build
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ASKCORPUS_RELOAD_INTERVAL": "0.5",
           "ASKCORPUS_ENCODER_CACHE": str(seeds_settings.encoder_cache_dir)}
    env.pop("ASKCORPUS_HOST", None)
    with ExitStack() as stack:
        bases = [stack.enter_context(_serve(index, corpus, env, tmp_path / f"server{i}.log")) for i in range(2)]
        first = store.current_build(index).name
        assert [httpx.get(b + "/health").json()["build"] for b in bases] == [first, first]
        assert {_top_doc(b, "quillmere ferry logbooks") for b in bases} != {"zz_ferry.txt"}

        (corpus / "zz_ferry.txt").write_text(NOTE, encoding="utf-8")
        built = subprocess.run([sys.executable, "-m", "askcorpus.cli", "index", "--corpus", str(corpus),
                                "--index", str(index)], env=env, capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stderr[-2000:]
        new = store.current_build(index).name
        assert new != first

        deadline = time.monotonic() + 30
        for base in bases:
            while httpx.get(base + "/health").json()["build"] != new:
                assert time.monotonic() < deadline, f"{base} still serves {first} 30 s after the build"
                time.sleep(0.2)
            health = httpx.get(base + "/health").json()
            assert health["documents"] == 6 and health["reloads"] >= 1
            assert _top_doc(base, "quillmere ferry logbooks") == "zz_ferry.txt"
