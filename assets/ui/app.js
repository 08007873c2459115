// llm-rotator dashboard. Served from the binary under a strict Content-Security-Policy:
// no inline code, no third-party library, every text set with textContent. It polls
// /ui/api/state at most once a second with If-None-Match (an unchanged state is a
// bodiless 304), counts cooldowns down locally, and draws the charts as inline SVG.
"use strict";

(function () {
  const TOKEN_KEY = "llm-rotator-token";
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = 1000;
  const SERIES_MS = 60000;
  const COLORS = 8;

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let stateTag = null;
  let seriesTag = null;
  let state = null;
  let series = null;
  let hours = 24;
  let seriesAt = 0;
  let asking = false;

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, String(attrs[k]));
    return e;
  }

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  function setLive(ok, why) {
    const live = $("live");
    live.className = "live " + (ok ? "on" : "off");
    live.textContent = ok ? "live" : why || "not connected";
  }

  function askToken(message) {
    asking = true;
    $("main").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    asking = false;
    stateTag = null;
    seriesTag = null;
    poll();
  });

  // --- polling -----------------------------------------------------------------------

  async function poll() {
    if (asking) return;
    try {
      const h = stateTag ? { "If-None-Match": stateTag } : {};
      const r = await fetch("/ui/api/state", { cache: "no-store", headers: authHeaders(h) });
      if (r.status === 401) {
        askToken(token ? "That token was not accepted." : "");
        return;
      }
      if (r.status === 304) {
        setLive(true);
      } else if (r.ok) {
        stateTag = r.headers.get("ETag");
        state = await r.json();
        $("login").hidden = true;
        $("main").hidden = false;
        render();
        setLive(true);
        // New requests may have landed in the current hour.
        loadSeries();
      } else {
        setLive(false, "HTTP " + r.status);
      }
    } catch (e) {
      setLive(false, "agent not reachable");
    }
    if (Date.now() - seriesAt > SERIES_MS) loadSeries();
  }

  async function loadSeries() {
    seriesAt = Date.now();
    try {
      const h = seriesTag ? { "If-None-Match": seriesTag } : {};
      const r = await fetch("/ui/api/series?hours=" + hours, { cache: "no-store", headers: authHeaders(h) });
      if (r.ok) {
        seriesTag = r.headers.get("ETag");
        series = await r.json();
        renderCharts();
      }
    } catch (e) {
      // The state poll reports the connection.
    }
  }

  function loop() {
    poll().finally(() => setTimeout(loop, POLL_MS));
  }

  // --- providers -----------------------------------------------------------------------

  function colorOf(name) {
    const names = (state ? state.providers : []).map((p) => p.name);
    const i = names.indexOf(name);
    return "c" + ((i < 0 ? names.length : i) % COLORS);
  }

  function countdown(untilMs) {
    const left = Math.max(0, Math.ceil((untilMs - Date.now()) / 1000));
    const h = Math.floor(left / 3600);
    const m = Math.floor((left % 3600) / 60);
    const s = String(left % 60).padStart(2, "0");
    return h > 0 ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
  }

  function stateWords(p) {
    switch (p.state) {
      case "ready": return p.last_error && !p.last_error.startsWith("HTTP 429") ? "failing" : "ready";
      case "cooling_down": return "cooling down";
      case "disabled": return "off";
      case "no_key": return "no key";
      case "auth_failed": return "key rejected";
      case "model_retired": return "model retired";
      default: return p.state;
    }
  }

  async function toggle(name, on, box) {
    box.disabled = true;
    try {
      const r = await fetch("/providers/" + encodeURIComponent(name) + (on ? "/enable" : "/disable"), {
        method: "POST", cache: "no-store", headers: authHeaders(),
      });
      if (r.status === 401) askToken("That token was not accepted.");
      else if (!r.ok) setLive(false, "toggle failed: HTTP " + r.status);
    } catch (e) {
      setLive(false, "agent not reachable");
    }
    box.disabled = false;
    poll();
  }

  function renderProviders() {
    const body = $("providers").tBodies[0];
    body.replaceChildren();
    for (const p of state.providers) {
      const tr = el("tr");
      tr.dataset.provider = p.name;
      const on = el("td");
      const box = el("input");
      box.type = "checkbox";
      box.checked = p.enabled;
      box.className = "toggle";
      box.title = p.enabled ? "Turn " + p.name + " off" : "Turn " + p.name + " on";
      box.addEventListener("change", () => toggle(p.name, box.checked, box));
      on.append(box);
      const name = el("td");
      name.append(el("span", "swatch " + colorOf(p.name)), document.createTextNode(p.name));
      const st = el("td", "state " + (stateWords(p) === "failing" ? "failing" : p.state), stateWords(p));
      if (p.state === "cooling_down" && p.rate_limited_until) {
        const cd = el("span", "countdown", "");
        cd.dataset.until = String(Date.parse(p.rate_limited_until));
        cd.textContent = " " + countdown(Number(cd.dataset.until));
        st.append(cd);
        if (p.cooldown_reason) st.title = p.cooldown_reason;
      }
      const err = el("td", "err", p.retired || p.last_error || "");
      tr.append(
        on, name, st,
        el("td", "num today", p.request_count),
        el("td", "num", p.total_requests),
        el("td", "num", p.total_tokens_used),
        el("td", "", p.model),
        err,
      );
      body.append(tr);
    }
    $("waiting").textContent = state.waiting > 0 ? state.waiting + " waiting for a cooldown" : "";
  }

  function tick() {
    for (const cd of document.querySelectorAll(".countdown")) {
      cd.textContent = " " + countdown(Number(cd.dataset.until));
    }
  }

  function renderAlerts() {
    const box = $("alerts");
    box.replaceChildren();
    const add = (text, cls) => box.append(el("div", "alert " + (cls || ""), text));
    if (state.config && state.config.last_error) {
      add("Config error, the last good config stays in use: " + state.config.last_error);
    }
    if (state.state_error) add("State not saved: " + state.state_error);
    if (state.key_store) add("Keys: " + state.key_store, "note");
    for (const c of state.catalog || []) {
      if (c.error) add("Catalog of " + c.provider + ": " + c.error, "note");
    }
  }

  // --- last requests -------------------------------------------------------------------

  function renderRecent() {
    const body = $("recent").tBodies[0];
    body.replaceChildren();
    const list = state.recent || [];
    $("recent-empty").hidden = list.length > 0;
    for (const r of list) {
      const tr = el("tr");
      const t = new Date(r.at);
      const model = r.answered_by && r.answered_by !== r.model ? r.model + " → " + r.answered_by : r.model;
      tr.append(
        el("td", "", t.toLocaleTimeString()),
        el("td", "", r.route + (r.stream ? " (stream)" : "")),
        el("td", "", model),
        el("td", "", (r.providers || []).join(" → ") || "none"),
        el("td", "num " + (r.status < 400 ? "status-ok" : "status-bad"), r.status),
        el("td", "num", r.latency_ms + " ms"),
        el("td", "num", r.tokens === null || r.tokens === undefined ? "" : r.tokens),
      );
      body.append(tr);
    }
  }

  // --- catalog -------------------------------------------------------------------------

  function renderCatalog() {
    const box = $("catalog");
    box.replaceChildren();
    for (const c of state.catalog || []) {
      const div = el("div", "catalog-provider");
      const head = el("h3", "", c.provider + " ");
      if (c.catalog) {
        head.append(el("span", "muted", c.catalog.models.length + " models, read " +
          new Date(c.catalog.fetched_at).toLocaleString()));
      } else {
        head.append(el("span", "muted", "catalog not read yet"));
      }
      div.append(head);
      for (const m of c.configured || []) {
        let cls = "";
        let note = "";
        if (m.retired) { cls = "retired"; note = " (retired)"; }
        else if (m.in_use) { cls = "in_use"; note = " (in use)"; }
        else if (m.offered === false) { cls = "unlisted"; note = " (not listed)"; }
        const b = el("span", "badge " + cls, m.model + note);
        if (m.retired) b.title = m.retired;
        div.append(b);
      }
      if (c.catalog && c.catalog.models.length) {
        const d = el("details");
        d.append(el("summary", "", "all models"), el("div", "", c.catalog.models.join(", ")));
        div.append(d);
      }
      box.append(div);
    }
  }

  // --- charts --------------------------------------------------------------------------

  const CHARTS = [
    { key: "requests", title: "Requests", sum: true },
    { key: "tokens", title: "Tokens", sum: true },
    { key: "rate_limited", title: "429 answers", sum: true },
    { key: "latency_ms", title: "Latency (ms, mean)", sum: false },
  ];

  // The 30-day view draws one point per day.
  function grouped(s, key, per) {
    const out = [];
    const values = s[key];
    for (let i = 0; i < values.length; i += per) {
      const part = values.slice(i, i + per);
      if (key === "latency_ms") {
        let total = 0;
        let weight = 0;
        part.forEach((v, j) => {
          if (v !== null && v !== undefined) {
            const w = Math.max(1, s.requests[i + j] || 0);
            total += v * w;
            weight += w;
          }
        });
        out.push(weight ? Math.round(total / weight) : null);
      } else {
        out.push(part.reduce((a, v) => a + (v || 0), 0));
      }
    }
    return out;
  }

  function shortNumber(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v));
  }

  function chart(def, per) {
    const W = 600, H = 170, L = 44, R = 8, T = 10, B = 22;
    const wrap = el("div", "chart");
    wrap.dataset.chart = def.key;
    wrap.append(el("h3", "", def.title));
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": def.title });
    const lines = series.providers.map((p) => ({ name: p.name, values: grouped(p, def.key, per) }));
    const n = Math.max(1, Math.ceil(series.hours / per));
    let max = 0;
    for (const l of lines) for (const v of l.values) if (v !== null && v > max) max = v;
    const top = max > 0 ? max : 1;
    const x = (i) => L + (n === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - v / top);
    root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    const yMax = svg("text", { x: L - 6, y: T + 4, "text-anchor": "end" });
    yMax.textContent = shortNumber(top);
    const yZero = svg("text", { x: L - 6, y: H - B, "text-anchor": "end" });
    yZero.textContent = "0";
    root.append(yMax, yZero);
    const label = (i) => {
      const t = new Date((series.start + i * per * series.step_secs) * 1000);
      return per > 1 ? t.toLocaleDateString([], { month: "short", day: "numeric" })
        : t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    };
    for (const [i, anchor] of [[0, "start"], [n - 1, "end"]]) {
      const tx = svg("text", { x: x(i), y: H - 6, "text-anchor": anchor });
      tx.textContent = label(i);
      root.append(tx);
    }
    for (const l of lines) {
      const cls = colorOf(l.name);
      let d = "";
      let pen = false;
      l.values.forEach((v, i) => {
        // An hour without an answer has no latency: the line breaks there.
        if (v === null) { pen = false; return; }
        d += (pen ? " L" : " M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
      });
      if (d) root.append(svg("path", { class: "series " + cls, d: d.trim(), "data-provider": l.name }));
      l.values.forEach((v, i) => {
        if (v === null || v === 0) return;
        const dot = svg("circle", { class: "pt " + cls, cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3 });
        const tip = svg("title");
        tip.textContent = l.name + ": " + v + " — " + label(i);
        dot.append(tip);
        root.append(dot);
      });
    }
    wrap.append(root);
    return wrap;
  }

  function renderCharts() {
    if (!series || !state) return;
    const per = series.hours > 48 ? 24 : 1;
    const box = $("charts");
    box.replaceChildren(...CHARTS.map((def) => chart(def, per)));
    const legend = $("legend");
    legend.replaceChildren();
    for (const p of series.providers) {
      const item = el("span");
      item.append(el("span", "swatch " + colorOf(p.name)), document.createTextNode(p.name));
      legend.append(item);
    }
    const note = $("chart-note");
    if (!series.providers.length) {
      note.textContent = "No requests in this period yet.";
    } else if (series.since !== null && series.since > series.start) {
      note.textContent = "Counted since " + new Date(series.since * 1000).toLocaleString() + ".";
    } else {
      note.textContent = "";
    }
    // The 30-day view only once there is more than a day to show.
    const older = series.since !== null && Date.now() / 1000 - series.since > 24 * 3600;
    $("range-720").disabled = !older && hours !== 720;
  }

  function setRange(h) {
    hours = h;
    seriesTag = null;
    $("range-24").classList.toggle("active", h === 24);
    $("range-720").classList.toggle("active", h === 720);
    loadSeries();
  }
  $("range-24").addEventListener("click", () => setRange(24));
  $("range-720").addEventListener("click", () => setRange(720));

  // --- all -----------------------------------------------------------------------------

  function render() {
    $("endpoint").textContent = state.endpoint;
    $("version").textContent = "v" + state.version;
    renderAlerts();
    renderProviders();
    renderRecent();
    renderCatalog();
    renderCharts();
  }

  setInterval(tick, 1000);
  loop();
})();
