// The jobs list (live: polled every 2 s; filtered by dataset and sweep, a sweep's children
// marked with their sweep and role) and the form that starts a new job.

import { api, listAll } from "../api.js";
import { card, encodePath, h, link, notice, progressBar, setChildren, statusBadge } from "../dom.js";
import { baseModel, bestMapText, dateTime, lossName, lossParams, progressFraction, progressText, shortId } from "../format.js";
import {
  datasetIndex, filledHyperparameters, filterQuery, formToggle, LIST_FILTERS, listFilters, pageHeader, poll, problemText,
  randomKey, showModelDefaults, sweepMarker,
} from "./common.js";

const POLL_MS = 2000;
const LOSSES = ["apl", "asl", "focal", "bce"];
const LOSS_PARAMS = [
  ["alpha1", "α₁"], ["alpha2", "α₂"], ["beta", "β"], ["gamma_pos", "γ₊"], ["gamma_neg", "γ₋"], ["clip", "clip m"],
];
const POLICIES = { max_f1: "max F1", precision_at: "precision at target", recall_at: "recall at target",
  fixed: "fixed threshold" };
const PRESETS = {
  bce: { alpha1: 1, alpha2: 0.5, beta: 1, gamma_pos: 0, gamma_neg: 0, clip: 0 },
  focal: { alpha1: 1, alpha2: 0.5, beta: 1, gamma_pos: 2, gamma_neg: 2, clip: 0 },
  asl: { alpha1: 1, alpha2: 0.5, beta: 1, gamma_pos: 1, gamma_neg: 4, clip: 0.05 },
  apl: { alpha1: 0, alpha2: 1.75, beta: 1, gamma_pos: 0, gamma_neg: 4, clip: 0.05 },
};

function jobRow(job, datasets, selected, onSelect) {
  const dataset = datasets.get(job.spec.dataset_id);
  const checkbox = h("input", { type: "checkbox", class: "select-job", "aria-label": `select job ${shortId(job.id)}`,
    "data-job-id": job.id });
  checkbox.checked = selected.has(job.id);
  checkbox.addEventListener("change", () => onSelect(job.id, checkbox.checked));
  return h("tr", { "data-job-id": job.id, "data-status": job.status, "data-sweep-id": job.sweep_id },
    h("td", { class: "check" }, checkbox),
    h("td", null, link(`/jobs/${encodePath(job.id)}`, h("code", null, shortId(job.id))),
      job.name ? h("div", { class: "job-name" }, job.name) : null,
      sweepMarker(job.sweep_id, job.role),
      h("div", { class: "small muted" }, dateTime(job.created_at))),
    h("td", null, statusBadge(job.status)),
    h("td", null, h("strong", null, lossName(job.spec.loss)), h("div", { class: "small muted" }, lossParams(job.spec.loss))),
    h("td", { title: job.spec.base_model }, baseModel(job.spec.base_model)),
    h("td", null, dataset ? link(`/datasets/${encodePath(dataset.id)}`, dataset.name)
      : h("span", { class: "muted" }, shortId(job.spec.dataset_id))),
    h("td", { class: "progress-cell" }, progressBar(progressFraction(job), progressText(job))),
    h("td", { class: "num best-map" }, bestMapText(job)),
    h("td", null, job.model_id ? link(`/models/${encodePath(job.model_id)}`, "model") : h("span", { class: "muted" }, "—")));
}

function newJobForm(datasets, baseModels, onCreated) {
  const datasetSelect = h("select", { id: "job-dataset", name: "dataset", required: true },
    [...datasets.values()].map((d) => h("option", { value: d.id }, `${d.name} · ${d.modality} · ${d.num_samples} samples`)));
  const modelInput = h("input", { id: "job-base-model", name: "base_model", list: "base-model-options", required: true,
    placeholder: "minilm-l6, timm:<arch> or hf:<path>" });
  const options = h("datalist", { id: "base-model-options" },
    baseModels.map((m) => h("option", { value: m.name }, `${m.modality} · ${m.description}`)));
  const lossSelect = h("select", { id: "job-loss", name: "loss" }, LOSSES.map((l) => h("option", { value: l }, l.toUpperCase())));
  // Left empty, these take the base model's defaults (GET /v1/base-models), shown as placeholders.
  const epochs = h("input", { id: "job-epochs", type: "number", min: 1, max: 1000, "data-hp": "epochs" });
  const batch = h("input", { id: "job-batch-size", type: "number", min: 1, max: 4096, "data-hp": "batch_size" });
  const lr = h("input", { id: "job-learning-rate", type: "number", step: "any", min: 0, "data-hp": "learning_rate" });
  const seed = h("input", { id: "job-seed", type: "number", min: 0, value: 0 });
  const name = h("input", { id: "job-name", name: "name", maxlength: 128, placeholder: "optional" });
  const paramInputs = LOSS_PARAMS.map(([key]) => h("input", { id: `job-loss-${key}`, type: "number", step: "any", "data-param": key }));
  const policy = h("select", { id: "job-policy" }, Object.entries(POLICIES).map(([v, text]) => h("option", { value: v }, text)));
  const target = h("input", { id: "job-target", type: "number", step: "any", min: 0, max: 1, disabled: true, placeholder: "—" });
  const minLabels = h("input", { id: "job-min-labels", type: "number", min: 0, step: 1, value: 0 });
  const calibration = h("select", { id: "job-calibration" },
    ["auto", "platt", "isotonic", "temperature", "none"].map((v) => h("option", { value: v }, v)));
  policy.addEventListener("change", () => {
    target.disabled = policy.value === "max_f1";
    target.required = !target.disabled;
    target.placeholder = target.disabled ? "—" : policy.value === "fixed" ? "threshold" : "0.9";
    if (target.disabled) target.value = "";
  });
  const message = h("div", { class: "form-message", role: "alert" });
  const submit = h("button", { type: "submit", class: "button primary" }, "Start job");

  function pickDefaultModel() {
    const dataset = datasets.get(datasetSelect.value);
    const match = baseModels.find((m) => dataset && m.modality === dataset.modality);
    if (match && (!modelInput.value || baseModels.some((m) => m.name === modelInput.value))) modelInput.value = match.name;
  }
  function showPresets() {
    const preset = PRESETS[lossSelect.value];
    paramInputs.forEach((input) => { input.placeholder = String(preset[input.dataset.param]); });
  }
  const showDefaults = () => showModelDefaults(baseModels, modelInput, [epochs, batch, lr]);
  datasetSelect.addEventListener("change", () => { pickDefaultModel(); showDefaults(); });
  modelInput.addEventListener("input", showDefaults);
  lossSelect.addEventListener("change", showPresets);
  pickDefaultModel();
  showPresets();
  showDefaults();

  const form = h("form", { class: "form-grid", id: "new-job-form" },
    field("Dataset", datasetSelect), field("Base model", modelInput, options), field("Loss", lossSelect),
    field("Epochs", epochs), field("Batch size", batch), field("Learning rate", lr), field("Seed", seed),
    field("Name", name),
    h("fieldset", { class: "params" }, h("legend", null, "Loss parameters (empty = the preset's value)"),
      LOSS_PARAMS.map(([, symbol], i) => field(symbol, paramInputs[i]))),
    h("fieldset", { class: "params" }, h("legend", null, "Decision (thresholds chosen on the validation split)"),
      field("Threshold policy", policy), field("Target", target), field("Min labels", minLabels),
      field("Calibration", calibration)),
    h("div", { class: "form-actions" }, submit, message));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const loss = { name: lossSelect.value };
    for (const input of paramInputs) if (input.value !== "") loss[input.dataset.param] = Number(input.value);
    const spec = {
      dataset_id: datasetSelect.value,
      base_model: modelInput.value.trim(),
      loss,
      hyperparameters: { ...filledHyperparameters([epochs, batch, lr]), seed: Number(seed.value) },
      decision: { policy: policy.value, min_labels: Number(minLabels.value || 0) },
      calibration: calibration.value,
    };
    if (!target.disabled) spec.decision.target = Number(target.value);
    if (name.value.trim()) spec.name = name.value.trim();
    submit.disabled = true;
    setChildren(message);
    try {
      const job = await api("/v1/jobs", { method: "POST", body: spec, headers: { "Idempotency-Key": randomKey() } });
      onCreated(job);
    } catch (error) {
      setChildren(message, notice("error", problemText(error)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function field(label, ...controls) {
  const id = controls[0].id;
  return h("div", { class: "field" }, h("label", { for: id }, label), controls);
}

export async function jobsPage({ root, query, signal }) {
  document.title = "Jobs · aplserve";
  const selected = new Set();
  const compareButton = h("button", { type: "button", class: "button", id: "compare-selected", disabled: true },
    "Compare selected");
  const newButton = h("button", { type: "button", class: "button primary", id: "new-job" }, "New job");
  const formBox = h("div", { hidden: true });
  const errorBox = h("div");
  const tbody = h("tbody", { id: "jobs-body" });
  const filtered = LIST_FILTERS.some((key) => query.get(key));
  const emptyRow = h("tr", null, h("td", { colspan: 9, class: "empty" }, filtered ? "No job matches these filters."
    : ["No jobs yet. Upload a dataset on the ", link("/datasets", "Datasets"), " page, then start a job with New job."]));
  const filterBox = h("div");
  const table = h("table", { class: "table jobs-table", id: "jobs-table" },
    h("thead", null, h("tr", null, h("th", { class: "check" }, ""), h("th", null, "Job"), h("th", null, "Status"),
      h("th", null, "Loss"), h("th", null, "Base model"), h("th", null, "Dataset"), h("th", null, "Progress"),
      h("th", { class: "num" }, "Best mAP"), h("th", null, "Model"))),
    tbody);
  setChildren(root,
    pageHeader("Jobs", { subtitle: "Training jobs of this key's owner, newest first. Updates live.",
      actions: [compareButton, newButton] }),
    formBox, errorBox, card(null, filterBox, h("div", { class: "table-wrap" }, table)));

  function onSelect(id, on) {
    if (on) selected.add(id);
    else selected.delete(id);
    compareButton.disabled = selected.size < 2;
    compareButton.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  }
  compareButton.addEventListener("click", () => {
    location.hash = `#/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`;
  });

  // The button works from the moment it is drawn: its handler loads what the form needs.
  let datasets = new Map();
  let datasetsFetched = 0;
  formToggle(newButton, formBox, signal, {
    title: "New job",
    build: (index, baseModels) => newJobForm(index, baseModels, (job) => {
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    }),
    onDatasets: (index) => { datasets = index; },
  });

  datasets = await datasetIndex(signal);
  datasetsFetched = Date.now();
  setChildren(filterBox, await listFilters("/jobs", query, datasets, signal));

  const rows = new Map(); // id -> { tr, signature }
  async function refresh() {
    const jobs = await listAll(`/v1/jobs${filterQuery(query)}`, { signal, maxPages: 1 });
    const unknown = jobs.some((j) => !datasets.has(j.spec.dataset_id));
    if (unknown && Date.now() - datasetsFetched > 10000) {
      datasets = await datasetIndex(signal);
      datasetsFetched = Date.now();
    }
    const seen = new Set();
    for (const job of jobs) {
      seen.add(job.id);
      const dataset = datasets.get(job.spec.dataset_id);
      const signature = JSON.stringify([job, dataset && dataset.name]);
      const known = rows.get(job.id);
      if (!known || known.signature !== signature) {
        const tr = jobRow(job, datasets, selected, onSelect);
        if (known) known.tr.replaceWith(tr);
        rows.set(job.id, { tr, signature });
      }
    }
    for (const [id, row] of rows) if (!seen.has(id)) { row.tr.remove(); rows.delete(id); selected.delete(id); }
    if (!jobs.length) setChildren(tbody, emptyRow);
    else {
      emptyRow.remove();
      const order = jobs.map((job) => rows.get(job.id).tr);
      if (order.some((tr, i) => tbody.children[i] !== tr)) tbody.append(...order); // only when it changed
    }
    table.dataset.loaded = "true";
  }
  poll(refresh, POLL_MS, signal, errorBox);
}
