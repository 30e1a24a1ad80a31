// askcorpus page: plain JavaScript, no build step. All document text goes into the page as text nodes.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const titles = new Map(); // doc_id -> title
  let lastSearchHash = "";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function docPath(docId) {
    return "/documents/" + docId.split("/").map(encodeURIComponent).join("/");
  }

  function docHash(docId, start, end) {
    const params = new URLSearchParams({ doc: docId, start: String(start), end: String(end) });
    return "#" + params.toString();
  }

  function titleOf(docId) {
    return titles.get(docId) || docId;
  }

  async function getJSON(url, options) {
    const response = await fetch(url, options);
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : response.status + " " + response.statusText;
      throw new Error(detail);
    }
    return data;
  }

  async function loadTitles() {
    try {
      const data = await getJSON("/documents");
      titles.clear();
      for (const doc of data.documents) titles.set(doc.doc_id, doc.title || doc.doc_id);
    } catch (error) {
      /* titles are a nicety: ids are shown instead */
    }
  }

  async function loadStatus() {
    try {
      const health = await getJSON("/health");
      $("status").textContent =
        health.documents + " documents · " + health.passages + " passages · " + health.model +
        (health.reranker ? " · reranked by " + health.reranker : "");
      if (!health.reranker) {
        // This server does not rerank: the control could only produce an error.
        $("rerank").checked = false;
        $("rerank").disabled = true;
        $("rerank-option").title = "Reranking is off on this server (ASKCORPUS_RERANK=false)";
      }
    } catch (error) {
      $("status").textContent = "service unavailable";
    }
  }

  function showMessage(text, kind) {
    const message = $("message");
    message.textContent = text;
    message.className = "message" + (kind ? " " + kind : "");
    message.hidden = !text;
  }

  // Text with some spans marked: `spans` are [start, end, className, tag] in text offsets, possibly overlapping.
  function markedText(text, spans) {
    const cuts = new Set([0, text.length]);
    for (const [start, end] of spans) {
      cuts.add(Math.max(0, Math.min(text.length, start)));
      cuts.add(Math.max(0, Math.min(text.length, end)));
    }
    const points = [...cuts].sort((a, b) => a - b);
    const fragment = document.createDocumentFragment();
    for (let i = 0; i + 1 < points.length; i++) {
      const a = points[i];
      const b = points[i + 1];
      let node = document.createTextNode(text.slice(a, b));
      for (const [start, end, className, tag] of spans) {
        if (start <= a && b <= end) node = el(tag || "span", { class: className }, node);
      }
      fragment.append(node);
    }
    return fragment;
  }

  function renderAnswer(answer) {
    const box = $("answer");
    const text = $("answer-text");
    const meta = $("answer-meta");
    text.replaceChildren();
    meta.replaceChildren();
    box.hidden = false;
    if (!answer) {
      box.classList.add("none");
      text.textContent = "No confident answer in the documents. The closest passages are below.";
      return;
    }
    box.classList.remove("none");
    text.textContent = answer.text;
    meta.append(
      el("a", { href: docHash(answer.doc_id, answer.start, answer.end), class: "cite answer-cite" },
        titleOf(answer.doc_id)),
      el("span", { class: "offsets" }, " [" + answer.start + ":" + answer.end + "]"),
      el("span", { class: "score" }, " · confidence " + answer.score.toFixed(2)),
    );
  }

  function renderResults(data) {
    const list = $("results");
    list.replaceChildren();
    $("results-label").hidden = data.results.length === 0;
    const answer = data.answer;
    for (const result of data.results) {
      const spans = (result.highlights || []).map(([s, e]) => [s, e, "term", "mark"]);
      if (answer && answer.doc_id === result.doc_id && answer.start < result.end && answer.end > result.start) {
        spans.unshift([answer.start - result.start, answer.end - result.start, "answer-span", "span"]);
      }
      const link = docHash(result.doc_id, result.start, result.end);
      const metaParts = [
        "[" + result.start + ":" + result.end + "]",
        result.page ? "page " + result.page : null,
        result.rerank_score === null || result.rerank_score === undefined
          ? "score " + result.score.toFixed(4)
          : "rerank " + result.rerank_score.toFixed(2) + " (first stage " + result.score.toFixed(4) + ")",
        result.tokens + " tokens",
      ].filter(Boolean);
      list.append(
        el("li", { class: "result" },
          el("div", { class: "result-head" },
            el("span", { class: "rank", "aria-label": "rank" }, String(result.rank)),
            el("a", { href: link, class: "doc-link" }, titleOf(result.doc_id))),
          el("p", { class: "meta" }, el("span", { class: "doc-id" }, result.doc_id), " · " + metaParts.join(" · ")),
          el("p", { class: "passage" }, markedText(result.text, spans)),
          el("a", { href: link, class: "cite" }, "Open in document →")));
    }
  }

  async function runSearch(query, mode, k, rerank) {
    $("q").value = query;
    $("mode").value = mode;
    $("k").value = String(k);
    if (!$("rerank").disabled) $("rerank").checked = rerank;
    document.title = query + " · askcorpus";
    $("go").disabled = true;
    showMessage("Searching…", "busy");
    try {
      const data = await getJSON("/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        // Unset when the server cannot rerank, so it answers with its first stage instead of an error.
        body: JSON.stringify({ query: query, k: k, mode: mode, rerank: $("rerank").disabled ? undefined : rerank }),
      });
      if (data.results.some((r) => !titles.has(r.doc_id))) await loadTitles();
      renderAnswer(data.answer);
      renderResults(data);
      $("results-label").textContent = data.reranked ? "Passages, reranked" : "Passages";
      showMessage(data.results.length ? "" : "No passage matched. Try other words or the dense mode.", "");
    } catch (error) {
      $("answer").hidden = true;
      $("results").replaceChildren();
      $("results-label").hidden = true;
      showMessage(error.message, "error");
    } finally {
      $("go").disabled = false;
    }
  }

  async function showDocument(docId, start, end) {
    $("search-view").hidden = true;
    $("doc-view").hidden = false;
    $("back").setAttribute("href", lastSearchHash || "#");
    $("doc-title").textContent = titleOf(docId);
    $("doc-meta").textContent = "Loading…";
    const body = $("doc-text");
    body.replaceChildren();
    try {
      const doc = await getJSON(docPath(docId));
      const text = doc.text;
      document.title = doc.title + " · askcorpus";
      $("doc-title").textContent = doc.title || doc.doc_id;
      const valid = Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= text.length;
      $("doc-meta").textContent = doc.doc_id + " · " + doc.characters + " characters" +
        (valid ? " · cited passage [" + start + ":" + end + "] highlighted" : "");
      if (!valid) {
        body.append(text);
        return;
      }
      const mark = el("mark", { id: "cited", class: "cited", tabindex: "-1" }, text.slice(start, end));
      body.append(text.slice(0, start), mark, text.slice(end));
      mark.scrollIntoView({ block: "center" });
      mark.focus({ preventScroll: true });
    } catch (error) {
      $("doc-meta").textContent = "";
      body.append(el("p", { class: "message error" }, error.message));
    }
  }

  function showSearchView() {
    $("doc-view").hidden = true;
    $("search-view").hidden = false;
  }

  function route() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.has("doc")) {
      const start = params.has("start") ? Number(params.get("start")) : NaN;
      const end = params.has("end") ? Number(params.get("end")) : NaN;
      showDocument(params.get("doc"), start, end);
      return;
    }
    showSearchView();
    const query = (params.get("q") || "").trim();
    if (!query) {
      document.title = "askcorpus";
      return;
    }
    lastSearchHash = location.hash;
    const mode = ["hybrid", "dense", "bm25"].includes(params.get("mode")) ? params.get("mode") : "hybrid";
    const k = Math.min(100, Math.max(1, parseInt(params.get("k") || "10", 10) || 10));
    runSearch(query, mode, k, params.get("rerank") !== "0");
  }

  function onSubmit(event) {
    event.preventDefault();
    const query = $("q").value.trim();
    if (!query) {
      showMessage("Type a question first.", "error");
      return;
    }
    const fields = { q: query, mode: $("mode").value, k: $("k").value };
    if (!$("rerank").checked && !$("rerank").disabled) fields.rerank = "0";
    const hash = "#" + new URLSearchParams(fields).toString();
    if (location.hash === hash) route(); // same question again: search again
    else location.hash = hash;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("ask").addEventListener("submit", onSubmit);
    window.addEventListener("hashchange", route);
    $("rerank").addEventListener("change", () => { if ($("q").value.trim()) onSubmit(new Event("submit")); });
    Promise.all([loadStatus(), loadTitles()]).then(route);
  });
})();
