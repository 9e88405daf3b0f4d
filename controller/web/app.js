// The console: pages drawn from /api/v1 (the CLI's --json documents), kept live by
// the server-sent events of /api/v1/stream. No framework and no third-party code: the
// page builds its elements with the DOM (never innerHTML with server text), so the
// strict Content-Security-Policy holds and nothing a node reports can run as script.
"use strict";

const state = { session: null, status: null, top: null, worst: null };
const RANK = { viewer: 0, operator: 1, admin: 2 };
const LEVELS = ["ok", "warning", "critical", "unknown"];

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function may(role) {
  return state.session && RANK[state.session.role] >= RANK[role];
}

// A request to the API; a lost session sends the browser to the login page.
async function api(path, opts) {
  const o = Object.assign({ credentials: "same-origin", headers: {} }, opts || {});
  if (o.method && o.method !== "GET" && state.session && state.session.csrf) {
    o.headers["X-CSRF-Token"] = state.session.csrf;
  }
  const res = await fetch("/api/v1" + path, o);
  if (res.status === 401) {
    window.location.assign("/login");
    throw new Error("logged out");
  }
  const doc = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(doc.error || ("HTTP " + res.status));
  return doc;
}

function levelSpan(level, text) {
  return el("span", { class: "level " + (level || "unknown") }, text || level || "unknown");
}

function healthLevel(h) {
  // TopRow.health is "ok" or "critical: ldap".
  if (!h) return "unknown";
  return h.split(":")[0].trim();
}

function setWorst() {
  const rows = (state.top && state.top.nodes) || [];
  let worst = "ok";
  for (const r of rows) {
    const l = healthLevel(r.health);
    if (LEVELS.indexOf(l) > LEVELS.indexOf(worst)) worst = l;
    if (r.state !== "connected" && worst === "ok") worst = "warning";
  }
  const w = document.getElementById("worst");
  w.className = "level " + worst;
  w.textContent = rows.length ? "cluster: " + worst : "cluster: no nodes yet";
}

function sparkline(values) {
  const c = el("canvas", { class: "spark", width: "120", height: "24", role: "img",
    "aria-label": "CPU over the last minute" });
  const g = c.getContext("2d");
  const v = (values || []).map((x) => (x === null ? null : Number(x)));
  g.strokeStyle = "#0969da";
  g.lineWidth = 1.5;
  g.beginPath();
  let started = false;
  v.forEach((x, i) => {
    if (x === null) { started = false; return; }
    const px = (i / Math.max(1, v.length - 1)) * 118 + 1;
    const py = 23 - (Math.min(100, Math.max(0, x)) / 100) * 22;
    if (started) g.lineTo(px, py); else { g.moveTo(px, py); started = true; }
  });
  g.stroke();
  return c;
}

function pct(x) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(0) + " %";
}

function overview() {
  const page = document.getElementById("page");
  const statusByName = {};
  for (const n of (state.status && state.status.nodes) || []) statusByName[n.name] = n;
  const rows = ((state.top && state.top.nodes) || []).map((r) => {
    const s = statusByName[r.node] || {};
    const rtt = s.rtt_us === null || s.rtt_us === undefined ? "–" : (s.rtt_us / 1000).toFixed(1) + " ms";
    return el("tr", { "data-node": r.node },
      el("td", {}, r.node, s.primary ? " (primary)" : ""),
      el("td", { class: "wide" }, (s.roles || []).join(", ")),
      el("td", {}, r.state),
      el("td", { class: "wide" }, rtt),
      el("td", { class: "wide" }, s.gluu || "–"),
      el("td", {}, levelSpan(healthLevel(r.health), r.health || "not checked yet")),
      el("td", {}, sparkline(r.cpu_history), " ", pct(r.cpu_pct)),
      el("td", {}, pct(r.mem_pct)));
  });
  page.replaceChildren(
    el("h1", {}, "Overview"),
    el("div", { class: "scroll" }, el("table", { id: "nodes" },
      el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", { class: "wide" }, "Roles"),
        el("th", {}, "Connection"), el("th", { class: "wide" }, "Round trip"),
        el("th", { class: "wide" }, "Gluu"), el("th", {}, "Worst check"),
        el("th", {}, "CPU"), el("th", {}, "Memory"))),
      el("tbody", {}, rows))));
}

async function healthPage() {
  const page = document.getElementById("page");
  page.replaceChildren(el("h1", {}, "Health"), el("p", {}, "Loading…"));
  const [h, ev] = await Promise.all([api("/health"), api("/events?limit=50")]);
  const verdicts = h.verdicts.map((v) => el("tr", {},
    el("td", {}, v.node), el("td", {}, v.check), el("td", {}, levelSpan(v.level)),
    el("td", {}, v.reason)));
  const events = ev.events.map((e) => el("li", {}, e.time + " " + e.node + " " + e.check + ": " +
    e.from + " → " + e.to + (e.reason ? " (" + e.reason + ")" : "")));
  page.replaceChildren(
    el("h1", {}, "Health ", levelSpan(h.worst)),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", {}, "Check"),
        el("th", {}, "State"), el("th", {}, "Why"))),
      el("tbody", {}, verdicts))),
    el("h2", {}, "Events"),
    events.length ? el("ul", { id: "events" }, events) : el("p", {}, "No health changes recorded."));
}

function planView(doc) {
  const out = [];
  for (const n of doc.nodes) {
    const changed = n.entries.filter((e) => e.change !== "unchanged" && e.change !== "waiting");
    const waiting = n.entries.filter((e) => e.change === "waiting").length + (n.waiting || []).length;
    out.push(el("h3", {}, n.node + ": " + (changed.length ? changed.length + " to change" : "nothing to change") +
      (waiting ? ", " + waiting + " waiting" : "") + (n.message ? " (" + n.message + ")" : "")));
    for (const e of changed) {
      out.push(el("p", {}, e.change + " " + e.path + (e.secret ? " (secret: shown as hashes)" : "")));
      if (e.diff) out.push(el("pre", { class: "diff" }, e.diff));
    }
  }
  return out;
}

async function configPage() {
  const page = document.getElementById("page");
  const said = el("p", { id: "said", role: "status" });
  const shown = el("div", { id: "plan" });
  const kids = [el("h1", {}, "Configuration")];
  if (!may("operator")) {
    kids.push(el("p", {}, "Your role (" + state.session.role + ") may read the settings; planning needs operator, applying admin."));
  }
  const cluster = await api("/cluster");
  const display = (k, v) => {
    // Secrets as set or not set, never a value or a digest of one.
    if (k === "secrets" && v && typeof v === "object") {
      return Object.entries(v).map(([s, d]) => s + ": " + (d ? "set" : "not set")).join(", ");
    }
    if (Array.isArray(v)) return v.join(", ");
    return v === null ? "not set" : (typeof v === "object" ? JSON.stringify(v) : String(v));
  };
  const settings = Object.entries(cluster).map(([k, v]) => el("tr", {},
    el("th", { scope: "row" }, k), el("td", { class: "value" }, display(k, v))));
  kids.push(el("table", { id: "settings" }, el("tbody", {}, settings)));
  if (may("operator")) {
    kids.push(el("button", { id: "plan-button", type: "button", onclick: async () => {
      said.textContent = "Planning…";
      try {
        const doc = await api("/plan");
        shown.replaceChildren(...planView(doc));
        said.textContent = "Plan " + doc.digest;
        shown.dataset.digest = doc.digest;
        if (may("admin")) {
          shown.append(el("button", { id: "apply-button", class: "danger", type: "button", onclick: async () => {
            said.textContent = "Applying plan " + doc.digest + "…";
            try {
              const done = await api("/apply", { method: "POST",
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ plan: doc.digest }) });
              said.textContent = "Applied: " + done.nodes.map((n) => n.node + " " + n.state).join(", ");
            } catch (e) { said.textContent = "Apply refused: " + e.message; }
          } }, "Apply this plan"));
        }
      } catch (e) { said.textContent = "Plan failed: " + e.message; }
    } }, "Plan"));
  }
  kids.push(said, shown);
  page.replaceChildren(...kids);
}

async function auditPage() {
  const page = document.getElementById("page");
  const doc = await api("/audit?limit=100");
  const rows = doc.entries.map((a) => el("tr", {},
    el("td", {}, a.time), el("td", {}, a.user), el("td", {}, a.action),
    el("td", { class: "wide" }, a.nodes.join(", ")), el("td", { class: "wide" }, a.detail)));
  page.replaceChildren(el("h1", {}, "Audit"), el("div", { class: "scroll" }, el("table", { id: "audit" },
    el("thead", {}, el("tr", {}, el("th", {}, "When"), el("th", {}, "Who"), el("th", {}, "What"),
      el("th", { class: "wide" }, "Nodes"), el("th", { class: "wide" }, "Detail"))),
    el("tbody", {}, rows))));
}

const PAGES = { overview: async () => overview(), health: healthPage, config: configPage, audit: auditPage };

async function route() {
  const name = (window.location.hash.replace(/^#\//, "") || "overview").split("/")[0];
  const page = PAGES[name] ? name : "overview";
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    await PAGES[page]();
  } catch (e) {
    document.getElementById("page").replaceChildren(el("p", { role: "alert" }, "Could not load: " + e.message));
  }
}

function live() {
  const es = new EventSource("/api/v1/stream");
  const mark = document.getElementById("live");
  es.addEventListener("open", () => { mark.textContent = "live"; });
  es.addEventListener("error", async () => {
    mark.textContent = "reconnecting…";
    // A stream refused for a lost session: to the login page.
    const res = await fetch("/api/v1/session", { credentials: "same-origin" }).catch(() => null);
    if (res && res.status === 401) window.location.assign("/login");
  });
  es.addEventListener("top", (m) => {
    state.top = JSON.parse(m.data);
    setWorst();
    mark.textContent = "live, updated " + new Date().toLocaleTimeString();
    if ((window.location.hash || "#/overview").startsWith("#/overview")) overview();
  });
  es.addEventListener("status", (m) => {
    state.status = JSON.parse(m.data);
    if ((window.location.hash || "#/overview").startsWith("#/overview")) overview();
  });
}

async function start() {
  state.session = await api("/session");
  document.getElementById("who").textContent = state.session.user + " (" + state.session.role + ")";
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/logout", { method: "POST" }).catch(() => null);
    window.location.assign("/login");
  });
  window.addEventListener("hashchange", route);
  await route();
  live();
}

start();
