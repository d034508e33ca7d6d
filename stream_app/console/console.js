/* stream-app console: three pages over the worker's JSON (no library, works offline). */
(function () {
  "use strict";
  const TOKEN_KEY = "stream-app-token";
  const COLORS = ["#2f6fdb", "#d9480f", "#2b8a3e", "#9c36b5", "#e8590c", "#0b7285", "#c2255c", "#5c940d"];
  const CHANGES_SHOWN = 10; // lists in "how the list changed"
  const LIVE_POLL_MS = 2000;
  const LIVE_KEEP = 90; // polls kept for the live charts
  const main = document.getElementById("main");
  let liveTimer = null;
  let generation = 0; // a page drawn for an older route never lands

  class AuthError extends Error {}

  /* --- helpers ---------------------------------------------------------- */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "onclick" || k === "onsubmit") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const fmt = (v, digits = 3) => (v === undefined || v === null || Number.isNaN(v) ? "—"
    : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits }));
  function fmtTime(ts) {
    if (ts === undefined || ts === null) return "—";
    return new Date(ts * 1000).toISOString().slice(0, 16).replace("T", " ");
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined || Number.isNaN(s)) return "—";
    return s < 1 ? `${fmt(s * 1000, 0)} ms` : `${fmt(s, 2)} s`;
  }
  function fmtAgo(s) {
    if (s < 120) return `${Math.round(s)} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${fmt(s / 3600, 1)} h`;
    return `${fmt(s / 86400, 1)} days`;
  }
  const card = (title, ...body) => h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
  const table = (head, rows, attrs) => h("table", attrs || {},
    h("thead", {}, h("tr", {}, head.map((c) => (c instanceof Node ? c : h("th", {}, c))))),
    h("tbody", {}, rows));
  const num = (v, digits) => h("td", { class: "num" }, fmt(v, digits));

  async function api(path) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(`../${path}`, { headers, cache: "no-store" });
    if (response.status === 401) throw new AuthError("this worker needs an API token");
    if (response.status === 404) return null;
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
    return body;
  }

  function show(state, ...nodes) {
    main.replaceChildren(...nodes);
    main.dataset.state = state;
  }

  function tokenForm(message) {
    const input = h("input", { type: "password", id: "token-input", placeholder: "bearer token",
      autocomplete: "off", value: sessionStorage.getItem(TOKEN_KEY) || "" });
    return card("API token",
      h("p", { class: "muted" }, message || "This worker's API needs a bearer token " +
        "(STREAM_APP_API_TOKEN). It stays in this tab (sessionStorage) and is sent with " +
        "every request as Authorization: Bearer …"),
      h("form", { class: "search", onsubmit: (ev) => {
        ev.preventDefault();
        if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
        else sessionStorage.removeItem(TOKEN_KEY);
        route();
      } }, input, h("button", { type: "submit" }, "Use token")));
  }

  function failed(err) {
    if (err instanceof AuthError) show("auth", tokenForm());
    else show("error", card("Something went wrong", h("p", { class: "error" }, String(err.message || err))));
  }

  /* --- user page -------------------------------------------------------- */
  function searchForm(userId) {
    const input = h("input", { type: "text", id: "user-input", placeholder: "user id",
      value: userId || "", "aria-label": "user id" });
    return h("form", { class: "search", id: "user-search", onsubmit: (ev) => {
      ev.preventDefault();
      const id = input.value.trim();
      if (id) location.hash = `#/user/${encodeURIComponent(id)}`;
    } }, input, h("button", { type: "submit" }, "Show user"));
  }

  async function showUser(userId, gen) {
    if (!userId) {
      show("ready", h("h1", {}, "User"), card(null, searchForm(""),
        h("p", { class: "muted" }, "A user's interests over event time, what shaped them, " +
          "their recommendations and how the list changed with each event.")));
      return;
    }
    show("loading", h("h1", {}, `User ${userId}`), card(null, searchForm(userId),
      h("p", { class: "muted" }, "Loading…")));
    const path = `users/${encodeURIComponent(userId)}`;
    const [history, interests, recs] = await Promise.all([
      api(`${path}/history`), api(`${path}/interests`), api(`${path}/recommendations`)]);
    if (gen !== generation) return;
    const entries = (history && history.entries) || [];
    const titles = new Map();
    for (const e of entries) {
      if (e.item) titles.set(e.item.item_id, e.item.label);
      for (const t of e.top) titles.set(t.item_id, t.label);
      for (const i of e.interests) if (i.shaped_by.item_id) titles.set(i.shaped_by.item_id, i.shaped_by.label);
    }
    for (const r of (interests && interests.recent_items) || []) titles.set(r.item_id, r.title);
    const title = (id) => titles.get(id) || id;

    const head = card(null, searchForm(userId), interests ? h("div", { class: "facts", id: "user-facts" },
      h("span", {}, "events applied ", h("b", {}, fmt(interests.events_applied))),
      h("span", {}, "last event ", h("b", {}, fmtTime(interests.last_event_ts))),
      h("span", {}, "interests ", h("b", {}, interests.interests.length)),
      h("span", {}, "items seen ", h("b", {}, fmt(interests.seen_items))),
      recs ? h("span", {}, "model ", h("b", {}, recs.model_version)) : null,
      h("span", {}, "snapshots kept ", h("b", {}, `${entries.length} of ${history ? history.keep : "—"}`)))
      : h("p", { class: "muted", id: "user-facts" }, `No interests for user ${userId} (no event applied, ` +
        "expired or forgotten): recommendations are the trending items."));
    show("ready", h("h1", {}, `User ${userId}`), head,
      timelineCard(entries, history),
      h("div", { class: "two" }, interestsCard(interests), recommendationsCard(recs, title)),
      changesCard(entries));
  }

  function describeEvent(e) {
    const what = e.item ? e.item.label : e.text !== null ? e.text : "";
    return what ? `${e.type} · ${what}` : e.type;
  }

  function interestSeries(entries) {
    const series = [];
    const lastUsed = new Map(COLORS.map((c) => [c, -1]));
    let open = new Map(); // slot -> series
    entries.forEach((e, k) => {
      const next = new Map();
      for (const it of e.interests) {
        let s = open.get(it.slot);
        if (!s || it.opened) {
          // a colour no interest alive has, the one unused longest
          const alive = new Set([...open.values(), ...next.values()].map((o) => o.color));
          const color = COLORS.filter((c) => !alive.has(c))
            .sort((a, b) => lastUsed.get(a) - lastUsed.get(b))[0] || COLORS[0];
          s = { id: series.length, points: [], labels: [], color };
          series.push(s);
        }
        lastUsed.set(s.color, k);
        const label = it.shaped_by.label;
        if (s.labels[s.labels.length - 1] !== label) s.labels.push(label);
        s.points.push({ k, ts: e.ts, y: it.strength, label, e, opened: it.opened });
        next.set(it.slot, s);
      }
      open = next;
    });
    return series;
  }

  function timelineCard(entries, history) {
    if (!entries.length) {
      return card("Interests over event time", h("p", { class: "muted", id: "timeline" },
        history && history.keep === 0 ? "History is off on this worker (STREAM_APP_USER_HISTORY=0)."
          : "No snapshots for this user yet: they are kept after each applied event."));
    }
    const series = interestSeries(entries);
    const box = h("div", { id: "timeline" });
    let byTime = false;
    const draw = () => {
      const x = (p) => (byTime ? p.ts : p.k);
      const chart = window.ConsoleChart.lineChart({
        label: "interest strength over event time",
        series: series.map((s) => ({
          name: s.labels[s.labels.length - 1], color: s.color,
          points: s.points.map((p) => ({ x: x(p), y: p.y, big: p.opened,
            title: `${fmtTime(p.ts)} after ${describeEvent(p.e)}\ninterest ${s.id + 1}, shaped by ` +
              `${p.label}: strength ${fmt(p.y)}${p.opened ? " (opened by this event)" : ""}` })),
        })),
        markers: entries.map((e, k) => ({ x: byTime ? e.ts : k, title: `${fmtTime(e.ts)} ${describeEvent(e)}`,
          color: e.type === "dislike" || e.type === "skip" ? "#b42318" : e.item ? "#667085" : "#2f6fdb" })),
        xTicks: byTime ? timeTicks(entries[0].ts, entries[entries.length - 1].ts)
          : entries.map((e, k) => ({ x: k, label: k && fmtTime(entries[k - 1].ts).slice(0, 10) ===
            fmtTime(e.ts).slice(0, 10) ? "" : fmtTime(e.ts).slice(0, 10) })), // a label per day
        yFormat: (v) => String(+v.toFixed(2)),
      });
      box.replaceChildren(chart);
    };
    const orderButton = h("button", { type: "button", class: "toggle on" }, "one step per event");
    const timeButton = h("button", { type: "button", class: "toggle" }, "event time to scale");
    const pick = (t) => () => {
      byTime = t;
      timeButton.classList.toggle("on", t);
      orderButton.classList.toggle("on", !t);
      draw();
    };
    timeButton.addEventListener("click", pick(true));
    orderButton.addEventListener("click", pick(false));
    draw();
    const legend = h("div", { class: "legend", id: "timeline-legend" }, series.map((s) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = s.color;
      const first = s.points[0];
      return h("span", { class: "legend-item" }, swatch,
        h("b", {}, `interest ${s.id + 1}`), ` shaped by ${s.labels.join(" → ")}`,
        h("span", { class: "muted" }, ` (from ${fmtTime(first.ts)}, strength now ${fmt(s.points[s.points.length - 1].y)})`));
    }));
    return card(null, h("div", { class: "chart-head" },
      h("h2", {}, "Interests over event time"), h("div", {}, orderButton, " ", timeButton)),
    h("p", { class: "muted" }, `Strength of each interest after each of the last ${entries.length} events ` +
      "(big dot: the event opened it; marks below: the events, hover for details)."),
    box, legend);
  }

  function timeTicks(t0, t1) {
    const ticks = window.ConsoleChart.niceTicks(t0, t1 > t0 ? t1 : t0 + 1, 6);
    const span = t1 - t0;
    return ticks.map((t) => ({ x: t, label: span > 3 * 86400 ? fmtTime(t).slice(0, 10)
      : span > 86400 ? fmtTime(t).slice(5, 16) : fmtTime(t).slice(11, 16) }));
  }

  function interestsCard(interests) {
    if (!interests) return card("Interests now", h("p", { class: "muted" }, "none"));
    const top = Math.max(1e-9, ...interests.interests.map((i) => i.strength));
    const rows = interests.interests.map((i, n) => {
      const bar = h("span", { class: "bar" });
      bar.style.width = `${Math.max(2, (60 * i.strength) / top)}px`;
      const shaped = typeof i.shaped_by === "string"
        ? (i.shaped_by.length > 5 ? `you said "${i.shaped_by.slice(5, 65)}"` : "what you wrote")
        : i.shaped_by.title;
      return h("tr", {}, h("td", {}, n + 1), h("td", { class: "num" }, bar, fmt(i.strength)),
        h("td", {}, i.label.join(", ")), h("td", {}, shaped),
        h("td", { class: "num" }, fmtAgo(i.age_s)));
    });
    return card("Interests now", table(["#", h("th", { class: "num" }, "strength"), "near",
      "shaped by", h("th", { class: "num" }, "age")], rows, { id: "interests-table" }));
  }

  function recommendationsCard(recs, title) {
    if (!recs) return card("Recommendations now", h("p", { class: "muted" }, "none"));
    const rows = recs.items.map((r, n) => h("tr", {}, h("td", {}, n + 1),
      h("td", {}, title(r.item_id), h("div", { class: "muted" }, r.item_id)),
      num(r.score, 4), h("td", {}, r.reason)));
    return card("Recommendations now", h("p", { class: "muted" },
      `Ranked fresh as of the user's last event by ${recs.model_version}.`),
    table(["#", "item", h("th", { class: "num" }, "score"), "why"], rows, { id: "recs-table" }));
  }

  function changesCard(entries) {
    if (!entries.length) return card("How the list changed", h("p", { class: "muted" }, "No lists kept yet."));
    const rows = [];
    const first = Math.max(0, entries.length - CHANGES_SHOWN);
    for (let k = entries.length - 1; k >= first; k--) {
      const e = entries[k];
      const prev = k > 0 ? entries[k - 1] : null;
      const before = new Map(prev ? prev.top.map((t, n) => [t.item_id, n]) : []);
      const now = new Set(e.top.map((t) => t.item_id));
      const chips = e.top.map((t, n) => {
        const was = before.get(t.item_id);
        const kind = prev && was !== undefined ? "kept" : "new";
        const chip = h("span", { class: `chip ${kind}`, title: `#${n + 1} score ${fmt(t.score, 4)} (${kind})` },
          kind === "new" ? "+ " : "", t.label);
        if (kind === "kept" && was !== n) chip.appendChild(h("span", { class: "move" }, was > n ? `↑${was - n}` : `↓${n - was}`));
        return chip;
      });
      const dropped = prev ? prev.top.filter((t) => !now.has(t.item_id))
        .map((t) => h("span", { class: "chip dropped", title: "dropped" }, t.label)) : [];
      const counts = prev ? `${e.top.length - [...now].filter((i) => before.has(i)).length} new, ${dropped.length} dropped`
        : `${e.top.length} new`;
      rows.push(h("tr", {}, h("td", {}, fmtTime(e.ts)), h("td", {}, describeEvent(e)),
        h("td", {}, h("div", {}, chips), dropped.length ? h("div", {}, dropped) : null),
        h("td", { class: "muted" }, counts)));
    }
    return card("How the list changed", h("p", { class: "muted" },
      "The list each of the last events got, newest first: ",
      h("span", { class: "chip new" }, "+ new"), h("span", { class: "chip" }, "kept ↑↓ moved"),
      h("span", { class: "chip dropped" }, "dropped")),
    table(["event time", "event", "list (top first)", "change"], rows, { id: "changes-table" }));
  }

  /* --- models page ------------------------------------------------------ */
  async function showModels(gen) {
    show("loading", h("h1", {}, "Models"), h("p", { class: "muted" }, "Loading…"));
    const m = await api("models");
    if (gen !== generation) return;
    const summary = card(null, h("div", { class: "facts", id: "models-facts" },
      h("span", {}, "in use (registry) ", h("b", {}, m.current)),
      h("span", {}, "this worker ranks with ", h("b", {}, m.serving)),
      h("span", {}, "plain encoder ", h("b", {}, m.base_version)),
      h("span", {}, "stored versions ", h("b", {}, m.versions.length))));
    const metric = (held, which, key) => (held && held[which] ? held[which][key] : undefined);
    const rows = m.versions.slice().reverse().map((v) => h("tr", { class: v.current ? "current" : "" },
      h("td", {}, h("code", {}, v.version), v.current ? h("span", { class: "badge ok" }, " in use") : null),
      h("td", {}, fmtTime(v.created_at)),
      h("td", {}, v.parent ? h("code", {}, v.parent) : "—"),
      num(v.examples ? v.examples.train : undefined, 0), num(v.examples ? v.examples.heldout : undefined, 0),
      num(metric(v.heldout, "candidate", "ndcg@10"), 4), num(metric(v.heldout, "current", "ndcg@10"), 4),
      num(metric(v.heldout, "base", "ndcg@10"), 4), num(metric(v.heldout, "candidate", "hr@10"), 4),
      h("td", {}, v.promoted ? h("span", { class: "badge ok" }, "promoted") : h("span", { class: "badge" }, "kept out"),
        v.reverted_to ? h("span", { class: "badge warn" }, " reverted") : null,
        (v.promotions || []).length > 1 ? h("span", { class: "muted" }, ` ×${v.promotions.length}`) : null),
      h("td", { class: "muted" }, v.reason || "")));
    const versions = m.versions.length
      ? table(["version", "created", "trained from", h("th", { class: "num" }, "train ex."),
        h("th", { class: "num" }, "held-out ex."), h("th", { class: "num" }, "NDCG@10 cand."),
        h("th", { class: "num" }, "NDCG@10 prev."), h("th", { class: "num" }, "NDCG@10 encoder"),
        h("th", { class: "num" }, "HR@10 cand."), "outcome", "why"], rows, { id: "versions-table" })
      : h("p", { class: "muted", id: "versions-table" }, "No trained versions yet: the plain encoder " +
        "ranks. Versions appear once the trainer (stream-app trainer) has run rounds.");
    const scored = m.versions.filter((v) => v.heldout && v.heldout.candidate);
    let chart = null;
    if (scored.length) {
      const line = (name, color, which, dash) => ({ name, color, dash,
        points: scored.map((v, k) => ({ x: k, y: metric(v.heldout, which, "ndcg@10") || 0, big: v.promoted,
          title: `${v.version}: ${name} NDCG@10 ${fmt(metric(v.heldout, which, "ndcg@10"), 4)}` })) });
      chart = h("div", { id: "versions-chart" }, window.ConsoleChart.lineChart({
        label: "held-out NDCG@10 per version", height: 220,
        series: [line("candidate", COLORS[0], "candidate"), line("version in use before", COLORS[1], "current", "5 4"),
          line("plain encoder", "#667085", "base", "2 4")],
        xTicks: scored.map((v, k) => ({ x: k, label: v.version.split("+").pop() })),
        yFormat: (v) => v.toFixed(3) }),
      h("div", { class: "legend" }, [["candidate (big dot: promoted)", COLORS[0]], ["version in use before", COLORS[1]],
        ["plain encoder", "#667085"]].map(([name, color]) => {
        const sw = h("span", { class: "swatch" });
        sw.style.background = color;
        return h("span", {}, sw, name);
      })));
    }
    const changes = m.changes.length
      ? table(["when", "change", "version", "why"], m.changes.slice().reverse().map((c) => h("tr", {},
        h("td", {}, c.at ? fmtTime(c.at) : "—"),
        h("td", {}, h("span", { class: `badge ${c.kind === "promotion" ? "ok" : "warn"}` }, c.kind)),
        h("td", {}, h("code", {}, c.version)), h("td", { class: "muted" }, c.reason || ""))), { id: "changes-list" })
      : h("p", { class: "muted", id: "changes-list" }, "No promotion yet: the plain encoder has always been in use.");
    show("ready", h("h1", {}, "Models"), summary,
      card("Held-out NDCG@10 by version", chart || h("p", { class: "muted" }, "No scored versions.")),
      card("Versions (newest first)", versions),
      card("Promotions, reverts and rollbacks (newest first)", changes));
  }

  /* --- live page -------------------------------------------------------- */
  function quantile(buckets, q) {
    // buckets: [[upper bound, cumulative count]] ascending; linear within a bucket
    const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (!(total > 0)) return null;
    const want = q * total;
    let lower = 0, below = 0;
    for (const [le, cum] of buckets) {
      if (cum >= want) return lower + (le - lower) * ((want - below) / Math.max(cum - below, 1e-9));
      lower = le; below = cum;
    }
    return lower;
  }
  const total = (rows, pick) => rows.filter(pick || (() => true)).reduce((a, r) => a + r.count, 0);

  async function showLive(gen) {
    const samples = [];
    show("loading", h("h1", {}, "Live"), h("p", { class: "muted" }, "Loading…"));
    const poll = async () => {
      let d;
      try {
        d = await api("live");
      } catch (err) {
        if (gen === generation) failed(err);
        return;
      }
      if (gen !== generation) return;
      samples.push(d);
      if (samples.length > LIVE_KEEP) samples.shift();
      renderLive(samples);
      liveTimer = setTimeout(poll, LIVE_POLL_MS);
    };
    await poll();
  }

  function rates(a, b) {
    const dt = Math.max(b.ts - a.ts, 1e-3);
    const rec = (d) => total(d.records);
    const deltas = b.latency.buckets.map(([le, c], n) => [le, c - (a.latency.buckets[n] || [le, 0])[1]]);
    return {
      t: b.ts, records: (rec(b) - rec(a)) / dt, recs: (b.recommendations - a.recommendations) / dt,
      p50: quantile(deltas, 0.5), p95: quantile(deltas, 0.95), p99: quantile(deltas, 0.99),
    };
  }

  function stat(id, label, value, sub) {
    return h("div", { class: "stat", id }, h("div", { class: "label" }, label),
      h("div", { class: "value" }, value), h("div", { class: "sub" }, sub || ""));
  }

  function renderLive(samples) {
    const d = samples[samples.length - 1];
    const series = [];
    for (let n = 1; n < samples.length; n++) series.push(rates(samples[n - 1], samples[n]));
    const now = series.length ? series[series.length - 1] : null;
    // latency over the window kept (all polls), else since start
    const first = samples[0];
    const windowed = samples.length > 1 && d.latency.count > first.latency.count ? rates(first, d) : null;
    const all = { p50: quantile(d.latency.buckets, 0.5), p95: quantile(d.latency.buckets, 0.95) };
    const lat = windowed || all;
    const lagTotal = Object.values(d.lag).reduce((a, b) => a + b, 0);
    const dead = total(d.dead_letters);
    const retries = total(d.retries);
    const recordsTotal = total(d.records);
    const cards = h("div", { class: "cards" },
      stat("live-throughput", "throughput", now ? `${fmt(now.records, 1)} /s` : "…",
        `records in, last ${LIVE_POLL_MS / 1000} s · ${fmt(recordsTotal, 0)} since start`),
      stat("live-recs", "recommendations", now ? `${fmt(now.recs, 1)} /s` : "…",
        `${fmt(d.recommendations, 0)} emitted since start`),
      stat("live-latency", "event → recommendation", fmtSeconds(lat.p50),
        `p50; p95 ${fmtSeconds(lat.p95)} (${windowed ? "last " + fmtAgo(d.ts - first.ts) : "since start"}, ` +
        `${fmt(d.latency.count, 0)} events)`),
      stat("live-lag", "consumer lag", fmt(lagTotal, 0), `records behind, ${Object.keys(d.lag).length} partitions`),
      stat("live-dead", "dead letters", fmt(dead, 0), "since start"),
      stat("live-retries", "retries", fmt(retries, 0),
        Object.keys(d.retrying || {}).length ? `retrying now: ${Object.keys(d.retrying).join(", ")}` : "none retrying now"),
      stat("live-model", "model", h("code", {}, d.model_version || "starting"),
        `${fmt(d.catalog_items, 0)} items · up ${fmtAgo(d.uptime_s)} · ${d.ready ? "ready" : "starting"}`));
    const spark = (label, pick, fmtY, none) => {
      const pts = series.map((r) => ({ x: r.t, y: pick(r) })).filter((p) => p.y !== null && p.y !== undefined);
      if (!pts.length) return h("p", { class: "muted" }, series.length > 2 && none ? none : "Collecting…");
      return window.ConsoleChart.lineChart({ label, width: 480, height: 170, series: [{ name: label, color: COLORS[0], points: pts }],
        xTicks: pts.filter((_, n) => n % 10 === 0).map((p) => ({ x: p.x, label: new Date(p.x * 1000).toISOString().slice(11, 19) })),
        yFormat: fmtY });
    };
    const byLabels = (rows, keys) => rows.length
      ? table([...keys, h("th", { class: "num" }, "count")],
        rows.slice().sort((a, b) => b.count - a.count).map((r) => h("tr", {}, keys.map((k) => h("td", {}, r[k])), num(r.count, 0))))
      : h("p", { class: "muted" }, "none");
    const lagRows = Object.entries(d.lag).sort().map(([k, v]) => ({ partition: k, count: v }));
    show("ready", h("h1", {}, "Live"),
      h("p", { class: "muted" }, `This worker, polled every ${LIVE_POLL_MS / 1000} s; rates from successive polls.`),
      cards,
      h("div", { class: "two" },
        card("Records in /s", spark("records per second", (r) => r.records, (v) => v.toFixed(1))),
        card("Event → recommendation p95 (s)", spark("p95 latency", (r) => r.p95, (v) => v.toFixed(2),
          "No events in this window yet."))),
      h("div", { class: "two" },
        card("Dead letters by reason", h("div", { id: "dead-letters" }, byLabels(d.dead_letters, ["topic", "reason"]))),
        card("Retries by cause", h("div", { id: "retries" }, byLabels(d.retries, ["topic", "cause"])))),
      h("div", { class: "two" },
        card("Consumer lag", h("div", { id: "lag" }, byLabels(lagRows, ["partition"]))),
        card("Records by topic", h("div", { id: "records" }, byLabels(d.records, ["topic", "outcome"])))));
    main.dataset.polls = String(samples.length);
  }

  /* --- routing ---------------------------------------------------------- */
  function route() {
    generation += 1;
    const gen = generation;
    if (liveTimer) clearTimeout(liveTimer);
    liveTimer = null;
    const parts = (location.hash || "#/user").slice(2).split("/");
    const page = ["user", "models", "live"].includes(parts[0]) ? parts[0] : "user";
    for (const name of ["user", "models", "live"]) {
      document.getElementById(`nav-${name}`).classList.toggle("active", name === page);
    }
    document.body.dataset.page = page;
    const run = page === "models" ? showModels(gen) : page === "live" ? showLive(gen)
      : showUser(decodeURIComponent(parts.slice(1).join("/")), gen);
    run.catch((err) => { if (gen === generation) failed(err); });
  }

  document.getElementById("token-button").addEventListener("click", () => {
    generation += 1;
    if (liveTimer) clearTimeout(liveTimer);
    show("auth", tokenForm("Set or clear the bearer token this tab sends (kept in sessionStorage)."));
  });
  window.addEventListener("hashchange", route);
  route();
})();
