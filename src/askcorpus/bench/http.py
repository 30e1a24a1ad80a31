"""Sections 2 and 6: a real `askcorpus serve` on loopback under load, its memory and start-up, and `ask`."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .inproc import serving_floor
from .stats import Check, Section, percentile, process_cpu_seconds, ratio, read_status_kb, summarize

HOST = "127.0.0.1"


def server_available() -> str | None:
    """None when `askcorpus serve` can run here, else why not."""
    if importlib.util.find_spec("askcorpus.api") is None:
        return "askcorpus.api (the server) is not in this checkout yet"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _request(url: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Server:
    """`python -m askcorpus.cli serve` on a free loopback port; always stopped on exit."""

    def __init__(self, index: Path, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        self.command = [sys.executable, "-m", "askcorpus.cli", "serve", "--host", HOST, "--port", str(self.port),
                        "--index", str(index)]
        self.env = _env(extra_env)
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def __enter__(self) -> "Server":
        self._log = open(self.log_path, "wb")
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                        stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self, question: str, timeout: float = 180.0) -> tuple[float, float]:
        """Seconds from start to the first 200 of GET /health, and to the first answered POST /search."""
        deadline = self.started_at + timeout
        health = None
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}: {self.tail()}")
            try:
                status, _ = _request(self.url + "/health", timeout=2)
                if status == 200:
                    health = time.perf_counter() - self.started_at
                    break
            except OSError:
                pass
            time.sleep(0.05)
        if health is None:
            raise RuntimeError(f"the server did not answer /health within {timeout:.0f}s: {self.tail()}")
        while time.perf_counter() < deadline:
            status, body = _request(self.url + "/search", {"query": question, "k": 10, "mode": "hybrid"}, timeout=60)
            if status == 200:
                return health, time.perf_counter() - self.started_at
            if status not in (503,):
                raise RuntimeError(f"POST /search answered {status}: {body[:300]!r}")
            time.sleep(0.05)
        raise RuntimeError(f"the server answered no search within {timeout:.0f}s")

    def peak_rss_mb(self) -> float | None:
        kb = read_status_kb(self.process.pid, "VmHWM") if self.process else None
        return None if kb is None else kb / 1024

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time the server process has used so far (all its threads)."""
        return process_cpu_seconds(self.process.pid) if self.process else None

    def rss_mb(self) -> float | None:
        kb = read_status_kb(self.process.pid, "VmRSS") if self.process else None
        return None if kb is None else kb / 1024

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def round_trips(url: str, path: str = "/health", count: int = 60) -> list[float]:
    """Seconds per GET on one keep-alive connection: the fixed cost of any request to this server here.

    Timed with the load generator's own client, so it compares with the load generator's latencies.
    """
    from urllib.parse import urlsplit

    from .load import Connection

    parts = urlsplit(url)
    connection = Connection(parts.hostname, parts.port, timeout=30)
    seconds = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            status, _ = connection.get(path)
            seconds.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")
    finally:
        connection.close()
    return seconds


def run_load(url: str, queries_file: Path, *, concurrency: int, requests: int, duration: float,
             honour_retry_after: bool = False, rerank: bool = True) -> dict:
    """The load generator as a separate process; its JSON result (rerank False: every request asks for the
    first stage only)."""
    command = [sys.executable, "-m", "askcorpus.bench.load", "--url", url, "--queries", str(queries_file),
               "--concurrency", str(concurrency), "--requests", str(requests), "--duration", str(duration)]
    if honour_retry_after:
        command.append("--honour-retry-after")
    if not rerank:
        command.append("--no-rerank")
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-800:]}")
    return json.loads(done.stdout)


def _serve_and_load(index: Path, questions: list[str], queries_file: Path, floor_fn, *, quick: bool, work: Path,
                    extra_env: dict[str, str] | None, clients: tuple[int, ...], log) -> tuple[dict, dict, dict]:
    startup: dict = {}
    with Server(index, work, extra_env) as server:
        health_s, first_s = server.wait_ready(questions[0])
        startup.update(serve_to_health_s=health_s, serve_to_first_search_s=first_s, idle_rss_mb=server.rss_mb())
        log(f"  server up: /health after {health_s:.1f}s, first search after {first_s:.1f}s")
        for question in questions[:5]:  # warm up
            _request(server.url + "/search", {"query": question, "k": 10, "mode": "hybrid"})
        # 1 client latency, with the in-process floors measured right before and after it.
        floor_before = floor_fn(questions, 6 if quick else 15, serving_last=True)
        one = run_load(server.url, queries_file, concurrency=1, requests=60 if quick else 300,
                       duration=8 if quick else 40)
        floor_after = floor_fn(questions, 6 if quick else 15, serving_last=False)
        startup["health_round_trip_p50_s"] = percentile(round_trips(server.url), 50)
        results: dict = {1: one}
        for count in clients:
            if count == 1 and quick:
                continue  # quick: the latency run above is the 1-client throughput run too
            key = count if count != 1 else "1-throughput"
            results[key] = run_load(server.url, queries_file, concurrency=count, requests=2000,
                                    duration=6 if quick else 20)
            log(f"  {count} clients: {results[key]['rps']:.1f} req/s")
        startup["peak_rss_mb"] = server.peak_rss_mb()
        startup["server_log_tail"] = server.tail(600)
    floor_p50 = {name: percentile(floor_before[name] + floor_after[name], 50) for name in floor_before}
    return results, startup, floor_p50


def run_http(index: Path, questions: list[str], floor_fn, *, quick: bool, work: Path, env: dict[str, str] | None = None,
             log=print) -> tuple[Section, dict]:
    """Section 2 (latency and throughput over HTTP); returns also the start-up and memory numbers for section 6.

    `env` goes to the server: e.g. ASKCORPUS_ENCODER_CACHE, so it starts from the bench's ONNX export.
    """
    section = Section("http", "2. HTTP: askcorpus serve on loopback, POST /search hybrid k=10",
                      ["server", "clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"])
    why_not = server_available()
    if why_not:
        section.skipped = why_not + "; run the bench again once askcorpus.api has landed"
        return section, {}
    queries_file = work / "questions.json"
    queries_file.write_text(json.dumps(questions), encoding="utf-8")
    # First stage only, as the in-process floor it is compared with, admission at its defaults: this section
    # measures the HTTP layer; section 9 measures the reranking server under overload, 13 the cost per question.
    base_env = dict(env or {}) | {"ASKCORPUS_RERANK": "false"}
    setups = [("default", base_env)]
    if not quick:  # the same server with ONNX Runtime and FAISS held to one thread (see section 7)
        setups.append(("one thread", base_env | {"OMP_NUM_THREADS": "1", "ASKCORPUS_ENCODER_THREADS": "1"}))
    startup: dict = {}
    for label, server_env in setups:
        log(f"  server ({label})...")
        results, started, floors_p50 = _serve_and_load(index, questions, queries_file, floor_fn, quick=quick, work=work,
                                                       extra_env=server_env, clients=(1, 8, 32), log=log)
        if not startup:
            startup = started
        else:
            section.notes.append(f"{label} server: start {started['serve_to_first_search_s']:.1f}s, "
                                 f"peak RSS {started['peak_rss_mb']:.0f} MB")
        for key, result in results.items():
            s = summarize(result["latencies_s"])
            clients = "1 (latency run)" if key == 1 else str(key).replace("-throughput", "")
            section.rows.append([label, clients, result["ok"], result["errors"], result["rps"], s["p50_ms"],
                                 s["p95_ms"], s["p99_ms"]])
        section.data[label] = {str(k): {x: v for x, v in r.items() if x != "latencies_s"} | summarize(r["latencies_s"])
                               for k, r in results.items()}
        floor_name = serving_floor(floors_p50)
        floor_p50 = floors_p50[floor_name]
        section.data[label]["floors_p50_ms"] = {name: value * 1e3 for name, value in floors_p50.items()}
        section.data[label]["floor_p50_ms"] = floor_p50 * 1e3
        health_p50 = started["health_round_trip_p50_s"]
        section.data[label]["health_round_trip_p50_ms"] = health_p50 * 1e3
        one = results[1]
        one_p50 = percentile(one["latencies_s"], 50)
        section.checks.append(Check(f"[{label}] HTTP p50 at 1 client <= floor + 5 ms",
                                    f"{one_p50 * 1e3:.2f} ms vs {floor_name} {floor_p50 * 1e3:.2f} ms "
                                    f"({(one_p50 - floor_p50) * 1e3:+.2f} ms, of which GET /health's round trip "
                                    f"{health_p50 * 1e3:.2f} ms)", one_p50 <= floor_p50 + 0.005))
        base = results.get("1-throughput", one)["rps"]
        top = results[32]["rps"]
        section.checks.append(Check(f"[{label}] throughput at 32 clients >= 2x at 1 client",
                                    f"{ratio(top, base):.2f}x ({top:.1f} vs {base:.1f} req/s)", top >= 2 * base))
        measured = ", ".join(f"{name} {value * 1e3:.2f} ms" for name, value in floors_p50.items())
        section.notes.append(f"{label}: floor p50s measured in the bench process just before and after the 1-client "
                             f"run: {measured}")
    section.notes.append("load generator: a separate process, closed loop, one keep-alive connection per client")
    section.notes.append("server: reranking off (ASKCORPUS_RERANK=false, as the in-process floor), admission at its "
                         "defaults; section 9 loads the reranking server")
    return section, startup


def run_measured(command: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run a command to its end: exit code, output, wall seconds and the peak RSS of that process alone.

    The peak is the kernel's high-water mark (VmHWM) read while the process runs, every few milliseconds. Not
    ru_maxrss: a forked child's counts the parent's pages it held before exec (the bench's own ~700 MB), and
    RUSAGE_CHILDREN is the largest of every child ever waited for.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        peak_kb = None
        try:
            while process.poll() is None:
                if time.perf_counter() - started > timeout:
                    process.kill()
                    process.wait()
                    raise subprocess.TimeoutExpired(command, timeout)
                high_water = read_status_kb(process.pid, "VmHWM")
                if high_water is not None:
                    peak_kb = max(peak_kb or 0, high_water)
                time.sleep(0.003)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"returncode": process.returncode, "stdout": out.read().decode("utf-8", "replace"),
                "stderr": err.read().decode("utf-8", "replace"), "wall_s": wall,
                "peak_rss_mb": None if peak_kb is None else peak_kb / 1024}


def time_ask(index: Path, question: str, env: dict[str, str] | None = None) -> dict:
    """Wall time and peak RSS of one `askcorpus ask` process."""
    command = [sys.executable, "-m", "askcorpus.cli", "ask", question, "--index", str(index), "--json"]
    done = run_measured(command, _env(env), timeout=300)
    if done["returncode"] != 0:
        raise RuntimeError(f"askcorpus ask failed ({done['returncode']}): {done['stderr'][-500:]}")
    return {"ask_wall_s": done["wall_s"], "ask_peak_rss_mb": done["peak_rss_mb"],
            "import_cli_and_engine_s": _import_time()}


def _import_time() -> float:
    """Wall time of a process that only imports what `ask` imports before loading anything."""
    code = "import askcorpus.cli, askcorpus.engine, askcorpus.search, onnxruntime, tokenizers"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=_env(), timeout=300, check=True, capture_output=True)
    return time.perf_counter() - started


def startup_section(startup: dict, ask: dict | None, loads: dict) -> Section:
    section = Section("startup", "6. Memory and start-up", ["measure", "value"])
    rows = [
        ("model load in process (s)", loads.get("model_load_s")),
        ("seeds index load in process (s)", loads.get("index_load_s")),
        ("serve -> /health 200 (s)", startup.get("serve_to_health_s")),
        ("serve -> first answered search (s)", startup.get("serve_to_first_search_s")),
        ("server RSS idle after start (MB)", startup.get("idle_rss_mb")),
        ("server peak RSS, VmHWM, after load (MB)", startup.get("peak_rss_mb")),
    ]
    if ask:
        rows += [("askcorpus ask wall time (s)", ask.get("ask_wall_s")),
                 ("askcorpus ask peak RSS (MB)", ask.get("ask_peak_rss_mb")),
                 ("python -c 'import askcorpus.cli, engine, search, onnxruntime, tokenizers' (s)",
                  ask.get("import_cli_and_engine_s"))]
    section.rows = [list(r) for r in rows]
    section.data = {k: v for k, v in (startup | (ask or {}) | loads).items()}
    if not startup:
        section.notes.append("server numbers missing: the HTTP section was skipped")
    return section
