// Suspect labels: a model's validation samples ranked by cleanlab's label quality (most suspect
// first), with the text or a thumbnail of each sample, its given labels (those the model
// disagrees on marked), paging and a CSV of the whole ranking built here from every page.

import { api, ApiError, listAll, saveBlob } from "../api.js";
import { card, encodePath, h, link, notice, setChildren } from "../dom.js";
import { num, shortId } from "../format.js";
import { problemText } from "./common.js";

const PAGE = 25;
const CSV_PAGE = 200;
const CSV_COLUMNS = ["rank", "index", "score", "flagged", "text", "image", "given_labels", "unknown_labels",
  "model_rejects", "model_adds"];

function issuesPath(modelId) {
  return `/v1/models/${encodeURIComponent(modelId)}/label-issues`;
}

/** A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. */
function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** The ranking as CSV rows: labels joined with "|", the disagreements split by direction. */
export function issuesCsv(items) {
  const rows = items.map((item) => [
    item.rank, item.index, item.score, item.flagged, item.text, item.image,
    item.given_labels.join("|"), item.unknown_labels.join("|"),
    item.disagreements.filter((d) => d.given).map((d) => d.label).join("|"),
    item.disagreements.filter((d) => !d.given).map((d) => d.label).join("|"),
  ]);
  return [CSV_COLUMNS, ...rows].map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
}

function disagreementChip(d) {
  const title = d.given ? `given, but the model says no (score ${num(d.score)})`
    : `not given, but the model says yes (score ${num(d.score)})`;
  return h("span", { class: `chip disagree ${d.given ? "rejected" : "added"}`, title, "data-label": d.label,
    "data-given": String(d.given) }, d.given ? "− " : "+ ", d.label, h("span", { class: "chip-note" }, ` · ${num(d.score, 2)}`));
}

function givenChips(item) {
  const rejected = new Set(item.disagreements.filter((d) => d.given).map((d) => d.label));
  const given = item.given_labels.map((label) => rejected.has(label)
    ? h("span", { class: "chip disagree rejected", title: "the model disagrees", "data-label": label }, label)
    : h("span", { class: "chip", "data-label": label }, label));
  const unknown = item.unknown_labels.map((label) =>
    h("span", { class: "chip unknown", title: "left unknown by the annotator", "data-label": label }, label, "?"));
  return given.length || unknown.length ? [given, unknown] : h("span", { class: "muted" }, "none");
}

/** The sample's text, or its image fetched with the key (an <img src> cannot send it). */
function sampleCell(item, datasetId, urls, signal) {
  if (item.text !== null && item.text !== undefined) return h("q", { class: "sample-text" }, item.text);
  const name = item.image ? item.image.replace(/^images\//, "") : `sample ${item.index}`;
  const img = h("img", { class: "thumb", alt: name, "data-index": item.index });
  const cell = h("span", { class: "thumb-row" }, img, h("span", { class: "small muted" }, name));
  if (!datasetId) return cell;
  api(`/v1/datasets/${encodePath(datasetId, "samples", item.index, "image")}`, { raw: true, signal, headers: { Accept: "image/*" } })
    .then((response) => response.blob())
    .then((blob) => {
      const url = URL.createObjectURL(blob);
      urls.push(url);
      img.src = url;
      img.dataset.loaded = "true";
    })
    .catch(() => { img.replaceWith(h("span", { class: "small muted", title: "the dataset's image is gone" }, "no image")); });
  return cell;
}

function issueRow(item, datasetId, urls, signal) {
  return h("tr", { "data-rank": item.rank, "data-index": item.index, "data-flagged": String(item.flagged) },
    h("td", { class: "num" }, item.rank),
    h("td", { class: "num" }, num(item.score), item.flagged ? h("div", null, h("span", { class: "badge warn" }, "flagged")) : null),
    h("td", { class: "sample" }, sampleCell(item, datasetId, urls, signal)),
    h("td", { class: "given" }, givenChips(item)),
    h("td", { class: "disagreements" }, item.disagreements.length ? item.disagreements.map(disagreementChip)
      : h("span", { class: "muted" }, "agrees")));
}

function csvButton(modelId, total, message, signal) {
  const button = h("button", { type: "button", class: "button", id: "suspects-csv" }, "Download CSV");
  button.addEventListener("click", async () => {
    button.disabled = true;
    setChildren(message, "Fetching every page…");
    try {
      const items = await listAll(issuesPath(modelId), { signal, limit: CSV_PAGE, maxPages: Math.ceil(total / CSV_PAGE) + 1 });
      const blob = new Blob([issuesCsv(items)], { type: "text/csv;charset=utf-8" });
      const { name } = saveBlob(blob, `label-issues-${modelId}.csv`);
      setChildren(message, `Saved ${name} (${items.length} samples)`);
    } catch (error) {
      setChildren(message, notice("error", problemText(error)));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** Which labels the ranking leaves out because the model cannot judge them, and why. */
function excludedNote(first) {
  const excluded = first.excluded_labels || [];
  if (first.verdict) {
    return h("div", { id: "suspects-verdict" }, notice("info", `Not enough evidence: ${first.verdict}.`),
      excludedList(excluded));
  }
  if (!excluded.length) return null;
  return h("details", { class: "small", id: "suspects-excluded" },
    h("summary", null, `${excluded.length} label(s) left out: the model cannot judge them`), excludedList(excluded));
}

function excludedList(excluded) {
  return h("ul", { class: "small excluded-labels" },
    excluded.map((e) => h("li", { "data-label": e.label }, h("strong", null, e.label), `: ${e.reason}`)));
}

/** Fill `box` with one model's ranking; returns a cleanup that frees the thumbnails' blob URLs. */
async function showRanking(box, model, signal) {
  const urls = [];
  let first;
  try {
    first = await api(`${issuesPath(model.id)}?limit=${PAGE}`, { signal });
  } catch (error) {
    if (signal.aborted) throw error;
    const unavailable = error instanceof ApiError && error.code === "label_issues_unavailable";
    setChildren(box, notice(unavailable ? "info" : "error", problemText(error)));
    box.dataset.loaded = "true";
    return () => {};
  }
  const datasetId = first.dataset_id || model.dataset_id;
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "button", id: "suspects-more" }, "More");
  const message = h("span", { class: "small muted", id: "suspects-message" });
  let cursor = first.next_cursor;
  const addPage = (page) => {
    tbody.append(...page.items.map((item) => issueRow(item, datasetId, urls, signal)));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    box.dataset.shown = String(tbody.children.length);
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      addPage(await api(`${issuesPath(model.id)}?limit=${PAGE}&cursor=${encodeURIComponent(cursor)}`, { signal }));
    } catch (error) {
      setChildren(message, notice("error", problemText(error)));
    } finally {
      more.disabled = false;
    }
  });
  setChildren(box,
    h("p", { class: "small muted", id: "suspects-summary" },
      `${first.num_samples} validation samples of model `, link(`/models/${encodePath(model.id)}`, h("code", null, shortId(model.id))),
      `, most suspect first; cleanlab flags ${first.num_flagged}. Only validation samples are checked: the model was fit `
      + "on its training samples, so its scores there repeat what it was taught. Marked labels are those the model "
      + "decides the other way at its thresholds (− given but rejected, + missing but predicted); ? = unknown."),
    excludedNote(first),
    h("div", { class: "table-wrap" }, h("table", { class: "table suspects-table", id: "suspects-table" },
      h("thead", null, h("tr", null, h("th", { class: "num" }, "Rank"), h("th", { class: "num" }, "Score"),
        h("th", null, "Sample"), h("th", null, "Given labels"), h("th", null, "Model disagrees"))),
      tbody)),
    h("div", { class: "suspects-actions" }, more, csvButton(model.id, first.num_samples, message, signal), message));
  addPage(first);
  const none = first.verdict ? "Not enough evidence: no sample is ranked." : "No validation samples.";
  if (!first.items.length) tbody.append(h("tr", null, h("td", { colspan: 5, class: "empty" }, none)));
  box.dataset.modelId = model.id;
  box.dataset.loaded = "true";
  return () => urls.splice(0).forEach((url) => URL.revokeObjectURL(url));
}

/**
 * The "Suspect labels" card for `models` (newest first; a picker when there are several).
 * Returns `{ element, cleanup }`; the ranking loads after the page is shown.
 */
export function suspectLabelsCard(models, signal) {
  const box = h("div", { id: "suspects", "data-loaded": "false" });
  let cleanup = () => {};
  const load = (model) => {
    cleanup();
    box.dataset.loaded = "false";
    setChildren(box, h("p", { class: "muted" }, "Loading the ranking…"));
    showRanking(box, model, signal).then((free) => { cleanup = free; }).catch((error) => {
      if (!signal.aborted) setChildren(box, notice("error", problemText(error)));
    });
  };
  let picker = null;
  if (!models.length) {
    setChildren(box, h("p", { class: "muted" }, "No model of this dataset yet: a job that succeeds ranks its validation samples."));
    box.dataset.loaded = "true";
  } else {
    if (models.length > 1) {
      picker = h("select", { id: "suspects-model" }, models.map((m) =>
        h("option", { value: m.id }, `${shortId(m.id)} · mAP ${num(m.metrics ? m.metrics.map : null)}`)));
      picker.addEventListener("change", () => load(models.find((m) => m.id === picker.value)));
    }
    load(models[0]);
  }
  const element = card("Suspect labels",
    picker ? h("div", { class: "field inline-field" }, h("label", { for: "suspects-model" }, "Model"), picker) : null, box);
  return { element, cleanup: () => cleanup() };
}
