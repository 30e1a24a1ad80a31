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
