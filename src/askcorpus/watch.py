"""The live corpus: folder changes (watchfiles) and uploads turned into background incremental builds, one at a time."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import AskcorpusError
from .ingest import SUPPORTED_SUFFIXES

log = logging.getLogger("askcorpus.live")

TRIGGERS = ("watch", "upload", "startup")
OUTCOMES = ("built", "unchanged", "failed")
# Written (and fsynced) in the index folder before an upload or a deletion is acknowledged, removed once a build
# that started after it has finished: a server killed in between builds again when it starts.
PENDING_FILE = ".live-pending"
# Longest a build waits for files that keep changing (a log appended to forever must not stop every build).
MAX_POSTPONE_SECONDS = 30.0
MAX_SKIPPED_SHOWN = 100  # files passed over that /health lists
# Names editors, office suites, browsers and copy tools give a file while it is not finished yet.
_TEMPORARY = re.compile(
    r"(~$|^~\$|^#.*#$|^\.#|^4913$|\.(tmp|temp|swp|swx|swo|part|partial|crdownload|download|kate-swp|filepart)$)",
    re.IGNORECASE,
)


def is_temporary(name: str) -> bool:
    """Whether a file name is a temporary one (editor swap and backup files, partial downloads, hidden files)."""
    return name.startswith(".") or bool(_TEMPORARY.search(name))


def relevant(path: Path, root: Path, index: Path | None = None) -> bool:
    """Whether a change at `path` (under `root`) can change the index: not temporary or hidden, not inside the
    index folder, and a supported document (or something gone or a folder, which may have held some)."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    if any(is_temporary(part) for part in relative.parts):
        return False
    if index is not None and (path == index or index in path.parents):
        return False
    suffix = path.suffix.lower()
    return suffix in SUPPORTED_SUFFIXES or not path.is_file()


@dataclass
class Outcome:
    """What one live build did."""

    number: int
    triggers: list[str]
    status: str  # built | unchanged | failed
    build: str | None = None
    error: str | None = None
    seconds: float = 0.0
    finished_at: str = ""
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class LiveIndex:
    """Build requests (from the watcher or the upload routes) turned into one build at a time.

    A request returns a ticket, the number of the build that will include the change: the first build to start
    (to read the corpus) after it. Requests that arrive during a build are served by the next one; a burst of
    watched changes waits until the folder has been quiet for `watch_debounce` seconds and its files' sizes and
    times have stopped changing. A failed build keeps the current one serving and is reported in `status()`.
    """

    def __init__(self, settings: Any, holder: Any, *, watching: bool | None = None) -> None:
        self.settings = settings
        self.holder = holder
        self.watching = settings.watch if watching is None else watching
        self.debounce = settings.watch_debounce
        self.root = Path(settings.corpus)
        self.started = 0  # builds started
        self.finished = 0  # builds finished, in order
        self.building = False
        self.counts: Counter[tuple[str, str]] = Counter()
        self.last: Outcome | None = None
        self.last_failure: Outcome | None = None
        self._outcomes: deque[Outcome] = deque(maxlen=256)
        self._paths: set[Path] = set()
        # Files the upload routes wrote or removed themselves, as they left them: their watch events ask for nothing.
        self._expected: dict[Path, tuple[int, int] | None] = {}
        self._triggers: set[str] = set()
        self._last_change = 0.0
        self._immediate = False
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------------------------------ requests

    def request(self, trigger: str, paths: Iterable[str | Path] = (), *, immediate: bool = False) -> int:
        """Ask for a build that includes changes made before this call; returns its number (the ticket)."""
        self._paths.update(Path(p) for p in paths)
        self._triggers.add(trigger)
        self._last_change = time.monotonic()
        self._immediate = self._immediate or immediate
        self._wake.set()
        return self.started + 1

    def expect(self, path: Path) -> None:
        """Note a change the caller made itself (and asked a build for): the watch does not ask again for it."""
        if self.watching:
            self._expected[Path(path).resolve()] = _stat(path)
            if len(self._expected) > 10_000:
                self._expected.clear()

    def _unexpected(self, paths: Iterable[str]) -> list[str]:
        """The changed paths not left exactly as an upload left them."""
        left = []
        for raw in paths:
            path = Path(raw)
            if path in self._expected and self._expected[path] == _stat(path):
                del self._expected[path]
            else:
                left.append(raw)
        return left

    def mark_pending(self) -> None:
        """Note on disk that an acknowledged change still waits for a build (call before acknowledging it)."""
        index = Path(self.settings.index)
        index.mkdir(parents=True, exist_ok=True)
        with open(index / PENDING_FILE, "w", encoding="utf-8") as handle:
            handle.write(_now() + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    async def wait_for(self, ticket: int, timeout: float) -> Outcome | None:
        """The outcome of build `ticket` once it has finished, or None if it has not within `timeout` seconds."""
        async with self._done:
            try:
                await asyncio.wait_for(self._done.wait_for(lambda: self.finished >= ticket), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                return None
        return next((o for o in self._outcomes if o.number == ticket), None)

    @property
    def pending(self) -> bool:
        """Whether changes wait for a build that has not started yet."""
        return bool(self._triggers)

    # ------------------------------------------------------------------------------------------ running

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="askcorpus-live-builds"))
        if self.watching:
            self._tasks.append(asyncio.create_task(self._watch(), name="askcorpus-live-watch"))
        await asyncio.to_thread(self._remove_stale_uploads)
        if self.watching or (Path(self.settings.index) / PENDING_FILE).exists():
            # Files may have changed while no server watched, or acknowledged uploads wait for their build.
            self.request("startup", immediate=True)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()

    def _remove_stale_uploads(self) -> None:
        """Temporary files of uploads a killed server never finished (hidden, so never indexed)."""
        from .corpusfiles import TEMP_PREFIX

        if not self.root.is_dir():
            return
        for path in self.root.rglob(TEMP_PREFIX + "*"):
            if path.is_file():
                log.info("removing %s, left by an upload that never finished", path)
                path.unlink(missing_ok=True)

    async def _watch(self) -> None:
        import watchfiles

        root = self.root.resolve()
        index = Path(self.settings.index).resolve()
        log.info("watching %s for changes (debounce %.2f s)", root, self.debounce)
        while not self._stop.is_set():
            try:
                # Changes come in groups at least every second, however steadily a file is written: the quiet
                # period and the stability check below decide when to build.
                async for changes in watchfiles.awatch(root, stop_event=self._stop, step=50, debounce=1000,
                                                       watch_filter=lambda _c, p: relevant(Path(p), root, index)):
                    paths = self._unexpected(p for _change, p in changes)
                    if paths:
                        self.request("watch", paths)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # e.g. the folder was removed: say so and look again
                log.error("cannot watch %s (%s: %s); retrying", root, type(error).__name__, error)
                await asyncio.sleep(max(1.0, self.debounce))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._settle()
            self._wake.clear()
            self._immediate = False
            triggers = sorted(self._triggers)
            self._triggers.clear()
            self._paths.clear()
            self.started += 1
            number = self.started
            self.building = True
            try:
                outcome = await self._build(number, triggers)
            finally:
                self.building = False
            self._record(outcome)
            async with self._done:
                self.finished = number
                self._done.notify_all()

    async def _settle(self) -> None:
        """Wait until the folder has been quiet for the debounce and the changed files have stopped growing
        (an upload's request does not wait: its file is complete when it asks)."""
        first = time.monotonic()
        while not self._immediate:
            quiet = self._last_change + self.debounce - time.monotonic()
            if quiet > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), quiet)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                continue
            if time.monotonic() - first > MAX_POSTPONE_SECONDS:
                log.warning("files still changing after %.0f s; building anyway", MAX_POSTPONE_SECONDS)
                return
            unstable = await asyncio.to_thread(self._unstable, list(self._paths))
            if not unstable:
                return
            log.info("waiting for %s to stop changing", unstable[0])
            self._last_change = time.monotonic()

    def _unstable(self, paths: list[Path], pause: float = 0.1) -> list[Path]:
        """The files among `paths` whose size or modification time moves within `pause`, or is too recent."""
        before = {path: _stat(path) for path in paths}
        time.sleep(pause)
        now = time.time_ns()
        moving = []
        for path, seen in before.items():
            current = _stat(path)
            if current != seen or (current is not None and now - current[1] < self.debounce * 1e9 * 0.5):
                moving.append(path)
        return moving

    async def _build(self, number: int, triggers: list[str]) -> Outcome:
        started = time.perf_counter()
        served = self.holder.searcher.index.path.name
        try:
            report, swapped = await self.holder.reindex()
        except AskcorpusError as error:
            return Outcome(number, triggers, "failed", served, str(error), time.perf_counter() - started)
        except Exception as error:  # anything worse: the current build keeps serving
            log.exception("live build %d failed", number)
            return Outcome(number, triggers, "failed", served, f"{type(error).__name__}: {error}",
                           time.perf_counter() - started)
        seconds = time.perf_counter() - started
        skipped = [{"doc_id": s.doc_id, "reason": s.reason} for s in report.skipped]
        now_serving = self.holder.searcher.index.path.name
        if report.index_path is not None and report.index_path.name != now_serving:
            return Outcome(number, triggers, "failed", now_serving,
                           f"the new build {report.index_path.name} could not be loaded: {self.holder.last_error}",
                           seconds, skipped=skipped)
        status = "unchanged" if report.up_to_date or not swapped else "built"
        return Outcome(number, triggers, status, now_serving, None, seconds, added=report.added,
                       changed=report.changed, removed=report.removed, skipped=skipped)

    def _record(self, outcome: Outcome) -> None:
        outcome.finished_at = _now()
        self._outcomes.append(outcome)
        self.last = outcome
        for trigger in outcome.triggers:
            self.counts[(trigger, outcome.status)] += 1
        if outcome.status == "failed":
            self.last_failure = outcome
            log.error("live build %d failed (%s); still serving build %s", outcome.number, outcome.error,
                      outcome.build)
            return
        log.info("live build %d (%s): %s in %.2f s, serving %s (%d added, %d changed, %d removed, %d skipped)",
                 outcome.number, "+".join(outcome.triggers), outcome.status, outcome.seconds, outcome.build,
                 len(outcome.added), len(outcome.changed), len(outcome.removed), len(outcome.skipped))
        if not self.pending:
            (Path(self.settings.index) / PENDING_FILE).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ reporting

    def status(self) -> dict:
        """What /health says about live builds."""
        last = self.last
        return {
            "watching": self.watching,
            "debounce": self.debounce,
            "pending": self.pending,
            "building": self.building,
            "builds_started": self.started,
            "builds_finished": self.finished,
            "builds_failed": sum(n for (_t, status), n in self.counts.items() if status == "failed"),
            "builds_by_watch": sum(n for (trigger, _s), n in self.counts.items() if trigger == "watch"),
            "last_build": None if last is None else {**{k: v for k, v in asdict(last).items()
                                                        if k not in ("added", "changed", "removed")},
                                                     "skipped": last.skipped[:MAX_SKIPPED_SHOWN]},
            "last_error": None if last is None or last.status != "failed" else last.error,
        }


class LiveCollector:
    """The live builds' Prometheus metrics, read at scrape time."""

    def __init__(self, live: LiveIndex) -> None:
        self.live = live

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        live = self.live
        builds = CounterMetricFamily("askcorpus_live_builds", "live builds finished, by what asked for them "
                                     "(watch, upload, startup) and outcome (built, unchanged, failed)",
                                     labels=["trigger", "outcome"])
        for trigger in TRIGGERS:
            for outcome in OUTCOMES:
                builds.add_metric([trigger, outcome], live.counts[(trigger, outcome)])
        yield builds
        last = live.last
        yield GaugeMetricFamily("askcorpus_live_last_build_ok", "1 if the last live build succeeded (or none ran "
                                "yet), 0 if it failed and an older build is serving",
                                value=0 if last is not None and last.status == "failed" else 1)
        yield GaugeMetricFamily("askcorpus_live_last_build_seconds", "how long the last live build took",
                                value=0.0 if last is None else last.seconds)
        yield GaugeMetricFamily("askcorpus_live_pending", "1 while changes wait for a build", value=int(live.pending))
        yield GaugeMetricFamily("askcorpus_live_watching", "1 if the corpus folder is watched",
                                value=int(live.watching))


async def start_live(settings: Any, holder: Any, metrics: Any = None) -> LiveIndex:
    """The app's LiveIndex, started (watching the folder if settings.watch), its metrics on the app's registry."""
    live = LiveIndex(settings, holder)
    if metrics is not None:
        metrics.registry.register(LiveCollector(live))
    await live.start()
    return live
