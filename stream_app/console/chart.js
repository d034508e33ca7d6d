/* stream-app console: a small SVG line chart (no library). Apache-2.0, part of stream-app. */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, parent, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  /* About n round numbers covering [min, max]. */
  function niceTicks(min, max, n) {
    if (!(max > min)) return [min];
    const raw = (max - min) / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      ticks.push(Math.round(v / step) * step);
    }
    return ticks;
  }

  /*
   * opts: {series: [{name, color, points: [{x, y, title}]}], width, height, label,
   *        xTicks: [{x, label}] (else numbers), yFormat, xFormat, markers: [{x, title}],
   *        yMin (default 0)}
   */
  function lineChart(opts) {
    const W = opts.width || 760;
    const H = opts.height || 260;
    const m = { l: 52, r: 14, t: 10, b: opts.markers ? 46 : 30 };
    const svg = el("svg", {
      viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": opts.label || "chart", preserveAspectRatio: "xMidYMid meet",
    });
    const points = opts.series.flatMap((s) => s.points);
    const xs = points.map((p) => p.x).concat((opts.markers || []).map((p) => p.x));
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (!isFinite(x0)) { x0 = 0; x1 = 1; }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    const pad = (x1 - x0) * 0.02;
    x0 -= pad; x1 += pad;
    let y0 = opts.yMin !== undefined ? opts.yMin : 0;
    let y1 = Math.max(y0, ...points.map((p) => p.y));
    y1 = y1 > y0 ? y1 + (y1 - y0) * 0.08 : y0 + 1; // all zero: an axis to 1
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    const yFmt = opts.yFormat || ((v) => String(+v.toFixed(3)));
    const xFmt = opts.xFormat || ((v) => String(+v.toFixed(2)));

    const grid = el("g", { class: "grid" }, svg);
    for (const v of niceTicks(y0, y1, 4)) {
      el("line", { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }, grid);
      el("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end", class: "tick" }, grid, yFmt(v));
    }
    const xTicks = opts.xTicks || niceTicks(x0, x1, 6).map((v) => ({ x: v, label: xFmt(v) }));
    let lastRight = -Infinity;
    for (const t of xTicks) {
      const px = X(t.x);
      if (px < m.l - 1 || px > W - m.r + 1) continue;
      el("line", { x1: px, x2: px, y1: m.t, y2: H - m.b, class: "vgrid" }, grid);
      const width = String(t.label).length * 6.2;
      if (px - width / 2 > lastRight + 4) {  // labels never overlap
        el("text", { x: px, y: H - m.b + 14, "text-anchor": "middle", class: "tick" }, grid,
          t.label);
        lastRight = px + width / 2;
      }
    }
    el("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }, svg);
    el("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }, svg);

    for (const mk of opts.markers || []) {
      const g = el("g", { class: "marker" }, svg);
      el("rect", { x: X(mk.x) - 2, y: H - 20, width: 4, height: 12, fill: mk.color || "#888" }, g);
      el("title", {}, g, mk.title);
    }
    opts.series.forEach((s, n) => {
      const g = el("g", { class: "series", "data-series": n }, svg);
      if (s.points.length > 1) {
        const d = s.points.map((p, k) => `${k ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`);
        el("path", { d: d.join(""), stroke: s.color, fill: "none", "stroke-width": 2,
          "stroke-dasharray": s.dash || null }, g);
      }
      for (const p of s.points) {
        const c = el("circle", { cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: p.big ? 4.5 : 3,
          fill: p.hollow ? "#fff" : s.color, stroke: s.color, "stroke-width": 1.5 }, g);
        el("title", {}, c, p.title || `${s.name}: ${yFmt(p.y)}`);
      }
    });
    return svg;
  }

  window.ConsoleChart = { lineChart, niceTicks };
})();
