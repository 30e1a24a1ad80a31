"""The page in a real browser: Debian's chromium, headless, driven by Playwright for Python.

Types a question, submits, sees the answer and the passages under their documents' titles, follows a
citation and checks that the highlighted text is the cited passage. Screenshots (desktop and phone widths) go to artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from conftest import serve_in_thread

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
QUESTION = "What is the primary threat in the region according to the USIP report?"
# What the page names each seed by: the title the reader found in the text, or (hash-named files without a
# title line) the text's opening words.
SEED_TITLES = {
    "000_455900a64ecf7b1d.txt": "Taliban’s return to power has increased threats of regional terrorism, USIP report",
    "001_6ed2f81b91fb4ea5.txt": "The Rising Menace Of ISKP: A Ticking Time Bomb For Regional Peace – OpEd",
    "002_820a792f755c5fcd.txt": "Importance of regional cooperation to counter Islamic State Khorasan (ISKP)",
    "003_dc03f2a25593d1c1.txt": "After the defeat of the Islamic State of Iraq and Syria (ISIS)",
    "004_9b6637ebe242a1f9.txt":
        "Following the U.S. withdrawal from Afghanistan in late August 2021",
}
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 740}}


def _browser_or_skip():
    """Chromium and Playwright, or a skip that prints why (only where no browser can be had)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed: pip install playwright")
    executable = CHROMIUM if CHROMIUM.exists() else (Path(p) if (p := shutil.which("chromium")) else None)
    if executable is None:
        pytest.skip("no chromium browser at /usr/bin/chromium: apt-get install -y chromium")
    return sync_playwright, executable


@pytest.fixture(scope="module")
def browser():
    sync_playwright, executable = _browser_or_skip()
    with sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        except Exception as error:  # noqa: BLE001 - a browser that cannot start is "no browser"
            pytest.skip(f"chromium at {executable} does not start: {error}")
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def live(seeds_settings, real_embedder):
    """The app with the real model over the seeds index, served by uvicorn in a thread on a free port."""
    from askcorpus.api import create_app

    settings = seeds_settings.with_overrides(reload_interval=0)
    with serve_in_thread(create_app(settings, embedder=real_embedder)) as url:
        yield url


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_ask_read_and_follow_a_citation(browser, live, device):
    ARTIFACTS.mkdir(exist_ok=True)
    expected = httpx.post(live + "/search", json={"query": QUESTION, "k": 10}, timeout=60).json()
    assert expected["results"] and expected["answer"], "the seeds should answer this question"
    first = expected["results"][0]

    page = browser.new_page(viewport=VIEWPORTS[device])
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto(live + "/")
        page.fill("#q", QUESTION)
        page.press("#q", "Enter")
        page.wait_for_selector("#results li.result", timeout=30_000)
        page.wait_for_selector("#answer:not([hidden])")

        # The answer on top, then the ranked passages with document, offsets and score.
        assert page.inner_text("#answer-text").strip() == expected["answer"]["text"].strip()
        items = page.locator("#results li.result")
        assert items.count() == len(expected["results"])
        head = items.nth(0)
        assert f"[{first['start']}:{first['end']}]" in head.locator(".meta").inner_text()
        assert f"{first['score']:.4f}" in head.locator(".meta").inner_text()
        assert first["doc_id"] in head.inner_text()
        # Every passage is headed by its document's title.
        shown = items.locator("a.doc-link").all_inner_texts()
        assert shown == [SEED_TITLES[result["doc_id"]] for result in expected["results"]]
        assert page.inner_text("#answer a.cite") == SEED_TITLES[expected["answer"]["doc_id"]]
        passage_text = head.locator(".passage").inner_text()
        assert " ".join(passage_text.split()) == " ".join(first["text"].split())
        # The matching words are highlighted.
        marked = [m.lower() for m in page.locator("#results mark").all_inner_texts()]
        assert marked and any(word in marked for word in ("threat", "region", "usip", "report", "primary"))
        # Nothing overflows sideways, even on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS[device]["width"]
        page.screenshot(path=str(ARTIFACTS / f"page-{device}-results.png"), full_page=True)

        # Follow the first passage's citation: the document opens scrolled to the passage, highlighted.
        head.locator("a.cite").click()
        page.wait_for_selector("mark#cited", timeout=30_000)
        assert page.text_content("mark#cited") == first["text"]
        assert page.evaluate(
            "(() => { const r = document.getElementById('cited').getBoundingClientRect();"
            " return r.top < window.innerHeight && r.bottom > 0; })()"
        ), "the cited passage is not scrolled into view"
        document = httpx.get(f"{live}/documents/{first['doc_id']}").json()
        assert page.text_content("#doc-text") == document["text"]
        assert page.inner_text("#doc-title") == SEED_TITLES[first["doc_id"]] == document["title"]
        assert page.title() == SEED_TITLES[first["doc_id"]] + " · askcorpus"
        page.screenshot(path=str(ARTIFACTS / f"page-{device}-document.png"))

        # Back to the results, then the answer's own citation.
        page.click("#back")
        page.wait_for_selector("#search-view:not([hidden]) #results li.result")
        page.click("#answer a.cite")
        page.wait_for_selector("mark#cited", timeout=30_000)
        assert page.text_content("mark#cited") == expected["answer"]["text"]
    finally:
        page.close()
    assert not errors, errors


def test_bad_input_is_shown_not_thrown(browser, live):
    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    try:
        page.goto(live + "/#q=" + "x" * 2100)  # over the limit: the API's 422 message is shown
        page.wait_for_selector("#message.error", timeout=30_000)
        assert "limit is 2000" in page.inner_text("#message")
        page.goto(live + "/#doc=../../etc/passwd&start=0&end=5")
        page.wait_for_selector("#doc-text .error", timeout=30_000)
        assert "root:" not in page.inner_text("#doc-text")
    finally:
        page.close()


def _page_order(page) -> list[tuple[str, str]]:
    """(document, [start:end]) of each listed passage, top first, as the page shows them."""
    items = page.locator("#results li.result")
    return [(items.nth(i).locator(".doc-id").inner_text(),
             items.nth(i).locator(".meta").inner_text().split(" · ")[1])
            for i in range(items.count())]


def _api_order(body: dict) -> list[tuple[str, str]]:
    return [(r["doc_id"], f"[{r['start']}:{r['end']}]") for r in body["results"]]


def test_rerank_control_switches_order_and_answer(browser, live):
    """Reranked by default (the reranker's order, scores and answer); unticking the control asks again without
    it, shows the first stage's order and answer, and keeps the choice in the address."""
    from playwright.sync_api import expect

    question = "Who wrote the op-ed about ISKP and the Taliban?"
    reranked = httpx.post(live + "/search", json={"query": question, "k": 10}, timeout=60).json()
    first_stage = httpx.post(live + "/search", json={"query": question, "k": 10, "rerank": False}, timeout=60).json()
    assert reranked["reranked"] and not first_stage["reranked"]
    assert _api_order(reranked) != _api_order(first_stage), "pick a question whose order the reranker changes"

    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    try:
        page.goto(live + "/")
        assert page.is_checked("#rerank")
        page.fill("#q", question)
        page.press("#q", "Enter")
        page.wait_for_selector("#results li.result", timeout=30_000)
        assert page.text_content("#results-label") == "Passages, reranked"
        assert _page_order(page) == _api_order(reranked)
        head_meta = page.locator("#results li.result").nth(0).locator(".meta").inner_text()
        assert f"rerank {reranked['results'][0]['rerank_score']:.2f}" in head_meta
        assert f"first stage {reranked['results'][0]['score']:.4f}" in head_meta
        _assert_answer_shown(page, reranked["answer"])

        page.uncheck("#rerank")  # asks again at once
        expect(page.locator("#results-label")).to_have_text("Passages", timeout=30_000)  # textContent, exactly
        assert "rerank=0" in page.evaluate("location.hash")
        assert _page_order(page) == _api_order(first_stage)
        assert "rerank " not in page.locator("#results li.result").nth(0).locator(".meta").inner_text()
        _assert_answer_shown(page, first_stage["answer"])

        page.reload()  # the choice lives in the address
        page.wait_for_selector("#results li.result", timeout=30_000)
        assert not page.is_checked("#rerank")
        assert page.text_content("#results-label") == "Passages"
    finally:
        page.close()


def _assert_answer_shown(page, answer: dict | None) -> None:
    text = page.inner_text("#answer-text").strip()
    if answer is None:
        assert text.startswith("No confident answer")
    else:
        assert text == answer["text"].strip()


# The generated answer ---------------------------------------------------------------------------------------

GEN_QUESTION = "When was ISKP formed?"
# The first sentence is in the top passage; the second's number is in none: it is marked unsupported.
GEN_REPLY = "ISKP was formed in 2015 [1]. It has 99999 fighters [1]."
# A function, not an expression: Playwright evaluates a bare expression with eval, which the page's CSP forbids.
GEN_STREAMING = """() => {
  const box = document.getElementById('generated');
  const text = document.getElementById('generated-text').textContent;
  return !box.hidden && box.classList.contains('streaming') && text.length > 0 ? text : false;
}"""


@pytest.fixture(scope="module")
def live_generating(seeds_settings, real_embedder, scripted_llm_server):
    """The app as `live`, with a language model: the scripted OpenAI-compatible server."""
    from askcorpus.api import create_app
    from askcorpus.generate import generator_for

    _, base = scripted_llm_server
    settings = seeds_settings.with_overrides(reload_interval=0, llm_url=base)
    generator = generator_for(settings)
    try:
        with serve_in_thread(create_app(settings, embedder=real_embedder, generator=generator)) as url:
            yield url
    finally:
        generator.close()


def _watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # An aborted fetch is not an error of the page's; anything else the console reports is.
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def _generated_answer(url: str, question: str) -> dict:
    """The whole response, generated answer included, as the API gives it without streaming."""
    response = httpx.post(url + "/search", json={"query": question, "k": 10, "generate": True}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_generated_answer_streams_then_links_what_it_cites(browser, live_generating, scripted_llm):
    llm, _ = scripted_llm
    llm.say(GEN_REPLY)
    expected = _generated_answer(live_generating, GEN_QUESTION)
    generated = expected["generated"]
    assert generated["text"] == GEN_REPLY and not generated["error"] and not generated["abstained"]
    assert [s["supported"] for s in generated["sentences"]] == [True, False], "the fixture's premise"
    cited = next(c for c in generated["citations"] if c["n"] == 1)
    document = httpx.get(f"{live_generating}/documents/{cited['doc_id']}").json()

    ARTIFACTS.mkdir(exist_ok=True)
    llm.say(GEN_REPLY, delay=0.3)  # ten words, one piece each: three seconds of streaming
    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    errors = _watch_errors(page)
    try:
        page.goto(live_generating + "/")
        switch = page.locator("#generate")
        assert switch.is_enabled() and not switch.is_checked()  # on request only: it costs a model's time
        health = httpx.get(live_generating + "/health").json()
        assert health["generator"] and health["generator"]["model"] in page.get_attribute("#generate-option",
                                                                                          "title")
        switch.check()
        page.fill("#q", GEN_QUESTION)
        page.press("#q", "Enter")

        # The passages and the extractive answer come first, exactly as without the model...
        page.wait_for_selector("#results li.result", timeout=60_000)
        # ...then the answer streams in above them: part of it is on the page while the model is still writing.
        partial = page.wait_for_function(GEN_STREAMING, timeout=30_000).json_value()
        still_writing = not llm.finished.is_set()
        assert GEN_REPLY.startswith(partial) and len(partial) < len(GEN_REPLY), partial
        assert still_writing, "the page showed text only once the model had finished"
        assert page.locator("#generated-text a.cite").count() == 0  # links come with the checked answer
        assert page.evaluate("document.getElementById('generated').compareDocumentPosition("
                             "document.getElementById('results')) & Node.DOCUMENT_POSITION_FOLLOWING")
        assert "generate=1" in page.evaluate("location.hash")  # the choice lives in the address
        page.screenshot(path=str(ARTIFACTS / "page-desktop-generating.png"), full_page=True)

        # Done: the checked answer replaces the streamed text, the same characters with markers as links.
        page.wait_for_selector("#generated:not(.streaming) #generated-text a.cite", timeout=30_000)
        assert page.text_content("#generated-text") == GEN_REPLY
        assert page.get_attribute("#generated", "aria-busy") == "false"
        items = page.locator("#results li.result")
        assert _page_order(page) == _api_order(expected)
        _assert_answer_shown(page, expected["answer"])
        assert items.count() == len(expected["results"])

        links = page.locator("#generated-text a.cite")
        assert links.all_inner_texts() == ["[1]", "[1]"]
        href = "#" + str(httpx.QueryParams({"doc": cited["doc_id"], "start": str(cited["start"]),
                                            "end": str(cited["end"])}))
        assert links.nth(0).get_attribute("href") == href
        assert cited["title"] in links.nth(0).get_attribute("title")

        sentences = page.locator("#generated-text .sentence")
        assert sentences.all_text_contents() == [s["text"] for s in generated["sentences"]]
        assert sentences.nth(0).get_attribute("class") == "sentence"
        assert sentences.nth(1).get_attribute("class") == "sentence unsupported"
        assert sentences.nth(1).get_attribute("title") == "Not supported by the passage it cites"
        decoration = sentences.nth(1).evaluate("node => getComputedStyle(node).textDecorationStyle")
        assert decoration == "dotted"  # visibly marked, not only in the markup
        assert sentences.nth(0).evaluate("node => getComputedStyle(node).textDecorationLine") == "none"

        meta = page.inner_text("#generated-meta")
        assert health["generator"]["model"] in meta or "scripted-model" in meta
        assert "tokens" in meta and " s" in meta
        assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS["desktop"]["width"]
        page.screenshot(path=str(ARTIFACTS / "page-desktop-generated.png"), full_page=True)

        # The marker opens the document at exactly the span it cites, highlighted and focused.
        requests = len(llm.requests)
        links.nth(0).click()
        page.wait_for_selector("mark#cited", timeout=30_000)
        assert page.text_content("mark#cited") == document["text"][cited["start"]:cited["end"]]
        assert page.text_content("#doc-text") == document["text"]
        assert page.evaluate("document.activeElement && document.activeElement.id") == "cited"
        assert page.evaluate(
            "(() => { const r = document.getElementById('cited').getBoundingClientRect();"
            " return r.top < window.innerHeight && r.bottom > 0; })()"
        ), "the cited span is not scrolled into view"

        # Back: the same answer is still there, not written again by the model.
        page.click("#back")
        page.wait_for_selector("#search-view:not([hidden]) #generated-text a.cite")
        assert page.text_content("#generated-text") == GEN_REPLY
        assert len(llm.requests) == requests
    finally:
        page.close()
    assert not errors, errors


def test_a_new_search_stops_the_answer_being_written(browser, live_generating, scripted_llm):
    """Turning the switch off mid-answer asks again without the model: the page aborts its fetch, and the server,
    seeing the client gone, stops the model (the scripted server sees its stream closed early)."""
    llm, _ = scripted_llm
    words = " ".join(f"word{i}" for i in range(60))
    llm.say(f"ISKP was formed in 2015 [1]. {words}.", delay=0.25)  # some fifteen seconds if left to run
    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    errors = _watch_errors(page)
    try:
        page.goto(live_generating + "/#" + str(httpx.QueryParams({"q": GEN_QUESTION, "generate": "1"})))
        page.wait_for_function(GEN_STREAMING, timeout=60_000)
        assert page.is_checked("#generate") and page.is_enabled("#go")  # a new question may be asked meanwhile
        page.uncheck("#generate")  # asks again at once, without the model
        page.wait_for_function("() => !location.hash.includes('generate=1')")
        assert llm.finished.wait(10), "the model was not stopped when the page left"
        assert llm.closed_early and llm.sent_pieces < len(llm.pieces(llm.script.text))
        page.wait_for_selector("#generated[hidden]", state="attached", timeout=30_000)
        page.wait_for_selector("#results li.result")
        page.wait_for_timeout(500)  # nothing of the stopped answer comes back
        assert page.locator("#generated").is_hidden()
        assert page.text_content("#generated-text") == ""
        assert not page.locator("#message.error").count()
    finally:
        page.close()
    assert not [e for e in errors if "abort" not in e.lower()], errors


@pytest.mark.parametrize("case", ["abstained", "failed"])
def test_generated_answer_abstains_or_fails_beside_the_passages(browser, live_generating, scripted_llm, case):
    llm, _ = scripted_llm
    if case == "abstained":
        llm.say("The passages do not answer this question.")
    else:
        llm.say("", status=500)
    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    errors = _watch_errors(page)
    try:
        page.goto(live_generating + "/#" + str(httpx.QueryParams({"q": GEN_QUESTION, "generate": "1"})))
        page.wait_for_selector("#generated:not(.streaming):not([hidden])", timeout=60_000)
        page.wait_for_selector("#results li.result")  # the passages stand either way
        assert page.locator("#generated-text a.cite").count() == 0
        if case == "abstained":
            assert page.inner_text("#generated-text") == "The documents do not answer this question."
            assert "none" in page.get_attribute("#generated", "class")
        else:
            note = page.locator("#generated-note")
            assert note.is_visible() and "error" in note.get_attribute("class")
            assert "500" in note.inner_text() or "scripted failure" in note.inner_text(), note.inner_text()
            assert page.locator("#answer").is_visible()
        assert not page.locator("#message.error").count()
    finally:
        page.close()
    assert not errors, errors


def test_event_stream_parsing(browser, live_generating):
    """What sse-starlette and other servers may send: \\r\\n line ends, comment pings, an event's data over several
    lines, an event split across reads is the browser's business; here the parts of the format themselves."""
    real = httpx.post(live_generating + "/search", json={"query": GEN_QUESTION, "k": 5}, timeout=60).json()
    text = "ISKP was formed in 2015 [1]."
    first = real["results"][0]
    generated = {"text": text, "sentences": [{"text": text, "start": 0, "end": len(text), "citations": [1],
                                              "supported": True}],
                 "citations": [{"n": 1, "doc_id": first["doc_id"], "start": first["start"], "end": first["end"],
                                "page": None, "title": "A title", "passage_id": first["passage_id"]}],
                 "abstained": False, "model": "canned", "prompt_tokens": 12, "completion_tokens": 7,
                 "seconds": 0.5, "error": None, "dropped_markers": 0, "reply": text}
    import json

    results = json.dumps(real, indent=1).split("\n")  # the JSON over many data: lines, joined again by \n
    body = (": ping - 2024-01-01 00:00:00\r\n\r\n"
            "event: results\r\n" + "".join(f"data: {line}\r\n" for line in results) + "\r\n"
            ":another comment\n\n"
            "event: delta\ndata: {\"text\":\ndata: \"ISKP was \"}\n\n"
            "event:delta\rdata:{\"text\": \"formed\"}\r\r"
            "event: done\r\ndata: " + json.dumps({"generated": generated}) + "\r\n\r\n")
    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    errors = _watch_errors(page)
    seen: list[dict] = []

    def canned(route):
        seen.append({"body": route.request.post_data_json, "accept": route.request.headers.get("accept")})
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"}, body=body)

    try:
        page.route("**/search", canned)
        page.goto(live_generating + "/#" + str(httpx.QueryParams({"q": GEN_QUESTION, "k": "5", "generate": "1"})))
        page.wait_for_selector("#generated-text a.cite", timeout=30_000)
        assert seen == [{"body": {"query": GEN_QUESTION, "k": 5, "mode": "hybrid", "rerank": True, "generate": True},
                         "accept": "text/event-stream"}]
        assert page.locator("#results li.result").count() == len(real["results"])
        assert page.text_content("#generated-text") == text
        assert "canned · 12 prompt + 7 answer tokens · 0.5 s" == page.inner_text("#generated-meta")
    finally:
        page.close()
    assert not errors, errors


def test_generate_switch_off_without_a_model(browser, live):
    """A server with no language model: the switch is disabled and says why; an old link asking for an answer
    still searches, without one."""
    assert httpx.get(live + "/health").json()["generator"] is None
    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    errors = _watch_errors(page)
    try:
        page.goto(live + "/#" + str(httpx.QueryParams({"q": QUESTION, "generate": "1"})))
        page.wait_for_selector("#results li.result", timeout=30_000)
        assert page.is_disabled("#generate") and not page.is_checked("#generate")
        assert page.get_attribute("#generate-option", "title") == (
            "No language model is configured on this server (ASKCORPUS_LLM_URL or ASKCORPUS_LLM_GGUF)")
        assert page.locator("#generated").is_hidden()
        assert not page.locator("#message.error").count()
    finally:
        page.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def foldered(tmp_path_factory, seeds_settings, real_embedder):
    """The seeds split into notes/ and reports/, indexed with the real model and served."""
    from askcorpus.api import create_app
    from askcorpus.build import build_index

    root = tmp_path_factory.mktemp("foldered")
    seeds = sorted(seeds_settings.corpus.iterdir())
    for i, path in enumerate(seeds):
        folder = root / "corpus" / ("notes" if i < 2 else "reports")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    settings = seeds_settings.with_overrides(corpus=root / "corpus", index=root / "index", reload_interval=0)
    build_index(settings, real_embedder)
    with serve_in_thread(create_app(settings, embedder=real_embedder)) as url:
        yield url


CITED_DOCS = "links => links.map(a => new URLSearchParams(a.getAttribute('href').slice(1)).get('doc'))"


def test_a_search_within_a_folder_cites_only_its_documents(browser, foldered):
    page = browser.new_page(viewport=VIEWPORTS["desktop"])
    try:
        page.goto(foldered + "/")
        page.wait_for_selector("#within-option:not([hidden])")
        assert page.locator("#within option").all_inner_texts() == ["all documents", "notes/", "reports/"]
        assert page.is_hidden("#format-option")  # every seed is plain text: no choice to offer
        page.select_option("#within", "notes/")
        page.fill("#q", QUESTION)
        page.press("#q", "Enter")
        page.wait_for_selector("#results li.result", timeout=30_000)
        docs = page.locator("#results a.cite").evaluate_all(CITED_DOCS)
        assert docs and all(doc.startswith("notes/") for doc in docs), docs
        assert "within=notes%2F" in page.evaluate("location.hash")
        # The whole corpus again: the search runs again, and reports/ answers too.
        page.select_option("#within", "")
        page.wait_for_function("() => [...document.querySelectorAll('#results a.cite')].some((a) => "
                               "new URLSearchParams(a.getAttribute('href').slice(1)).get('doc').startsWith('reports/'))",
                               timeout=30_000)
        assert "within=" not in page.evaluate("location.hash")
    finally:
        page.close()


def test_a_server_with_tokens_asks_the_reader_for_one_and_then_answers(browser, seeds_settings, real_embedder,
                                                                        tmp_path):
    from askcorpus.api import create_app
    from askcorpus.api.callers import add_token

    tokens = tmp_path / "tokens.toml"
    token = add_token(tokens, "reader", [""])
    settings = seeds_settings.with_overrides(reload_interval=0, tokens_file=tokens)
    with serve_in_thread(create_app(settings, embedder=real_embedder)) as url:
        page = browser.new_page(viewport=VIEWPORTS["desktop"])
        try:
            page.goto(url + "/")
            page.wait_for_selector("#token-form:not([hidden])")  # the listing needed a token
            page.fill("#token", "not-the-token")
            page.press("#token", "Enter")
            page.wait_for_selector("#token-form:not([hidden])")  # refused: asked again
            page.fill("#token", token)
            page.press("#token", "Enter")
            page.wait_for_selector("#token-form", state="hidden")
            page.fill("#q", QUESTION)
            page.press("#q", "Enter")
            page.wait_for_selector("#results li.result", timeout=30_000)
            assert page.locator("#results li.result").count() == 10
            assert token not in page.evaluate("location.href")  # kept for the tab, never in the address
        finally:
            page.close()


def test_the_upload_control_shows_only_for_an_admin_token_and_adds_a_searchable_document(
        browser, seeds_settings, real_embedder, tmp_path):
    from askcorpus.api import create_app
    from askcorpus.api.callers import add_token
    from askcorpus.build import build_index

    shutil.copytree(seeds_settings.corpus, tmp_path / "corpus")
    tokens = tmp_path / "tokens.toml"
    reader, admin = add_token(tokens, "reader", [""]), add_token(tokens, "admin", [""], admin=True)
    settings = seeds_settings.with_overrides(corpus=tmp_path / "corpus", index=tmp_path / "index",
                                             reload_interval=0, tokens_file=tokens)
    build_index(settings, real_embedder)
    note = tmp_path / "quokkas.txt"
    note.write_text("Quokka census on Rottnest Island.\n\nRangers counted the quokkas of Rottnest Island.\n")
    with serve_in_thread(create_app(settings, embedder=real_embedder)) as url:
        page = browser.new_page(viewport=VIEWPORTS["desktop"])
        try:
            page.goto(url + "/")
            for token, shown in ((reader, False), (admin, True)):
                page.evaluate("sessionStorage.clear()")
                page.reload()
                page.wait_for_selector("#token-form:not([hidden])")
                page.fill("#token", token)
                page.press("#token", "Enter")
                page.wait_for_selector("#token-form", state="hidden")
                page.wait_for_selector("#status:has-text('documents')")
                assert page.is_visible("#upload-form") is shown
            page.set_input_files("#upload-file", str(note))
            page.fill("#upload-path", "notes/")
            page.click("#upload-go")
            page.wait_for_selector("#message:has-text('searchable now')", timeout=60_000)
            assert "notes/quokkas.txt" in page.inner_text("#message")
            page.fill("#q", "How many quokkas live on Rottnest Island?")
            page.press("#q", "Enter")
            page.wait_for_selector("#results li.result", timeout=30_000)
            first = page.locator("#results a.cite").first.get_attribute("href")
            assert "notes%2Fquokkas.txt" in first
        finally:
            page.close()
