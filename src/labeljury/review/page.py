"""The review page's HTML: a server-rendered template (jinja2, autoescaped) and a small script with no
build step. Everything that comes from the data (texts, labels, reasons, votes) reaches the page as
JSON or through `textContent`, never as markup."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>labeljury review: {{ task_name }}</title>
<style nonce="{{ nonce }}">
 body { font-family: system-ui, sans-serif; max-width: 860px; margin: 1.5em auto; padding: 0 1em; color: #1d1d1f; }
 header { display: flex; justify-content: space-between; align-items: baseline; gap: 1em; }
 #progress { color: #555; font-size: .9em; }
 #text { white-space: pre-wrap; font-size: 1.25em; line-height: 1.45; border: 1px solid #ccc; border-radius: 8px;
         padding: .9em 1.1em; margin: .8em 0; min-height: 3em; overflow-wrap: anywhere; }
 .meta { color: #444; font-size: .92em; margin: .25em 0; } .why { font-weight: 600; }
 #labels { display: flex; flex-wrap: wrap; gap: .45em; margin: .8em 0; }
 #labels button { font-size: 1em; padding: .45em .8em; border-radius: 6px; border: 1px solid #888; background: #f6f6f6; cursor: pointer; }
 #labels button.suggested { border: 2px solid #0a5; background: #eafaf0; }
 #labels button.chosen { border: 2px solid #05a; background: #1f5fbf; color: #fff; }
 #labels button.chosen kbd { color: #dde; }
 #submit { font-size: 1em; padding: .45em 1.1em; border-radius: 6px; }
 #labels button kbd { font-size: .8em; color: #666; margin-right: .35em; }
 #filter { font-size: 1em; padding: .35em .5em; width: 20em; }
 #help { display: none; border: 1px solid #bbb; background: #fffbe6; padding: .6em 1em; border-radius: 6px; }
 #help.shown { display: block; }
 #status { color: #a00; min-height: 1.2em; } #done { display: none; font-size: 1.2em; }
 table.votes td { padding: 0 .6em 0 0; font-size: .9em; }
</style></head>
<body>
<header><h1>{{ task_name }}</h1><div id="progress">loading…</div></header>
{% if instructions %}<p class="meta">{{ instructions }}</p>{% endif %}
<div id="row">
 <p class="meta">Why this row: <span class="why" id="why"></span></p>
 <div id="text" aria-live="polite"></div>
 <p class="meta" id="suggestion"></p>
 <p class="meta" id="llm"></p>
 <table class="votes" id="votes"></table>
 {% if labels|length > 9 %}<input id="filter" placeholder="type to filter the labels, Enter to choose" autocomplete="off">{% endif %}
 <div id="labels"></div>
 {% if multi_label %}<p><button id="submit" type="button">Submit these labels (Enter)</button></p>{% endif %}
</div>
<p id="done">Nothing left to review. Rerun `labeljury run` to go on with these answers.</p>
<p id="status"></p>
<div id="help"><b>Keys</b>: {% if multi_label %}a row may carry several labels: the suggested ones start chosen;
 {% if labels|length > 9 %}type to filter the labels, Enter turns the first one shown on or off (with nothing typed,
 Enter submits the chosen labels);{% else %}1–{{ labels|length }} turn that label on or off; Enter submits the chosen
 labels{% if not allow_empty %} (at least one){% endif %};{% endif %}
 {% elif labels|length > 9 %}type to filter the labels, Enter picks the first one shown
 (with nothing typed, the suggestion);{% else %}1–{{ labels|length }} answer with that label; Enter accepts the suggestion;{% endif %}
 → or s: skip; Backspace or u: undo your last answer; ?: this help. Every answer is saved the moment you give it.</div>
<script nonce="{{ nonce }}">
"use strict";
const LABELS = {{ labels_json | safe }};
const DESCRIPTIONS = {{ descriptions_json | safe }};
const FILTERING = LABELS.length > 9;
const MULTI = {{ multi_json | safe }}, ALLOW_EMPTY = {{ allow_empty_json | safe }};
let chosen = new Set();  // a multi-label task: the labels chosen for the current row
const token = new URLSearchParams(location.search).get("token") || "";
const reviewer = sessionStorage.getItem("labeljury-reviewer") || (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));
sessionStorage.setItem("labeljury-reviewer", reviewer);
const headers = {"Authorization": "Bearer " + token, "X-Reviewer": reviewer};
let current = null, lastAnswered = [], busy = false;
window.labeljuryTimings = [];
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const opts = {method, headers: {...headers}};
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const res = await fetch(path, opts);
  let data = null;
  if (res.status !== 204) { try { data = await res.json(); } catch (e) { data = null; } }
  return {status: res.status, data};
}

function shownLabels() {
  if (!FILTERING) return LABELS;
  const q = $("filter").value.trim().toLowerCase();
  return q ? LABELS.filter((l) => l.toLowerCase().includes(q) || (DESCRIPTIONS[l] || "").toLowerCase().includes(q)) : LABELS;
}

function renderLabels() {
  const box = $("labels");
  box.replaceChildren();
  shownLabels().forEach((label, i) => {
    const b = document.createElement("button");
    if (!FILTERING && i < 9) { const k = document.createElement("kbd"); k.textContent = String(i + 1); b.append(k); }
    b.append(document.createTextNode(label));
    b.title = DESCRIPTIONS[label] || "";
    b.dataset.label = label;
    if (MULTI) {
      b.classList.toggle("chosen", chosen.has(label));
      b.setAttribute("aria-pressed", String(chosen.has(label)));
      b.addEventListener("click", () => toggle(label));
    } else {
      if (current && current.suggestion === label) b.classList.add("suggested");
      b.addEventListener("click", () => answer(label));
    }
    box.append(b);
  });
}

function show(row) {
  current = row;
  $("row").style.display = row ? "" : "none";
  $("done").style.display = row ? "none" : "block";
  if (!row) return;
  $("why").textContent = row.why;
  $("text").textContent = row.text;
  const named = (v) => Array.isArray(v) ? (v.length ? v.join(", ") : "no label") : v;
  if (MULTI) chosen = new Set(row.suggestion || []);
  $("suggestion").textContent = row.suggestion === null ? "No suggestion." :
    "Suggestion: " + named(row.suggestion) + (row.confidence === null ? "" : " (confidence " + row.confidence.toFixed(2) + ")");
  $("llm").textContent = row.llm ? "LLM: " + (row.llm.label === null ? "no answer" : named(row.llm.label)) +
    (row.llm.confidence === null || row.llm.confidence === undefined ? "" : " (" + Number(row.llm.confidence).toFixed(2) + ")") +
    (row.llm.reason ? ": " + row.llm.reason : "") : "";
  const votes = $("votes");
  votes.replaceChildren();
  for (const [name, label] of Object.entries(row.votes || {})) {
    const tr = document.createElement("tr");
    const a = document.createElement("td"); a.textContent = name;
    const b = document.createElement("td"); b.textContent = label === null ? "abstained" : label;
    tr.append(a, b); votes.append(tr);
  }
  if (FILTERING) $("filter").value = "";
  renderLabels();
  if (FILTERING) $("filter").focus();
}

async function progress() {
  const {status, data} = await api("GET", "/api/progress");
  if (status !== 200) return;
  const rate = data.per_minute ? data.per_minute.toFixed(1) + "/min" : "–";
  const eta = !data.eta_seconds ? "" : data.eta_seconds < 60 ? "under a minute left" : Math.round(data.eta_seconds / 60) + " min left";
  $("progress").textContent = `${data.answered} answered, ${data.left} left, ${rate} ${eta}`;
}

async function next(started) {
  const {status, data} = await api("GET", "/api/next");
  if (status === 204) show(null);
  else if (status === 200) show(data);
  else { $("status").textContent = (data && data.error) || ("error " + status); return; }
  if (started !== undefined) window.labeljuryTimings.push(performance.now() - started);
  progress();
}

async function answer(label) {
  if (!current || busy) return;
  busy = true;
  const started = performance.now();
  try {
    const {status, data} = await api("POST", "/api/answer", {id: current.id, label});
    if (status === 200) { lastAnswered.push(current.id); $("status").textContent = ""; }
    else $("status").textContent = (data && data.error) || ("error " + status);
    await next(started);
  } finally { busy = false; }
}

function toggle(label) {
  if (!current || busy) return;
  if (chosen.has(label)) chosen.delete(label); else chosen.add(label);
  $("status").textContent = "";
  renderLabels();
}

async function answerSet() {
  if (!current || busy) return;
  if (!chosen.size && !ALLOW_EMPTY) { $("status").textContent = "choose at least one label (this task has no empty sets)"; return; }
  busy = true;
  const started = performance.now();
  try {
    const labels = LABELS.filter((l) => chosen.has(l));
    const {status, data} = await api("POST", "/api/answer", {id: current.id, labels});
    if (status === 200) { lastAnswered.push(current.id); $("status").textContent = ""; }
    else $("status").textContent = (data && data.error) || ("error " + status);
    await next(started);
  } finally { busy = false; }
}

async function skip() {
  if (!current || busy) return;
  busy = true;
  try { await api("POST", "/api/skip", {id: current.id}); await next(performance.now()); } finally { busy = false; }
}

async function undo() {
  const id = lastAnswered.pop();
  if (id === undefined || busy) return;
  busy = true;
  try {
    const {status, data} = await api("POST", "/api/undo", {id});
    if (status !== 200) { $("status").textContent = (data && data.error) || ("error " + status); return; }
    if (current) await api("POST", "/api/skip", {id: current.id});
    await next();
  } finally { busy = false; }
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const typing = FILTERING && document.activeElement === $("filter");
  if (e.key === "?" && !(typing && $("filter").value)) { $("help").classList.toggle("shown"); e.preventDefault(); return; }
  if (e.key === "Enter" && MULTI) {
    e.preventDefault();
    const shown = shownLabels();
    if (FILTERING && $("filter").value.trim()) {
      if (shown.length) { toggle(shown[0]); $("filter").value = ""; renderLabels(); }
    } else answerSet();
    return;
  }
  if (e.key === "Enter") {
    e.preventDefault();
    const shown = shownLabels();
    if (FILTERING && $("filter").value.trim() && shown.length) answer(shown[0]);
    else if (current && current.suggestion !== null) answer(current.suggestion);
    return;
  }
  if (e.key === "ArrowRight" || (!typing && e.key === "s")) { e.preventDefault(); skip(); return; }
  if ((e.key === "Backspace" && !(typing && $("filter").value)) || (!typing && e.key === "u")) { e.preventDefault(); undo(); return; }
  if (!FILTERING && /^[1-9]$/.test(e.key)) {
    const label = LABELS[Number(e.key) - 1];
    if (label !== undefined) { e.preventDefault(); if (MULTI) toggle(label); else answer(label); }
  }
});
if (FILTERING) $("filter").addEventListener("input", renderLabels);
if (MULTI) $("submit").addEventListener("click", answerSet);
// A closed tab hands its row back at once, so another person gets it now rather than when its lease
// expires; keepalive lets the request outlive the page.
window.addEventListener("pagehide", () => {
  fetch("/api/release", {method: "POST", keepalive: true, body: "{}",
                         headers: {...headers, "Content-Type": "application/json"}});
});
next();
</script>
</body></html>
"""


def render_page(*, task_name: str, labels: Sequence[str], descriptions: Mapping[str, str], instructions: str,
                nonce: str, multi_label: bool = False, allow_empty: bool = False) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True)

    def js(value: object) -> str:  # JSON safe inside <script>: no "</script>", no HTML comment opener
        return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

    return env.from_string(_PAGE).render(task_name=task_name, labels=list(labels), instructions=instructions,
                                         nonce=nonce, labels_json=js(list(labels)), descriptions_json=js(dict(descriptions)),
                                         multi_label=multi_label, allow_empty=allow_empty, multi_json=js(multi_label),
                                         allow_empty_json=js(allow_empty))
