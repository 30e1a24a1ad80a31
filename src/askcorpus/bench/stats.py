"""Numbers and tables: percentiles, timers, and the result shapes every benchmark returns."""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from ..evaluate import metrics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation) of `evaluate.metrics.percentile`, NaN for no values, so a
    bench table prints a dash and a ratio with it is NaN rather than an error."""
    value = metrics.percentile(values, q)
    return math.nan if value is None else value


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95 and p99 of a list of durations, in milliseconds, plus the sample count."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1e3,
        "p95_ms": percentile(seconds, 95) * 1e3,
        "p99_ms": percentile(seconds, 99) * 1e3,
    }


def timed(function: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


@dataclass
class Check:
    """One target of the issue: what was measured against what, and whether it is met."""

    target: str
    measured: str
    met: bool | None  # None: could not be measured in this run


@dataclass
class Section:
    """One benchmark's table: column names, rows of values, notes, and the targets it checks."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # raw numbers for the JSON report
    skipped: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def fmt(value: object) -> str:
    """A table cell: floats rounded to a sensible number of digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def text_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain aligned table for the terminal."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return "\n".join(out)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[fmt(v).replace("|", "\\|") for v in row] for row in rows]
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out.extend("| " + " | ".join(row) + " |" for row in cells)
    return "\n".join(out)


def render_check(check: Check) -> str:
    verdict = {True: "MET", False: "NOT MET", None: "not measured"}[check.met]
    return f"[{verdict}] {check.target}: {check.measured}"


def render_section(section: Section, markdown: bool = False) -> str:
    lines = [f"## {section.title}" if markdown else f"== {section.title} =="]
    if section.skipped:
        lines.append(f"skipped: {section.skipped}")
        return "\n".join(lines)
    if section.rows:
        if markdown:
            lines.append("")
        lines.append((markdown_table if markdown else text_table)(section.columns, section.rows))
    if section.checks:
        lines.append("")
        lines.extend(("- " if markdown else "") + render_check(c) for c in section.checks)
    if section.notes:
        lines.append("")
        lines.extend(("- " if markdown else "note: ") + n for n in section.notes)
    return "\n".join(lines)


def machine_info() -> dict:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "load_average_at_start": _load_average(),
    }
    try:
        import faiss
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["faiss"] = faiss.__version__
    except Exception:  # pragma: no cover - both are dependencies
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a running process from /proc/PID/stat (Linux), in seconds; None elsewhere or once gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_status_kb(pid: int, field_name: str) -> int | None:
    """A kB field (VmHWM, VmRSS) of /proc/<pid>/status, or None if the process is gone."""
    try:
        for line in open(f"/proc/{pid}/status", encoding="utf-8"):
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
