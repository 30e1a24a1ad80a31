"""Generated answers over real HTTP: askcorpus under uvicorn, its model a scripted OpenAI-compatible server.

Every failure of the model still answers 200 with the passages and the extractive answer; SSE delivers the results
before the model's first word and stops the model when the client leaves.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time

import httpx
import pytest

from askcorpus.api import create_app
from askcorpus.build import build_index
from askcorpus.config import Settings
from askcorpus.embed import HashingEmbedder
from askcorpus.generate import generator_for
from conftest import free_port, serve_in_thread

QUESTION = "When was ISKP formed?"
SECRET = "sk-test-secret-4f1c9a"


@pytest.fixture(scope="module")
def template_index(tmp_path_factory, seeds_dir):
    root = tmp_path_factory.mktemp("generate-api")
    shutil.copytree(seeds_dir, root / "corpus")
    settings = Settings(corpus=root / "corpus", index=root / "index", model="hashing-64")
    build_index(settings, HashingEmbedder(dim=64))
    return settings


@pytest.fixture
def serve(template_index, tmp_path):
    """serve(llm_url, **settings) -> base URL of askcorpus answering with that endpoint's model."""
    stack = []

    def start(llm_url: str | None, **overrides) -> str:
        index = tmp_path / f"index{len(stack)}"
        shutil.copytree(template_index.index, index)
        settings = template_index.with_overrides(index=index, rerank_model="overlap", reload_interval=0,
                                                 llm_url=llm_url, llm_api_key=SECRET, **overrides)
        generator = generator_for(settings) if llm_url else None
        context = serve_in_thread(create_app(settings, embedder=HashingEmbedder(dim=64), generator=generator))
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def events(response: httpx.Response):
    """(event, data) pairs of a Server-Sent Events body, as they arrive."""
    name, data = None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if name is not None:
                yield name, json.loads("\n".join(data))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def ask(base: str, **body) -> dict:
    reply = httpx.post(base + "/search", json={"query": QUESTION, "k": 3, "generate": True, **body}, timeout=30)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["results"] and data["answer"] is not None  # the passages and the extractive answer stand
    return data


def test_a_checked_answer_with_exact_citations(serve, scripted_llm):
    llm, url = scripted_llm
    base = serve(url)
    llm.say("The passages say so [1]. It has 99999 fighters [1]. See [9].")
    data = ask(base)
    generated = data["generated"]
    assert generated["model"] == "scripted-model" and generated["error"] is None
    assert generated["dropped_markers"] == 1 and "[9]" not in (generated["text"] or "")
    assert [c["n"] for c in generated["citations"]] == list(range(1, len(generated["citations"]) + 1))
    by_passage = {(r["doc_id"], r["start"], r["end"]) for r in data["results"]}
    for citation in generated["citations"]:
        assert (citation["doc_id"], citation["start"], citation["end"]) in by_passage
    sentences = generated["sentences"]
    assert sentences[1]["supported"] is False  # a number no passage holds
    assert all(not s["supported"] for s in sentences if not s["citations"])
    prompt = llm.requests[-1]["messages"][-1]["content"]
    assert QUESTION in prompt and "[1] " in prompt


def test_the_response_says_where_each_sentence_is(serve, scripted_llm):
    llm, url = scripted_llm
    base = serve(url)
    first = ask(base, generate=False)["results"][0]
    sentence = first["text"].split(". ")[0].rstrip(".") + "."
    llm.say(f"{sentence} [1] Nothing else is known.")
    generated = ask(base)["generated"]
    assert generated["text"] is not None and not generated["abstained"]
    top = generated["sentences"][0]
    assert generated["text"][top["start"]:top["end"]] == top["text"] and top["citations"] == [1]
    assert top["supported"] is True  # a sentence copied from the passage it cites
    assert generated["sentences"][1]["supported"] is False  # no citation


@pytest.mark.parametrize("reply, abstained", [("The passages do not answer this question.", True),
                                              ("I am not sure about any of this", True)])
def test_no_answer_phrase_or_nothing_supported_abstains(serve, scripted_llm, reply, abstained):
    llm, url = scripted_llm
    llm.say(reply)
    generated = ask(serve(url))["generated"]
    assert generated["abstained"] is abstained and generated["text"] is None and generated["error"] is None


@pytest.mark.parametrize("script, words", [
    ({"status": 401}, "API key"),
    ({"status": 500}, "failed (500)"),
    ({"status": 400, "message": "This model's maximum context length is 2048 tokens"}, "does not fit the model's "
                                                                                      "context"),
    ({"garbage": True}, "no text"),
])
def test_model_failures_are_200_with_the_reason(serve, scripted_llm, script, words):
    llm, url = scripted_llm
    llm.say("unused", **script)
    generated = ask(serve(url))["generated"]
    assert generated["text"] is None and words in generated["error"]


def test_a_reply_that_never_comes_times_out(serve, scripted_llm):
    llm, url = scripted_llm
    llm.say("unused", hang=True)
    began = time.monotonic()
    generated = ask(serve(url, llm_timeout=1.0))["generated"]
    assert "did not answer in time" in generated["error"] and time.monotonic() - began < 10


def test_an_endpoint_that_is_not_there(serve):
    generated = ask(serve(f"http://127.0.0.1:{free_port()}/v1", llm_model="any"))["generated"]
    assert "cannot reach the model endpoint" in generated["error"]


def test_without_a_model_generate_is_a_clear_422(serve):
    base = serve(None)
    reply = httpx.post(base + "/search", json={"query": QUESTION, "generate": True})
    assert reply.status_code == 422 and "ASKCORPUS_LLM_URL" in reply.json()["detail"]
    assert httpx.get(base + "/search", params={"q": QUESTION, "generate": "true"}).status_code == 422
    assert httpx.get(base + "/health").json()["generator"] is None
    assert httpx.post(base + "/search", json={"query": QUESTION}).json()["generated"] is None


def test_the_api_key_is_never_shown_or_logged(serve, scripted_llm, caplog):
    llm, url = scripted_llm
    llm.say("The passages say so [1].")
    with caplog.at_level(logging.DEBUG):
        base = serve(url)
        ask(base)
        health = httpx.get(base + "/health").text
        metrics = httpx.get(base + "/metrics").text
    assert json.loads(health)["generator"] == {"model": "(first model at " + url + ")", "backend": "openai"} \
        or json.loads(health)["generator"]["model"] == "scripted-model"
    assert SECRET not in health and SECRET not in metrics and SECRET not in caplog.text
    assert 'askcorpus_generations_total{outcome="abstained"}' in metrics or \
        'askcorpus_generations_total{outcome="answered"}' in metrics


def test_get_search_generates_too(serve, scripted_llm):
    llm, url = scripted_llm
    llm.say("Nothing here.")
    reply = httpx.get(serve(url) + "/search", params={"q": QUESTION, "generate": "true"}, timeout=30)
    assert reply.status_code == 200 and reply.json()["generated"]["model"] == "scripted-model"


def test_streamed_results_come_before_the_first_word(serve, scripted_llm):
    llm, url = scripted_llm
    llm.say("ISKP was formed in 2015 [1]. It grew [2].", delay=0.3)
    base = serve(url)
    seen = []
    with httpx.stream("POST", base + "/search", json={"query": QUESTION, "k": 3, "generate": True},
                      headers={"Accept": "text/event-stream"}, timeout=30) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        for name, data in events(reply):
            seen.append((name, data, llm.sent_pieces))
    names = [name for name, _, _ in seen]
    assert names[0] == "results" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    assert seen[0][2] == 0  # the passages arrived before the model sent anything
    assert len(seen[0][1]["results"]) == 3 and seen[0][1]["generated"] is None
    streamed = "".join(data["text"] for name, data, _ in seen if name == "delta")
    assert streamed == "ISKP was formed in 2015 [1]. It grew [2]."
    assert seen[-1][1]["generated"]["reply"] == streamed


def test_a_client_that_leaves_stops_the_model(serve, scripted_llm):
    llm, url = scripted_llm
    words = " ".join(f"word{i}" for i in range(60))
    llm.say(words, delay=0.1)
    base = serve(url)
    with httpx.stream("POST", base + "/search", json={"query": QUESTION, "generate": True},
                      headers={"Accept": "text/event-stream"}, timeout=30) as reply:
        deltas = 0
        for name, _ in events(reply):
            deltas += name == "delta"
            if deltas == 3:
                break
    assert llm.finished.wait(10), "the model's stream never ended"
    assert llm.closed_early and llm.sent_pieces < 20  # 60 pieces at 0.1 s: it stopped soon after the client left


def test_a_full_generation_lane_answers_with_passages_and_says_busy(serve, scripted_llm):
    llm, url = scripted_llm
    llm.say("slow answer here", delay=0.5)
    base = serve(url, generate_concurrency=1, generate_queue=0)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(ask(base)))
    worker.start()
    deadline = time.monotonic() + 10
    while not llm.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    second = ask(base)["generated"]
    worker.join(timeout=30)
    assert "busy" in second["error"] and second["text"] is None
    assert first["generated"]["error"] is None
