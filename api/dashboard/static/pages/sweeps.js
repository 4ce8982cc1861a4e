// Sweeps (loss tournaments): the list with a form that starts one, and one sweep's
// leaderboard (mean, 95% interval as an error bar, per-seed dots, the verdict in words),
// its children's validation curves and a link to the recommended model. Polled while
// children run.

import { api, listAll } from "../api.js";
import { card, encodePath, h, link, notice, progressBar, setChildren, stat, statusBadge } from "../dom.js";
import { chartBox, chartRegistry, colorAt, epochChart, intervalChart, searchChart } from "../charts.js";
import { baseModel, dateTime, duration, lossName, lossParams, num, progressText, shortId, FINAL_STATUSES } from "../format.js";
import { datasetIndex, filledHyperparameters, formToggle, pageHeader, poll, problemText, randomKey, showModelDefaults } from "./common.js";

const POLL_MS = 2500;
const PRESETS = ["bce", "focal", "asl", "apl"];
const METRIC_NAMES = { map: "mAP", macro_f1: "macro F1", micro_f1: "micro F1" };

function signed(x) {
  return `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(3)}`;
}

function candidateName(row) {
  return (row.label || lossName(row.candidate)).toUpperCase();
}

/** The verdict as a sentence a person reads (the same rule as the server's `verdict`). */
export function verdictText(board, sweep) {
  const metric = `test ${METRIC_NAMES[board.metric] || board.metric}`;
  if (board.verdict === "winner") {
    const w = board.winner;
    return `${candidateName(board.rows[0])} wins: ${signed(w.delta)} ${metric} over ${candidateName(board.rows[1])}, `
      + `95% interval ${signed(w.delta_ci95[0])} to ${signed(w.delta_ci95[1])} (paired over test samples and seeds).`;
  }
  if (board.verdict === "no_clear_winner") {
    const c = board.comparison;
    if (!c) return "No clear winner: there is nothing to compare.";
    return `No clear winner: ${candidateName(board.rows[0])} leads ${candidateName(board.rows[1])} by ${signed(c.delta)} ${metric}, `
      + `but the 95% interval ${signed(c.delta_ci95[0])} to ${signed(c.delta_ci95[1])} includes 0.`;
  }
  const p = sweep.progress;
  if (!FINAL_STATUSES.has(sweep.status)) return `Incomplete: ${p.succeeded + p.failed + p.cancelled} of ${p.total} jobs have ended; the verdict comes when all have.`;
  return `No verdict: the sweep ${sweep.status}.`;
}

function sweepRow(sweep, datasets) {
  const spec = sweep.spec;
  const dataset = datasets.get(spec.dataset_id);
  const p = sweep.progress;
  const ended = p.succeeded + p.failed + p.cancelled;
  return h("tr", { "data-sweep-id": sweep.id, "data-status": sweep.status },
    h("td", null, link(`/sweeps/${encodePath(sweep.id)}`, h("code", null, shortId(sweep.id))),
      h("div", { class: "small muted" }, dateTime(sweep.created_at))),
    h("td", null, statusBadge(sweep.status)),
    h("td", null, dataset ? dataset.name : h("span", { class: "muted" }, shortId(spec.dataset_id))),
    h("td", { title: spec.base_model }, baseModel(spec.base_model)),
    h("td", null, spec.candidates.map((c) => h("span", { class: "chip" }, lossName(c)))),
    h("td", { class: "num" }, spec.seeds.length),
    h("td", { class: "progress-cell" }, progressBar(p.total ? ended / p.total : 0, `${ended}/${p.total} jobs`)),
    h("td", null, sweep.winner ? h("strong", null, lossName(sweep.winner.candidate)) : h("span", { class: "muted" }, "—")));
}

function field(label, ...controls) {
  return h("div", { class: "field" }, h("label", { for: controls[0].id }, label), controls);
}

function newSweepForm(datasets, baseModels, onCreated) {
  const datasetSelect = h("select", { id: "sweep-dataset", required: true },
    [...datasets.values()].map((d) => h("option", { value: d.id }, `${d.name} · ${d.modality} · ${d.num_samples} samples`)));
  const modelInput = h("input", { id: "sweep-base-model", list: "sweep-base-models", required: true });
  const options = h("datalist", { id: "sweep-base-models" }, baseModels.map((m) => h("option", { value: m.name })));
  const boxes = PRESETS.map((name) => h("input", { type: "checkbox", id: `sweep-candidate-${name}`, value: name, checked: true }));
  const seeds = h("input", { id: "sweep-seeds", value: "0, 1, 2" });
  // Left empty: the base model's default (GET /v1/base-models), shown as the placeholder.
  const epochs = h("input", { id: "sweep-epochs", type: "number", min: 1, "data-hp": "epochs" });
  const testFraction = h("input", { id: "sweep-test-fraction", type: "number", step: "any", min: 0, max: 0.5, value: 0.2 });
  const metric = h("select", { id: "sweep-metric" }, Object.entries(METRIC_NAMES).map(([k, v]) => h("option", { value: k }, v)));
  const message = h("div", { class: "form-message", role: "alert" });
  const submit = h("button", { type: "submit", class: "button primary" }, "Start sweep");
  function pickModel() {
    const d = datasets.get(datasetSelect.value);
    const match = baseModels.find((m) => d && m.modality === d.modality);
    if (match && (!modelInput.value || baseModels.some((m) => m.name === modelInput.value))) modelInput.value = match.name;
  }
  const showDefaults = () => showModelDefaults(baseModels, modelInput, [epochs]);
  datasetSelect.addEventListener("change", () => { pickModel(); showDefaults(); });
  modelInput.addEventListener("input", showDefaults);
  pickModel();
  showDefaults();
  const form = h("form", { class: "form-grid", id: "new-sweep-form" },
    field("Dataset", datasetSelect), field("Base model", modelInput, options),
    field("Seeds", seeds), field("Epochs", epochs), field("Test fraction", testFraction), field("Rank by", metric),
    h("fieldset", { class: "params" }, h("legend", null, "Candidate losses (presets)"),
      boxes.map((box) => h("label", { class: "pick-inline", for: box.id }, box, " ", box.value.toUpperCase()))),
    h("div", { class: "form-actions" }, submit, message));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const spec = {
      dataset_id: datasetSelect.value, base_model: modelInput.value.trim(),
      candidates: boxes.filter((b) => b.checked).map((b) => ({ name: b.value })),
      seeds: seeds.value.split(/[\s,]+/).filter(Boolean).map(Number),
      hyperparameters: filledHyperparameters([epochs]), test_fraction: Number(testFraction.value), metric: metric.value,
    };
    submit.disabled = true;
    setChildren(message);
    try {
      onCreated(await api("/v1/sweeps", { method: "POST", body: spec, headers: { "Idempotency-Key": randomKey() } }));
    } catch (error) {
      setChildren(message, notice("error", problemText(error)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function sweepsPage({ root, signal }) {
  document.title = "Sweeps · aplserve";
  const newButton = h("button", { type: "button", class: "button primary", id: "new-sweep" }, "New sweep");
  const formBox = h("div", { hidden: true });
  const errorBox = h("div");
  const tbody = h("tbody", { id: "sweeps-body" });
  const table = h("table", { class: "table jobs-table", id: "sweeps-table" },
    h("thead", null, h("tr", null, ["Sweep", "Status", "Dataset", "Base model", "Candidates"].map((t) => h("th", null, t)),
      h("th", { class: "num" }, "Seeds"), h("th", null, "Progress"), h("th", null, "Winner"))), tbody);
  setChildren(root,
    pageHeader("Sweeps", { subtitle: "Loss tournaments: every candidate loss on the same splits for each seed, "
      + "scored once on a held-out test split, with 95% intervals.", actions: [newButton] }),
    formBox, errorBox, card(null, h("div", { class: "table-wrap" }, table)));
  let datasets = new Map(); // the button works from the moment it is drawn: its handler loads what it needs
  formToggle(newButton, formBox, signal, {
    title: "New sweep",
    build: (index, baseModels) => newSweepForm(index, baseModels, (sweep) => {
      location.hash = `#/sweeps/${encodeURIComponent(sweep.id)}`;
    }),
    onDatasets: (index) => { datasets = index; },
  });
  datasets = await datasetIndex(signal);
  async function refresh() {
    const sweeps = await listAll("/v1/sweeps", { signal, maxPages: 1 });
    setChildren(tbody, sweeps.length ? sweeps.map((s) => sweepRow(s, datasets))
      : h("tr", null, h("td", { colspan: 8, class: "empty" }, "No sweeps yet. Start one with New sweep.")));
    table.dataset.loaded = "true";
  }
  poll(refresh, POLL_MS, signal, errorBox);
}

function leaderboardTable(board, colors) {
  const metric = METRIC_NAMES[board.metric] || board.metric;
  const winnerKey = board.winner ? JSON.stringify(board.winner.candidate) : null;
  return h("table", { class: "table results-table", id: "leaderboard" },
    h("thead", null, h("tr", null, h("th", null, "#"), h("th", null, "Candidate"), h("th", { class: "num" }, "n"),
      h("th", { class: "num" }, `Mean test ${metric}`), h("th", { class: "num" }, "sd"), h("th", { class: "num" }, "95% interval"),
      h("th", null, "Per seed"))),
    h("tbody", null, board.rows.map((row, i) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.backgroundColor = colors.get(JSON.stringify(row.candidate));
      const isWinner = JSON.stringify(row.candidate) === winnerKey;
      return h("tr", { "data-candidate": row.candidate.name, "data-rank": i + 1, class: isWinner ? "winner" : "",
        "data-winner": isWinner ? "true" : null },
        h("td", { class: "num" }, i + 1),
        h("td", { class: "run" }, swatch, h("strong", null, candidateName(row)),
          isWinner ? h("span", { class: "badge winner-badge" }, "winner") : null,
          h("div", { class: "small muted" }, lossParams(row.candidate))),
        h("td", { class: "num" }, row.n),
        h("td", { class: "num top" }, num(row.mean)),
        h("td", { class: "num" }, num(row.sd)),
        h("td", { class: "num" }, row.ci95 ? `${num(row.ci95[0])} – ${num(row.ci95[1])}` : "—"),
        h("td", { class: "small" }, row.per_seed.map((p) => h("span", { class: "seed-value" },
          link(`/jobs/${encodePath(p.job_id)}`, `seed ${p.seed}`), ` ${num(p.value)}`))));
    }), (board.baseline_rows || []).map((row) =>
      // The linear baselines every child fitted on its own split: rows of their own, never ranked.
      h("tr", { class: "baseline-row", "data-baseline": row.baseline },
        h("td", { class: "num" }, "—"),
        h("td", { class: "run" }, h("span", { class: "badge" }, "baseline"), " ", row.label.replace(/^baseline: /, "")),
        h("td", { class: "num" }, row.n),
        h("td", { class: "num" }, num(row.mean)),
        h("td", { class: "num" }, num(row.sd)),
        h("td", { class: "num" }, row.ci95 ? `${num(row.ci95[0])} – ${num(row.ci95[1])}` : "—"),
        h("td", { class: "small" }, row.per_seed.map((p) => h("span", { class: "seed-value" },
          `seed ${p.seed} ${num(p.value)}`)))))));
}

function childrenTable(jobs, colorOf) {
  return h("table", { class: "table jobs-table", id: "sweep-children" },
    h("thead", null, h("tr", null, ["Job", "Role", "Loss", "Seed", "Status", "Progress"].map((t) => h("th", null, t)),
      ["Test mAP", "Test macro F1", "Test micro F1"].map((t) => h("th", { class: "num" }, t)), h("th", null, "Model"))),
    h("tbody", null, jobs.map((job) => {
      const test = (job.best_metrics && job.best_metrics.test) || {};
      const swatch = h("span", { class: "swatch" });
      swatch.style.backgroundColor = colorOf(job.spec.loss);
      return h("tr", { "data-job-id": job.id, "data-status": job.status },
        h("td", null, link(`/jobs/${encodePath(job.id)}`, h("code", null, shortId(job.id)))),
        h("td", { class: "small" }, job.role || "—"),
        h("td", null, swatch, lossName(job.spec.loss)), h("td", null, job.spec.hyperparameters.seed),
        h("td", null, statusBadge(job.status)),
        h("td", null, job.error ? h("span", { class: "small" }, job.error.code) : progressText(job)),
        h("td", { class: "num" }, num(test.map)), h("td", { class: "num" }, num(test.macro_f1)),
        h("td", { class: "num" }, num(test.micro_f1)),
        h("td", null, job.model_id ? link(`/models/${encodePath(job.model_id)}`, "model") : h("span", { class: "muted" }, "—")));
    })));
}

/** The search of one candidate: its trials' value against learning rate, pruned ones marked (×). */
function candidateSearchChart(candidate, index, trials, board, color, metric) {
  const mine = trials.filter((t) => t.candidate.name === candidate.name && JSON.stringify(t.candidate) === JSON.stringify(candidate));
  const at = (t) => ({ x: t.params.learning_rate, y: t.value, number: t.number });
  const drawn = (state) => mine.filter((t) => t.state === state && t.value !== null && t.params.learning_rate);
  const row = board.rows.find((r) => JSON.stringify(r.candidate) === JSON.stringify(candidate));
  const best = row && row.config && row.config.learning_rate !== undefined && row.search_value !== null
    ? [{ x: row.config.learning_rate, y: row.search_value, number: "best" }] : [];
  const box = chartBox(`${lossName(candidate)}: validation ${metric} of each trial vs learning rate`, { name: `search-${candidate.name}` });
  box.box.dataset.candidate = candidate.name;
  const chart = searchChart(box, [
    { label: "complete", color, points: drawn("complete").map(at) },
    { label: "pruned (stopped early: its last epoch)", color, fill: "transparent", pointStyle: "crossRot", radius: 7,
      pruned: true, points: drawn("pruned").map(at) },
    { label: "running", color: "#94a3b8", points: drawn("running").map(at) },
    { label: "chosen configuration", color: "#111827", fill: "transparent", pointStyle: "star", radius: 11, overlay: true, points: best },
  ], { yTitle: `validation ${metric}` });
  return { box: box.box, chart };
}

function importanceText(found, candidate) {
  const entry = found.find((i) => JSON.stringify(i.candidate) === JSON.stringify(candidate));
  if (!entry) return h("span", { class: "muted" }, "— (after the search)");
  if (!Object.keys(entry.importances).length) return h("span", { class: "muted" }, "— (needs two complete trials)");
  return Object.entries(entry.importances).map(([k, v]) => h("span", { class: "chip", "data-param": k }, `${k} ${num(v, 2)}`));
}

function searchTable(sweep, trials, board) {
  return h("table", { class: "table results-table", id: "search-best" },
    h("thead", null, h("tr", null, ["Candidate", "Trials", "Pruned", "Failed", "Chosen configuration"].map((t) => h("th", null, t)),
      h("th", { class: "num" }, "Search value"), h("th", null, "Parameter importance (Optuna fANOVA)"))),
    h("tbody", null, sweep.spec.candidates.map((c) => {
      const mine = trials.items.filter((t) => JSON.stringify(t.candidate) === JSON.stringify(c));
      const row = board.rows.find((r) => JSON.stringify(r.candidate) === JSON.stringify(c)) || {};
      const config = Object.entries(row.config || {}).map(([k, v]) => h("span", { class: "chip" }, `${k} = ${typeof v === "number" ? Number(v.toPrecision(3)) : v}`));
      return h("tr", { "data-candidate": c.name },
        h("td", null, h("strong", null, lossName(c))),
        h("td", { class: "num" }, `${mine.filter((t) => t.state !== "running").length}/${sweep.spec.search.trials}`),
        h("td", { class: "num" }, mine.filter((t) => t.state === "pruned").length),
        h("td", { class: "num" }, mine.filter((t) => t.state === "failed").length),
        h("td", null, config.length ? config : h("span", { class: "muted" }, "—")),
        h("td", { class: "num" }, num(row.search_value)),
        h("td", null, importanceText(trials.importances || [], c)));
    })));
}

function sweepHeader(sweep, dataset, cancelButton, modelLink) {
  const spec = sweep.spec;
  const split = spec.test_dataset_id ? "a separate test dataset" : `${Math.round(spec.test_fraction * 100)}% held out per seed`;
  const subtitle = [h("span", { title: spec.base_model }, baseModel(spec.base_model)), " · ",
    dataset ? link(`/datasets/${encodePath(dataset.id)}`, dataset.name) : h("span", { class: "muted" }, shortId(spec.dataset_id)),
    " · ", `${spec.candidates.length} losses × ${spec.seeds.length} seeds`, " · ", `test split: ${split}`];
  return pageHeader(h("span", null, "Sweep ", h("code", null, shortId(sweep.id)), " ", h("span", { id: "sweep-status" }, statusBadge(sweep.status))),
    { subtitle, actions: [modelLink, link(`/models?sweep_id=${encodeURIComponent(sweep.id)}`,
      h("span", { class: "button", id: "sweep-models" }, "Its models")), cancelButton] });
}

export async function sweepPage({ root, params: [sweepId], signal }) {
  document.title = `Sweep ${shortId(sweepId)} · aplserve`;
  let sweep = await api(`/v1/sweeps/${encodeURIComponent(sweepId)}`, { signal });
  const datasets = await datasetIndex(signal);
  const charts = chartRegistry();
  const colors = new Map(sweep.spec.candidates.map((c, i) => [JSON.stringify(c), colorAt(i)]));
  const byName = new Map(sweep.spec.candidates.map((c, i) => [c.name, colorAt(i)]));
  // A searched loss parameter changes a child's loss spec: its candidate's colour by preset name then.
  const colorOf = (loss) => colors.get(JSON.stringify(loss)) || byName.get(loss.name) || "#94a3b8";
  const cancelButton = h("button", { type: "button", class: "button danger", id: "cancel-sweep" }, "Cancel sweep");
  const modelLink = h("span", { id: "recommended-model" });
  const headerBox = h("div");
  const verdictBox = h("div", { id: "verdict" });
  const stats = h("div", { class: "stats" });
  const errorBox = h("div");
  const failureBox = h("div", { id: "sweep-error" });
  const boardBox = h("div", { class: "table-wrap" });
  const methodBox = h("p", { class: "small muted footnote", id: "sweep-method" });
  const intervalBox = chartBox("Test metric per candidate: mean (◆), 95% interval and each seed (●)", { name: "intervals" });
  const curvesBox = chartBox("Validation mAP of every child, per epoch", { name: "curves" });
  const childrenBox = h("div", { class: "table-wrap" });
  const searchBox = h("div", { id: "sweep-search" });
  setChildren(root, headerBox, verdictBox, errorBox, failureBox, stats,
    sweep.spec.search ? card("Search (validation split of the first seed; the test split is never seen)", searchBox) : null,
    card("Leaderboard (test split)", boardBox, methodBox),
    h("div", { class: "chart-grid two" }, intervalBox.box, curvesBox.box),
    card("Child jobs", childrenBox));

  let jobs = [];
  const series = new Map(); // job id -> metric points
  const settled = new Set(); // children whose points were read after they ended (they change no more)
  let curves = null;
  let intervals = null;
  let searchCharts = [];
  let armedUntil = 0;
  cancelButton.addEventListener("click", async () => {
    if (Date.now() > armedUntil) { armedUntil = Date.now() + 5000; cancelButton.textContent = "Click again to cancel"; return; }
    armedUntil = 0;
    cancelButton.disabled = true;
    try {
      sweep = await api(`/v1/sweeps/${encodeURIComponent(sweep.id)}/cancel`, { method: "POST", signal });
    } catch (error) {
      setChildren(errorBox, notice("error", problemText(error)));
    }
  });

  function renderCurves() {
    // A search adds children as it goes (trials, then replicates): the chart is redrawn when they change.
    if (curves && curves.jobCount !== jobs.length) { curves.destroy(); curves = null; }
    if (!curves) {
      curves = epochChart(curvesBox, jobs.map((job) => ({
        label: `${job.role === "trial" ? "trial · " : ""}${lossName(job.spec.loss)} · seed ${job.spec.hyperparameters.seed}`,
        color: colorOf(job.spec.loss),
        dash: job.role === "trial" || sweep.spec.seeds.indexOf(job.spec.hyperparameters.seed) % 2 === 1,
      })), { yTitle: "validation mAP", yMin: 0, yMax: 1, epochs: sweep.spec.hyperparameters.epochs });
      curves.jobCount = jobs.length;
    }
    jobs.forEach((job, i) => curves.set(i, (series.get(job.id) || []).map((p) => ({ x: p.epoch, y: p.map }))));
  }

  function renderBoard(board) {
    setChildren(boardBox, leaderboardTable(board, colors));
    setChildren(methodBox, board.method);
    const kind = board.verdict === "winner" ? "ok" : board.verdict === "no_clear_winner" ? "warn" : "info";
    setChildren(verdictBox, notice(kind, h("strong", null, verdictText(board, sweep))));
    verdictBox.dataset.verdict = board.verdict;
    if (intervals) intervals.destroy();
    intervals = intervalChart(intervalBox, board.rows.filter((r) => r.n > 0).map((r) => ({
      label: candidateName(r), color: colors.get(JSON.stringify(r.candidate)), mean: r.mean, ci95: r.ci95,
      values: r.per_seed.map((p) => p.value) })), { xTitle: `test ${METRIC_NAMES[board.metric] || board.metric}` });
    const winner = board.winner;
    setChildren(modelLink, winner && winner.model_id
      ? link(`/models/${encodePath(winner.model_id)}`, h("span", { class: "button primary" }, "Open recommended model")) : null);
  }

  function renderSearch(trials, board) {
    for (const c of searchCharts) c.destroy();
    const metric = METRIC_NAMES[sweep.spec.metric] || sweep.spec.metric;
    const drawn = sweep.spec.candidates.map((c, i) => candidateSearchChart(c, i, trials.items, board, colors.get(JSON.stringify(c)), metric));
    searchCharts = drawn.map((d) => d.chart);
    const t = sweep.trials || { total: 0, done: 0, pruned: 0, failed: 0, running: 0 };
    setChildren(searchBox,
      h("p", { id: "search-phase", "data-phase": sweep.phase || "" }, h("strong", null, sweep.phase === "replicate"
        ? "Replicate phase: each candidate's chosen configuration runs on every seed and is scored on the test split."
        : "Search phase: Optuna proposes each trial; the pruner stops losing trials after an epoch."),
        ` ${t.done}/${t.total} trials done, ${t.pruned} pruned, ${t.failed} failed, ${t.running} running.`),
      h("div", { class: "chart-grid two" }, drawn.map((d) => d.box)),
      h("div", { class: "table-wrap" }, searchTable(sweep, trials, board)));
  }

  async function refresh() {
    // The sweep is read first: the leaderboard and children read after it are at least as new, so the
    // last refresh (the one that sees a final status) never shows a verdict from before the end.
    const next = await api(`/v1/sweeps/${encodeURIComponent(sweep.id)}`, { signal });
    const [board, children, trials] = await Promise.all([
      api(`/v1/sweeps/${encodeURIComponent(sweep.id)}/leaderboard`, { signal }),
      listAll(`/v1/jobs?sweep_id=${encodeURIComponent(sweep.id)}`, { signal }),
      next.spec.search ? api(`/v1/sweeps/${encodeURIComponent(sweep.id)}/trials?limit=200`, { signal }) : null,
    ]);
    sweep = next;
    const order = new Map(sweep.job_ids.map((id, i) => [id, i]));
    jobs = children.sort((a, b) => order.get(a.id) - order.get(b.id));
    await Promise.all(jobs.filter((j) => j.status !== "queued" && !settled.has(j.id)).map(async (j) => {
      series.set(j.id, (await api(`/v1/jobs/${encodeURIComponent(j.id)}/metrics`, { signal })).series);
      if (FINAL_STATUSES.has(j.status)) settled.add(j.id);
    }));
    setChildren(headerBox, sweepHeader(sweep, datasets.get(sweep.spec.dataset_id), cancelButton, modelLink));
    cancelButton.hidden = FINAL_STATUSES.has(sweep.status);
    cancelButton.disabled = !!sweep.cancel_requested;
    if (Date.now() > armedUntil) cancelButton.textContent = sweep.cancel_requested ? "Cancelling…" : "Cancel sweep";
    const p = sweep.progress;
    const ended = p.succeeded + p.failed + p.cancelled;
    setChildren(stats, stat("Jobs", progressBar(p.total ? ended / p.total : 0, `${ended}/${p.total} ended`), "wide"),
      stat("Running", p.running), stat("Succeeded", p.succeeded), stat("Failed", p.failed),
      stat("Running time", duration(sweep.created_at, sweep.finished_at)));
    setChildren(failureBox, sweep.error ? notice("error", h("strong", null, sweep.error.code), ": ", sweep.error.message) : null);
    renderBoard(board);
    if (trials) renderSearch(trials, board);
    renderCurves();
    setChildren(childrenBox, childrenTable(jobs, colorOf));
    root.dataset.sweepStatus = sweep.status;
    root.dataset.sweepReady = "true";
    return FINAL_STATUSES.has(sweep.status);
  }
  poll(refresh, POLL_MS, signal, errorBox);
  return () => {
    for (const c of searchCharts) c.destroy();
    if (curves) curves.destroy();
    if (intervals) intervals.destroy();
    charts.destroyAll();
  };
}
