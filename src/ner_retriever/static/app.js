// ner-retriever web page. Plain JS, no build step, no network but this server.
//
// Documents are untrusted: their text only ever reaches the page through textContent and
// text nodes (never innerHTML), and highlights are built from the mention offsets the API
// returns. The server's Content-Security-Policy also forbids inline script.
"use strict";

(() => {
  const PAGE = 10;
  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const input = $("q");
  const go = $("go");
  const statusLine = $("status");
  const list = $("results");
  const moreButton = $("more");
  const intro = $("intro");
  const dialog = $("doc-view");

  const whereInput = $("where");
  const mustInput = $("must");
  const entitiesButton = $("entities-go");
  const entityView = $("entity-view");
  const entityList = $("entity-list");

  // req: {q: [descriptions], like: example or null, mention: its name, where: [...], must}
  const state = { req: null, offset: 0, token: 0, shown: 0 };

  // -- small DOM helpers (all text goes in as text) ---------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setStatus(message, isError) {
    statusLine.textContent = message;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function formatScore(score) {
    return Number(score).toFixed(3);
  }

  function formatBytes(bytes) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let value = Number(bytes) || 0;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
      throw new Error(detail || `HTTP ${response.status}`);
    }
    return body;
  }

  // -- requests and the address bar -----------------------------------------------------------
  // "politician & city": several types (documents mentioning an entity of each)
  const descriptions = (text) => text.split(/\s+&\s+/).map((t) => t.trim()).filter(Boolean);
  const conditions = (text) => text.split(";").map((t) => t.trim()).filter(Boolean);

  function formRequest() {
    return { q: descriptions(input.value), like: null, mention: null,
      where: conditions(whereInput.value), must: mustInput.value.trim() || null };
  }

  function requestParams(req) {
    const params = new URLSearchParams();
    if (req.like !== null) params.append("like", req.like);
    else for (const q of req.q) params.append("q", q);
    for (const w of req.where) params.append("where", w);
    if (req.must) params.append("must", req.must);
    return params;
  }

  function label(req) {
    return req.like !== null ? `like \u201c${req.mention}\u201d` : `for \u201c${req.q.join(" & ")}\u201d`;
  }

  function fillForm(req) {
    if (req.like === null) input.value = req.q.join(" & ");
    whereInput.value = req.where.join("; ");
    mustInput.value = req.must || "";
  }

  // "more like this": the mention marked in its context window, brackets elsewhere made
  // round so that the one [[mark]] is the only one
  function likeText(ctx, m) {
    const round = (t) => t.replace(/\[/g, "(").replace(/\]/g, ")");
    const chars = Array.from(ctx.text);
    const start = m.start - ctx.start;
    const end = m.end - ctx.start;
    const name = round(m.text).replace(/\n/g, " ");
    if (start < 0 || end > chars.length) return name.trim();
    return `${round(chars.slice(0, start).join(""))}[[${name}]]${round(chars.slice(end).join(""))}`;
  }

  // -- highlighting -------------------------------------------------------------------------
  // The API gives offsets in Unicode code points (Python indices); JS strings index UTF-16
  // units, so slice an array of code points instead.
  //
  // spans: [{start, end, className, title}] in document offsets; base: document offset of
  // text[0]. Overlapping spans keep the earlier-listed (higher-priority) one.
  function highlight(container, text, base, spans) {
    const chars = Array.from(text);
    const taken = [];
    for (const span of spans) {
      const start = Math.max(span.start - base, 0);
      const end = Math.min(span.end - base, chars.length);
      if (end <= start) continue;
      if (taken.some((t) => start < t.end && t.start < end)) continue;
      taken.push({ ...span, start, end });
    }
    taken.sort((a, b) => a.start - b.start);
    let pos = 0;
    for (const span of taken) {
      if (span.start > pos) container.append(chars.slice(pos, span.start).join(""));
      const mark = el(span.tag || "mark", span.className, chars.slice(span.start, span.end).join(""));
      if (span.title) mark.title = span.title;
      container.append(mark);
      pos = span.end;
    }
    if (pos < chars.length) container.append(chars.slice(pos).join(""));
  }

  // -- search -------------------------------------------------------------------------------
  function renderResult(result, query) {
    const item = el("li", "result");
    item.dataset.docId = result.doc_id;

    const head = el("div", "result-head");
    head.append(el("span", "rank", result.rank));
    const open = el("button", "doc-link", result.doc_id);
    open.type = "button";
    open.title = "Open the document";
    open.addEventListener("click", () => openDocument(result.doc_id, result.mentions, query));
    head.append(open);
    const score = el("span", "score");
    score.title = "Similarity of the best-matching mention to the query";
    const bar = el("span", "bar");
    const fill = el("span", "fill");
    fill.style.width = `${Math.round(Math.max(0, Math.min(1, result.score)) * 100)}%`;
    bar.append(fill);
    score.append(bar, el("span", "score-value", formatScore(result.score)));
    head.append(score);
    item.append(head);

    const context = el("p", "context");
    const ctx = result.context;
    if (ctx.start > 0) context.append("\u2026");
    highlight(context, ctx.text, ctx.start, result.mentions.map((m, i) => ({
      start: m.start, end: m.end,
      className: i === 0 ? "hit best" : "hit",
      title: `${m.text}${m.query ? ` (${m.query})` : ""} \u2014 score ${formatScore(m.score)}`,
    })));
    if (ctx.end < ctx.doc_length) context.append("\u2026");
    item.append(context);

    const hits = el("div", "hits");
    hits.append(el("span", "muted", "matched"));
    for (const m of result.mentions) {
      const chip = el("span", "chip");
      chip.append(el("span", "chip-text", m.text));
      if (m.query) chip.append(el("span", "chip-label", m.query));
      chip.append(el("span", "chip-score", formatScore(m.score)));
      const like = el("button", "like", "more like this");
      like.type = "button";
      like.setAttribute("aria-label", `More like \u201c${m.text}\u201d`);
      like.addEventListener("click", () => submit({ q: [], like: likeText(ctx, m), mention: m.text,
        where: state.req.where, must: state.req.must }, true));
      chip.append(like);
      hits.append(chip);
    }
    item.append(hits);
    return item;
  }

  async function runSearch(append) {
    const token = ++state.token;
    if (!append) {
      state.offset = 0;
      state.shown = 0;
    }
    const params = requestParams(state.req);
    params.set("k", String(PAGE));
    params.set("offset", String(state.offset));
    go.disabled = true;
    moreButton.disabled = true;
    list.setAttribute("aria-busy", "true");
    const what = label(state.req);
    setStatus(append ? "Loading more\u2026" : `Searching ${what}\u2026`);
    try {
      const data = await getJSON(`/search?${params}`);
      if (token !== state.token) return; // a newer search started meanwhile
      if (!append) list.replaceChildren();
      for (const result of data.results) list.append(renderResult(result, data.query));
      state.shown += data.results.length;
      state.offset += data.results.length;
      moreButton.hidden = !data.has_more;
      intro.hidden = true;
      const plural = state.shown === 1 ? "" : "s";
      const how = data.cached ? "cached query" : "query embedded";
      setStatus(state.shown
        ? `${state.shown} document${plural} ${what} \u00b7 ${data.took_ms} ms (${how})`
        : `No documents ${what}.`);
    } catch (error) {
      if (token !== state.token) return;
      if (!append) list.replaceChildren();
      moreButton.hidden = true;
      setStatus(error.message, true);
    } finally {
      if (token === state.token) {
        go.disabled = false;
        moreButton.disabled = false;
        list.removeAttribute("aria-busy");
      }
    }
  }

  function pushUrl(params, push) {
    const url = `?${params}`;
    if (push && url !== window.location.search) history.pushState(null, "", url);
  }

  // keepEntities: a search started from the entity list leaves the list in view
  function submit(req, push, keepEntities) {
    if (req.like === null && req.q.length === 0) {
      setStatus("Type an entity type first, e.g. \u201cpolitician\u201d.", true);
      input.focus();
      return;
    }
    if (!keepEntities) entityView.hidden = true;
    fillForm(req);
    state.req = req;
    pushUrl(requestParams(req), push);
    runSearch(false);
  }

  // -- entity inventory -------------------------------------------------------------------
  function renderEntity(entity, req) {
    const item = el("li");
    const button = el("button", "entity");
    button.type = "button";
    button.title = `Documents that name ${entity.text}`;
    const docs = entity.documents === 1 ? "1 document" : `${entity.documents} documents`;
    const mentions = entity.mentions === 1 ? "1 mention" : `${entity.mentions} mentions`;
    button.append(el("span", "entity-text", entity.text),
      el("span", "entity-counts", `${docs} \u00b7 ${mentions}`));
    button.addEventListener("click", () => submit({ ...req, must: entity.text }, true, true));
    item.append(button);
    return item;
  }

  async function runEntities(req, push) {
    if (req.q.length !== 1) {
      setStatus(req.q.length ? "Entities lists one type at a time." :
        "Type an entity type first, e.g. \u201criver\u201d.", true);
      input.focus();
      return;
    }
    const token = ++state.token;
    fillForm(req);
    const params = requestParams(req);
    params.delete("q");
    params.set("entities", req.q[0]);
    pushUrl(params, push);
    const query = new URLSearchParams({ q: req.q[0], top: "50" });
    for (const w of req.where) query.append("where", w);
    if (req.must) query.append("must", req.must);
    entitiesButton.disabled = true;
    setStatus(`Listing entities of \u201c${req.q[0]}\u201d\u2026`);
    try {
      const data = await getJSON(`/entities?${query}`);
      if (token !== state.token) return;
      list.replaceChildren();
      moreButton.hidden = true;
      intro.hidden = true;
      $("entity-title").textContent = `Entities of \u201c${data.query}\u201d`;
      entityList.replaceChildren(...data.entities.map((e) => renderEntity(e, { ...req, must: null })));
      entityView.hidden = false;
      const n = data.entities.length;
      setStatus(n ? `${n} entit${n === 1 ? "y" : "ies"} of \u201c${data.query}\u201d`
        : `No entities of \u201c${data.query}\u201d.`);
    } catch (error) {
      if (token !== state.token) return;
      entityView.hidden = true;
      setStatus(error.message, true);
    } finally {
      entitiesButton.disabled = false;
    }
  }

  // the address bar: ?q=..&q=..&where=..&must=.., ?like=.., or ?entities=..
  function fromUrl() {
    const params = new URLSearchParams(window.location.search);
    const req = { q: params.getAll("q"), like: params.get("like"), mention: null,
      where: params.getAll("where"), must: params.get("must") };
    if (params.has("entities")) {
      req.q = [params.get("entities")];
      runEntities(req, false);
    } else if (req.like !== null) {
      const marked = /\[\[([\s\S]*?)\]\]/.exec(req.like);
      req.mention = marked ? marked[1] : req.like;
      submit(req, false);
    } else if (req.q.length) {
      submit(req, false);
    } else {
      return false;
    }
    return true;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(formRequest(), true);
  });
  entitiesButton.addEventListener("click", () => runEntities(formRequest(), true));
  moreButton.addEventListener("click", () => runSearch(true));
  window.addEventListener("popstate", fromUrl);
  document.addEventListener("keydown", (event) => {
    if (event.key === "/" && document.activeElement !== input && !dialog.open) {
      event.preventDefault();
      input.focus();
      input.select();
    }
  });

  // -- document view ------------------------------------------------------------------------
  async function openDocument(docId, hits, query) {
    const title = $("doc-title");
    const text = $("doc-text");
    const chips = $("doc-mentions");
    const meta = $("doc-meta");
    title.textContent = docId;
    text.replaceChildren(el("span", "muted", "Loading\u2026"));
    chips.replaceChildren();
    meta.replaceChildren();
    $("doc-count").textContent = "";
    $("doc-meta-block").hidden = true;
    if (!dialog.open) dialog.showModal();
    try {
      const doc = await getJSON(`/documents/${encodeURIComponent(docId)}`);
      const hitKeys = new Map((hits || []).map((m) => [`${m.start}:${m.end}`, m]));
      const spans = (hits || []).map((m) => ({
        start: m.start, end: m.end, className: "hit",
        title: `matches \u201c${query}\u201d \u2014 score ${formatScore(m.score)}`,
      }));
      for (const m of doc.mentions) {
        if (hitKeys.has(`${m.start}:${m.end}`)) continue;
        spans.push({ start: m.start, end: m.end, tag: "span", className: "mention",
          title: m.label ? `detected mention (${m.label})` : "detected mention" });
      }
      text.replaceChildren();
      highlight(text, doc.text, 0, spans);
      $("doc-count").textContent = `(${doc.mentions.length})`;
      for (const m of doc.mentions) {
        const hit = hitKeys.get(`${m.start}:${m.end}`);
        const chip = el("li", hit ? "chip chip-hit" : "chip");
        chip.append(el("span", "chip-text", m.text));
        if (m.label) chip.append(el("span", "chip-label", m.label));
        if (hit) chip.append(el("span", "chip-score", formatScore(hit.score)));
        chips.append(chip);
      }
      const keys = Object.keys(doc.metadata || {});
      $("doc-meta-block").hidden = keys.length === 0;
      for (const key of keys) {
        const value = doc.metadata[key];
        meta.append(el("dt", "", key), el("dd", "", typeof value === "string" ? value : JSON.stringify(value)));
      }
    } catch (error) {
      text.replaceChildren(el("span", "error", error.message));
    }
  }

  $("doc-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // click on the backdrop
  });

  // -- stats and examples -------------------------------------------------------------------
  function describeHead(head) {
    if (!head) return "none (raw vectors)";
    return head.name || head.path || head.checksum?.slice(0, 12) || "projection head";
  }

  function describeDetector(detector) {
    if (!detector) return "?";
    return detector.name || JSON.stringify(detector);
  }

  async function loadStats() {
    const listNode = $("stats-list");
    try {
      const stats = await getJSON("/stats");
      const rows = [
        ["documents", Number(stats.documents).toLocaleString()],
        ["mentions", Number(stats.mentions).toLocaleString()],
        ["model", stats.model],
        ["block", `${stats.block} (${stats.component})`],
        ["head", describeHead(stats.head)],
        ["detector", describeDetector(stats.detector)],
        ...(stats.detector && stats.detector.model ? [["spaCy model", stats.detector.model]] : []),
        ["dimensions", stats.dim],
        ["index size", formatBytes(stats.size_bytes)],
        ["created", (stats.created || "").replace("T", " ").replace("+00:00", " UTC")],
        ["writes", stats.server && stats.server.writes_enabled ? "enabled (token)" : "read-only"],
      ];
      listNode.replaceChildren();
      for (const [key, value] of rows) {
        listNode.append(el("dt", "", key), el("dd", String(value).length > 18 ? "small" : "", value));
      }
      const examples = (stats.server && stats.server.examples) || [];
      const box = $("examples");
      for (const example of examples) {
        const chip = el("button", "example", example);
        chip.type = "button";
        chip.addEventListener("click", () => {
          input.value = example;
          submit(formRequest(), true);
        });
        box.append(chip);
      }
      box.hidden = examples.length === 0;
    } catch (error) {
      listNode.replaceChildren(el("dt", "", "error"), el("dd", "error", error.message));
    }
  }

  loadStats();
  if (!fromUrl()) input.focus();
})();
