// PoD Grid registry dashboard, history: time plots drawn as SVG from the registry's own
// history (MonALISA REST with tmin/tmax). No library, no build step. Every plotted number is
// also on the element (data-last, data-max), and every label goes in through textContent.
"use strict";

const HISTORY = {
  windowMs: 10 * 60 * 1000,
  buckets: 40,
  refreshMs: 5000,
  width: 560,
  height: 150,
  pad: 28,
  topSites: 10,
};
const HISTORY_STATES = ["POLLING", "ATTACHING", "WORKER", "BATCH", "EXITING"];
const HISTORY_COLORS = {
  POLLING: "#d9822b", ATTACHING: "#8e44ad", WORKER: "#2e8b57", BATCH: "#2f6fb3",
  EXITING: "#888888", NeededWorkers: "#d9822b", Workers: "#2e8b57",
  WaitingJobs: "#d9822b", RunningJobs: "#2f6fb3",
};
const SVG_NS = "http://www.w3.org/2000/svg";

function historyUrl(cluster, node, params) {
  const segs = ["*", cluster, node, String(-HISTORY.windowMs), "-1", params];
  return "rest/" + segs.map(encodeURIComponent).join("/") + "?Accept=application/json";
}

const HISTORY_QUERIES = {
  agents: historyUrl("PoD_Agents_*", "*", "State"),
  servers: historyUrl("PoD_Masters", "*", "NeededWorkers|Workers"),
  queue: historyUrl("PoD_MasterQueue", "batch", "WaitingJobs|RunningJobs"),
};

// Points of every series, oldest first: Map key -> [{t, v}], key = cluster/node/parameter.
function seriesOf(results) {
  const series = new Map();
  for (const r of results) {
    const key = `${r.cluster}/${r.node}/${r.parameter}`;
    if (!series.has(key)) series.set(key, { cluster: r.cluster, node: r.node, param: r.parameter, points: [] });
    series.get(key).points.push({ t: Number(r.timestamp), v: r.value });
  }
  for (const s of series.values()) s.points.sort((a, b) => a.t - b.t);
  return [...series.values()];
}

function bucketTimes(nowMs) {
  const step = HISTORY.windowMs / (HISTORY.buckets - 1);
  return Array.from({ length: HISTORY.buckets }, (_, i) => nowMs - HISTORY.windowMs + i * step);
}

// The value a step series holds at each time (undefined before its first point).
function sampleAt(points, times) {
  const out = [];
  let i = -1;
  for (const t of times) {
    while (i + 1 < points.length && points[i + 1].t <= t) i += 1;
    out.push(i >= 0 ? points[i].v : undefined);
  }
  return out;
}

function filterText(id) {
  const input = document.getElementById(id);
  return input ? input.value.trim().toLowerCase() : "";
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

// One plot: lines named by `lines` ({name: [numbers]}), over `times`.
function drawPlot(id, times, lines) {
  const box = document.getElementById(id);
  if (!box) return;
  const { width, height, pad } = HISTORY;
  const all = Object.values(lines).flat();
  const top = Math.max(1, ...all);
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, times.length - 1);
  const y = (v) => height - pad + 4 - (v * (height - 2 * pad)) / top;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "data-top": top });
  root.append(
    svg("line", { x1: pad, y1: y(0), x2: width - pad, y2: y(0), class: "axis" }),
    svg("line", { x1: pad, y1: y(top), x2: pad, y2: y(0), class: "axis" }),
  );
  const topLabel = svg("text", { x: 2, y: y(top) + 4, class: "tick" });
  topLabel.textContent = String(top);
  const zero = svg("text", { x: 2, y: y(0) + 4, class: "tick" });
  zero.textContent = "0";
  const left = svg("text", { x: pad, y: height - 2, class: "tick" });
  left.textContent = `−${Math.round(HISTORY.windowMs / 60000)} min`;
  const right = svg("text", { x: width - pad - 20, y: height - 2, class: "tick" });
  right.textContent = "now";
  root.append(topLabel, zero, left, right);
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const [name, values] of Object.entries(lines)) {
    const coords = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const last = values.length ? values[values.length - 1] : 0;
    root.append(svg("polyline", {
      points: coords, fill: "none", stroke: HISTORY_COLORS[name] || "#444", "stroke-width": 2,
      "data-series": name, "data-last": last, "data-max": Math.max(0, ...values),
    }));
    const item = document.createElement("li");
    item.dataset.legend = name;
    item.style.setProperty("--swatch", HISTORY_COLORS[name] || "#444");
    item.textContent = `${name}: ${last}`;
    legend.append(item);
  }
  box.replaceChildren(root, legend);
}

function agentsHistory({ results, nowMs }) {
  const times = bucketTimes(nowMs);
  const wanted = filterText("site-filter");
  const lines = Object.fromEntries(HISTORY_STATES.map((s) => [s, times.map(() => 0)]));
  const perSite = new Map(); // site -> {agents, state -> bucket count}
  for (const s of seriesOf(results)) {
    const site = s.cluster.startsWith(AGENT_PREFIX) ? s.cluster.slice(AGENT_PREFIX.length) : s.cluster;
    if (!perSite.has(site)) perSite.set(site, { agents: 0, time: new Map() });
    const entry = perSite.get(site);
    entry.agents += 1;
    sampleAt(s.points, times).forEach((state, i) => {
      if (state === undefined) return;
      const key = HISTORY_STATES.includes(String(state)) ? String(state) : "other";
      entry.time.set(key, (entry.time.get(key) || 0) + 1);
      if (key !== "other" && (!wanted || site.toLowerCase().includes(wanted))) lines[key][i] += 1;
    });
  }
  drawPlot("plot-agents", times, lines);
  renderSiteTime(perSite, wanted);
}

// Where slot time goes, per site: the share of sampled agent-time in each state (top N).
function renderSiteTime(perSite, wanted) {
  const rows = [...perSite.entries()]
    .filter(([site]) => !wanted || site.toLowerCase().includes(wanted))
    .sort(([a, x], [b, y]) => y.agents - x.agents || a.localeCompare(b));
  const shown = rows.slice(0, HISTORY.topSites).map(([site, entry]) => {
    const total = [...entry.time.values()].reduce((a, b) => a + b, 0) || 1;
    // data-time-site, not data-site: the live agents table above owns tr[data-site].
    const row = el("tr", null, { "data-time-site": site });
    row.append(el("td", site, { "data-field": "site" }), el("td", entry.agents, { class: "num" }));
    for (const state of [...HISTORY_STATES, "other"]) {
      const pct = Math.round((100 * (entry.time.get(state) || 0)) / total);
      row.append(el("td", `${pct}%`, { "data-state": state, class: "num" }));
    }
    return row;
  });
  const body = document.querySelector("#site-time tbody");
  if (body) body.replaceChildren(...shown);
  const more = document.getElementById("site-time-more");
  if (more) more.textContent = rows.length > shown.length ? `${rows.length - shown.length} more sites (filter to see them)` : "";
}

function sumLines(series, names, times, keep) {
  const lines = Object.fromEntries(names.map((n) => [n, times.map(() => 0)]));
  for (const s of series) {
    if (!names.includes(s.param) || !keep(s)) continue;
    sampleAt(s.points, times).forEach((v, i) => {
      const n = Number(v);
      if (Number.isFinite(n)) lines[s.param][i] += n;
    });
  }
  return lines;
}

function serversHistory({ results, nowMs }) {
  const times = bucketTimes(nowMs);
  const wanted = filterText("server-filter");
  const keep = (s) => !wanted || s.node.toLowerCase().includes(wanted);
  drawPlot("plot-servers", times, sumLines(seriesOf(results), ["NeededWorkers", "Workers"], times, keep));
}

function queueHistory({ results, nowMs }) {
  const times = bucketTimes(nowMs);
  drawPlot("plot-queue", times, sumLines(seriesOf(results), ["WaitingJobs", "RunningJobs"], times, () => true));
}

let lastHistory = null;

async function refreshHistory() {
  const [agents, servers, queue] = await Promise.all(
    [HISTORY_QUERIES.agents, HISTORY_QUERIES.servers, HISTORY_QUERIES.queue].map(fetchResults),
  );
  lastHistory = { agents, servers, queue };
  drawHistory();
}

function drawHistory() {
  if (!lastHistory) return;
  agentsHistory(lastHistory.agents);
  serversHistory(lastHistory.servers);
  queueHistory(lastHistory.queue);
  const stamp = document.getElementById("history-updated");
  if (stamp) stamp.dataset.state = "ok";
}

async function historyLoop() {
  try {
    await refreshHistory();
  } catch (err) {
    setError(err instanceof Error ? err.message : String(err));
  }
  setTimeout(historyLoop, HISTORY.refreshMs);
}

for (const id of ["site-filter", "server-filter"]) {
  const input = document.getElementById(id);
  if (input) input.addEventListener("input", drawHistory);
}
historyLoop();
