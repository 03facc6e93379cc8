// PoD Grid registry dashboard: polls the registry's REST API (JSON) and renders it.
// Every piece of data goes into the page through textContent, never as markup.
"use strict";

const REFRESH_MS = 1500;
const FETCH_TIMEOUT_MS = 5000;
const SERVER_PARAMS = [
  "Address", "NeededWorkers", "MinWorkers", "MaxWorkers", "Workers", "State", "Owner", "Expires",
];
const AGENT_STATES = ["POLLING", "ATTACHING", "WORKER", "BATCH", "EXITING"];
const AGENT_PREFIX = "PoD_Agents_";

function restUrl(segments) {
  return "rest/" + segments.map(encodeURIComponent).join("/") + "?Accept=application/json";
}

const QUERIES = {
  servers: restUrl(["*", "PoD_Masters", "*", SERVER_PARAMS.join("|")]),
  agents: restUrl(["*", AGENT_PREFIX + "*", "*", "State"]),
  queue: restUrl(["*", "PoD_MasterQueue", "batch", "WaitingJobs|RunningJobs"]),
};

async function fetchResults(url) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  try {
    const resp = await fetch(url, { signal: controller.signal, cache: "no-store" });
    if (!resp.ok) {
      throw new Error(`${url.split("?")[0]} answered HTTP ${resp.status}`);
    }
    const doc = await resp.json();
    const nowMs = Number(resp.headers.get("X-Registry-Now-Ms")) || Date.now();
    return { results: Array.isArray(doc.results) ? doc.results : [], nowMs };
  } finally {
    clearTimeout(timer);
  }
}

// Group rows by node: {node: {param: value}}.
function byNode(results) {
  const nodes = new Map();
  for (const r of results) {
    if (!nodes.has(r.node)) nodes.set(r.node, {});
    nodes.get(r.node)[r.parameter] = r.value;
  }
  return nodes;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function num(value) {
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

function show(value) {
  return value === undefined || value === null ? "–" : value;
}

function formatExpires(epochS, nowMs) {
  const s = num(epochS);
  if (s === null) return { text: "–", title: "" };
  const left = Math.round(s - nowMs / 1000);
  const abs = Math.abs(left);
  const span = abs >= 3600 ? `${Math.floor(abs / 3600)}h ${Math.floor((abs % 3600) / 60)}m`
    : abs >= 60 ? `${Math.floor(abs / 60)}m ${abs % 60}s` : `${abs}s`;
  return { text: left >= 0 ? `in ${span}` : `${span} ago`, title: new Date(s * 1000).toISOString() };
}

function workerBar(p) {
  const attached = num(p.Workers) || 0;
  const needed = num(p.NeededWorkers) || 0;
  const min = num(p.MinWorkers);
  const scale = Math.max(num(p.MaxWorkers) || 0, attached + needed, 1);
  const cell = el("td");
  const bar = el("div", null, {
    class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": scale,
    "aria-valuenow": attached, title: `${attached} attached, ${needed} still needed`,
  });
  const a = el("span", null, { class: "attached" });
  a.style.width = `${(100 * attached) / scale}%`;
  const n = el("span", null, { class: "needed" });
  n.style.left = a.style.width;
  n.style.width = `${(100 * needed) / scale}%`;
  bar.append(a, n);
  if (min !== null) {
    const m = el("span", null, { class: "min", title: `min ${min}` });
    m.style.left = `${(100 * Math.min(min, scale)) / scale}%`;
    bar.append(m);
  }
  const label = el("span", null, { class: "bar-label" });
  label.append(
    el("span", attached, { "data-field": "attached" }), " / ",
    el("span", attached + needed, { "data-field": "wanted" }),
  );
  cell.append(bar, label);
  return cell;
}

function serverRow(id, p, nowMs) {
  const row = el("tr", null, { "data-server": id });
  const state = show(p.State);
  const expires = formatExpires(p.Expires, nowMs);
  row.append(
    el("td", id, { "data-field": "id" }),
    el("td", state, { "data-field": "state", class: `state state-${state}` }),
    workerBar(p),
    el("td", show(p.NeededWorkers), { "data-field": "needed", class: "num" }),
    el("td", show(p.MinWorkers), { "data-field": "min", class: "num" }),
    el("td", show(p.MaxWorkers), { "data-field": "max", class: "num" }),
    el("td", show(p.Owner), { "data-field": "owner" }),
    el("td", show(p.Address), { "data-field": "address", class: "address" }),
    el("td", expires.text, { "data-field": "expires", title: expires.title }),
  );
  return row;
}

function renderServers({ results, nowMs }) {
  const nodes = [...byNode(results).entries()].sort(([a], [b]) => a.localeCompare(b));
  document.querySelector("#servers tbody").replaceChildren(
    ...nodes.map(([id, p]) => serverRow(id, p, nowMs)),
  );
  document.getElementById("server-count").textContent = String(nodes.length);
  document.getElementById("servers-empty").hidden = nodes.length > 0;
}

function renderAgents({ results }) {
  const sites = new Map();
  for (const r of results) {
    const site = r.cluster.startsWith(AGENT_PREFIX) ? r.cluster.slice(AGENT_PREFIX.length) : r.cluster;
    if (!sites.has(site)) sites.set(site, new Map());
    const state = AGENT_STATES.includes(String(r.value)) ? String(r.value) : "other";
    const counts = sites.get(site);
    counts.set(state, (counts.get(state) || 0) + 1);
  }
  const rows = [...sites.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([site, counts]) => {
    const row = el("tr", null, { "data-site": site });
    row.append(el("td", site, { "data-field": "site" }));
    let total = 0;
    for (const state of [...AGENT_STATES, "other"]) {
      const n = counts.get(state) || 0;
      total += n;
      row.append(el("td", n, { "data-state": state, class: "num" }));
    }
    row.append(el("td", total, { "data-field": "total", class: "num" }));
    return row;
  });
  document.querySelector("#agents tbody").replaceChildren(...rows);
  document.getElementById("agent-count").textContent = String(results.length);
  document.getElementById("agents-empty").hidden = rows.length > 0;
}

function renderQueue({ results }) {
  const section = document.getElementById("batch-queue");
  const p = byNode(results).get("batch");
  section.hidden = !p;
  if (!p) return;
  section.querySelector('[data-field="waiting"]').textContent = String(show(p.WaitingJobs));
  section.querySelector('[data-field="running"]').textContent = String(show(p.RunningJobs));
}

function setError(message) {
  const banner = document.getElementById("error-banner");
  banner.textContent = message ? `Registry unreachable or failing: ${message}` : "";
  banner.hidden = !message;
}

async function refresh() {
  const [servers, agents, queue] = await Promise.allSettled(
    [QUERIES.servers, QUERIES.agents, QUERIES.queue].map(fetchResults),
  );
  const failures = [];
  for (const [outcome, render] of [
    [servers, renderServers], [agents, renderAgents], [queue, renderQueue],
  ]) {
    if (outcome.status === "fulfilled") render(outcome.value);
    else failures.push(outcome.reason instanceof Error ? outcome.reason.message : String(outcome.reason));
  }
  setError(failures.join("; "));
  if (failures.length === 0) {
    const stamp = document.getElementById("last-updated");
    const now = new Date();
    stamp.textContent = now.toLocaleTimeString();
    stamp.dateTime = now.toISOString();
    stamp.dataset.state = "ok";
  }
}

async function loop() {
  try {
    await refresh();
  } catch (err) {
    setError(err instanceof Error ? err.message : String(err));
  }
  setTimeout(loop, REFRESH_MS);
}

loop();
