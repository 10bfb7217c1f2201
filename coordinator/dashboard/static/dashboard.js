// The dashboard's pages: read the JSON API, draw with Plotly (served locally), and
// re-read when the server-sent events say something changed.  Text from the database
// is always set with textContent, never parsed as HTML, and escaped for Plotly (plotText).
"use strict";

const PAGE_SIZE = 50;
const MIN_REFRESH_MS = 500;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Text as Plotly shows it as written: Plotly reads labels, names and titles as HTML-like
// markup (links, bold, ...), so a label from a job document could draw a link.
function plotText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function num(value, digits = 6) {
  return value === null || value === undefined ? "-" : Number(value).toPrecision(digits).replace(/\.?0+(e|$)/, "$1");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  let s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  s = s % 60;
  if (d) return `${d}d${String(h).padStart(2, "0")}h`;
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function time(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "") : "-";
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function runUrl(run) {
  return "/runs/" + run.split("/").map(encodeURIComponent).join("/");
}

function apiRun(run) {
  return "/api" + runUrl(run);
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function card(label, value) {
  return el("div", { class: "card" }, label, el("b", {}, value));
}

// Calls fn at most once per MIN_REFRESH_MS, and once more after the last request.
function throttled(fn) {
  let running = false, again = false, last = 0;
  const go = async () => {
    if (running) { again = true; return; }
    running = true;
    const wait = last + MIN_REFRESH_MS - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    try { await fn(); } catch (err) { console.error(err); } finally {
      last = Date.now();
      running = false;
      if (again) { again = false; go(); }
    }
  };
  return go;
}

// Server-sent events for the given keys; calls onChange(key) and onTick().  The stream is
// closed when the page is hidden (navigated away from): a page kept in the browser's
// back/forward cache would otherwise hold its connection, and browsers allow six
// connections per host over HTTP/1.1, so a few visited pages starved the next page's
// requests.  A page restored from that cache reconnects and re-reads every key (changes
// may have happened meanwhile).
function live(keys, onChange, onTick) {
  const feed = document.getElementById("feed");
  const params = new URLSearchParams();
  keys.forEach((key) => params.append("key", key));
  const show = (event) => {
    const info = JSON.parse(event.data);
    // with a change stream, a note says it is interrupted: what the page shows may be stale
    feed.textContent = info.mode !== "change stream" ? `live (polling: ${info.note})`
      : info.note ? `not live: ${info.note}` : "live (MongoDB change stream)";
    feed.dataset.mode = info.mode;
  };
  const connect = () => {
    const source = new EventSource("/api/events?" + params);
    source.addEventListener("hello", show);
    source.addEventListener("tick", (event) => { show(event); if (onTick) onTick(); });
    source.addEventListener("change", (event) => onChange(JSON.parse(event.data).key));
    source.onerror = () => { feed.textContent = "disconnected; retrying"; };
    return source;
  };
  let source = connect();
  window.addEventListener("pagehide", () => source.close());
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    source = connect();
    keys.forEach((key) => onChange(key));
  });
}

// -- runs page -------------------------------------------------------------------------

// The pruner cell of a run (its settings in full as the tooltip).
function pruner(r) {
  return el("td", { class: "pruner", title: r.pruner ? JSON.stringify(r.pruner) : null }, r.pruner_text);
}

async function runsPage() {
  const tbody = document.querySelector("#runs tbody");
  const load = throttled(async () => {
    const data = await getJSON("/api/runs");
    document.getElementById("runs-empty").hidden = data.runs.length > 0;
    fill(tbody, data.runs.map((r) => el("tr", { "data-run": r.run },
      el("td", {}, el("a", { href: runUrl(r.run) }, r.run)), el("td", {}, r.experiment || "-"),
      el("td", {}, r.algo || "-"), pruner(r), el("td", {}, r.counts.new), el("td", {}, r.counts.running),
      el("td", {}, r.counts.done), el("td", {}, r.counts.error),
      el("td", {}, r.max_evals ? `${r.counts.done} / ${r.max_evals}` : `${r.counts.done}`),
      el("td", {}, num(r.best_loss)), el("td", {}, r.per_hour === null ? "-" : num(r.per_hour, 3)),
      el("td", {}, r.eta_s === 0 ? "complete" : duration(r.eta_s)))));
  });
  await load();
  document.body.dataset.loaded = "true";
  live(["*"], load);
}

// -- run page --------------------------------------------------------------------------

const PLOT_CONFIG = { responsive: true, displaylogo: false };

function skipped(id, reason) {
  const node = document.getElementById(id);
  Plotly.purge(node);
  node.replaceChildren(el("p", { class: "note" }, reason));
}

function draw(id, traces, layout) {
  const node = document.getElementById(id);
  if (node.querySelector("p.note")) node.replaceChildren();
  Plotly.react(node, traces, Object.assign({ margin: { t: 20, r: 20, b: 50, l: 60 } }, layout), PLOT_CONFIG);
}

// Each array's elements at the given indices.
function pick(indices, ...arrays) {
  return arrays.map((a) => indices.map((i) => a[i]));
}

function lossChart(loss, reason) {
  if (!loss) return skipped("chart-loss", reason);
  const all = loss.tids.map((_, i) => i);
  const [tids, losses] = pick(all.filter((i) => loss.pruned_steps[i] === null), loss.tids, loss.losses);
  const [ptids, plosses, steps] = pick(all.filter((i) => loss.pruned_steps[i] !== null), loss.tids, loss.losses, loss.pruned_steps);
  const traces = [
    { x: tids, y: losses, mode: "markers", type: "scattergl", name: "trial loss", marker: { size: 6 },
      hovertemplate: "trial %{x}<br>loss %{y}<extra></extra>" },
    { x: loss.tids, y: loss.best_so_far, mode: "lines", type: "scatter", name: "best so far", line: { shape: "hv", color: "#d32f2f" } },
  ];
  if (ptids.length) {
    traces.push({ x: ptids, y: plosses, mode: "markers", type: "scatter", name: `pruned (${ptids.length}): loss where it stopped`,
                  marker: { symbol: "x", size: 8, color: "#757575" }, customdata: steps,
                  hovertemplate: "trial %{x}<br>loss %{y}<br>pruned at step %{customdata}<extra></extra>" });
  }
  if (loss.error_tids.length) {
    traces.push({ x: loss.error_tids, y: loss.error_tids.map(() => 0.98), yaxis: "y2", mode: "markers", type: "scatter",
                  name: `error (${loss.error_tids.length})`, marker: { symbol: "x", color: "#d32f2f" } });
  }
  draw("chart-loss", traces, { xaxis: { title: { text: "trial id (tid)" } }, yaxis: { title: { text: "loss" } },
    yaxis2: { overlaying: "y", range: [0, 1], visible: false }, legend: { orientation: "h", y: 1.12 },
    margin: { t: 40, r: 20, b: 50, l: 60 } });
}

// One line per trial; a pruned trial's is dashed and ends in a cross, and its legend
// entry and hover text say where it was pruned (as learning_curves.png draws it).
function curvesChart(curves, reason) {
  if (!curves) return skipped("chart-curves", reason);
  const metric = plotText(curves.metric);
  draw("chart-curves", curves.series.map((s) => {
    const note = s.pruned_step === null ? "" : `, pruned at step ${s.pruned_step}`;
    const last = s.steps.length - 1;
    return { x: s.steps, y: s.values, mode: "lines+markers", type: "scatter", name: `trial ${s.tid} (loss ${num(s.loss, 4)}${note})`,
      line: { dash: s.pruned_step === null ? "solid" : "dash" },
      marker: s.pruned_step === null ? { size: 6 } : { symbol: s.steps.map((_, i) => (i === last ? "x" : "circle")),
                                                       size: s.steps.map((_, i) => (i === last ? 12 : 6)) },
      hovertemplate: `trial ${s.tid}${note}<br>step %{x}<br>${metric} %{y}<extra></extra>` };
  }),
  { xaxis: { title: { text: "step" }, dtick: 1 }, yaxis: { title: { text: metric } } });
}

// A hyperparameter as a Plotly dimension: choices by option name, log distributions
// in log10, inactive values below the axis' range (parcoords) or left out (splom).
function dimension(d, inactiveMark) {
  const present = d.values.filter((v) => v !== null);
  let values = d.values, label = plotText(d.label), extra = {};
  if (d.log && present.every((v) => v > 0)) {
    values = values.map((v) => (v === null ? null : Math.log10(v)));
    label += " (log10)";
  }
  if (d.options.length) extra = { tickvals: d.options.map((_, i) => i), ticktext: d.options };
  if (inactiveMark && values.some((v) => v === null)) {
    const finite = values.filter((v) => v !== null);
    const low = Math.min(...finite), high = Math.max(...finite);
    const mark = low - 0.1 * (high - low || 1);
    values = values.map((v) => (v === null ? mark : v));
    if (!extra.tickvals) {
      const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => low + f * (high - low));
      extra = { tickvals: ticks, ticktext: ticks.map((v) => num(v, 3)) };
    }
    extra.tickvals = [mark, ...extra.tickvals];
    extra.ticktext = ["inactive", ...extra.ticktext];
  }
  return Object.assign({ label, values }, extra);
}

function parallelChart(parallel, reason) {
  if (!parallel) return skipped("chart-parallel", reason);
  const dims = parallel.dimensions.map((d) => dimension(d, true));
  dims.push({ label: "loss", values: parallel.losses });
  draw("chart-parallel", [{ type: "parcoords", dimensions: dims,
    line: { color: parallel.losses, colorscale: "Viridis", reversescale: true, showscale: true } }],
  { margin: { t: 40, r: 60, b: 30, l: 60 } });
}

function matrixChart(matrix, reason) {
  if (!matrix) return skipped("chart-matrix", reason);
  const dims = matrix.dimensions.map((d) => dimension(d, false));
  dims.push({ label: "loss", values: matrix.losses });
  draw("chart-matrix", [{ type: "splom", dimensions: dims, showupperhalf: false,
    marker: { color: matrix.losses, colorscale: "Viridis", reversescale: true, size: 5, showscale: true } }],
  { dragmode: "select", margin: { t: 20, r: 20, b: 60, l: 80 } });
}

// Draws the importance; returns the number of ok trials the server fitted it on.
async function importanceChart(run) {
  const data = await getJSON(apiRun(run) + "/importance");
  if (!data.importance) { skipped("chart-importance", data.skipped); return data.ok; }
  const ranked = data.importance.slice().reverse();
  draw("chart-importance", [{ type: "bar", orientation: "h", x: ranked.map((r) => r.value), y: ranked.map((r) => plotText(r.label)),
    marker: { color: "#43a047" } }], { xaxis: { title: { text: `importance (random forest, ${data.ok} ok trials)` } },
    margin: { t: 20, r: 20, b: 50, l: 120 } });
  return data.ok;
}

function summaryView(run, s) {
  const c = s.counts;
  const cards = [card("experiment", s.experiment || "-"), card("algorithm", s.algo || "-"),
    el("div", { class: "card", id: "pruner", title: s.pruner ? JSON.stringify(s.pruner) : null }, "pruner", el("b", {}, s.pruner_text)),
    ...(s.pruning ? [card("pruned", `${s.pruning.pruned}` + (s.pruning.steps_saved === null ? "" : ` (${s.pruning.steps_saved} steps saved)`))] : []),
    card("new", c.new), card("running", c.running), card("done", c.done), card("error", c.error),
    card("progress", s.max_evals ? `${c.done} / ${s.max_evals} done` : `${c.done} done`),
    card("best loss", s.best ? num(s.best.loss) : "-"),
    card("trials / h", s.throughput.per_hour === null ? "-" : num(s.throughput.per_hour, 3)),
    card("ETA", s.eta_s === 0 ? "complete" : duration(s.eta_s))];
  document.getElementById("summary").replaceChildren(...cards);
  document.getElementById("progress-bar").style.width =
    s.max_evals ? `${Math.min(100, (100 * c.done) / s.max_evals)}%` : "0";
  const best = document.getElementById("best");
  best.replaceChildren(s.best
    ? el("div", {}, el("a", { href: `${runUrl(run)}/trials/${s.best.tid}`, id: "best-link" }, `trial ${s.best.tid}`),
      ` loss ${num(s.best.loss)}`, el("pre", { id: "best-params" }, JSON.stringify(s.best.params, null, 1)))
    : el("p", { class: "note" }, "no trial has finished with status ok yet"));
  workersView(run, s);
}

// The workers table and the stale running trials (from the summary or /workers).
function workersView(run, s) {
  fill(document.querySelector("#workers tbody"), s.workers.map((w) => el("tr", { class: w.stale ? "stale" : null, "data-worker": w.id },
    el("td", {}, w.id), el("td", {}, w.host || "-"), el("td", {}, w.device || "-"),
    el("td", {}, w.stale ? "lost (stale)" : w.state),
    el("td", {}, w.current && w.current.exp_key === run ? el("a", { href: `${runUrl(run)}/trials/${w.current.tid}` }, w.current.tid)
      : w.current ? `${w.current.exp_key}:${w.current.tid}` : "-"),
    el("td", {}, w.seen_ago_s === null ? "-" : `${duration(w.seen_ago_s)} ago`), el("td", {}, w.trials_done))));
  const stale = document.getElementById("stale");
  stale.replaceChildren(...(s.stale.length ? [el("p", { class: "stale" }, `stale running trials: ` +
    s.stale.map((j) => `${j.tid} (${j.owner || "?"}: ${j.reasons.join("; ")})`).join(", "))] : []));
}

function trialTable(run) {
  const state = { sort: "tid", order: "asc", offset: 0, filter: new URLSearchParams() };
  const table = document.getElementById("trials");
  const load = async () => {
    const q = new URLSearchParams(state.filter);
    q.set("sort", state.sort); q.set("order", state.order); q.set("offset", state.offset); q.set("limit", PAGE_SIZE);
    const page = await getJSON(apiRun(run) + "/trials?" + q);
    fill(table.tBodies[0], page.rows.map((r) => {
      const params = Object.fromEntries(Object.entries(r).filter(([k]) => k.startsWith("params."))
        .map(([k, v]) => [k.slice(7), v]));
      const pruned = r.pruned_step !== null;
      return el("tr", { "data-tid": r.tid, class: pruned ? "pruned" : null }, el("td", {}, el("a", { href: `${runUrl(run)}/trials/${r.tid}` }, r.tid)),
        el("td", {}, r.state), el("td", {}, pruned ? el("span", { class: "badge pruned" }, `pruned at step ${r.pruned_step}`) : "-"),
        el("td", {}, num(r.loss)), el("td", {}, num(r.started_to_finished_s, 3)),
        el("td", {}, r.worker || "-"), el("td", {}, r.attempts ?? "-"), el("td", {}, time(r.finished_at)),
        el("td", {}, JSON.stringify(params)));
    }));
    const last = Math.min(page.offset + page.rows.length, page.total);
    document.getElementById("page-info").textContent = `${page.total ? page.offset + 1 : 0}-${last} of ${page.total}`;
    document.getElementById("prev").disabled = page.offset === 0;
    document.getElementById("next").disabled = last >= page.total;
    for (const th of table.tHead.querySelectorAll("th[data-sort]")) {
      th.className = th.dataset.sort === state.sort ? `sorted-${state.order}` : "";
    }
  };
  for (const th of table.tHead.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      state.order = state.sort === th.dataset.sort && state.order === "asc" ? "desc" : "asc";
      state.sort = th.dataset.sort; state.offset = 0; load();
    });
  }
  document.getElementById("trial-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    state.filter = new URLSearchParams();
    if (form.get("state")) state.filter.set("state", form.get("state"));
    if (form.get("worker")) state.filter.set("worker", form.get("worker"));
    if (form.get("pruned")) state.filter.set("pruned", form.get("pruned"));
    state.offset = 0; load();
  });
  document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); load(); });
  document.getElementById("next").addEventListener("click", () => { state.offset += PAGE_SIZE; load(); });
  return load;
}

async function errorList(run) {
  const page = await getJSON(apiRun(run) + "/errors?limit=20");
  const box = document.getElementById("errors");
  if (!page.total) return box.replaceChildren(el("p", { class: "note" }, "no error trials"));
  box.replaceChildren(el("p", {}, `${page.total} error trial(s)` + (page.total > page.rows.length ? `, latest ${page.rows.length} shown` : "")),
    ...page.rows.map((e) => el("details", { "data-tid": e.tid },
      el("summary", {}, el("a", { href: `${runUrl(run)}/trials/${e.tid}` }, `trial ${e.tid}`),
        ` ${e.type || "?"} (${e.reason || "?"}): ${e.message || ""}`),
      el("pre", {}, e.traceback || "no traceback recorded"))));
}

async function runPage() {
  const run = decodeURIComponent(location.pathname.slice("/runs/".length));
  document.getElementById("run-name").textContent = run;
  document.title = `hpo run ${run}`;
  let okFitted = -1;
  const summary = throttled(async () => summaryView(run, await getJSON(apiRun(run))));
  const workers = throttled(async () => workersView(run, await getJSON(apiRun(run) + "/workers")));
  const trials = throttled(trialTable(run));
  const figures = throttled(async () => {
    const f = await getJSON(apiRun(run) + "/figures");
    lossChart(f.loss, f.skipped.loss);
    curvesChart(f.curves, f.skipped.curves);
    parallelChart(f.parallel, f.skipped.parallel);
    matrixChart(f.matrix, f.skipped.matrix);
    if (f.ok !== okFitted) importance();
  });
  // refitted by the server at most every 30 s: asked again while it lags the run
  const importance = throttled(async () => { okFitted = await importanceChart(run); });
  const errors = throttled(() => errorList(run));
  await Promise.all([summary(), trials(), figures(), errors()]);
  document.body.dataset.loaded = "true";
  live([run, ""], (key) => {
    if (key === run) { summary(); trials(); figures(); errors(); } else { workers(); }
  }, workers);
}

// -- trial page ------------------------------------------------------------------------

async function trialPage() {
  const match = location.pathname.match(/^\/runs\/(.+)\/trials\/(\d+)$/);
  const run = decodeURIComponent(match[1]), tid = Number(match[2]);
  const link = document.getElementById("run-link");
  link.href = runUrl(run); link.textContent = `run ${run}`;
  document.getElementById("trial-tid").textContent = tid;
  document.title = `hpo trial ${tid} of ${run}`;
  const load = throttled(async () => {
    const t = await getJSON(`${apiRun(run)}/trials/${tid}`);
    document.getElementById("trial-summary").replaceChildren(card("state", t.state),
      card("status", t.result.status || "-"), card("loss", num(t.result.loss)), card("worker", t.worker || "-"),
      card("attempts", t.attempts === null ? "-" : `${t.attempts} of ${t.max_attempts ?? "?"}`),
      card("requeued", t.requeues ?? "-"),
      ...(t.pruned_step === null ? [] : [el("div", { class: "card pruned", id: "trial-pruned" }, "pruned", el("b", {}, `at step ${t.pruned_step}`))]));
    document.getElementById("params").textContent = JSON.stringify(t.params, null, 1);
    fill(document.querySelector("#timeline tbody"), t.timeline.map((e) => el("tr", {}, el("td", {}, e.event), el("td", {}, time(e.at)))));
    const keys = [...new Set(t.metrics.flatMap((m) => Object.keys(m)))].filter((k) => k !== "step");
    const numeric = keys.filter((k) => t.metrics.some((m) => typeof m[k] === "number"));
    if (t.metrics.length && numeric.length) {
      draw("chart-metrics", numeric.map((k) => ({ x: t.metrics.map((m, i) => m.step ?? i + 1), y: t.metrics.map((m) => m[k] ?? null),
        mode: "lines+markers", type: "scatter", name: plotText(k) })), { xaxis: { title: { text: "step" }, dtick: 1 },
        shapes: t.pruned_step === null ? [] : [{ type: "line", xref: "x", yref: "paper", x0: t.pruned_step, x1: t.pruned_step,
          y0: 0, y1: 1, line: { dash: "dash", color: "#757575" } }],
        annotations: t.pruned_step === null ? [] : [{ xref: "x", yref: "paper", x: t.pruned_step, y: 1, yanchor: "bottom",
          text: `pruned at step ${t.pruned_step}`, showarrow: false }] });
    } else {
      skipped("chart-metrics", "this trial reported no metrics");
    }
    const table = document.getElementById("metrics");
    table.tHead.replaceChildren(el("tr", {}, el("th", {}, "step"), ...keys.map((k) => el("th", {}, k))));
    fill(table.tBodies[0], t.metrics.map((m, i) => el("tr", {}, el("td", {}, m.step ?? i + 1),
      ...keys.map((k) => el("td", {}, typeof m[k] === "number" ? num(m[k]) : JSON.stringify(m[k] ?? null))))));
    document.getElementById("error-section").hidden = !t.error;
    if (t.error) {
      document.getElementById("error").replaceChildren(el("p", {}, `${t.error.type || "?"} (${t.error.reason || "?"}): ${t.error.message || ""}`),
        el("pre", {}, t.error.traceback || "no traceback recorded"));
    }
    document.body.dataset.state = t.state;
  });
  await load();
  document.body.dataset.loaded = "true";
  live([run], load);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const main = { runs: runsPage, run: runPage, trial: trialPage }[page];
  main().catch((err) => {
    document.querySelector("main").prepend(el("p", { class: "stale", id: "page-error" }, `error: ${err.message}`));
  });
});
