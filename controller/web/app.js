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
      el("td", {}, el("a", { href: "#/node/" + encodeURIComponent(r.node) }, r.node), s.primary ? " (primary)" : ""),
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

// Who acknowledged an event, in words.
function ackText(a) {
  return "acknowledged by " + a.by + " at " + a.time + (a.note ? ": " + a.note : "");
}

async function healthPage() {
  const page = document.getElementById("page");
  page.replaceChildren(el("h1", {}, "Health"), el("p", {}, "Loading…"));
  const [h, ev, ports] = await Promise.all([api("/health"), api("/events?limit=200"), api("/ports")]);
  // A check that is not ok shows whether someone acknowledged the change that made it
  // so (its newest event).
  const latest = {};
  for (const e of ev.events) latest[e.node + "\u0000" + e.check] = e;
  const verdicts = h.verdicts.map((v) => {
    const e = v.level === "ok" ? null : latest[v.node + "\u0000" + v.check];
    return el("tr", {},
      el("td", {}, v.node), el("td", {}, v.check), el("td", {}, levelSpan(v.level)),
      el("td", {}, v.reason),
      el("td", { class: "wide" }, e && e.acknowledged ? ackText(e.acknowledged) : (e ? "not acknowledged (#" + e.id + ")" : "")));
  });
  // The event timeline, filtered by node and check on the page; an operator
  // acknowledges a change for the worse from here.
  const nodes = [...new Set(ev.events.map((e) => e.node))].sort();
  const checks = [...new Set(ev.events.map((e) => e.check))].sort();
  const pick = (id, label, values) => el("label", {}, label + " ",
    el("select", { id }, el("option", { value: "" }, "all"), values.map((v) => el("option", { value: v }, v))));
  const list = el("ul", { id: "events" });
  const ackForm = (e) => {
    const note = el("input", { type: "text", maxlength: "500", placeholder: "note (optional)",
      "aria-label": "note for event " + e.id });
    const said = el("span", { role: "status" });
    const form = el("form", { class: "ack", "data-event": String(e.id) }, note,
      el("button", { type: "submit" }, "Acknowledge"), said);
    form.addEventListener("submit", async (x) => {
      x.preventDefault();
      try {
        const doc = await api("/events/" + e.id + "/ack", { method: "POST",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note: note.value }) });
        Object.assign(e, doc.events[0]);
        draw();
      } catch (err) { said.textContent = " " + err.message; }
    });
    return form;
  };
  const draw = () => {
    const n = document.getElementById("ev-node").value, c = document.getElementById("ev-check").value;
    const shown = ev.events.filter((e) => (!n || e.node === n) && (!c || e.check === c));
    list.replaceChildren(...shown.map((e) => el("li", { id: "event-" + e.id },
      "#" + e.id + " " + e.time + " " + e.node + " " + e.check + ": ",
      levelSpan(e.from), " → ", levelSpan(e.to), e.reason ? " (" + e.reason + ")" : "",
      e.acknowledged ? el("span", { class: "ack" }, " — " + ackText(e.acknowledged))
        : (e.to !== "ok" && may("operator") ? ackForm(e) : null))));
    if (!shown.length) list.replaceChildren(el("li", {}, "No health changes recorded."));
  };
  const filters = el("div", { class: "filters" }, pick("ev-node", "Node", nodes), pick("ev-check", "Check", checks));
  const cells = ports.cells.map((p) => el("tr", {}, el("td", {}, p.from), el("td", {}, p.to),
    el("td", {}, p.service + " " + p.port), el("td", {}, levelSpan(p.level)), el("td", {}, p.detail || "")));
  page.replaceChildren(
    el("h1", {}, "Health ", levelSpan(h.worst)),
    el("div", { class: "scroll" }, el("table", { id: "verdicts" },
      el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", {}, "Check"),
        el("th", {}, "State"), el("th", {}, "Why"), el("th", { class: "wide" }, "Acknowledged"))),
      el("tbody", {}, verdicts))),
    el("h2", {}, "Events"), filters, list,
    el("h2", {}, "Ports ", levelSpan(ports.worst)),
    el("div", { class: "scroll" }, el("table", { id: "ports" },
      el("thead", {}, el("tr", {}, el("th", {}, "From"), el("th", {}, "To"), el("th", {}, "Port"),
        el("th", {}, "State"), el("th", {}, "Why"))),
      el("tbody", {}, cells))));
  for (const id of ["ev-node", "ev-check"]) document.getElementById(id).addEventListener("change", draw);
  draw();
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

// An apply with its progress per node as it happens (server-sent events on the POST's
// answer, read as a stream: EventSource only GETs).
async function applyLive(digest, rolling, said) {
  const progress = el("ol", { id: "progress" });
  said.after(progress);
  const res = await fetch("/api/v1/apply", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Accept": "text/event-stream",
      "X-CSRF-Token": state.session.csrf },
    body: JSON.stringify({ plan: digest, rolling }) });
  if (res.status === 401) { window.location.assign("/login"); return; }
  if (!res.ok) {
    const doc = await res.json().catch(() => ({}));
    throw new Error(doc.error || ("HTTP " + res.status));
  }
  const items = {};
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const name = (chunk.match(/^event: (.*)$/m) || [])[1];
      const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!name || !data) continue;
      const d = JSON.parse(data);
      if (name === "working") {
        for (const n of d.nodes) {
          items[n] = el("li", { "data-node": n }, n + ": " + (d.sequential ? "waiting its turn" : "applying"));
          progress.append(items[n]);
        }
      } else if (name === "node") {
        if (items[d.node]) {
          items[d.node].replaceChildren(d.node + ": ", levelSpan(d.state === "ok" ? "ok" : "critical", d.state),
            d.message ? " (" + d.message + ")" : "");
        }
      } else if (name === "done") {
        said.textContent = "Applied: " + d.nodes.map((n) => n.node + " " + n.state).join(", ");
      } else if (name === "error") {
        said.textContent = "Apply failed: " + d.error;
      }
    }
  }
}

// The kept versions of a managed file on a node, and (admins) putting one back.
async function versions(node, path, shown, said) {
  const q = "node=" + encodeURIComponent(node) + "&path=" + encodeURIComponent(path);
  const doc = await api("/rollback?" + q).catch((e) => { said.textContent = e.message; return null; });
  if (!doc) return;
  const rows = doc.generations.map((g) => el("li", {}, "version " + g.generation + ", replaced " + g.replaced_at +
    " (sha256 " + g.sha256.slice(0, 12) + ")", may("admin") ? [" ", el("button", { type: "button",
      class: "danger rollback", onclick: async () => {
        said.textContent = "Putting back version " + g.generation + " of " + path + " on " + node + "…";
        try {
          const done = await api("/rollback", { method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ node, path, generation: g.generation }) });
          said.textContent = "Rolled back: " + done.nodes.map((n) => n.node + " " + n.state).join(", ");
        } catch (e) { said.textContent = "Rollback refused: " + e.message; }
      } }, "Put this one back")] : null));
  shown.replaceChildren(el("h3", {}, path + " on " + node),
    rows.length ? el("ul", { id: "generations" }, rows) : el("p", {}, "No kept versions."));
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
          const rolling = el("input", { id: "rolling", type: "checkbox" });
          shown.append(el("label", { for: "rolling" }, rolling, " one node at a time (rolling)"), " ",
            el("button", { id: "apply-button", class: "danger", type: "button", onclick: async () => {
              said.textContent = "Applying plan " + doc.digest + "…";
              try {
                await applyLive(doc.digest, rolling.checked, said);
              } catch (e) { said.textContent = "Apply refused: " + e.message; }
            } }, "Apply this plan"));
        }
      } catch (e) { said.textContent = "Plan failed: " + e.message; }
    } }, "Plan"));
  }
  if (may("operator")) {
    kids.push(" ", el("button", { id: "drift-button", type: "button", onclick: async () => {
      said.textContent = "Looking for hand edits…";
      try {
        const doc = await api("/drift");
        const edited = doc.nodes.flatMap((n) => n.entries.map((e) => [n.node, e]));
        shown.replaceChildren(...(edited.length ? edited.flatMap(([n, e]) => [
          el("p", {}, n + ": " + e.path + " edited by hand since clustermgr applied it"),
          e.diff ? el("pre", { class: "diff" }, e.diff) : null]) : [el("p", {}, "No hand edits.")]));
        said.textContent = "Drift: " + edited.length + " edited";
      } catch (e) { said.textContent = "Drift failed: " + e.message; }
    } }, "Drift"));
  }
  kids.push(said, shown);
  const history = await api("/history?limit=50");
  kids.push(el("h2", {}, "History"), el("div", { class: "scroll" }, el("table", { id: "history" },
    el("thead", {}, el("tr", {}, el("th", {}, "When"), el("th", {}, "Node"), el("th", {}, "Path"),
      el("th", {}, "Change"), el("th", { class: "wide" }, "Who"), el("th", { class: "wide" }, "Result"))),
    el("tbody", {}, history.changes.map((h) => el("tr", {}, el("td", {}, h.time), el("td", {}, h.node),
      el("td", {}, h.path), el("td", {}, h.change), el("td", { class: "wide" }, h.user),
      el("td", { class: "wide" }, h.result),
      el("td", {}, el("button", { type: "button", class: "versions", onclick: () => versions(h.node, h.path, shown, said) },
        "Versions"))))))));
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

// A line chart of points ({time_ms, value}) per series on a canvas, with its range
// in words beside it for those who do not read charts.
function chart(series, label, unit) {
  const w = 600, h = 160;
  const c = el("canvas", { class: "chart", width: String(w), height: String(h), role: "img" });
  const g = c.getContext("2d");
  const all = series.flatMap((s) => s.points.filter((p) => p.value !== null));
  const words = el("p", { class: "range" });
  if (!all.length) {
    c.setAttribute("aria-label", label + ": no data in this range");
    words.textContent = "no data in this range";
    return el("figure", { class: "metric" }, el("figcaption", {}, label), c, words);
  }
  const t0 = Math.min(...all.map((p) => p.time_ms)), t1 = Math.max(...all.map((p) => p.time_ms));
  const lo = Math.min(0, ...all.map((p) => p.value)), hi = Math.max(...all.map((p) => p.value)) || 1;
  const colours = ["#0969da", "#1a7f37", "#9a6700", "#cf222e", "#8250df", "#6e7781"];
  g.strokeStyle = "#d0d7de";
  g.strokeRect(0.5, 0.5, w - 1, h - 1);
  series.forEach((s, i) => {
    g.strokeStyle = colours[i % colours.length];
    g.lineWidth = 1.5;
    g.beginPath();
    g.fillStyle = g.strokeStyle;
    let started = false;
    const pts = s.points.filter((p) => p.value !== null);
    for (const p of s.points) {
      if (p.value === null) { started = false; continue; }
      const x = ((p.time_ms - t0) / Math.max(1, t1 - t0)) * (w - 8) + 4;
      const y = h - 4 - ((p.value - lo) / Math.max(1e-9, hi - lo)) * (h - 8);
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
      // A lone sample (a range that has just begun) is a dot.
      if (pts.length === 1) g.fillRect(x - 2, y - 2, 4, 4);
    }
    g.stroke();
  });
  const fmt = (v) => (Math.abs(v) >= 1000 ? v.toExponential(2) : v.toFixed(2)) + (unit ? " " + unit : "");
  words.textContent = series.length + " series, from " + fmt(Math.min(...all.map((p) => p.value))) +
    " to " + fmt(hi);
  c.setAttribute("aria-label", label + ": " + words.textContent);
  return el("figure", { class: "metric" }, el("figcaption", {}, label), c, words);
}

// Each range with a step that its tier has points for (raw samples, 1-minute and
// 1-hour points), a few hundred points a chart.
const RANGES = [["1h", "hour", 10], ["1d", "day", 300], ["7d", "week", 1800], ["30d", "month", 7200],
  ["365d", "year", 86400]];
const CHARTS = [["node_cpu_seconds_total", "CPU (seconds per second)", ""],
  ["node_load1", "Load (1 minute)", ""], ["node_memory_available_bytes", "Memory available", "bytes"],
  ["node_filesystem_avail_bytes", "Disk available", "bytes"],
  ["node_network_receive_bytes_total", "Network received", "bytes/s"],
  ["gluu_process_resident_memory_bytes", "Gluu processes' memory", "bytes"],
  ["ldap_operations_total", "LDAP operations", "per second"]];

async function nodePage(name) {
  const page = document.getElementById("page");
  const range = new URLSearchParams(window.location.hash.split("?")[1] || "").get("range") || "1h";
  const step = (RANGES.find((r) => r[0] === range) || RANGES[0])[2];
  page.replaceChildren(el("h1", {}, name), el("p", {}, "Loading…"));
  const q = "nodes=" + encodeURIComponent(name);
  const [n, h, logs] = await Promise.all([api("/nodes/" + encodeURIComponent(name)),
    api("/health?" + q), api("/logs?" + q + "&limit=20")]);
  const facts = n.host ? [["Host", n.host.hostname], ["OS", n.host.os_release], ["Kernel", n.host.kernel],
    ["Agent", n.host.agent_version], ["Gluu", n.host.gluu ? n.host.gluu.version : "none"],
    ["Up", Math.round(n.host.uptime_secs / 3600) + " h"]] : [["Agent", n.error || "not reached"]];
  const ranges = el("nav", { class: "ranges", "aria-label": "Chart range" }, RANGES.map(([r, word]) =>
    el("a", { href: "#/node/" + encodeURIComponent(name) + "?range=" + r,
      "aria-current": r === range ? "true" : "false" }, word)));
  const charts = el("div", { id: "charts", class: "charts" });
  page.replaceChildren(
    el("h1", {}, name, n.primary ? " (primary)" : ""),
    el("table", { id: "facts" }, el("tbody", {}, facts.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v))))),
    el("h2", {}, "Checks"),
    el("table", { id: "checks" }, el("tbody", {}, h.verdicts.map((v) => el("tr", {},
      el("td", {}, v.check), el("td", {}, levelSpan(v.level)), el("td", {}, v.reason))))),
    el("h2", {}, "Metrics"), ranges, charts,
    el("h2", {}, "Latest log lines"),
    el("pre", { id: "node-logs", class: "logs" }, logs.lines.map((l) => l.time + " " + l.source + " " + l.line + "\n")));
  for (const [metric, label, unit] of CHARTS) {
    api("/metrics?" + q + "&metric=" + metric + "&since=" + range + "&step=" + step).then((doc) => {
      charts.append(chart(doc.series, label, unit));
    }).catch(() => charts.append(chart([], label, unit)));
  }
}

// Logs: a live tail across nodes (operators follow logs), filtered by node, source and
// regular expression, with pause; and a search of the stored lines.
let logStream = null;
async function logsPage() {
  const page = document.getElementById("page");
  const form = el("form", { id: "log-filter", class: "filters" },
    el("label", { for: "log-nodes" }, "Nodes"), el("input", { id: "log-nodes", value: "all" }),
    el("label", { for: "log-source" }, "Source"), el("input", { id: "log-source", placeholder: "any" }),
    el("label", { for: "log-grep" }, "Matching"), el("input", { id: "log-grep", placeholder: "regular expression" }),
    el("label", { for: "log-since" }, "Since"), el("input", { id: "log-since", placeholder: "10m, 2h, 7d" }),
    may("operator") ? el("button", { type: "submit" }, "Follow") : null,
    el("button", { type: "button", id: "log-search" }, "Search stored lines"),
    el("button", { type: "button", id: "log-pause" }, "Pause"));
  const out = el("pre", { id: "log-lines", class: "logs", "aria-live": "polite" });
  const said = el("p", { id: "log-said", role: "status" });
  let paused = false;
  const show = (l) => {
    if (paused) return;
    out.append(l.time + " " + l.node + " " + l.source + " " + l.line + "\n");
    while (out.childNodes.length > 1000) out.removeChild(out.firstChild);
    out.scrollTop = out.scrollHeight;
  };
  const params = () => {
    const p = new URLSearchParams();
    p.set("nodes", document.getElementById("log-nodes").value || "all");
    const src = document.getElementById("log-source").value, grep = document.getElementById("log-grep").value;
    if (src) p.set("source", src);
    if (grep) p.set("grep", grep);
    return p;
  };
  const search = async () => {
    if (logStream) { logStream.close(); logStream = null; }
    out.replaceChildren();
    const p = params();
    const since = document.getElementById("log-since").value;
    if (since) p.set("since", since); else p.set("limit", "200");
    const doc = await api("/logs?" + p.toString());
    doc.lines.forEach(show);
    said.textContent = doc.lines.length + " stored lines" + (may("operator") ? "" : " (following needs operator)");
  };
  const start = async () => {
    if (!may("operator")) return search();
    if (logStream) logStream.close();
    out.replaceChildren();
    logStream = new EventSource("/api/v1/logs/stream?" + params().toString());
    logStream.addEventListener("log", (m) => show(JSON.parse(m.data)));
    logStream.addEventListener("open", () => { said.textContent = "following"; });
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); start().catch((e) => { said.textContent = e.message; }); });
  page.replaceChildren(el("h1", {}, "Logs"), form, said, out);
  document.getElementById("log-search").addEventListener("click", () => {
    search().catch((e) => { said.textContent = e.message; });
  });
  document.getElementById("log-pause").addEventListener("click", (ev) => {
    paused = !paused;
    ev.target.textContent = paused ? "Resume" : "Pause";
    said.textContent = paused ? "paused: new lines are not shown" : "following";
  });
  await start();
}

async function replicationPage() {
  const page = document.getElementById("page");
  const r = await api("/replication");
  // The lag matrix: where each heartbeat was read (rows) and whose it is (columns).
  const nodes = r.nodes;
  const cell = (ms) => {
    if (ms === undefined || ms === null) return el("td", { class: "lag unknown" }, "–");
    const s = ms / 1000;
    const level = s < 30 ? "ok" : s < 120 ? "warning" : "critical";
    return el("td", { class: "lag " + level, title: level }, s.toFixed(1) + " s");
  };
  const matrix = el("table", { id: "lag" },
    el("thead", {}, el("tr", {}, el("th", {}, "read on (row), written by (column)"), nodes.map((n) => el("th", {}, n)))),
    el("tbody", {}, nodes.map((at) => el("tr", {}, el("th", { scope: "row" }, at),
      nodes.map((of) => cell((r.heartbeat_age_ms[at] || {})[of]))))));
  const csns = el("table", { id: "csns" }, el("tbody", {}, Object.entries(r.csns).flatMap(([n, ids]) =>
    Object.entries(ids).map(([id, csn]) => el("tr", {}, el("td", {}, n), el("td", {}, "serverID " + id), el("td", {}, csn))))));
  const links = el("table", { id: "links" }, el("tbody", {}, Object.entries(r.links).flatMap(([n, ls]) =>
    ls.map((l) => el("tr", {}, el("td", {}, n), el("td", {}, l.provider), el("td", {}, l.connected ? "connected" : "not connected"), el("td", {}, l.phase || ""))))));
  const csync2 = el("table", { id: "csync2" }, el("tbody", {}, Object.entries(r.csync2).map(([n, c]) =>
    el("tr", {}, el("td", {}, n), el("td", {}, c.listening ? "listening" : "not listening"),
      el("td", {}, c.dirty_total + " waiting"), el("td", {}, c.error || "")))));
  page.replaceChildren(el("h1", {}, "Replication"),
    el("h2", {}, "Heartbeat lag"), el("div", { class: "scroll" }, matrix),
    el("h2", {}, "CSNs per serverID"), csns, el("h2", {}, "Links"), links, el("h2", {}, "csync2"), csync2,
    r.unread.length ? el("p", {}, "Not read: " + r.unread.map((u) => u.node + " (" + u.reason + ")").join(", ")) : null);
}

async function certsPage() {
  const page = document.getElementById("page");
  const doc = await api("/certs");
  page.replaceChildren(el("h1", {}, "Certificates"), el("table", { id: "certs" },
    el("thead", {}, el("tr", {}, el("th", {}, "Subject"), el("th", {}, "Expires"), el("th", {}, "Days left"), el("th", {}, "State"))),
    el("tbody", {}, doc.certificates.map((c) => el("tr", {}, el("td", {}, c.subject), el("td", {}, c.expires),
      el("td", {}, String(c.days_left)), el("td", {}, c.state))))));
}

const PAGES = { overview: async () => overview(), health: healthPage, config: configPage, audit: auditPage,
  logs: logsPage, replication: replicationPage, certs: certsPage };

async function route() {
  const path = window.location.hash.replace(/^#\//, "").split("?")[0];
  const [name, arg] = (path || "overview").split("/");
  if (logStream && name !== "logs") { logStream.close(); logStream = null; }
  // The node page is under no menu entry; every other name marks its own (or the
  // Overview, for a name that is no page).
  const page = name === "node" && arg ? "node" : (PAGES[name] ? name : "overview");
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (page === "node") {
    try { await nodePage(decodeURIComponent(arg)); } catch (e) {
      document.getElementById("page").replaceChildren(el("p", { role: "alert" }, "Could not load: " + e.message));
    }
    return;
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
