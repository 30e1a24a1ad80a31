"""Ray builds against a real two-node Ray cluster on 127.0.0.1: same index as a local build, shared work, faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from askcorpus import store
from askcorpus.build import build_index
from askcorpus.errors import ClusterError
from askcorpus.search import Searcher

from conftest import QA_FILE, SEEDS

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and a second node on this machine, one CPU each, so the pool spans nodes; always stopped."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _ray_backend(settings, **kwargs):
    from askcorpus.build_ray import RayBackend

    return RayBackend(settings, **kwargs)


@pytest.fixture(scope="module")
def ray_seeds_build(ray_cluster, seeds_settings, real_embedder, tmp_path_factory):
    """The seeds built on the cluster, with the local build's settings and model export."""
    settings = seeds_settings.with_overrides(index=tmp_path_factory.mktemp("ray-seeds-index"), ray_min_bytes=0)
    report = build_index(settings, real_embedder, backend=_ray_backend(settings))
    return settings, report


def _manifest_without_timings(index: store.LoadedIndex) -> dict:
    manifest = {k: v for k, v in index.manifest.items() if k not in ("built_at", "documents_index")}
    manifest["stats"] = {k: v for k, v in manifest["stats"].items() if k != "backend"}
    return manifest


def test_ray_build_writes_the_same_index_as_a_local_build(ray_seeds_build, seeds_settings):
    settings, report = ray_seeds_build
    local, remote = store.load(seeds_settings.index), store.load(settings.index)
    assert report.backend == "ray" and remote.manifest["stats"]["backend"] == "ray"
    assert local.manifest["stats"]["backend"] == "local"
    assert remote.passages == local.passages  # ids, documents, offsets, texts and token counts
    assert remote.documents == local.documents
    assert np.abs(np.asarray(remote.vectors) - np.asarray(local.vectors)).max() <= 1e-5
    assert _manifest_without_timings(remote) == _manifest_without_timings(local)
    for passage in remote.passages:
        assert remote.documents[passage.doc_id].text[passage.start : passage.end] == passage.text


def test_ray_build_gives_the_same_answers_to_the_eval_questions(ray_seeds_build, searcher, real_embedder):
    settings, _ = ray_seeds_build
    remote = Searcher(settings, real_embedder, store.load(settings.index), searcher.reranker)
    questions = [json.loads(line)["question"] for line in QA_FILE.read_text(encoding="utf-8").splitlines()[:40]]
    for question in questions:
        a, b = searcher.search(question), remote.search(question)
        assert [(r.passage.doc_id, r.passage.start) for r in a.results] == \
            [(r.passage.doc_id, r.passage.start) for r in b.results], question
        assert (a.answer and (a.answer.doc_id, a.answer.start, a.answer.end)) == \
            (b.answer and (b.answer.doc_id, b.answer.start, b.answer.end)), question


def test_workers_are_given_the_model_export_by_an_absolute_path(tmp_path, monkeypatch):
    # A worker runs in its node's directory: a relative cache would be empty there and the model exported again.
    from askcorpus.config import Settings

    monkeypatch.chdir(tmp_path)
    backend = _ray_backend(Settings(index=Path("idx")))
    assert Path(backend.spec[3]) == tmp_path / "idx" / "encoders"
    assert Path(backend.spec[3]).is_absolute()


def test_both_nodes_embed_a_share(ray_seeds_build, ray_cluster):
    _, report = ray_seeds_build
    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(alive) == 2
    assert set(report.embedded_per_node) == alive
    assert all(count > 0 for count in report.embedded_per_node.values())
    assert sum(report.embedded_per_node.values()) == report.embedded_passages == report.passages


def test_cli_joins_the_cluster_by_address_and_embeds_only_the_added_document(ray_cluster, seeds_settings,
                                                                             real_embedder, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SEEDS, corpus)
    settings = seeds_settings.with_overrides(corpus=corpus, index=tmp_path / "index", ray_min_bytes=0)
    first = build_index(settings, real_embedder, backend=_ray_backend(settings))
    (corpus / "added.md").write_text("# Kunar\n\nA new report on Kunar province and its valleys.\n\n"
                                     "Fighting there resumed in the spring.", encoding="utf-8")
    # ray_min_bytes=0: even this small change goes to the cluster.
    env = dict(os.environ, ASKCORPUS_ENCODER_CACHE=str(settings.encoder_cache_dir), ASKCORPUS_RAY_MIN_BYTES="0")
    done = subprocess.run(
        [sys.executable, "-m", "askcorpus.cli", "index", "--ray", ray_cluster.address,
         "--corpus", str(corpus), "--index", str(settings.index)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "added         1  added.md" in done.stdout
    assert "embedded on ray: 1 node(s)" in done.stdout and "driver" not in done.stdout
    index = store.load(settings.index)
    new_rows = index.passages_of("added.md")
    assert index.manifest["stats"]["embedded_passages"] == len(new_rows) > 0
    assert index.passages[: first.passages] == store.load(seeds_settings.index).passages
    # The added document's vectors are the model's own, made on the cluster.
    expected = real_embedder.encode([index.passages[i].text for i in new_rows])
    assert np.abs(np.asarray(index.vectors[new_rows.start : new_rows.stop]) - expected).max() <= 1e-5


def _encoder_actor_pids() -> list[int]:
    """PIDs of the live model actors, by the process title Ray gives them (ray::...MapWorker...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and "MapWorker" in title:
                pids.append(int(entry.name))
    return pids


def test_a_worker_killed_mid_build_is_retried_and_nothing_half_written_is_loaded(ray_cluster, seeds_settings,
                                                                                real_embedder, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SEEDS, corpus)
    settings = seeds_settings.with_overrides(corpus=corpus, index=tmp_path / "index", batch_size=8,
                                             ray_min_bytes=0)
    previous = build_index(settings, real_embedder)  # the build that serves while the next one runs
    # A document as long as the whole corpus: batches of 8 make enough blocks for a kill to land mid-way.
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(SEEDS.iterdir()))
    (corpus / "more.txt").write_text(text.replace("Taliban", "the movement"), encoding="utf-8")
    killed: list[int] = []

    def kill_one_worker(done: int) -> None:
        pids = _encoder_actor_pids()
        if not killed and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(done)
            # While the killed actor restarts, readers still see the previous, complete build.
            serving.append(store.current_build(settings.index))

    serving: list = []
    backend = _ray_backend(settings, on_embed_batch=kill_one_worker)
    try:
        report = build_index(settings, real_embedder, backend=backend)
    except ClusterError as error:  # retries exhausted: a clear message, and the previous build still serves
        assert killed and "previous index is unchanged" in str(error)
        assert store.load(settings.index).path == previous.index_path
        return
    assert killed, "no model actor was alive while batches were still coming back"
    assert killed[0] < report.embedded_passages, "the kill came after the last batch"
    assert serving == [previous.index_path]
    index = store.load(settings.index)
    assert index.path == report.index_path != previous.index_path
    assert report.added == ["more.txt"]
    rows = index.passages_of("more.txt")
    expected = real_embedder.encode([index.passages[i].text for i in rows])
    assert np.abs(np.asarray(index.vectors[rows.start : rows.stop]) - expected).max() <= 1e-5
    assert len(index.passages) == len(index.dense) == index.vectors.shape[0]
