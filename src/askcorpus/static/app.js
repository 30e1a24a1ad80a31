// askcorpus page: plain JavaScript, no build step. All document text goes into the page as text nodes.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const titles = new Map(); // doc_id -> title
  let lastSearchHash = "";
  // The search the search view shows (or is fetching): coming back to it from a document does not ask again,
  // which would have the model write a different answer than the one whose citation was followed.
  let shownHash = "";
  let current = null; // the AbortController of the search in flight: a new search aborts it
  const NO_GENERATOR = "No language model is configured on this server (ASKCORPUS_LLM_URL or ASKCORPUS_LLM_GGUF)";
  const UNSUPPORTED = "Not supported by the passage it cites";
  // A citation marker as the server reads them: [3], [1, 2].
  const MARKER = /\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]/g;

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

  // With a tokens file on the server, every request but /health carries the token the reader gave, kept for this
  // tab only (sessionStorage), never in the address.
  const TOKEN_KEY = "askcorpus-token";

  function call(url, options) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = Object.assign({}, (options && options.headers) || {});
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(url, Object.assign({}, options || {}, { headers: headers })).then((response) => {
      if (response.status === 401) askForToken(Boolean(token));
      return response;
    });
  }

  function askForToken(rejected) {
    if (rejected) sessionStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = false;
    $("token").focus();
  }

  function useToken(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("token-form").hidden = true;
    Promise.all([loadStatus(), loadTitles()]).then(() => route(true));
  }

  // A document added to the corpus folder; answered once it is searchable (?wait=true).
  async function onUpload(event) {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    if ($("upload-path").value.trim()) form.append("path", $("upload-path").value.trim());
    $("upload-go").disabled = true;
    showMessage("Adding " + file.name + "…", "busy");
    try {
      const data = await getJSON("/documents?wait=true", { method: "POST", body: form });
      showMessage(data.doc_id + (data.searchable ? " added: it is searchable now." :
                                 " stored; it becomes searchable with the next build."), "");
      $("upload-form").reset();
      await Promise.all([loadStatus(), loadTitles()]);
    } catch (error) {
      showMessage(error.message, "error");
    } finally {
      $("upload-go").disabled = false;
    }
  }

  async function getJSON(url, options) {
    const response = await call(url, options);
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      data = null;
    }
    if (!response.ok) throw new Error(errorDetail(response, data));
    return data;
  }

  function errorDetail(response, data) {
    const detail = data && data.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail) && detail.length) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    return response.status + " " + response.statusText;
  }

  // A choice list of the values the documents have; shown only when there is a choice to make.
  function fillChoices(selectId, optionId, values, label) {
    const select = $(selectId);
    select.replaceChildren(select.options[0]);
    for (const value of [...new Set(values)].sort()) select.append(el("option", { value: value }, label(value)));
    $(optionId).hidden = select.options.length <= 2;
  }

  async function loadTitles() {
    try {
      const data = await getJSON("/documents");
      titles.clear();
      for (const doc of data.documents) titles.set(doc.doc_id, doc.title || doc.doc_id);
      // Folders are the first part of a document's path within the corpus folder (its doc_id).
      const folders = data.documents.filter((d) => d.doc_id.includes("/")).map((d) => d.doc_id.split("/")[0] + "/");
      fillChoices("within", "within-option", folders, (folder) => folder);
      fillChoices("format", "format-option", data.documents.map((d) => d.format).filter(Boolean), (f) => f);
    } catch (error) {
      /* titles are a nicety: ids are shown instead */
    }
  }

  // The filter a search asks with: the folder and format chosen, or none.
  function chosenFilter(within, format) {
    const filter = {};
    if (within) filter.path = within;
    if (format) filter.formats = [format];
    return Object.keys(filter).length ? filter : undefined;
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
      // Shown only to a caller whose token may upload (the server says so for the token this request carried).
      $("upload-form").hidden = !health.uploads;
      const generator = health.generator;
      $("generate").disabled = !generator;
      if (!generator) $("generate").checked = false;
      $("generate-option").title = generator
        ? (generator.model ? "The language model " + generator.model : "A language model") +
          " writes an answer from the top passages, citing them; each sentence is checked against what it cites"
        : NO_GENERATOR;
    } catch (error) {
      $("status").textContent = "service unavailable";
      $("generate").disabled = true;
      $("generate").checked = false;
      $("generate-option").title = NO_GENERATOR;
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

  // Generated answer ------------------------------------------------------------------------------------------

  function resetGenerated(show) {
    const box = $("generated");
    box.hidden = !show;
    box.classList.remove("none", "failed");
    box.classList.toggle("streaming", show);
    box.setAttribute("aria-busy", show ? "true" : "false");
    $("generated-text").replaceChildren();
    $("generated-note").hidden = true;
    $("generated-note").replaceChildren();
    $("generated-meta").textContent = show ? "Writing…" : "";
  }

  function appendGenerated(text) {
    const box = $("generated");
    if (box.hidden) resetGenerated(true);
    $("generated-text").append(text);
    $("generated-meta").textContent = "Writing…";
  }

  function noteGenerated(text, kind) {
    const note = $("generated-note");
    note.textContent = text;
    note.className = "generated-note" + (kind ? " " + kind : "");
    note.hidden = !text;
  }

  function citeLink(label, citation) {
    if (!citation) return document.createTextNode(label);
    const where = " [" + citation.start + ":" + citation.end + "]" + (citation.page ? ", page " + citation.page : "");
    return el("a", { class: "cite", href: docHash(citation.doc_id, citation.start, citation.end),
                     title: "[" + citation.n + "] " + (citation.title || titleOf(citation.doc_id)) + where },
      label);
  }

  // `text` with each [n] marker a link to the passage n cites (the marker's own characters kept as they are).
  function citedText(text, citations) {
    const fragment = document.createDocumentFragment();
    let at = 0;
    for (const match of text.matchAll(MARKER)) {
      fragment.append(text.slice(at, match.index));
      const marker = match[0];
      const numbers = marker.match(/\d+/g);
      if (numbers.length === 1) {
        fragment.append(citeLink(marker, citations.get(Number(numbers[0]))));
      } else {
        // [1, 2]: each number its own link, the brackets and commas as text.
        let inner = 0;
        for (const number of marker.matchAll(/\d+/g)) {
          fragment.append(marker.slice(inner, number.index));
          fragment.append(citeLink(number[0], citations.get(Number(number[0]))));
          inner = number.index + number[0].length;
        }
        fragment.append(marker.slice(inner));
      }
      at = match.index + marker.length;
    }
    fragment.append(text.slice(at));
    return fragment;
  }

  function generatedMeta(generated) {
    const parts = [];
    if (generated.model) parts.push(generated.model);
    const tokens = [];
    if (generated.prompt_tokens !== null && generated.prompt_tokens !== undefined) {
      tokens.push(generated.prompt_tokens + " prompt");
    }
    if (generated.completion_tokens !== null && generated.completion_tokens !== undefined) {
      tokens.push(generated.completion_tokens + " answer");
    }
    if (tokens.length) parts.push(tokens.join(" + ") + " tokens");
    if (typeof generated.seconds === "number") parts.push(generated.seconds.toFixed(1) + " s");
    const unsupported = (generated.sentences || []).filter((s) => !s.supported).length;
    if (generated.text && unsupported) {
      parts.push(unsupported + (unsupported === 1 ? " sentence" : " sentences") + " not supported by what it cites");
    }
    return parts.join(" · ");
  }

  // The checked answer replaces what streamed in: sentences marked, markers linked to the passages they cite.
  function renderGenerated(generated) {
    const box = $("generated");
    const body = $("generated-text");
    resetGenerated(Boolean(generated));
    if (!generated) return;
    box.classList.remove("streaming");
    box.setAttribute("aria-busy", "false");
    $("generated-meta").textContent = generatedMeta(generated);
    if (generated.error) {
      box.classList.add("failed");
      noteGenerated("No answer was written: " + generated.error, "error");
      return;
    }
    if (generated.abstained || !generated.text) {
      box.classList.add("none");
      body.textContent = "The documents do not answer this question.";
      if ((generated.sentences || []).length) {
        noteGenerated("The model's answer was withheld: none of its sentences is supported by the passages it cites.",
          "");
      }
      return;
    }
    const text = generated.text;
    const citations = new Map((generated.citations || []).map((c) => [c.n, c]));
    const sentences = [...(generated.sentences || [])]
      .filter((s) => Number.isInteger(s.start) && Number.isInteger(s.end) && 0 <= s.start && s.start <= s.end &&
                     s.end <= text.length)
      .sort((a, b) => a.start - b.start);
    let at = 0;
    for (const sentence of sentences) {
      if (sentence.start < at) continue; // overlapping: not from this server
      if (sentence.start > at) body.append(citedText(text.slice(at, sentence.start), citations));
      const attrs = sentence.supported
        ? { class: "sentence" }
        : { class: "sentence unsupported", title: UNSUPPORTED };
      body.append(el("span", attrs, citedText(text.slice(sentence.start, sentence.end), citations)));
      at = sentence.end;
    }
    if (at < text.length) body.append(citedText(text.slice(at), citations));
  }

  // Server-Sent Events from a fetch body: `onEvent(type, data)` for each event, in order (awaited).
  async function readEvents(body, signal, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let type = "";
    let data = [];
    const line = async (text) => {
      if (text === "") {
        if (data.length && !signal.aborted) await onEvent(type || "message", data.join("\n"));
        type = "";
        data = [];
        return;
      }
      if (text.startsWith(":")) return; // a comment: sse-starlette's pings
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
        // Lines end at \r\n, \n or \r; a \r at the very end may be half of a \r\n still to come.
        const ending = /\r\n|\n|\r/g;
        let at = 0;
        let match;
        while ((match = ending.exec(buffer)) !== null) {
          if (!done && match[0] === "\r" && match.index === buffer.length - 1) break;
          await line(buffer.slice(at, match.index));
          at = match.index + match[0].length;
          if (signal.aborted) return;
        }
        buffer = buffer.slice(at);
        if (done) return; // an event not closed by a blank line is dropped, as EventSource does
      }
    } finally {
      reader.releaseLock();
    }
  }

  async function showSearch(data, signal) {
    if (data.results.some((r) => !titles.has(r.doc_id))) await loadTitles();
    if (signal.aborted) return false;
    renderAnswer(data.answer);
    renderResults(data);
    $("results-label").textContent = data.reranked ? "Passages, reranked" : "Passages";
    showMessage(data.results.length ? "" : "No passage matched. Try other words or the dense mode.", "");
    return true;
  }

  // The search with the answer written by the model, streamed: results, then the text as it is written, then
  // the checked answer.
  async function streamSearch(body, signal) {
    const response = await call("/search", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: signal,
    });
    if (!response.ok) {
      let data = null;
      try {
        data = await response.json();
      } catch (error) {
        if (error.name === "AbortError") throw error;
      }
      throw new Error(errorDetail(response, data));
    }
    if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream") || !response.body) {
      const data = await response.json(); // the whole answer at once
      if (await showSearch(data, signal)) renderGenerated(data.generated);
      return;
    }
    const state = { results: false, done: false };
    try {
      await readEvents(response.body, signal, async (type, text) => {
        const data = JSON.parse(text);
        if (type === "results") {
          if (!(await showSearch(data, signal))) return;
          $("go").disabled = false; // a new question may be asked while the answer is written: it stops this one
          state.results = true;
          resetGenerated(true);
        } else if (type === "delta") {
          if (typeof data.text === "string" && data.text) appendGenerated(data.text);
        } else if (type === "done") {
          state.done = true;
          renderGenerated(data.generated);
        } else if (type === "error") {
          state.done = true;
          renderGenerated({ error: data.detail || data.error || text, sentences: [], citations: [] });
        }
      });
    } catch (error) {
      if (error.name === "AbortError" || signal.aborted || !state.results) throw error;
      renderGenerated({ error: "the connection broke while the answer was written (" + error.message + ")",
                        sentences: [], citations: [] });
      return;
    }
    if (signal.aborted) return;
    if (!state.results) throw new Error("The server closed the connection before sending the results.");
    if (!state.done) {
      renderGenerated({ error: "the server closed the connection before the answer was finished",
                        sentences: [], citations: [] });
    }
  }

  async function runSearch(query, mode, k, rerank, generate, within, format) {
    $("q").value = query;
    $("mode").value = mode;
    $("within").value = within;
    $("format").value = format;
    $("k").value = String(k);
    if (!$("rerank").disabled) $("rerank").checked = rerank;
    // Asked of a server without a model (an old link), the search runs without it rather than failing.
    generate = generate && !$("generate").disabled;
    if (!$("generate").disabled) $("generate").checked = generate;
    document.title = query + " · askcorpus";
    if (current) current.abort(); // the server learns the client left and stops the model
    const controller = new AbortController();
    current = controller;
    const hash = shownHash;
    $("go").disabled = true;
    resetGenerated(false);
    showMessage("Searching…", "busy");
    // Unset when the server cannot rerank, so it answers with its first stage instead of an error.
    const body = { query: query, k: k, mode: mode, rerank: $("rerank").disabled ? undefined : rerank,
                   filter: chosenFilter(within, format) };
    try {
      if (generate) {
        body.generate = true;
        await streamSearch(body, controller.signal);
      } else {
        const data = await getJSON("/search", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
          signal: controller.signal,
        });
        if (await showSearch(data, controller.signal)) renderGenerated(data.generated);
      }
    } catch (error) {
      if (error.name === "AbortError" || controller.signal.aborted) return; // a newer search took over
      if (shownHash === hash) shownHash = ""; // coming back asks again
      $("answer").hidden = true;
      resetGenerated(false);
      $("results").replaceChildren();
      $("results-label").hidden = true;
      showMessage(error.message, "error");
    } finally {
      if (current === controller) {
        current = null;
        $("go").disabled = false;
      }
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

  function route(again) {
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
    if (location.hash === shownHash && again !== true) return; // back from a document: the search is still here
    shownHash = location.hash;
    const mode = ["hybrid", "dense", "bm25"].includes(params.get("mode")) ? params.get("mode") : "hybrid";
    const k = Math.min(100, Math.max(1, parseInt(params.get("k") || "10", 10) || 10));
    runSearch(query, mode, k, params.get("rerank") !== "0", params.get("generate") === "1",
              params.get("within") || "", params.get("format") || "");
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
    if ($("generate").checked && !$("generate").disabled) fields.generate = "1";
    if ($("within").value) fields.within = $("within").value;
    if ($("format").value) fields.format = $("format").value;
    const hash = "#" + new URLSearchParams(fields).toString();
    if (location.hash === hash) route(true); // same question again: search again
    else location.hash = hash;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("ask").addEventListener("submit", onSubmit);
    $("token-form").addEventListener("submit", useToken);
    $("upload-form").addEventListener("submit", onUpload);
    window.addEventListener("hashchange", route);
    const again = () => { if ($("q").value.trim()) onSubmit(new Event("submit")); };
    $("rerank").addEventListener("change", again);
    $("generate").addEventListener("change", again);
    $("within").addEventListener("change", again);
    $("format").addEventListener("change", again);
    Promise.all([loadStatus(), loadTitles()]).then(route);
  });
})();
