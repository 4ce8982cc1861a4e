// Compare runs: pick several jobs (usually one dataset, different losses or parameters),
// see their curves overlaid and a table of each run's best epoch. These are single runs
// on the validation split that also chose each run's epoch and thresholds, so the page
// marks the highest value and never calls a run the winner; a verdict with intervals
// is what a sweep (the Sweeps page) is for.

import { api, listAll } from "../api.js";
import { card, encodePath, h, link, notice, setChildren, statusBadge } from "../dom.js";
import { chartBox, chartRegistry, colorAt, epochChart } from "../charts.js";
import { baseModel, lossName, lossParams, num, shortId, FINAL_STATUSES } from "../format.js";
import { datasetIndex, pageHeader, poll } from "./common.js";

const MAX_JOBS = 10;
const POLL_MS = 3000;

const METRICS = [
  { key: "map", title: "Validation mAP", short: "mAP", axis: "mAP", higher: true, range: [0, 1] },
  { key: "macro_f1", title: "Macro F1", short: "Macro F1", axis: "F1", higher: true, range: [0, 1] },
  { key: "micro_f1", title: "Micro F1", short: "Micro F1", axis: "F1", higher: true, range: [0, 1] },
  { key: "val_loss", title: "Validation loss (each run's own loss)", short: "Val loss", axis: "loss", higher: false },
];

function jobLabel(job) {
  return `${lossName(job.spec.loss)} · ${shortId(job.id)}`;
}

/** The evaluation with the highest mAP (ties: the earlier one). */
function bestPoint(series) {
  let best = null;
  for (const p of series) if (p.map !== null && p.map !== undefined && (!best || p.map > best.map)) best = p;
  return best;
}

function picker(jobs, datasets, chosen, onApply) {
  const selected = new Set(chosen);
  const datasetIds = [...new Set(jobs.map((j) => j.spec.dataset_id))];
  const filter = h("select", { id: "compare-dataset", "aria-label": "dataset" },
    h("option", { value: "" }, "All datasets"),
    datasetIds.map((id) => h("option", { value: id }, datasets.has(id) ? datasets.get(id).name : shortId(id))));
  const chosenJob = jobs.find((j) => selected.has(j.id));
  if (chosenJob) filter.value = chosenJob.spec.dataset_id;
  const list = h("div", { class: "pick-list", id: "compare-picker" });
  const apply = h("button", { type: "button", class: "button primary", id: "compare-apply" }, "Compare");
  const count = h("span", { class: "muted" });
  function renderList() {
    const shown = jobs.filter((j) => !filter.value || j.spec.dataset_id === filter.value);
    setChildren(list, shown.length ? shown.map((job) => {
      const box = h("input", { type: "checkbox", "data-job-id": job.id, "aria-label": `compare ${jobLabel(job)}` });
      box.checked = selected.has(job.id);
      box.addEventListener("change", () => {
        if (box.checked) selected.add(job.id);
        else selected.delete(job.id);
        renderCount();
      });
      const dataset = datasets.get(job.spec.dataset_id);
      return h("label", { class: "pick" }, box,
        h("span", { class: "pick-main" }, h("strong", null, lossName(job.spec.loss)), " ", h("code", null, shortId(job.id)),
          h("span", { class: "small muted" }, ` ${lossParams(job.spec.loss)}`)),
        h("span", { class: "small muted" }, baseModel(job.spec.base_model)),
        h("span", { class: "small muted" }, dataset ? dataset.name : ""),
        statusBadge(job.status),
        h("span", { class: "num small" }, `mAP ${num(job.best_metrics && job.best_metrics.map)}`));
    }) : h("p", { class: "muted" }, "No jobs yet."));
  }
  function renderCount() {
    count.textContent = `${selected.size} selected` + (selected.size > MAX_JOBS ? ` (at most ${MAX_JOBS})` : "");
    apply.disabled = selected.size < 1 || selected.size > MAX_JOBS;
  }
  filter.addEventListener("change", renderList);
  apply.addEventListener("click", () => onApply([...selected]));
  renderList();
  renderCount();
  return h("div", { class: "picker" }, h("div", { class: "picker-bar" }, filter, count, apply), list);
}

function resultsTable(entries) {
  const rows = entries.map((e) => ({ ...e, best: bestPoint(e.series) }));
  const bestOf = {};
  for (const m of METRICS) {
    const values = rows.map((r) => r.best && r.best[m.key]).filter((v) => v !== null && v !== undefined);
    if (values.length) bestOf[m.key] = m.higher ? Math.max(...values) : Math.min(...values);
  }
  const ranked = rows.filter((r) => r.best).sort((a, b) => b.best.map - a.best.map
    || (a.best.val_loss ?? Infinity) - (b.best.val_loss ?? Infinity));
  const highest = rows.length > 1 && ranked.length ? ranked[0].job.id : null;
  const metricCell = (r, m) => {
    const v = r.best ? r.best[m.key] : null;
    const top = v !== null && v !== undefined && v === bestOf[m.key] && rows.length > 1;
    return h("td", { class: "num" + (top ? " top" : "") }, num(v, m.key === "val_loss" ? 4 : 3));
  };
  return h("table", { class: "table results-table", id: "compare-results" },
    h("thead", null, h("tr", null, h("th", null, "Run"), h("th", null, "Loss parameters"), h("th", null, "Base model"),
      h("th", { class: "num" }, "LR"), h("th", { class: "num" }, "Epochs"), METRICS.map((m) => h("th", { class: "num", title: m.title }, m.short)),
      h("th", { class: "num" }, "Best epoch"))),
    h("tbody", null, rows.map((r) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.backgroundColor = r.color;
      const isHighest = r.job.id === highest;
      return h("tr", { "data-job-id": r.job.id, "data-highest": isHighest ? "true" : null },
        h("td", { class: "run" }, swatch, link(`/jobs/${encodePath(r.job.id)}`, jobLabel(r.job)),
          isHighest ? h("span", { class: "badge top-badge", title: "one run each, on the validation split: not a verdict" },
            "highest val mAP") : null,
          r.job.status === "succeeded" ? null : [" ", statusBadge(r.job.status)]),
        h("td", { class: "small muted" }, lossParams(r.job.spec.loss)),
        h("td", { title: r.job.spec.base_model }, baseModel(r.job.spec.base_model)),
        h("td", { class: "num" }, r.job.spec.hyperparameters.learning_rate),
        h("td", { class: "num" }, `${r.series.length}/${r.job.spec.hyperparameters.epochs}`),
        METRICS.map((m) => metricCell(r, m)),
        h("td", { class: "num" }, r.best ? r.best.epoch : "—"));
    })));
}

export async function comparePage({ root, query, signal }) {
  document.title = "Compare · aplserve";
  const ids = (query.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean).slice(0, MAX_JOBS);
  const [jobs, datasets] = await Promise.all([listAll("/v1/jobs", { signal, maxPages: 1 }), datasetIndex(signal)]);
  const charts = chartRegistry();
  const errorBox = h("div");
  const chosen = ids.map((id) => jobs.find((j) => j.id === id)).filter(Boolean);
  const missing = ids.length - chosen.length;
  const onApply = (selected) => { location.hash = `#/compare?ids=${selected.map(encodeURIComponent).join(",")}`; };
  const pickerBox = h("details", { class: "card picker-card", open: chosen.length ? null : true },
    h("summary", { class: "card-title" }, chosen.length ? "Change the runs" : "Pick runs to compare"),
    picker(jobs, datasets, chosen.map((j) => j.id), onApply));
  const datasetNames = [...new Set(chosen.map((j) => (datasets.get(j.spec.dataset_id) || {}).name || shortId(j.spec.dataset_id)))];
  setChildren(root,
    pageHeader("Compare runs", { subtitle: chosen.length
      ? `${chosen.length} single run${chosen.length === 1 ? "" : "s"} on the validation split · ${datasetNames.join(", ")}`
      : "Overlay the curves of several jobs: single runs on the validation split." }),
    notice("info", h("span", { id: "compare-caveat" }, "Single runs on the validation split: each run's epoch and "
      + "thresholds were chosen on the split it is scored on, with one seed, so a difference here is not a verdict. "
      + "To learn which loss is better on your data, with 95% intervals on a held-out test split, start a "),
      link("/sweeps", "sweep"), "."),
    missing ? notice("info", `${missing} of the requested jobs were not found.`) : null,
    errorBox, pickerBox);
  if (!chosen.length) return () => charts.destroyAll();
  if (datasetNames.length > 1) root.append(notice("info", "These runs use different datasets; their metrics are not directly comparable."));

  const entries = chosen.map((job, i) => ({ job, color: colorAt(i), series: [] }));
  const chartBoxes = METRICS.map((m) => chartBox(m.title, { name: m.key }));
  const lineCharts = METRICS.map((m, i) => charts.keep(epochChart(chartBoxes[i],
    entries.map((e) => ({ label: jobLabel(e.job), color: e.color })),
    { yTitle: m.axis, yMin: m.range && m.range[0], yMax: m.range && m.range[1],
      epochs: Math.max(...entries.map((e) => e.job.spec.hyperparameters.epochs)) })));
  const tableBox = h("div", { class: "table-wrap" });
  root.append(
    card("Best epoch of each run (single runs, validation split)", tableBox, h("p", { class: "small muted footnote" },
      "Each row shows the run's evaluation with the highest validation mAP; the run marked has the highest of "
      + "those (ties: lower validation loss). Bold: the best value in each column. Single runs on the validation "
      + "split: no interval, no verdict. Validation loss is each run's own training loss, so it compares runs of "
      + "the same loss only.")),
    h("div", { class: "chart-grid two" }, chartBoxes.map((b) => b.box)));

  async function refresh() {
    const pending = entries.filter((e) => !e.loaded || !FINAL_STATUSES.has(e.job.status));
    await Promise.all(pending.map(async (e) => {
      // The job before its metrics: a series read after a final status holds every epoch.
      e.job = await api(`/v1/jobs/${encodeURIComponent(e.job.id)}`, { signal });
      e.series = (await api(`/v1/jobs/${encodeURIComponent(e.job.id)}/metrics`, { signal })).series;
      e.loaded = true;
    }));
    entries.forEach((e, i) => METRICS.forEach((m, k) => lineCharts[k].set(i, e.series.map((p) => ({ x: p.epoch, y: p[m.key] })))));
    setChildren(tableBox, resultsTable(entries));
    root.dataset.compareReady = "true";
    return entries.every((e) => FINAL_STATUSES.has(e.job.status)); // true: nothing changes any more
  }
  poll(refresh, POLL_MS, signal, errorBox);
  return () => charts.destroyAll();
}
