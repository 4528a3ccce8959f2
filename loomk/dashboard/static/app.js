// loomk dashboard: reads the /ws feed (see docs/dashboard.md) and draws it.
// Plain DOM and hand-drawn SVG; every text from the feed goes through textContent.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MAX_EVENT_ROWS = 200;
  const HISTORY = 60; // snapshots in the charts
  const MAX_THREADS = 30;
  const MAX_THREAD_EVENTS = 60;
  const MAX_TOPICS_PER_AGENT = 8;
  const MAX_TOPIC_NODES = 40;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const PING_EVERY_MS = 15000;

  const $ = (id) => document.getElementById(id);
  const el = {
    kernel: $("kernel"),
    uptime: $("uptime"),
    status: $("status"),
    published: $("total-published"),
    delivered: $("total-delivered"),
    dropped: $("total-dropped"),
    filterForm: $("filter-form"),
    filter: $("filter"),
    filterActive: $("filter-active"),
    filterError: $("filter-error"),
    pause: $("pause"),
    clear: $("clear"),
    pausedBadge: $("paused-badge"),
    missed: $("missed"),
    eventsCount: $("events-count"),
    eventsBody: document.querySelector("#events tbody"),
    agentsBody: document.querySelector("#agents tbody"),
    agentsCount: $("agents-count"),
    topology: $("topology"),
    chartThroughput: $("chart-throughput"),
    chartLatency: $("chart-latency"),
    ratePublished: $("rate-published"),
    rateDelivered: $("rate-delivered"),
    latencyP99: $("latency-p99"),
    threads: $("threads"),
    edges: $("edges"),
  };

  const state = {
    ws: null,
    attempt: 0,
    reconnectTimer: 0,
    pingTimer: 0,
    paused: false,
    filter: "", // the filter in force (shown, and applied to frames still on the way)
    revertTo: null, // the filter before the last one sent, until the server could refuse it
    missed: 0,
    history: [], // {published, delivered, p99}
    agents: [], // the last snapshot's agents
    published: new Map(), // agent id -> Set of topics it published (from event sources)
    threads: new Map(), // thread id -> {last, events: [{ts, topic, type, source}]}
    renderQueued: false,
    dirty: { threads: false, topology: false },
  };

  // ---- small helpers ------------------------------------------------------------------------

  function text(tag, value, className) {
    const node = document.createElement(tag);
    node.textContent = value === undefined || value === null ? "" : String(value);
    if (className) node.className = className;
    return node;
  }

  function svg(tag, attrs, content) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const key of Object.keys(attrs || {})) node.setAttribute(key, String(attrs[key]));
    if (content !== undefined) node.textContent = String(content);
    return node;
  }

  function clearChildren(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function num(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : 0;
  }

  function fmtCount(value) {
    return num(value).toLocaleString("en-US");
  }

  function fmtRate(value) {
    const v = num(value);
    return v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(v >= 10 ? 1 : 2);
  }

  function fmtMs(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "–";
    return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  }

  function fmtTime(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
    const d = new Date(ms);
    const pad = (n, w) => String(n).padStart(w, "0");
    return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fmtUptime(seconds) {
    let s = Math.floor(num(seconds));
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const parts = [];
    if (d) parts.push(`${d}d`);
    if (d || h) parts.push(`${h}h`);
    if (d || h || m) parts.push(`${m}m`);
    parts.push(`${s}s`);
    return parts.join(" ");
  }

  function shorten(value, max) {
    const s = String(value);
    return s.length > max ? `${s.slice(0, max - 1)}…` : s;
  }

  // The bus's pattern grammar (loomk/bus/topics.py): dot tokens, whole-token "*", final ">".
  const TOKEN = "[^\\s.*>]+";
  const VALID_PATTERN = new RegExp(`^(?:(?:${TOKEN}|\\*)(?:\\.(?:${TOKEN}|\\*))*(?:\\.>)?|>)$`, "u");

  function validPattern(pattern) {
    return pattern === "" || VALID_PATTERN.test(pattern);
  }

  function patternMatches(pattern, topic) {
    if (pattern === "" || pattern === ">") return true;
    const p = pattern.split(".");
    const t = String(topic).split(".");
    for (let i = 0; i < p.length; i++) {
      if (p[i] === ">") return t.length > i;
      if (i >= t.length) return false;
      if (p[i] !== "*" && p[i] !== t[i]) return false;
    }
    return p.length === t.length;
  }

  // An event's source names its agent as "agent.<id>" (loomk.agents.context: sender).
  function agentOfSource(source) {
    if (typeof source !== "string" || !source.startsWith("agent.")) return null;
    const id = source.slice("agent.".length);
    return id || null;
  }

  // ---- connection ---------------------------------------------------------------------------

  function setStatus(stateName, label) {
    el.status.dataset.state = stateName;
    el.status.textContent = label;
  }

  function send(message) {
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  function connect() {
    window.clearTimeout(state.reconnectTimer);
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${window.location.host}/ws`);
    } catch (err) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    setStatus("connecting", state.attempt ? `reconnecting (attempt ${state.attempt + 1})` : "connecting");
    ws.addEventListener("open", () => {
      if (state.ws !== ws) return;
      setStatus("open", "live");
      // A new connection starts with no filter and unpaused: restore what the user set.
      if (state.filter !== "") send({ type: "filter", topic: state.filter });
      if (state.paused) send({ type: "pause" });
      window.clearInterval(state.pingTimer);
      state.pingTimer = window.setInterval(() => send({ type: "ping" }), PING_EVERY_MS);
    });
    ws.addEventListener("message", (message) => {
      if (state.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      if (frame && typeof frame === "object") handleFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      window.clearInterval(state.pingTimer);
      scheduleReconnect(event.code, event.reason);
    });
    // "error" is always followed by "close", where reconnecting happens.
  }

  function scheduleReconnect(code, reason) {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(state.attempt, 5));
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    state.attempt += 1;
    const why = code ? ` (closed ${code}${reason ? `: ${reason}` : ""})` : "";
    setStatus("closed", `disconnected${why}, retrying in ${(jittered / 1000).toFixed(1)} s`);
    state.reconnectTimer = window.setTimeout(connect, jittered);
  }

  // ---- frames -------------------------------------------------------------------------------

  function handleFrame(frame) {
    switch (frame.type) {
      case "hello":
        state.attempt = 0;
        if (typeof frame.kernel === "string") el.kernel.textContent = frame.kernel;
        break;
      case "snapshot":
        onSnapshot(frame);
        break;
      case "events":
        onEvents(frame);
        break;
      case "error":
        onError(frame);
        break;
      default: // "pong" and anything newer than this page
        break;
    }
  }

  function onError(frame) {
    const message = `${frame.code || "ERROR"}: ${frame.message || ""}`;
    if (frame.code === "BAD_FILTER") {
      if (state.revertTo !== null) state.filter = state.revertTo; // the server kept it
      state.revertTo = null;
      showFilter();
      el.filterError.textContent = message;
      el.filterError.hidden = false;
      el.filter.setAttribute("aria-invalid", "true");
    } else {
      el.filterError.textContent = message;
      el.filterError.hidden = false;
    }
  }

  // ---- events -------------------------------------------------------------------------------

  function onEvents(frame) {
    state.missed += num(frame.missed);
    el.missed.textContent = fmtCount(state.missed);
    if (state.paused) return; // frames already on the way when "pause" was sent
    const events = Array.isArray(frame.events) ? frame.events : [];
    const pattern = state.filter;
    const fragment = document.createDocumentFragment();
    for (let i = events.length - 1; i >= 0; i--) {
      const event = events[i];
      if (!event || typeof event !== "object") continue;
      noteEvent(event);
      // frames sent before the server took a new filter may still hold other topics
      if (!patternMatches(pattern, event.topic)) continue;
      fragment.appendChild(eventRow(event));
    }
    const body = el.eventsBody;
    body.insertBefore(fragment, body.firstChild);
    while (body.rows.length > MAX_EVENT_ROWS) body.deleteRow(body.rows.length - 1);
    el.eventsCount.textContent = String(body.rows.length);
    queueRender();
  }

  function eventRow(event) {
    const row = document.createElement("tr");
    row.dataset.topic = String(event.topic ?? "");
    row.dataset.type = String(event.type ?? "");
    if (event.id !== undefined) row.dataset.id = String(event.id);
    if (event.seq !== undefined) row.dataset.seq = String(event.seq);
    const time = text("td", fmtTime(event.ts_ms), "time");
    const topic = text("td", event.topic, "topic");
    const type = text("td", event.type, "type");
    const source = text("td", event.source, "source");
    const thread = text("td", event.thread_id, "thread");
    const preview = text("td", event.preview, "preview");
    if (typeof event.size === "number") preview.title = `${event.size} bytes`;
    row.append(time, topic, type, source, thread, preview);
    return row;
  }

  function noteEvent(event) {
    const agent = agentOfSource(event.source);
    if (agent && typeof event.topic === "string") {
      let topics = state.published.get(agent);
      if (!topics) {
        topics = new Set();
        state.published.set(agent, topics);
      }
      if (!topics.has(event.topic)) {
        if (topics.size >= MAX_TOPICS_PER_AGENT) topics.delete(topics.values().next().value);
        topics.add(event.topic);
        state.dirty.topology = true;
      }
    }
    const threadId = event.thread_id;
    if (typeof threadId === "string" && threadId !== "") {
      let thread = state.threads.get(threadId);
      if (thread) {
        state.threads.delete(threadId); // re-insert: the Map's order is by last activity
      } else {
        thread = { last: 0, events: [] };
      }
      const ts = num(event.ts_ms);
      thread.last = Math.max(thread.last, ts);
      thread.events.push({ ts, topic: event.topic, type: event.type, source: event.source });
      if (thread.events.length > MAX_THREAD_EVENTS) thread.events.shift();
      state.threads.set(threadId, thread);
      while (state.threads.size > MAX_THREADS) state.threads.delete(state.threads.keys().next().value);
      state.dirty.threads = true;
    }
  }

  // ---- controls -----------------------------------------------------------------------------

  function showFilter() {
    const active = state.filter;
    el.filterActive.textContent = active === "" || active === ">" ? "all" : active;
  }

  function applyFilter() {
    const pattern = el.filter.value.trim();
    el.filterError.hidden = true;
    el.filterError.textContent = "";
    el.filter.removeAttribute("aria-invalid");
    const valid = validPattern(pattern);
    if (valid) {
      // In force at once (frames still on the way are filtered here too); put back if the
      // server answers BAD_FILTER.
      state.revertTo = state.filter;
      if (pattern !== state.filter) clearEvents();
      state.filter = pattern;
    } else {
      state.revertTo = null; // the server will refuse it and keep the filter shown
    }
    showFilter();
    const sent = send({ type: "filter", topic: pattern });
    if (!sent && !valid) {
      onError({ code: "BAD_FILTER", message: `invalid pattern ${JSON.stringify(pattern)}` });
    }
  }

  function setPaused(paused) {
    state.paused = paused;
    send({ type: paused ? "pause" : "resume" });
    el.pause.textContent = paused ? "Resume" : "Pause";
    el.pause.setAttribute("aria-pressed", paused ? "true" : "false");
    el.pausedBadge.hidden = !paused;
    document.body.classList.toggle("is-paused", paused);
  }

  function clearEvents() {
    clearChildren(el.eventsBody);
    el.eventsCount.textContent = "0";
  }

  // ---- snapshot -----------------------------------------------------------------------------

  function onSnapshot(frame) {
    if (typeof frame.kernel === "string") el.kernel.textContent = frame.kernel;
    el.uptime.textContent = fmtUptime(frame.uptime_s);
    const totals = frame.totals && typeof frame.totals === "object" ? frame.totals : {};
    el.published.textContent = fmtCount(totals.published);
    el.delivered.textContent = fmtCount(totals.delivered);
    el.dropped.textContent = fmtCount(totals.dropped);
    const agents = Array.isArray(frame.agents) ? frame.agents.filter((a) => a && typeof a === "object") : [];
    state.agents = agents;
    renderAgents(agents);
    let p99 = 0;
    for (const agent of agents) p99 = Math.max(p99, num(agent.latency_ms && agent.latency_ms.p99));
    state.history.push({
      published: num(totals.published_per_s),
      delivered: num(totals.delivered_per_s),
      p99,
    });
    if (state.history.length > HISTORY) state.history.splice(0, state.history.length - HISTORY);
    el.ratePublished.textContent = fmtRate(totals.published_per_s);
    el.rateDelivered.textContent = fmtRate(totals.delivered_per_s);
    el.latencyP99.textContent = fmtMs(p99);
    renderCharts();
    renderEdges(frame.edges && typeof frame.edges === "object" ? frame.edges : {});
    state.dirty.topology = true;
    queueRender();
  }

  function renderAgents(agents) {
    const body = el.agentsBody;
    const existing = new Map();
    for (const row of Array.from(body.rows)) existing.set(row.dataset.agent, row);
    const sorted = agents.slice().sort((a, b) => String(a.id).localeCompare(String(b.id)));
    const fragment = document.createDocumentFragment();
    for (const agent of sorted) {
      const id = String(agent.id);
      let row = existing.get(id);
      existing.delete(id);
      if (!row) {
        row = document.createElement("tr");
        row.dataset.agent = id;
        for (let i = 0; i < 8; i++) row.appendChild(document.createElement("td"));
        row.cells[0].className = "agent-id";
        for (let i = 2; i < 8; i++) row.cells[i].className = "num";
      }
      const status = String(agent.status ?? "");
      row.dataset.status = status;
      const latency = agent.latency_ms && typeof agent.latency_ms === "object" ? agent.latency_ms : {};
      const values = [
        id,
        status,
        agent.mailbox_high_water !== undefined
          ? `${fmtCount(agent.mailbox)} / ${fmtCount(agent.mailbox_high_water)}`
          : fmtCount(agent.mailbox),
        fmtCount(agent.handled),
        fmtCount(agent.restarts),
        fmtCount(agent.failures),
        fmtMs(latency.p50),
        fmtMs(latency.p99),
      ];
      values.forEach((value, i) => {
        if (row.cells[i].textContent !== value) row.cells[i].textContent = value;
      });
      row.cells[1].className = `status-cell status-${status.replace(/[^a-z_-]/gi, "")}`;
      row.cells[2].title = "mailbox depth / high water";
      fragment.appendChild(row);
    }
    for (const row of existing.values()) row.remove();
    body.appendChild(fragment); // re-appending keeps the sorted order
    el.agentsCount.textContent = String(sorted.length);
  }

  function renderEdges(edges) {
    const names = Object.keys(edges).sort();
    clearChildren(el.edges);
    if (names.length === 0) {
      el.edges.appendChild(text("p", "No edge counters yet.", "empty muted"));
      return;
    }
    for (const name of names) {
      const box = document.createElement("div");
      box.className = "edge";
      box.dataset.edge = name;
      const table = document.createElement("table");
      const caption = text("caption", name);
      table.appendChild(caption);
      const body = document.createElement("tbody");
      const value = edges[name];
      const entries = value && typeof value === "object" ? flatten(value, "") : [["value", value]];
      if (entries.length === 0) entries.push(["", "no counters"]);
      for (const [key, v] of entries) {
        const row = document.createElement("tr");
        row.dataset.key = key;
        const shown = Array.isArray(v) ? v.join(", ") : typeof v === "number" ? fmtNumber(v) : v;
        row.append(text("th", key), text("td", shown, typeof v === "number" ? "num" : ""));
        row.cells[0].scope = "row";
        body.appendChild(row);
      }
      table.appendChild(body);
      box.appendChild(table);
      el.edges.appendChild(box);
    }
  }

  // Nested counters as dotted keys: {"closed": {"slow": 1}} is "closed.slow" = 1.
  function flatten(object, prefix) {
    const out = [];
    for (const [key, value] of Object.entries(object)) {
      const name = prefix ? `${prefix}.${key}` : key;
      if (value && typeof value === "object" && !Array.isArray(value)) {
        const inner = flatten(value, name);
        if (inner.length) out.push(...inner);
        else out.push([name, "–"]);
      } else {
        out.push([name, value]);
      }
    }
    return out;
  }

  function fmtNumber(value) {
    return Number.isInteger(value) ? fmtCount(value) : fmtRate(value);
  }

  // ---- charts -------------------------------------------------------------------------------

  const CHART_W = 300;
  const CHART_H = 90;

  function niceMax(value) {
    if (value <= 0) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * magnitude) return step * magnitude;
    return 10 * magnitude;
  }

  function polyline(values, max, className) {
    const n = values.length;
    const step = CHART_W / Math.max(1, HISTORY - 1);
    const offset = (HISTORY - n) * step; // newest at the right edge
    const points = values
      .map((v, i) => `${(offset + i * step).toFixed(1)},${(CHART_H - (v / max) * (CHART_H - 4) - 1).toFixed(1)}`)
      .join(" ");
    return svg("polyline", { points, class: className, "vector-effect": "non-scaling-stroke" });
  }

  function drawChart(node, series, label) {
    clearChildren(node);
    let max = 0;
    for (const s of series) for (const v of s.values) max = Math.max(max, v);
    max = niceMax(max);
    for (const f of [0.25, 0.5, 0.75]) {
      const y = (CHART_H - f * (CHART_H - 4) - 1).toFixed(1);
      node.appendChild(svg("line", { x1: 0, x2: CHART_W, y1: y, y2: y, class: "grid-line", "vector-effect": "non-scaling-stroke" }));
    }
    for (const s of series) if (s.values.length) node.appendChild(polyline(s.values, max, s.className));
    node.dataset.max = String(max);
    const scale = node.parentElement.querySelector(".scale") || node.parentElement.appendChild(text("div", "", "scale muted"));
    scale.textContent = `scale 0 – ${max.toLocaleString("en-US")} ${label}`;
  }

  function renderCharts() {
    const h = state.history;
    drawChart(
      el.chartThroughput,
      [
        { values: h.map((x) => x.published), className: "line-pub" },
        { values: h.map((x) => x.delivered), className: "line-del" },
      ],
      "events/s",
    );
    drawChart(el.chartLatency, [{ values: h.map((x) => x.p99), className: "line-lat" }], "ms");
  }

  // ---- topology -----------------------------------------------------------------------------

  function renderTopology() {
    const node = el.topology;
    const agents = state.agents.map((a) => String(a.id)).sort();
    const agentSet = new Set(agents);
    const patterns = new Map(); // pattern -> [agent ids]
    for (const agent of state.agents) {
      const subs = Array.isArray(agent.subscriptions) ? agent.subscriptions : [];
      for (const p of subs) {
        const key = String(p);
        if (!patterns.has(key)) patterns.set(key, []);
        patterns.get(key).push(String(agent.id));
      }
    }
    const topics = new Map(); // topic -> [agent ids that published it]
    for (const [agent, published] of state.published) {
      if (!agentSet.has(agent)) continue;
      for (const t of published) {
        if (!topics.has(t)) {
          if (topics.size >= MAX_TOPIC_NODES) continue;
          topics.set(t, []);
        }
        topics.get(t).push(agent);
      }
    }
    const isOwn = (pattern) => {
      const ids = patterns.get(pattern);
      return ids.length === 1 && pattern === `agent.${ids[0]}.replies`;
    };
    // the agents' own reply topics last, the rest by name
    const patternList = Array.from(patterns.keys()).sort(
      (a, b) => Number(isOwn(a)) - Number(isOwn(b)) || (a < b ? -1 : a > b ? 1 : 0),
    );
    const topicList = Array.from(topics.keys()).sort();
    // One user unit per CSS pixel, so the labels keep their size on a phone.
    const W = Math.max(320, Math.min(900, Math.round(node.clientWidth || 600)));
    const rowH = 30;
    const rows = Math.max(1, patternList.length, agents.length, topicList.length);
    const H = rows * rowH + 20;
    node.setAttribute("viewBox", `0 0 ${W} ${H}`);
    node.style.aspectRatio = `${W} / ${H}`;
    node.dataset.width = String(W);
    clearChildren(node);
    if (agents.length === 0) {
      node.appendChild(svg("text", { x: W / 2, y: 30, "text-anchor": "middle", class: "topo-empty" }, "no agents"));
      return;
    }
    const colW = W / 3;
    const boxW = Math.min(180, colW - 14);
    const colX = { pattern: colW / 2, agent: W / 2, topic: W - colW / 2 };
    const place = (list) => {
      const gap = (H - 20) / list.length;
      const pos = new Map();
      list.forEach((name, i) => pos.set(name, 10 + gap * (i + 0.5)));
      return pos;
    };
    const py = place(patternList.length ? patternList : [""]);
    const ay = place(agents);
    const ty = place(topicList.length ? topicList : [""]);
    const edges = svg("g", { class: "topo-edges" });
    for (const [pattern, ids] of patterns) {
      for (const id of ids) {
        const className = isOwn(pattern) ? "topo-edge topo-sub topo-private" : "topo-edge topo-sub";
        edges.appendChild(curve(colX.pattern + boxW / 2, py.get(pattern), colX.agent - boxW / 2, ay.get(id), className, `${pattern} → ${id}`));
      }
    }
    for (const [topic, ids] of topics) {
      for (const id of ids) {
        edges.appendChild(curve(colX.agent + boxW / 2, ay.get(id), colX.topic - boxW / 2, ty.get(topic), "topo-edge topo-pub", `${id} → ${topic}`));
      }
    }
    node.appendChild(edges);
    for (const pattern of patternList) {
      // an agent's own reply topic (agent.<id>.replies) is plumbing: drawn fainter
      const className = isOwn(pattern) ? "topo-node topo-pattern topo-private" : "topo-node topo-pattern";
      node.appendChild(box(colX.pattern, py.get(pattern), boxW, pattern, className, { "data-pattern": pattern, "data-testid": "topo-pattern" }));
    }
    for (const id of agents) {
      node.appendChild(box(colX.agent, ay.get(id), boxW, id, "topo-node topo-agent", { "data-agent": id, "data-testid": "topo-agent" }));
    }
    for (const topic of topicList) {
      node.appendChild(box(colX.topic, ty.get(topic), boxW, topic, "topo-node topo-topic", { "data-topic": topic, "data-testid": "topo-topic" }));
    }
  }

  function curve(x1, y1, x2, y2, className, title) {
    const mx = (x1 + x2) / 2;
    const path = svg("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: className });
    path.appendChild(svg("title", {}, title));
    return path;
  }

  function box(cx, cy, width, label, className, attrs) {
    const g = svg("g", Object.assign({ class: className, transform: `translate(${cx},${cy})` }, attrs));
    g.appendChild(svg("title", {}, label));
    g.appendChild(svg("rect", { x: -width / 2, y: -11, width, height: 22, rx: className.includes("agent") ? 11 : 4 }));
    g.appendChild(svg("text", { x: 0, y: 4, "text-anchor": "middle" }, shorten(label, Math.max(4, Math.floor((width - 8) / 7.3)))));
    return g;
  }

  // ---- threads ------------------------------------------------------------------------------

  function renderThreads() {
    const container = el.threads;
    clearChildren(container);
    const threads = Array.from(state.threads.entries()).reverse(); // newest activity first
    if (threads.length === 0) {
      container.appendChild(text("p", "No threaded events yet.", "empty muted"));
      return;
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, thread] of threads) {
      for (const e of thread.events) {
        lo = Math.min(lo, e.ts);
        hi = Math.max(hi, e.ts);
      }
    }
    const span = Math.max(1, hi - lo);
    const axis = document.createElement("div");
    axis.className = "thread-axis muted";
    axis.append(text("span", fmtTime(lo)), text("span", fmtTime(hi)));
    container.appendChild(axis);
    for (const [id, thread] of threads) {
      const lane = document.createElement("div");
      lane.className = "thread-lane";
      lane.dataset.thread = id;
      lane.setAttribute("data-testid", "thread-lane");
      const label = text("div", shorten(id, 28), "thread-label");
      label.title = `${id}: ${thread.events.length} events`;
      const track = document.createElement("div");
      track.className = "thread-track";
      const first = thread.events[0].ts;
      const line = document.createElement("span");
      line.className = "thread-span";
      line.style.left = `${((first - lo) / span) * 100}%`;
      line.style.width = `${((thread.last - first) / span) * 100}%`;
      track.appendChild(line);
      for (const e of thread.events) {
        const mark = document.createElement("span");
        mark.className = "thread-mark";
        mark.style.left = `${((e.ts - lo) / span) * 100}%`;
        mark.style.setProperty("--hue", String(hue(e.topic)));
        mark.title = `${fmtTime(e.ts)} ${e.topic} ${e.type}${e.source ? ` from ${e.source}` : ""}`;
        track.appendChild(mark);
      }
      lane.append(label, track, text("div", String(thread.events.length), "thread-count muted"));
      container.appendChild(lane);
    }
  }

  // A topic's colour in the lanes: one of twelve hues, by an FNV-1a hash of its name.
  function hue(value) {
    let h = 0x811c9dc5;
    const s = String(value);
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return (h % 12) * 30;
  }

  // ---- rendering ----------------------------------------------------------------------------

  function queueRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    window.requestAnimationFrame(() => {
      state.renderQueued = false;
      if (state.dirty.topology) {
        state.dirty.topology = false;
        renderTopology();
      }
      if (state.dirty.threads) {
        state.dirty.threads = false;
        renderThreads();
      }
    });
  }

  // ---- start --------------------------------------------------------------------------------

  el.filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilter();
  });
  el.pause.addEventListener("click", () => setPaused(!state.paused));
  el.clear.addEventListener("click", clearEvents);
  if (typeof ResizeObserver === "function") {
    let lastWidth = 0;
    new ResizeObserver((entries) => {
      const width = Math.round(entries[0].contentRect.width);
      if (width === lastWidth) return;
      lastWidth = width;
      state.dirty.topology = true;
      queueRender();
    }).observe(el.topology);
  }
  showFilter();
  renderCharts();
  renderTopology();
  connect();
})();
