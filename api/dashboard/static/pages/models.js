// Models: the list (name, dataset, loss, role and sweep of each, filtered by dataset and sweep),
// and one model's name (renamed here), thresholds, metrics, evaluation (PR curves, threshold
// slider, reliability diagram), artifact download and a try-it box that calls /predict with
// text lines or uploaded images and marks the labels that min_labels added.

import { api, download, listAll } from "../api.js";
import { chartRegistry } from "../charts.js";
import { card, definitionList, encodePath, h, link, notice, setChildren, stat } from "../dom.js";
import { baseModel, bytes, dateTime, num, shortId } from "../format.js";
import {
  datasetIndex, filterQuery, LIST_FILTERS, listFilters, pageHeader, problemText, sortableTable, sweepMarker,
} from "./common.js";
import { evaluationSection, policyText } from "./evaluation.js";
import { suspectLabelsCard } from "./suspects.js";

const MAX_INPUTS = 32;
const METRIC_NAMES = { epoch: "Epoch", step: "Step", train_loss: "Train loss", val_loss: "Validation loss",
  time_s: "Seconds to that epoch", best_epoch: "Best epoch", epochs_completed: "Epochs completed" };

function metricName(key) {
  return METRIC_NAMES[key] || key.charAt(0).toUpperCase() + key.slice(1).replaceAll("_", " ");
}

/** The model's part: its job's sweep role (trial, replicate) and "linear probe" for a probe. */
export function modelRole(model) {
  const parts = model.role ? [model.role] : [];
  if (model.kind === "linear_probe") parts.push("linear probe");
  return parts.join(" · ");
}

function datasetCell(model) {
  if (!model.dataset_id) return h("span", { class: "muted" }, "deleted");
  return link(`/datasets/${encodePath(model.dataset_id)}`, model.dataset_name || shortId(model.dataset_id));
}

export async function modelsPage({ root, query, signal }) {
  document.title = "Models · aplserve";
  const datasets = await datasetIndex(signal);
  const filters = await listFilters("/models", query, datasets, signal);
  const models = await listAll(`/v1/models${filterQuery(query)}`, { signal });
  const filtered = LIST_FILTERS.some((key) => query.get(key));
  const table = sortableTable([
    { key: "id", label: "Model", render: (m) => link(`/models/${encodePath(m.id)}`, h("code", null, shortId(m.id))) },
    { key: "name", label: "Name", render: (m) => m.name ? h("span", { class: "model-name" }, m.name) : h("span", { class: "muted" }, "—") },
    { key: "dataset_name", label: "Dataset", render: datasetCell },
    { key: "loss", label: "Loss", render: (m) => m.loss ? m.loss.toUpperCase() : "—" },
    { key: "base_model", label: "Base model", render: (m) => h("span", { title: m.base_model }, baseModel(m.base_model)) },
    { key: "role_text", label: "Role", render: (m) => m.role_text || h("span", { class: "muted" }, "—") },
    { key: "sweep_id", label: "Sweep", render: (m) => m.sweep_id
      ? link(`/sweeps/${encodePath(m.sweep_id)}`, h("code", null, shortId(m.sweep_id))) : h("span", { class: "muted" }, "—") },
    { key: "map", label: "Val mAP", numeric: true, render: (m) => h("span", { title: "best mAP on the model's validation split" }, num(m.map)) },
    { key: "job_id", label: "Job", render: (m) => link(`/jobs/${encodePath(m.job_id)}`, h("code", null, shortId(m.job_id))) },
    { key: "created_at", label: "Created", render: (m) => dateTime(m.created_at) },
  ], models.map((m) => ({ ...m, role_text: modelRole(m), map: m.metrics ? m.metrics.map : null })),
  { initial: { key: "created_at", descending: true }, className: "models-table",
    rowAttrs: (m) => ({ "data-model-id": m.id, "data-kind": m.kind }),
    empty: filtered ? "No model matches these filters." : "No models yet: a job that succeeds publishes one." });
  table.id = "models-table";
  table.dataset.count = String(models.length);
  setChildren(root,
    pageHeader("Models", { subtitle: "Trained models: one per succeeded job, and its linear probe when that won." }),
    card(null, filters, h("div", { class: "table-wrap" }, table)));
}

// The job's models side by side ("fine-tuned 0.71 vs linear probe 0.64 vs TF-IDF 0.63") and any
// warning that a baseline beat the fine-tuned model (issue 23).
function baselinesNotice(model) {
  const warnings = model.warnings || [];
  if (!model.comparison && !warnings.length) return null;
  const probe = model.kind === "linear_probe"
    ? "This is the job's linear probe: the frozen base model with a logistic-regression head. " : "";
  return h("div", { id: "model-baselines" }, notice(warnings.length ? "warn" : "info",
    h("strong", null, "Baselines: "), probe, model.comparison || "",
    ...warnings.map((w) => h("div", { class: "small" }, w))));
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function scoreList(prediction, thresholds) {
  const chosen = new Set(prediction.labels);
  const rows = Object.entries(prediction.scores).sort((a, b) => b[1] - a[1]);
  return h("div", { class: "scores" }, rows.map(([label, score]) => {
    const fill = h("span", { class: "meter-fill" });
    fill.style.width = `${Math.round(score * 100)}%`;
    const threshold = thresholds[label];
    return h("div", { class: "score-row" + (chosen.has(label) ? " chosen" : ""), "data-label": label },
      h("span", { class: "label-name" }, label),
      h("span", { class: "meter", title: threshold !== undefined ? `threshold ${num(threshold)}` : null }, fill),
      h("span", { class: "meter-value" }, num(score)));
  }));
}

function predictionCard(input, prediction, thresholds) {
  const added = new Set(prediction.added_by_min_labels || []);
  const predicted = prediction.labels.length
    ? prediction.labels.map((l) => added.has(l)
      ? h("span", { class: "chip from-min-labels", title: "added by min_labels: below its threshold" }, l,
        h("span", { class: "chip-note" }, " · min_labels"))
      : h("span", { class: "chip" }, l))
    : h("span", { class: "muted" }, "no label above its threshold");
  return h("div", { class: "prediction" },
    h("div", { class: "prediction-input" }, input),
    h("div", { class: "prediction-labels" }, h("span", { class: "small muted" }, "Predicted: "), predicted),
    scoreList(prediction, thresholds));
}

function tryItBox(model) {
  const isText = model.modality === "text";
  const textInput = h("textarea", { id: "predict-input", rows: 5, placeholder: "One text per line" });
  const fileInput = h("input", { id: "predict-files", type: "file", accept: "image/png,image/jpeg,image/webp", multiple: true });
  const threshold = h("input", { id: "predict-threshold", type: "number", min: 0, max: 1, step: "any", placeholder: "per-label" });
  const topK = h("input", { id: "predict-top-k", type: "number", min: 1, step: 1, placeholder: "all" });
  const modelMin = (model.decision && model.decision.min_labels) || 0;
  const minLabels = h("input", { id: "predict-min-labels", type: "number", min: 0, step: 1, placeholder: `model's: ${modelMin}` });
  const submit = h("button", { type: "submit", class: "button primary", id: "predict-submit" }, "Predict");
  const results = h("div", { id: "predict-results", class: "predictions" });
  const form = h("form", { class: "try-it", id: "predict-form" },
    h("div", { class: "field" }, h("label", { for: isText ? "predict-input" : "predict-files" }, isText ? "Texts" : "Images"),
      isText ? textInput : fileInput),
    h("div", { class: "form-row" },
      h("div", { class: "field" }, h("label", { for: "predict-threshold" }, "Threshold (optional)"), threshold),
      h("div", { class: "field" }, h("label", { for: "predict-top-k" }, "Top k (optional)"), topK),
      h("div", { class: "field" }, h("label", { for: "predict-min-labels" }, "Min labels (optional)"), minLabels),
      h("div", { class: "field end" }, submit)),
    results);
  const previews = [];
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    previews.splice(0).forEach((url) => URL.revokeObjectURL(url));
    let inputs;
    let shown;
    if (isText) {
      const lines = textInput.value.split("\n").map((s) => s.trim()).filter(Boolean).slice(0, MAX_INPUTS);
      if (!lines.length) return;
      inputs = lines;
      shown = lines.map((line) => h("q", null, line));
    } else {
      const files = [...fileInput.files].slice(0, MAX_INPUTS);
      if (!files.length) return;
      inputs = await Promise.all(files.map(async (f) => ({ image_base64: await readBase64(f) })));
      shown = files.map((f) => {
        const url = URL.createObjectURL(f);
        previews.push(url);
        return h("span", { class: "thumb-row" }, h("img", { src: url, alt: f.name, class: "thumb" }), f.name);
      });
    }
    const body = { inputs };
    if (threshold.value !== "") body.threshold = Number(threshold.value);
    if (topK.value !== "") body.top_k = Number(topK.value);
    if (minLabels.value !== "") body.min_labels = Number(minLabels.value);
    submit.disabled = true;
    setChildren(results, h("p", { class: "muted" }, "Predicting…"));
    try {
      const response = await api(`/v1/models/${encodeURIComponent(model.id)}/predict`, { method: "POST", body });
      setChildren(results, response.predictions.map((p, i) => predictionCard(shown[i], p, model.thresholds || {})));
    } catch (error) {
      setChildren(results, notice("error", problemText(error)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function modelTitle(model) {
  return model.name
    ? h("span", null, h("span", { id: "model-name" }, model.name), " ", h("code", { class: "title-id" }, shortId(model.id)))
    : h("span", null, "Model ", h("code", null, shortId(model.id)));
}

/**
 * "Rename": a name for the model (PATCH /v1/models/{id}), shown in every list; "Use the job's
 * name" takes yours away. `onRenamed(model)` gets the model as the API returns it.
 */
function renameControl(model, onRenamed) {
  const button = h("button", { type: "button", class: "button", id: "rename-model" }, "Rename");
  const input = h("input", { id: "model-name-input", maxlength: 128, placeholder: "a name for this model",
    "aria-label": "Model name" });
  const save = h("button", { type: "submit", class: "button primary", id: "model-name-save" }, "Save");
  const clear = h("button", { type: "button", class: "button", id: "model-name-clear" }, "Use the job's name");
  const message = h("div", { class: "form-message", id: "model-name-message", role: "alert" });
  const form = h("form", { class: "form-row rename-form", id: "rename-form", hidden: true }, input, save, clear, message);
  async function send(name) {
    save.disabled = clear.disabled = true;
    setChildren(message);
    try {
      const renamed = await api(`/v1/models/${encodeURIComponent(model.id)}`, { method: "PATCH", body: { name } });
      Object.assign(model, renamed);
      form.hidden = true;
      onRenamed(renamed);
    } catch (error) {
      setChildren(message, notice("error", problemText(error)));
    } finally {
      save.disabled = clear.disabled = false;
    }
  }
  button.addEventListener("click", () => {
    form.hidden = !form.hidden;
    input.value = model.name || "";
    if (!form.hidden) input.focus();
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); send(input.value.trim() || null); });
  clear.addEventListener("click", () => send(null));
  return { button, form };
}

/** Where the model came from: base model, modality, dataset, loss, sweep and role, job, date. */
function modelSubtitle(model) {
  const role = modelRole(model);
  return [h("span", { title: model.base_model }, baseModel(model.base_model)), ` · ${model.modality} · `,
    model.dataset_id ? link(`/datasets/${encodePath(model.dataset_id)}`, model.dataset_name || shortId(model.dataset_id))
      : h("span", { class: "muted" }, "deleted dataset"),
    model.loss ? ` · ${model.loss.toUpperCase()}` : "",
    model.sweep_id ? [" · ", sweepMarker(model.sweep_id, model.role)] : role ? ` · ${role}` : "",
    " · from job ", link(`/jobs/${encodePath(model.job_id)}`, h("code", null, shortId(model.job_id))),
    ` · ${dateTime(model.created_at)}`];
}

export async function modelPage({ root, params: [modelId], signal }) {
  const model = await api(`/v1/models/${encodeURIComponent(modelId)}`, { signal });
  document.title = `${model.name || "Model " + shortId(model.id)} · aplserve`;
  const title = h("span", { id: "model-title" }, modelTitle(model));
  const rename = renameControl(model, (renamed) => {
    setChildren(title, modelTitle(renamed));
    document.title = `${renamed.name || "Model " + shortId(renamed.id)} · aplserve`;
  });
  const metrics = model.metrics || {};
  const downloadMessage = h("span", { class: "small muted", id: "download-message" });
  const downloadButton = h("button", { type: "button", class: "button", id: "download-artifact" }, "Download artifact");
  downloadButton.addEventListener("click", async () => {
    downloadButton.disabled = true;
    setChildren(downloadMessage, "Downloading…");
    try {
      const { name, size } = await download(`/v1/models/${encodeURIComponent(model.id)}/artifact`, `model-${model.id}.tar`);
      setChildren(downloadMessage, `Saved ${name} (${bytes(size)})`);
    } catch (error) {
      setChildren(downloadMessage, notice("error", problemText(error)));
    } finally {
      downloadButton.disabled = false;
    }
  });
  const sources = (model.decision && model.decision.threshold_sources) || {};
  const thresholds = Object.entries(model.thresholds || {}).map(([label, threshold]) =>
    ({ label, threshold, source: sources[label] || (model.threshold_fallback_labels.includes(label) ? "fallback" : "tuned") }));
  const charts = chartRegistry();
  let evaluation = notice("info", "This model has no stored evaluation: it was published before evaluations were kept.");
  if (model.evaluation_url) {
    try {
      evaluation = evaluationSection(await api(model.evaluation_url, { signal }), charts);
    } catch (error) {
      if (signal.aborted) throw error;
      evaluation = notice("error", `The evaluation could not be loaded: ${problemText(error)}`);
    }
  }
  const suspects = suspectLabelsCard([model], signal);
  const otherMetrics = Object.entries(metrics).filter(([k, v]) => typeof v !== "object" && !["map", "micro_f1", "macro_f1"].includes(k));
  setChildren(root,
    pageHeader(title, { subtitle: modelSubtitle(model), actions: [rename.button, downloadMessage, downloadButton] }),
    rename.form,
    baselinesNotice(model),
    h("div", { class: "stats" },
      stat("mAP (validation)", num(metrics.map), "accent"), stat("Micro F1 (validation)", num(metrics.micro_f1)),
      stat("Macro F1 (validation)", num(metrics.macro_f1)),
      stat("Labels", model.labels.length), stat("Artifact", bytes(model.artifact && model.artifact.size_bytes))),
    h("div", { class: "two-col wide-left" },
      card("Try it", tryItBox(model)),
      card("Decision thresholds", h("div", { class: "table-wrap scroll" }, sortableTable([
        { key: "label", label: "Label", render: (r) => h("span", { class: "label-name" }, r.label) },
        { key: "threshold", label: "Threshold", numeric: true, render: (r) => num(r.threshold) },
        { key: "source", label: "Source" },
      ], thresholds, { initial: { key: "label" }, className: "thresholds-table" })))),
    evaluation,
    suspects.element,
    card("Details", definitionList([
      ["Model id", h("code", null, model.id)],
      ["Role", modelRole(model) || "fine-tuned model of an ordinary job"],
      ["Base model", h("code", null, model.base_model)],
      ["Artifact SHA-256", h("code", { class: "hash" }, (model.artifact && model.artifact.sha256) || "—")],
      ["Decision policy", policyText(model.decision)],
      ["Calibration", model.decision ? model.decision.calibration : "none (published before calibration)"],
      ...otherMetrics.map(([k, v]) => [metricName(k), typeof v === "number" && !Number.isInteger(v) ? num(v, 4) : String(v)]),
    ])));
  return () => { charts.destroyAll(); suspects.cleanup(); };
}
