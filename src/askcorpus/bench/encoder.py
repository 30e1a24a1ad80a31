"""Section 7: what lowers the floor itself. Each encoder variant runs in its own process (clean thread pools).

    python -m askcorpus.bench.encoder --variant torch-t1 --index DIR --qa evals/qa.jsonl --onnx-dir DIR --out v.npy

Variants: torch-t{1,2} (sentence-transformers on PyTorch with 1 or 2 intra-op threads), ort-fp32-t{1,2} and
ort-int8-t{1,2} (askcorpus's own checked ONNX export run by its OnnxEmbedder, int8 = dynamic quantisation of
it), and `export` (makes that export in --onnx-dir and its int8 copy in --onnx-dir/int8).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .stats import Check, Section, percentile

VARIANTS = ("torch-t2", "torch-t1", "ort-fp32-t2", "ort-fp32-t1", "ort-int8-t2", "ort-int8-t1")


def onnx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


MODEL = "all-MiniLM-L6-v2"
INT8_FOLDER = "int8"


def export(torch_embedder, folder: Path) -> dict:
    """askcorpus's own checked ONNX export into `folder`, and beside it (`int8/`) its dynamic int8 quantisation."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..embed.onnx_backend import load_onnx_embedder

    started = time.perf_counter()
    fp32 = load_onnx_embedder(MODEL, folder, load_torch=lambda: torch_embedder).folder
    export_s = time.perf_counter() - started
    int8 = folder / INT8_FOLDER
    int8.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "export.json"):
        shutil.copyfile(fp32 / name, int8 / name)
    started = time.perf_counter()
    quantize_dynamic(str(fp32 / "model.onnx"), str(int8 / "model.onnx"), weight_type=QuantType.QInt8)
    return {"export_s": export_s, "quantize_s": time.perf_counter() - started,
            "fp32_mb": (fp32 / "model.onnx").stat().st_size / 1e6,
            "int8_mb": (int8 / "model.onnx").stat().st_size / 1e6}


def onnx_encoder(folder: Path, variant: str, threads: int):
    """The variant as askcorpus runs it: OnnxEmbedder on the fp32 export, or on its int8 copy."""
    from ..embed.onnx_backend import OnnxEmbedder, load_onnx_embedder

    if "int8" in variant:
        return OnnxEmbedder(MODEL, folder / INT8_FOLDER, threads)
    return load_onnx_embedder(MODEL, folder, threads)  # the export made by `export` above, without PyTorch


def qa_items(path: Path) -> list[dict]:
    items = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict) and item.get("question") and item.get("evidence"):
                items.append(item)
    return items


def retrieval_quality(query_vectors: np.ndarray, passage_vectors: np.ndarray, passages, items: list[dict]) -> dict:
    """Dense hit@10 and MRR@10 on the eval set: a passage counts when it overlaps an evidence span."""
    scores = query_vectors @ passage_vectors.T
    hits, reciprocal = 0, 0.0
    for row, item in zip(scores, items):
        top = np.argsort(-row, kind="stable")[:10]
        for rank, pid in enumerate(top, start=1):
            p = passages[pid]
            if any(e["doc_id"] == p.doc_id and e["start"] < p.end and p.start < e["end"] for e in item["evidence"]):
                hits += 1
                reciprocal += 1.0 / rank
                break
    n = max(1, len(items))
    return {"hit_at_10": hits / n, "mrr_at_10": reciprocal / n, "questions": len(items)}


def child(args: argparse.Namespace) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from ..embed import load_embedder
    from ..store import load

    threads = int(args.variant.rsplit("-t", 1)[1]) if "-t" in args.variant else 2
    torch.set_num_threads(threads)
    if args.variant == "export":
        return export(load_embedder(MODEL), Path(args.onnx_dir))
    if args.variant.startswith("torch"):
        model = load_embedder(MODEL).model
        encode = lambda texts, batch_size=32: model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    else:
        embedder = onnx_encoder(Path(args.onnx_dir), args.variant, threads)
        encode = lambda texts, batch_size=32: embedder.encode(texts, batch_size=batch_size)
    index = load(Path(args.index))
    passages = index.passages
    items = qa_items(Path(args.qa))
    questions = [i["question"] for i in items] or json.loads(Path(args.questions).read_text(encoding="utf-8"))
    for q in questions[:5]:
        encode([q])
    latencies = []
    deadline = time.perf_counter() + args.budget
    for q in questions[: args.queries]:
        started = time.perf_counter()
        encode([q])
        latencies.append(time.perf_counter() - started)
        if time.perf_counter() > deadline:
            break
    texts = [p.text for p in passages]
    started = time.perf_counter()
    passage_vectors = encode(texts, batch_size=32)
    batch_s = time.perf_counter() - started
    query_vectors = encode(questions, batch_size=32)
    np.save(args.out, query_vectors)
    result = {"variant": args.variant, "query_p50_ms": percentile(latencies, 50) * 1e3,
              "query_p95_ms": percentile(latencies, 95) * 1e3, "queries": len(latencies),
              "passages_per_s": len(texts) / batch_s}
    if items:
        result.update(retrieval_quality(query_vectors, passage_vectors, passages, items))
    return result


def run(index: Path, qa: Path, questions: list[str], work: Path, *, rounds: int = 2, log=print) -> Section:
    section = Section("encoder", "7. Lowering the floor: encoder variants, each in its own process",
                      ["variant", "query p50 ms", "query p95 ms", "passages/s", "dense hit@10", "dense MRR@10",
                       "min cos vs torch"])
    variants = list(VARIANTS)
    onnx_dir = work / "onnx"
    if onnx_available():
        exported = _child("export", index, qa, questions, onnx_dir, work)
        section.notes.append(f"ONNX export {exported['export_s']:.1f}s ({exported['fp32_mb']:.0f} MB), "
                             f"int8 quantisation {exported['quantize_s']:.1f}s ({exported['int8_mb']:.0f} MB)")
    else:
        variants = [v for v in variants if v.startswith("torch")]
        section.notes.append("onnxruntime is not installed: ONNX variants skipped (pip install onnxruntime onnx)")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_number in range(rounds):  # alternate the order each round so drifting load hits all alike
        order = variants if round_number % 2 == 0 else variants[::-1]
        for variant in order:
            results[variant].append(_child(variant, index, qa, questions, onnx_dir, work))
            log(f"  {variant}: query p50 {results[variant][-1]['query_p50_ms']:.2f} ms, "
                f"{results[variant][-1]['passages_per_s']:.1f} passages/s")
    reference = np.load(work / "vectors-torch-t2.npy")
    for variant in variants:
        runs = results[variant]
        merged = {key: float(np.median([r[key] for r in runs])) for key in ("query_p50_ms", "query_p95_ms",
                                                                              "passages_per_s")}
        for key in ("hit_at_10", "mrr_at_10"):
            merged[key] = runs[0].get(key)
        vectors = np.load(work / f"vectors-{variant}.npy")
        merged["min_cos_vs_torch"] = float(np.min(np.sum(vectors * reference, axis=1)))
        results[variant] = runs
        section.rows.append([variant, merged["query_p50_ms"], merged["query_p95_ms"], merged["passages_per_s"],
                             merged["hit_at_10"], merged["mrr_at_10"], merged["min_cos_vs_torch"]])
        section.data[variant] = merged | {"runs": runs}
    base = section.data["torch-t2"]
    best = min(section.data, key=lambda v: section.data[v]["query_p50_ms"])
    lossless = [v for v in variants if (section.data[v]["hit_at_10"] or 0) >= (base["hit_at_10"] or 0)
                and section.data[v]["min_cos_vs_torch"] > 0.999]
    fastest_lossless = min(lossless, key=lambda v: section.data[v]["query_p50_ms"])
    section.checks.append(Check("a faster floor with no loss on the eval set",
                                f"fastest lossless variant {fastest_lossless}: query p50 "
                                f"{section.data[fastest_lossless]['query_p50_ms']:.2f} ms vs torch-t2 "
                                f"{base['query_p50_ms']:.2f} ms; fastest overall {best}",
                                section.data[fastest_lossless]["query_p50_ms"] < base["query_p50_ms"]))
    for name, numbers in cold_starts(onnx_dir).items():
        section.notes.append(f"cold start to first encoded query, {name}: {numbers['process_s']:.1f}s wall "
                             f"({numbers['in_process_s']:.1f}s of it importing and loading)")
        section.data[f"cold_start_{name}"] = numbers
    section.notes.append(f"median of {rounds} runs per variant, order alternated; quality on the seeds index "
                         "(dense retrieval, exact cosine)")
    return section


COLD_TORCH = """
import time, os; t = time.perf_counter()
from askcorpus.embed import load_embedder
e = load_embedder("all-MiniLM-L6-v2"); e.encode(["warm up"])
print(time.perf_counter() - t)
"""
COLD_ORT = """
import time, sys; t = time.perf_counter()
from pathlib import Path
from askcorpus.embed.onnx_backend import load_onnx_embedder
e = load_onnx_embedder("all-MiniLM-L6-v2", Path(sys.argv[1])); e.encode(["warm up"])
print(time.perf_counter() - t)
"""


def cold_starts(onnx_dir: Path) -> dict[str, float]:
    """Wall time of a fresh process from start to its first encoded query: PyTorch path vs ONNX Runtime path."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = {}
    for name, code, extra in (("torch", COLD_TORCH, []), ("onnxruntime", COLD_ORT, [str(onnx_dir)])):
        if name == "onnxruntime" and not any(onnx_dir.glob("*/export.json")):
            continue  # no export was made (onnxruntime missing)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, *extra], capture_output=True, text=True, env=env,
                              timeout=600)
        if done.returncode == 0:
            out[name] = {"process_s": time.perf_counter() - started, "in_process_s": float(done.stdout.split()[-1])}
    return out


def _child(variant: str, index: Path, qa: Path, questions: list[str], onnx_dir: Path, work: Path) -> dict:
    questions_file = work / "encoder-questions.json"
    questions_file.write_text(json.dumps(questions), encoding="utf-8")
    command = [sys.executable, "-m", "askcorpus.bench.encoder", "--variant", variant, "--index", str(index),
               "--qa", str(qa), "--questions", str(questions_file), "--onnx-dir", str(onnx_dir),
               "--out", str(work / f"vectors-{variant}.npy")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"encoder variant {variant} failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m askcorpus.bench.encoder")
    parser.add_argument("--variant", required=True, choices=VARIANTS + ("export",))
    parser.add_argument("--index", default="")
    parser.add_argument("--qa", default="evals/qa.jsonl")
    parser.add_argument("--questions", default="")
    parser.add_argument("--onnx-dir", default="onnx")
    parser.add_argument("--out", default="vectors.npy")
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--budget", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(child(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
