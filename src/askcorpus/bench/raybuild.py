"""Section 10: a build on Ray against the local build of the same corpus on the same cores; two-node share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import store
from ..build import build_index
from ..config import Settings
from ..embed import Embedder
from .stats import Check, Section, ratio, timed
from .synth import synthetic_documents, write_corpus

THROUGHPUT_TARGET = 0.9
INCREMENTAL_TARGET = 0.05


def run(settings: Settings, embedder: Embedder, sentences: list[str], work: Path, *, quick: bool,
        log=print) -> Section:
    """Local build, then the same corpus on a local Ray cluster of the same cores, then one document added."""
    import ray

    from ..build_ray import RayBackend, connect

    section = Section("ray", "10. Ray build: the same corpus built locally and on Ray (same machine, same cores)",
                      ["measure", "passages embedded", "seconds", "passages/s", "ratio"])
    # Throughput is what a large build sees: a Ray build pays a fixed start per build (the read tasks' and the
    # model actors' processes load the model, ~5 s here) that a corpus of a few hundred passages would mostly
    # measure. The full run's ~3,500 passages make it a tenth of the build; the quick run shows it plainly.
    count = 150 if quick else 1000
    documents = synthetic_documents(sentences, count, seed=0, sentences_per_doc=(4, 14))
    corpus = work / "ray-corpus"
    write_corpus(documents, corpus)
    # Every build here runs the same model export, as they would on one machine: a fresh index folder would
    # otherwise make the Ray workers export the model again inside the timed build.
    local = settings.with_overrides(corpus=corpus, index=work / "ray-local-index",
                                    encoder_cache=settings.encoder_cache_dir.resolve())
    # The full build goes to the cluster whatever its size (ray_min_bytes 0); the first added document as
    # configured, the second forced onto the cluster.
    remote = local.with_overrides(index=work / "ray-remote-index", ray_min_bytes=0)
    configured = remote.with_overrides(ray_min_bytes=settings.ray_min_bytes)
    cpus = os.cpu_count() or 1

    local_report = build_index(local, embedder)
    local_pps = local_report.passages / local_report.seconds
    log(f"  local build: {local_report.passages} passages in {local_report.seconds:.1f}s")
    startup_s, _ = timed(lambda: connect(None, local_cpus=cpus))
    try:
        full = build_index(remote, embedder, backend=RayBackend(remote))
        full_pps = full.passages / full.seconds
        log(f"  Ray build: {full.seconds:.1f}s (cluster start-up {startup_s:.1f}s apart)")
        extra = synthetic_documents(sentences, 2, seed=10_001, sentences_per_doc=(4, 14))
        (corpus / "doc_new.txt").write_text(extra[0], encoding="utf-8")
        # As configured (a change under ray_min_bytes is embedded by the driver), then forced onto the cluster.
        added = build_index(configured, embedder, backend=RayBackend(configured, embedder=embedder))
        (corpus / "doc_new2.txt").write_text(extra[1], encoding="utf-8")
        forced = build_index(remote, embedder, backend=RayBackend(remote))
        local_added = build_index(local, embedder)
    finally:
        ray.shutdown()
    same = _same_output(local.index, remote.index)
    throughput = ratio(full_pps, local_pps)
    fraction = ratio(added.seconds, full.seconds)
    section.rows += [
        ["local build (this process)", local_report.embedded_passages, local_report.seconds, local_pps, None],
        [f"Ray build (local cluster, {cpus} CPUs)", full.embedded_passages, full.seconds, full_pps, throughput],
        ["  Ray cluster start-up (not in the build)", "", startup_s, None, None],
        [f"Ray: add one document (under ray_min_bytes {configured.ray_min_bytes:,}: on the driver)",
         added.embedded_passages, added.seconds, None, fraction],
        ["Ray: add one document, forced onto the cluster (ray_min_bytes 0)", forced.embedded_passages,
         forced.seconds, None, ratio(forced.seconds, full.seconds)],
        ["local: add two documents (the same two)", local_added.embedded_passages, local_added.seconds, None,
         ratio(local_added.seconds, local_report.seconds)],
    ]
    section.checks += [
        Check(f"Ray build throughput >= {THROUGHPUT_TARGET}x the local build's",
              f"{throughput:.3f}x ({full_pps:.1f} vs {local_pps:.1f} passages/s)", throughput >= THROUGHPUT_TARGET),
        Check(f"Ray: add one document <= {INCREMENTAL_TARGET:.0%} of the full Ray build",
              f"{fraction:.1%} ({added.seconds:.2f}s of {full.seconds:.2f}s)", fraction <= INCREMENTAL_TARGET),
        Check("Ray build = local build (passages, vectors within 1e-5)", same["summary"], same["equal"]),
    ]
    section.data = {"local_build_s": local_report.seconds, "ray_build_s": full.seconds, "startup_s": startup_s,
                    "passages": full.passages, "add_one_s": added.seconds, "add_one_forced_s": forced.seconds,
                    "local_add_two_s": local_added.seconds,
                    "throughput_ratio": throughput, "add_one_fraction": fraction, "same_output": same}
    if not quick:
        section.data["two_nodes"] = two_node_share(remote.with_overrides(index=work / "ray-two-node-index"),
                                                   embedder, log=log)
        share = section.data["two_nodes"]
        section.rows.append([f"two-node cluster ({share['nodes']} nodes, 1 CPU each)", share["passages"],
                             share["seconds"], share["passages"] / share["seconds"], None])
        section.checks.append(Check("two-node cluster: both nodes embed a share",
                                    ", ".join(str(c) for c in share["per_node"].values()),
                                    len(share["per_node"]) == 2 and min(share["per_node"].values()) > 0))
    section.notes.append(f"{count} synthetic documents from the seeds' sentences; the Ray build starts a pool of "
                         f"{cpus} model actors (1 CPU, 1 ONNX thread each) and loads the model in each, per build")
    return section


def two_node_share(settings: Settings, embedder: Embedder, *, log=print) -> dict:
    """A head and a worker node on this machine (1 CPU each): passages each node embedded in one build."""
    import ray
    from ray.cluster_utils import Cluster

    from ..build_ray import RayBackend

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
        cluster.wait_for_nodes()
        report = build_index(settings, embedder, backend=RayBackend(settings))
    finally:
        ray.shutdown()
        cluster.shutdown()
    log(f"  two nodes: {report.embedded_per_node}")
    return {"nodes": 2, "passages": report.embedded_passages, "seconds": report.seconds,
            "per_node": {node[:12]: count for node, count in report.embedded_per_node.items()}}


def _same_output(local_index: Path, remote_index: Path) -> dict:
    a, b = store.load(local_index), store.load(remote_index)
    equal_passages = a.passages == b.passages
    difference = float(np.abs(np.asarray(a.vectors) - np.asarray(b.vectors)).max()) \
        if a.vectors.shape == b.vectors.shape else float("inf")
    return {"equal": bool(equal_passages and difference <= 1e-5), "max_vector_difference": difference,
            "summary": f"passages {'identical' if equal_passages else 'DIFFER'}, max |dv| {difference:.1e}"}
