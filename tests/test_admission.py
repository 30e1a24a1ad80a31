"""The admission gate with fake work (bound, immediate rejection, deadlines, disconnects, FIFO), and the app's
503, deadline_ms and /metrics over a fake-embedder index."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from askcorpus.api import create_app
from askcorpus.api.admission import DEADLINE, DISCONNECTED, EXPIRED, QUEUE_FULL, AdmissionGate, Rejected
from askcorpus.build import build_index
from askcorpus.embed import HashingEmbedder

# ---------------------------------------------------------------------------------------------- the gate


class Work:
    """Fake searches: each holds its turn until released, and records who ran and how many ran at once."""

    def __init__(self, gate: AdmissionGate) -> None:
        self.gate = gate
        self.inside = 0
        self.most_inside = 0
        self.started: list[int] = []
        self.release = asyncio.Event()

    async def search(self, number: int, deadline: float = 60.0, gone: bool = False) -> str:
        async def client_gone() -> bool:
            return gone

        loop = asyncio.get_running_loop()
        try:
            async with self.gate.turn(loop.time() + deadline, client_gone):
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
                self.started.append(number)
                await self.release.wait()
                self.inside -= 1
                return "done"
        except Rejected as rejected:
            return rejected.reason


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _one_running(concurrency: int, queue: int) -> tuple[AdmissionGate, Work, asyncio.Task]:
    """A gate with fake search 0 holding a turn until work.release is set."""
    gate = AdmissionGate(concurrency, queue)
    work = Work(gate)
    first = asyncio.create_task(work.search(0))
    await _settle()
    return gate, work, first


def test_bound_holds_and_the_rest_is_rejected_at_once():
    async def scenario():
        gate = AdmissionGate(2, 3)
        work = Work(gate)
        tasks = [asyncio.create_task(work.search(n)) for n in range(10)]
        await _settle()
        # 2 computing, 3 waiting, 5 turned away without waiting for anything to finish.
        assert (gate.running, gate.waiting) == (2, 3)
        rejected = [t for t in tasks if t.done()]
        assert len(rejected) == 5 and all(t.result() == QUEUE_FULL for t in rejected)
        work.release.set()
        results = await asyncio.gather(*tasks)
        assert results.count("done") == 5
        assert work.most_inside == 2 and gate.max_running == 2 and gate.max_waiting == 3
        assert (gate.running, gate.waiting) == (0, 0)

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_waiters_are_served_first_come_first_served():
    async def scenario():
        gate = AdmissionGate(1, 10)
        work = Work(gate)
        tasks = []
        for n in range(8):
            tasks.append(asyncio.create_task(work.search(n)))
            await asyncio.sleep(0)  # arrive in this order
        work.release.set()
        await asyncio.gather(*tasks)
        assert work.started == list(range(8))

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_waiter_past_its_deadline_is_dropped_before_any_work_and_frees_its_place():
    async def scenario():
        gate, work, first = await _one_running(1, 2)
        late = asyncio.create_task(work.search(1, deadline=0.05))
        patient = asyncio.create_task(work.search(2))
        assert await asyncio.wait_for(late, 5) == EXPIRED  # dropped while the first still computes
        assert gate.waiting == 1
        work.release.set()
        assert await first == "done" and await patient == "done"
        assert work.started == [0, 2]  # the late one never ran
        assert (gate.running, gate.waiting) == (0, 0)

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_no_time_for_a_search_means_no_wait():
    async def scenario():
        gate = AdmissionGate(1, 5)
        gate.service_seconds = 1.0  # searches have been taking a second
        work = Work(gate)
        first = asyncio.create_task(work.search(0))
        await _settle()
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await work.search(1, deadline=0.5) == DEADLINE
        assert loop.time() - started < 0.25  # turned away at once, not after its half second
        work.release.set()
        await first

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_retry_after_is_when_the_searches_waiting_now_have_had_their_turn():
    class Told(Work):
        async def search(self, number: int, deadline: float = 60.0, gone: bool = False):
            loop = asyncio.get_running_loop()
            try:
                async with self.gate.turn(loop.time() + deadline):
                    await self.release.wait()
                    return "done"
            except Rejected as rejected:
                return rejected.retry_after

    async def scenario():
        gate = AdmissionGate(2, 8)
        gate.service_seconds = 0.7
        work = Told(gate)
        tasks = [asyncio.create_task(work.search(n)) for n in range(10)]
        await _settle()
        assert await work.search(10) == 3  # 8 waiting, two turns free every 0.7 s: ceil(8 * 0.7 / 2)
        gate.service_seconds = 0.1
        assert await work.search(11) == 1  # never under a second (whole seconds, RFC 9110)
        work.release.set()
        assert await asyncio.gather(*tasks) == ["done"] * 10

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_client_gone_while_waiting_is_not_computed_and_passes_its_turn_on():
    async def scenario():
        gate, work, first = await _one_running(1, 3)
        gone = asyncio.create_task(work.search(1, gone=True))
        after = asyncio.create_task(work.search(2))
        await _settle()
        work.release.set()
        assert await gone == DISCONNECTED
        assert await first == "done" and await after == "done"
        assert work.started == [0, 2]
        assert gate.running == 0

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_cancelled_waiter_leaves_no_slot_behind():
    async def scenario():
        gate, work, first = await _one_running(1, 3)
        waiter = asyncio.create_task(work.search(1))
        await _settle()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.waiting == 0
        work.release.set()
        await first
        assert (gate.running, gate.waiting) == (0, 0)
        assert await work.search(2) == "done"  # the gate still admits

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_failing_search_releases_its_turn():
    async def scenario():
        gate = AdmissionGate(1, 0)
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError):
            async with gate.turn(loop.time() + 5):
                raise RuntimeError("model failed")
        assert gate.running == 0
        async with gate.turn(loop.time() + 5):
            assert gate.running == 1

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_reserved_places_count_as_waiting_and_a_reserved_turn_is_not_refused_for_a_full_queue():
    async def scenario():
        gate, work, first = await _one_running(concurrency=1, queue=1)
        loop = asyncio.get_running_loop()
        place = gate.reserve(loop.time() + 60, loop.time())  # the one queue place, held by cheaper work
        with pytest.raises(Rejected) as refused:
            gate.reserve(loop.time() + 60, loop.time())
        assert refused.value.reason == QUEUE_FULL and gate.reserved == 1
        assert await work.search(1) == QUEUE_FULL  # an unreserved turn meets the same full lane
        queued = []

        async def with_place():
            async with gate.turn(loop.time() + 60, reservation=place):
                queued.append("ran")

        waiting = asyncio.create_task(with_place())
        await _settle()
        assert gate.reserved == 0 and gate.waiting == 1  # the place became a place in the queue, not a refusal
        work.release.set()
        await first
        await waiting
        assert queued == ["ran"] and gate.running == 0
        released = gate.reserve(loop.time() + 60, loop.time())
        released.release()
        released.release()  # once only
        assert gate.reserved == 0

    asyncio.run(scenario())


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="concurrency"):
        AdmissionGate(0, 1)


# ---------------------------------------------------------------------------------------------- the app


@pytest.fixture
def app_settings(fake_settings):
    build_index(fake_settings, HashingEmbedder(dim=64))
    return fake_settings.with_overrides(search_concurrency=1, search_queue=0, search_deadline=2.0, reload_interval=0)


def _metrics(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


@pytest.mark.parametrize("lane", ["search", "rerank"])
def test_a_full_lane_answers_503_with_retry_after_and_cheap_endpoints_still_answer(app_settings, fake_embedder,
                                                                                    lane):
    settings = app_settings.with_overrides(rerank_concurrency=1, rerank_queue=0)
    with TestClient(create_app(settings, embedder=fake_embedder)) as client:
        assert client.post("/search", json={"query": "Taliban"}).status_code == 200
        gate = client.app.state.lanes.named()[lane]
        gate.running = gate.concurrency  # every turn taken (by searches this test does not need to run)
        busy = client.post("/search", json={"query": "Taliban"})
        assert busy.status_code == 503
        assert busy.json()["detail"].startswith("server busy:")
        assert int(busy.headers["Retry-After"]) >= 1
        assert client.get("/search", params={"q": "Taliban"}).status_code == 503
        # A full rerank lane leaves the cheap path open; a full search lane closes every search.
        cheap = client.post("/search", json={"query": "Taliban", "rerank": False}).status_code
        assert cheap == (200 if lane == "rerank" else 503)
        for path in ("/health", "/documents", "/", "/static/app.js", "/metrics"):
            assert client.get(path).status_code == 200, path
        gate.running = 0
        assert client.post("/search", json={"query": "Taliban"}).status_code == 200
        values = _metrics(client)
    refused = 3 if lane == "search" else 2
    assert values[("askcorpus_rejections_total", (("lane", lane), ("reason", QUEUE_FULL)))] == refused
    other = "rerank" if lane == "search" else "search"
    assert values[("askcorpus_rejections_total", (("lane", other), ("reason", QUEUE_FULL)))] == 0
    assert values[("askcorpus_requests_total", (("endpoint", "/search"), ("status", "503")))] == refused
    assert values[("askcorpus_requests_total", (("endpoint", "/search"), ("status", "200")))] == 5 - refused
    assert values[("askcorpus_stage_duration_seconds_count", (("stage", "rerank"),))] == 2
    assert values[("askcorpus_stage_duration_seconds_count", (("stage", "encode"),))] == 5 - refused
    assert values[("askcorpus_index_passages", ())] > 0
    assert values[("askcorpus_in_progress_max", (("lane", "search"),))] == 1
    assert values[("askcorpus_in_progress_max", (("lane", "rerank"),))] == 1
    assert values[("askcorpus_queue_limit", (("lane", "search"),))] == 0
    assert values[("askcorpus_concurrency_limit", (("lane", "rerank"),))] == 1


@pytest.mark.parametrize("lane", ["search", "rerank"])
def test_each_lane_turns_a_search_away_at_once_when_its_deadline_cannot_be_met(app_settings, fake_embedder, lane):
    settings = app_settings.with_overrides(search_queue=4, rerank_concurrency=1, rerank_queue=4)
    with TestClient(create_app(settings, embedder=fake_embedder)) as client:
        gate = client.app.state.lanes.named()[lane]
        gate.running = gate.concurrency
        gate.service_seconds = 10.0  # one turn takes longer than the whole 2 s budget
        started = time.perf_counter()
        refused = client.post("/search", json={"query": "Taliban", "deadline_ms": 1500})
        took = time.perf_counter() - started
        gate.running = 0
        values = _metrics(client)
    assert refused.status_code == 503 and "deadline" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1 and took < 1.0  # told at once, not after waiting
    assert values[("askcorpus_rejections_total", (("lane", lane), ("reason", DEADLINE)))] == 1


def test_a_reranked_search_holds_no_search_turn_while_it_waits_for_the_reranker(app_settings, fake_embedder):
    """With the rerank lane's one turn taken, a reranked search waits for it after its cheap stages, and the
    search lane's single turn is free meanwhile: a cheap search is answered while the reranked one waits."""
    settings = app_settings.with_overrides(rerank_concurrency=1, rerank_queue=1, search_deadline=5.0)
    with TestClient(create_app(settings, embedder=fake_embedder)) as client:
        lanes = client.app.state.lanes
        lanes.rerank.running = 1
        lanes.rerank.service_seconds = 0.01  # a turn is expected soon: waiting for it fits the deadline
        import threading

        answers: list[int] = []
        waiting = threading.Thread(target=lambda: answers.append(
            client.post("/search", json={"query": "Taliban"}).status_code))
        waiting.start()
        deadline = time.monotonic() + 5
        while lanes.rerank.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lanes.rerank.waiting == 1 and lanes.search.running == 0
        assert client.post("/search", json={"query": "Taliban", "rerank": False}).status_code == 200
        lanes.rerank._release()  # the turn passes to the waiting search
        waiting.join(timeout=10)
        lanes.rerank.running = 0
    assert answers == [200]


@pytest.mark.parametrize("value", [0, -5, 2001, "soon", 1.5])
def test_deadline_ms_out_of_range_is_a_clear_422(app_settings, fake_embedder, value):
    with TestClient(create_app(app_settings, embedder=fake_embedder)) as client:
        posted = client.post("/search", json={"query": "Taliban", "deadline_ms": value})
        assert posted.status_code == 422 and "deadline_ms" in posted.json()["detail"]
        if not isinstance(value, float):
            got = client.get("/search", params={"q": "Taliban", "deadline_ms": value})
            assert got.status_code == 422 and "deadline_ms" in got.json()["detail"]


def test_deadline_ms_within_the_limit_is_accepted(app_settings, fake_embedder):
    with TestClient(create_app(app_settings, embedder=fake_embedder)) as client:
        assert client.post("/search", json={"query": "Taliban", "deadline_ms": 2000}).status_code == 200
        assert client.get("/search", params={"q": "Taliban", "deadline_ms": 50}).status_code == 200


def test_reload_errors_and_reloads_are_counted(app_settings, fake_embedder):
    from askcorpus import store

    settings = app_settings.with_overrides(reload_interval=0.05)
    with TestClient(create_app(settings, embedder=fake_embedder)) as client:
        before = _metrics(client)
        assert before[("askcorpus_reload_errors_total", ())] == 0
        (settings.index / store.CURRENT_FILE).write_text("no-such-build\n", encoding="utf-8")
        for _ in range(100):
            if _metrics(client)[("askcorpus_reload_errors_total", ())] >= 1:
                break
            time.sleep(0.05)
        assert _metrics(client)[("askcorpus_reload_errors_total", ())] >= 1
        assert _metrics(client)[("askcorpus_reloads_total", ())] == 0


def test_two_apps_keep_their_own_metrics(app_settings, fake_embedder):
    with TestClient(create_app(app_settings, embedder=fake_embedder)) as first, \
            TestClient(create_app(app_settings, embedder=fake_embedder)) as second:
        first.post("/search", json={"query": "Taliban"})
        assert ("askcorpus_requests_total", (("endpoint", "/search"), ("status", "200"))) not in _metrics(second)


def test_what_the_server_loaded_is_kept_from_the_collector_while_it_serves(app_settings, fake_embedder):
    # A full collection over the loaded models and index pauses the event loop that answers 503s and /health.
    before = gc.get_freeze_count()
    with TestClient(create_app(app_settings, embedder=fake_embedder)) as client:
        assert gc.get_freeze_count() > before
        gc.collect()  # a collection while serving leaves the loaded objects alone
        assert client.get("/health").status_code == 200
        assert client.post("/search", json={"query": "Taliban"}).status_code == 200
    assert gc.get_freeze_count() == 0  # stopped: everything is collectable again
