// Datasets: the list with an upload form, and one dataset's label statistics.

import { api, listAll } from "../api.js";
import { card, encodePath, h, link, notice, setChildren, stat, statusBadge } from "../dom.js";
import { barChart, chartBox, chartRegistry } from "../charts.js";
import { bytes, dateTime, lossName, lossParams, num, pct, shortId } from "../format.js";
import { pageHeader, problemText, sortableTable } from "./common.js";
import { suspectLabelsCard } from "./suspects.js";

const MAX_BARS = 60;

/** The upload's reading options (api/ingest/columns.py): form field -> label and hint. */
const UPLOAD_OPTIONS = [
  ["text_column", "Text column", "text"],
  ["labels_column", "Labels column", "labels"],
  ["filename_column", "Filename column (ZIP)", "filename"],
  ["label_separator", "Label separator", "|"],
];

function uploadOptions() {
  const inputs = UPLOAD_OPTIONS.map(([field, label, placeholder]) =>
    [field, label, h("input", { type: "text", id: `dataset-${field}`, name: field, maxlength: field === "label_separator" ? 8 : 100, placeholder })]);
  const delimiter = h("select", { id: "dataset-delimiter", name: "delimiter" },
    [["", "from the header"], [",", "comma ,"], [";", "semicolon ;"], ["tab", "tab"], ["|", "bar |"]]
      .map(([value, text]) => h("option", { value }, text)));
  inputs.push(["delimiter", "CSV delimiter", delimiter]);
  const box = h("details", { class: "upload-options" }, h("summary", null, "Columns and separators"),
    inputs.map(([field, label, input]) => h("div", { class: "field" }, h("label", { for: `dataset-${field}` }, label), input)));
  return { box, inputs };
}

function uploadForm(onUploaded) {
  const file = h("input", { type: "file", id: "dataset-file", name: "file", accept: ".csv,.jsonl,.zip", required: true });
  const name = h("input", { type: "text", id: "dataset-name", name: "name", maxlength: 200, placeholder: "defaults to the file name" });
  const options = uploadOptions();
  const submit = h("button", { type: "submit", class: "button primary" }, "Upload");
  const message = h("div", { class: "form-message", role: "alert" });
  const form = h("form", { class: "form-inline", id: "upload-form" },
    h("div", { class: "field" }, h("label", { for: "dataset-file" }, "File (.csv, .jsonl or images .zip)"), file),
    h("div", { class: "field" }, h("label", { for: "dataset-name" }, "Name"), name),
    h("div", { class: "field" }, submit), options.box, message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const body = new FormData();
    body.append("file", file.files[0]);
    if (name.value.trim()) body.append("name", name.value.trim());
    for (const [field, , input] of options.inputs) if (input.value) body.append(field, input.value);
    submit.disabled = true;
    setChildren(message, h("span", { class: "muted" }, "Uploading and validating…"));
    try {
      onUploaded(await api("/v1/datasets", { method: "POST", body }));
    } catch (error) {
      setChildren(message, notice("error", problemText(error)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function datasetsPage({ root, signal }) {
  document.title = "Datasets · aplserve";
  const datasets = await listAll("/v1/datasets", { signal });
  const goTo = (d) => { location.hash = `#/datasets/${encodeURIComponent(d.id)}`; };
  setChildren(root,
    pageHeader("Datasets", { subtitle: "Uploaded multi-label datasets. Text: CSV or JSONL; images: a ZIP with labels.csv." }),
    card("Upload a dataset", uploadForm(goTo)),
    card(null, h("div", { class: "table-wrap" }, sortableTable([
      { key: "name", label: "Name", render: (d) => link(`/datasets/${encodePath(d.id)}`, d.name) },
      { key: "modality", label: "Modality" },
      { key: "format", label: "Format" },
      { key: "num_samples", label: "Samples", numeric: true },
      { key: "num_labels", label: "Labels", numeric: true },
      { key: "label_cardinality", label: "Cardinality", numeric: true, render: (d) => num(d.label_cardinality, 2) },
      { key: "size_bytes", label: "Size", numeric: true, render: (d) => bytes(d.size_bytes) },
      { key: "num_warnings", label: "Warnings", numeric: true,
        render: (d) => d.num_warnings ? h("span", { class: "badge warn" }, d.num_warnings) : h("span", { class: "muted" }, "0") },
      { key: "created_at", label: "Created", render: (d) => dateTime(d.created_at) },
    ], datasets.map((d) => ({ ...d, num_labels: d.labels.length, num_warnings: d.warnings.length })),
    { initial: { key: "created_at", descending: true }, empty: "No datasets yet: upload one above." }))));
}

export async function datasetPage({ root, params: [datasetId], signal }) {
  const dataset = await api(`/v1/datasets/${encodeURIComponent(datasetId)}`, { signal });
  const jobs = (await listAll("/v1/jobs", { signal, maxPages: 1 })).filter((j) => j.spec.dataset_id === dataset.id);
  const models = (await listAll("/v1/models", { signal })).filter((m) => m.dataset_id === dataset.id);
  document.title = `${dataset.name} · aplserve`;
  const charts = chartRegistry();
  const counts = Object.entries(dataset.label_counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const shown = counts.slice(0, MAX_BARS);
  const freq = chartBox(counts.length > MAX_BARS ? `Label frequency (the ${MAX_BARS} most frequent of ${counts.length})` : "Label frequency",
    { name: "label-frequency" });
  freq.box.querySelector(".chart-canvas").style.height = `${Math.max(180, shown.length * 26 + 60)}px`;
  const warnings = dataset.warnings.length
    ? notice("warn", h("strong", null, "Warnings"), h("ul", { id: "dataset-warnings" }, dataset.warnings.map((w) => h("li", null, w))))
    : notice("ok", "No warnings: every label has enough samples.");
  const unknown = dataset.unknown_counts || {};
  const partial = dataset.unknown_cells > 0;
  const cells = dataset.num_samples * dataset.labels.length;
  const suspects = suspectLabelsCard(models, signal);
  const compareIds = jobs.filter((j) => j.status === "succeeded").map((j) => encodeURIComponent(j.id));

  setChildren(root,
    pageHeader(dataset.name, {
      subtitle: [`${dataset.modality} · ${dataset.format} · uploaded ${dateTime(dataset.created_at)} · `, h("code", null, dataset.id)],
      actions: [link(`/models?dataset_id=${encodeURIComponent(dataset.id)}`, h("span", { class: "button", id: "dataset-models" }, "Its models")),
        compareIds.length > 1 ? link(`/compare?ids=${compareIds.join(",")}`, h("span", { class: "button" }, "Compare its runs")) : null],
    }),
    h("div", { class: "stats" },
      stat("Samples", dataset.num_samples), stat("Labels", dataset.labels.length),
      stat("Label cardinality", num(dataset.label_cardinality, 2), "accent"),
      partial ? stat("Unknown cells", h("span", { id: "unknown-cells" }, `${dataset.unknown_cells} (${pct(cells ? dataset.unknown_cells / cells : 0)})`)) : null,
      stat("Size", bytes(dataset.size_bytes)), stat("SHA-256", h("code", { class: "hash", title: dataset.sha256 }, dataset.sha256.slice(0, 12) + "…"))),
    warnings,
    h("div", { class: "two-col wide-left" },
      card(null, freq.box),
      card("Labels", h("div", { class: "table-wrap scroll" }, sortableTable([
        { key: "label", label: "Label", render: (r) => h("span", { class: "label-name" }, r.label) },
        { key: "count", label: "Samples", numeric: true },
        { key: "share", label: "Share", numeric: true, render: (r) => pct(r.share) },
        partial ? { key: "unknown", label: "Unknown", numeric: true } : null,
      ].filter(Boolean), counts.map(([label, count]) => ({ label, count, share: dataset.num_samples ? count / dataset.num_samples : 0,
        unknown: unknown[label] || 0 })),
      { initial: { key: "count", descending: true }, className: "labels-table" })))),
    card("Jobs on this dataset", jobs.length ? h("div", { class: "table-wrap" }, sortableTable([
      { key: "id", label: "Job", render: (j) => link(`/jobs/${encodePath(j.id)}`, h("code", null, shortId(j.id))) },
      { key: "status", label: "Status", render: (j) => statusBadge(j.status) },
      { key: "loss", label: "Loss", render: (j) => [h("strong", null, lossName(j.spec.loss)), " ", h("span", { class: "small muted" }, lossParams(j.spec.loss))] },
      { key: "map", label: "Best mAP", numeric: true, render: (j) => num(j.map) },
      { key: "created_at", label: "Created", render: (j) => dateTime(j.created_at) },
    ], jobs.map((j) => ({ ...j, loss: j.spec.loss.name, map: j.best_metrics ? j.best_metrics.map : null })),
    { initial: { key: "created_at", descending: true } })) : h("p", { class: "muted" }, "No job has used this dataset yet.")),
    suspects.element);
  charts.keep(barChart(freq, shown.map(([label]) => label), shown.map(([, count]) => count), { xTitle: "samples" }));
  return () => { charts.destroyAll(); suspects.cleanup(); };
}
