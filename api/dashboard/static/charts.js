// Thin wrappers over the vendored Chart.js (loaded as a classic script: window.Chart).
// Charts draw label names on a canvas, which never interprets markup.

import { h } from "./dom.js";

export const PALETTE = [
  "#2563eb", "#dc2626", "#059669", "#9333ea", "#ea580c",
  "#0891b2", "#db2777", "#65a30d", "#4f46e5", "#b45309",
];

export function colorAt(i) {
  return PALETTE[i % PALETTE.length];
}

let defaultsSet = false;

function chartLib() {
  const Chart = window.Chart;
  if (!Chart) throw new Error("the chart library did not load");
  if (!defaultsSet) {
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.font.size = 12;
    Chart.defaults.color = "#475569";
    Chart.defaults.borderColor = "#e2e8f0";
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.plugins.legend.labels.usePointStyle = true;
    Chart.defaults.plugins.legend.labels.pointStyle = "circle";
    Chart.defaults.plugins.legend.labels.boxWidth = 8;
    Chart.defaults.plugins.legend.labels.boxHeight = 8;
    defaultsSet = true;
  }
  return Chart;
}

/** A titled chart box with a canvas; `data-points` on the box counts plotted points (for tests). */
export function chartBox(title, { name, tall = false } = {}) {
  const canvas = h("canvas", { role: "img", "aria-label": title });
  const box = h("figure", { class: "chart" + (tall ? " chart-tall" : ""), dataset: { chart: name || title, points: "0" } },
    h("figcaption", { class: "chart-title" }, title),
    h("div", { class: "chart-canvas" }, canvas));
  return { box, canvas };
}

/**
 * A line chart over epochs. `series`: [{label, color, dash}]. Returns an object whose
 * `set(i, points)` / `add(i, point)` change series i ({x, y} points) and redraw.
 */
export function epochChart({ box, canvas }, series, { yTitle, yMin, yMax, epochs } = {}) {
  const Chart = chartLib();
  const chart = new Chart(canvas, {
    type: "line",
    data: {
      datasets: series.map((s) => ({
        label: s.label,
        data: [],
        borderColor: s.color,
        backgroundColor: s.color,
        borderDash: s.dash ? [6, 4] : [],
        borderWidth: 2,
        pointRadius: 3,
        pointHoverRadius: 5,
        tension: 0.25,
        spanGaps: true,
        clip: 6, // points at y = 1.0 are drawn whole
      })),
    },
    options: {
      interaction: { mode: "nearest", axis: "x", intersect: false },
      scales: {
        x: { type: "linear", title: { display: true, text: "epoch" }, ticks: { precision: 0 },
          min: 1, suggestedMax: Math.max(2, epochs || 0) },
        y: { title: { display: !!yTitle, text: yTitle }, min: yMin, max: yMax, grace: "5%" },
      },
      plugins: {
        legend: { position: "bottom", display: series.length > 1 },
        tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${Number(ctx.parsed.y).toFixed(4)}` } },
      },
    },
  });
  function refresh() {
    let n = 0;
    for (const d of chart.data.datasets) n += d.data.filter((p) => p.y !== null && p.y !== undefined).length;
    box.dataset.points = String(n);
    chart.update("none");
  }
  return {
    chart,
    set(i, points) {
      chart.data.datasets[i].data = points.slice().sort((a, b) => a.x - b.x);
      refresh();
    },
    add(i, point) {
      const data = chart.data.datasets[i].data;
      const at = data.findIndex((p) => p.x === point.x);
      if (at >= 0) data[at] = point;
      else data.push(point);
      data.sort((a, b) => a.x - b.x);
      refresh();
    },
    destroy() {
      chart.destroy();
    },
  };
}

/** A horizontal bar chart of `values` (one bar per label, in the order given). */
export function barChart({ box, canvas }, labels, values, { color = PALETTE[0], xTitle } = {}) {
  const Chart = chartLib();
  const chart = new Chart(canvas, {
    type: "bar",
    data: { labels, datasets: [{ label: xTitle || "", data: values, backgroundColor: color, borderRadius: 3, maxBarThickness: 22 }] },
    options: {
      indexAxis: "y",
      scales: {
        x: { beginAtZero: true, title: { display: !!xTitle, text: xTitle }, ticks: { precision: 0 } },
        y: { ticks: { autoSkip: false } },
      },
      plugins: { legend: { display: false } },
    },
  });
  box.dataset.points = String(values.length);
  return chart;
}

/**
 * An x/y chart on [0, 1] x [0, 1] (PR curves, reliability diagrams). `series`: [{label, color,
 * points: [{x, y}], line, dash, radius, pointStyle}]. `data-points` counts the first series'
 * points. Returns the Chart; `chart.data.datasets[i].data = ...; chart.update("none")` moves one.
 */
export function unitChart({ box, canvas }, series, { xTitle, yTitle, tooltip } = {}) {
  const Chart = chartLib();
  const chart = new Chart(canvas, {
    type: "scatter",
    data: {
      datasets: series.map((s) => ({
        label: s.label,
        data: s.points,
        showLine: !!s.line,
        borderColor: s.color,
        backgroundColor: s.color,
        borderDash: s.dash ? [6, 4] : [],
        borderWidth: s.line ? 2 : 1,
        pointRadius: s.radius ?? (s.line ? 0 : 4),
        pointHoverRadius: (s.radius ?? 4) + 2,
        pointStyle: s.pointStyle || "circle",
        clip: 8,
      })),
    },
    options: {
      interaction: { mode: "nearest", intersect: false },
      scales: {
        x: { type: "linear", min: 0, max: 1, title: { display: !!xTitle, text: xTitle } },
        y: { type: "linear", min: 0, max: 1.02, title: { display: !!yTitle, text: yTitle },
          ticks: { callback: (v) => (v > 1 ? "" : v) } },
      },
      plugins: {
        legend: { position: "bottom", labels: { filter: (item) => !!item.text } },
        tooltip: tooltip ? { callbacks: { label: tooltip } } : {},
      },
    },
  });
  box.dataset.points = String(series.length ? series[0].points.length : 0);
  return chart;
}

/** Free chart instances when a page is left (Chart.js keeps resize observers otherwise). */
export function chartRegistry() {
  const charts = [];
  return {
    keep(c) { charts.push(c); return c; },
    destroyAll() { for (const c of charts.splice(0)) (c.destroy ? c.destroy() : c.chart.destroy()); },
  };
}

/**
 * Candidates on the y axis (best on top), the metric on x: each candidate's 95% interval
 * as an error bar (a line with end caps), its mean as a diamond and every seed as a dot.
 * `rows`: [{label, color, mean, ci95: [lo, hi] | null, values: [number]}]. `data-points`
 * on the box counts the per-seed dots.
 */
export function intervalChart({ box, canvas }, rows, { xTitle } = {}) {
  const Chart = chartLib();
  const y = (i) => rows.length - 1 - i;
  const datasets = [];
  rows.forEach((row, i) => {
    if (row.ci95) {
      datasets.push({ type: "line", label: `${row.label} 95% interval`, data: [{ x: row.ci95[0], y: y(i) }, { x: row.ci95[1], y: y(i) }],
        borderColor: row.color, backgroundColor: row.color, borderWidth: 2, pointStyle: "line", rotation: 90,
        pointRadius: 8, pointHoverRadius: 8, kind: "interval" });
    }
    datasets.push({ type: "scatter", label: `${row.label} seeds`, data: row.values.map((v) => ({ x: v, y: y(i) })),
      borderColor: row.color, backgroundColor: row.color + "66", pointRadius: 4, kind: "seed" });
    if (row.mean !== null && row.mean !== undefined) {
      datasets.push({ type: "scatter", label: `${row.label} mean`, data: [{ x: row.mean, y: y(i) }],
        borderColor: row.color, backgroundColor: row.color, pointStyle: "rectRot", pointRadius: 7, kind: "mean" });
    }
  });
  const chart = new Chart(canvas, {
    type: "scatter",
    data: { datasets },
    options: {
      scales: {
        x: { title: { display: !!xTitle, text: xTitle }, grace: "8%" },
        y: { min: -0.6, max: rows.length - 0.4, afterBuildTicks: (axis) => { axis.ticks = rows.map((_, i) => ({ value: i })); },
          ticks: { callback: (value) => (rows[rows.length - 1 - value] || {}).label || "" }, grid: { display: false } },
      },
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${Number(ctx.parsed.x).toFixed(4)}` } },
      },
    },
  });
  box.dataset.points = String(rows.reduce((n, row) => n + row.values.length, 0));
  box.dataset.intervals = String(rows.filter((row) => row.ci95).length);
  return chart;
}

/**
 * A search's trials: each trial's validation value against its learning rate on a log axis.
 * `groups`: [{label, color, pointStyle, points: [{x, y, number}]}] (complete, pruned, best...).
 * `data-points` counts every trial drawn, `data-pruned` the ones in a group marked `pruned`.
 */
export function searchChart({ box, canvas }, groups, { yTitle } = {}) {
  const Chart = chartLib();
  const chart = new Chart(canvas, {
    type: "scatter",
    data: {
      datasets: groups.map((g) => ({
        label: g.label, data: g.points, borderColor: g.color, backgroundColor: g.fill || g.color,
        pointStyle: g.pointStyle || "circle", pointRadius: g.radius || 5, pointHoverRadius: (g.radius || 5) + 2,
        borderWidth: g.pointStyle === "crossRot" ? 2 : 1,
      })),
    },
    options: {
      scales: {
        x: { type: "logarithmic", title: { display: true, text: "learning rate (log scale)" } },
        y: { title: { display: !!yTitle, text: yTitle }, grace: "8%" },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label} #${ctx.raw.number}: lr ${Number(ctx.parsed.x).toExponential(2)}, ${Number(ctx.parsed.y).toFixed(4)}` } },
      },
    },
  });
  box.dataset.points = String(groups.filter((g) => !g.overlay).reduce((n, g) => n + g.points.length, 0));
  box.dataset.pruned = String(groups.filter((g) => g.pruned).reduce((n, g) => n + g.points.length, 0));
  return chart;
}
