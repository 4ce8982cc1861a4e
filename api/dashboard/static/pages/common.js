// Pieces shared by several pages.

import { api, ApiError, isAbort, listAll, sleep } from "../api.js";
import { card, encodePath, h, link, notice, setChildren } from "../dom.js";
import { shortId } from "../format.js";

/** A page header: title, optional subtitle node(s) and action buttons on the right. */
export function pageHeader(title, { subtitle, actions } = {}) {
  return h("div", { class: "page-header" },
    h("div", null, h("h1", null, title), subtitle ? h("div", { class: "subtitle" }, subtitle) : null),
    actions ? h("div", { class: "actions" }, actions) : null);
}

/**
 * Call `tick` now and then every `ms` until `signal` aborts or `tick` returns true;
 * errors are shown in `errorBox` and polling goes on.
 */
export async function poll(tick, ms, signal, errorBox) {
  while (!signal.aborted) {
    try {
      const finished = await tick();
      if (errorBox) setChildren(errorBox);
      if (finished === true) return;
    } catch (error) {
      if (isAbort(error) || signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return;
      if (errorBox) setChildren(errorBox, notice("error", `Could not refresh: ${error.message}`));
    }
    await sleep(ms, signal);
  }
}

/** Dataset id -> dataset, for showing names next to jobs. */
export async function datasetIndex(signal) {
  const items = await listAll("/v1/datasets", { signal });
  return new Map(items.map((d) => [d.id, d]));
}

/** A problem+json error as readable text, including each validation error's location. */
export function problemText(error) {
  if (!(error instanceof ApiError)) return error.message || String(error);
  const lines = [error.message];
  for (const e of error.problem.errors || []) {
    const loc = (e.loc || []).filter((part) => part !== "body").join(".");
    lines.push(`${loc ? loc + ": " : ""}${e.msg}`);
  }
  return lines.join("\n");
}

/** A random id for Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A table whose columns sort when their header is clicked. `columns`: [{key, label, numeric, render}];
 * `rowAttrs(row)`: attributes of each row's <tr> (e.g. its id as a data attribute).
 */
export function sortableTable(columns, rows, { initial, className = "", empty = "Nothing to show.", rowAttrs } = {}) {
  let sortKey = initial ? initial.key : columns[0].key;
  let descending = initial ? !!initial.descending : false;
  const thead = h("thead");
  const tbody = h("tbody");
  const table = h("table", { class: "table sortable " + className }, thead, tbody);
  function compare(a, b) {
    const x = a[sortKey];
    const y = b[sortKey];
    if (x === y) return 0;
    if (x === null || x === undefined) return 1; // missing values last, either direction
    if (y === null || y === undefined) return -1;
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return descending ? -order : order;
  }
  function render() {
    setChildren(thead, h("tr", null, columns.map((col) => {
      const active = col.key === sortKey;
      const button = h("button", { type: "button", class: "sort", "data-sort-key": col.key,
        onclick: () => {
          if (sortKey === col.key) descending = !descending;
          else { sortKey = col.key; descending = !!col.numeric; }
          render();
        } }, col.label, h("span", { class: "sort-mark", "aria-hidden": "true" }, active ? (descending ? " ▼" : " ▲") : ""));
      return h("th", { class: col.numeric ? "num" : "", "aria-sort": active ? (descending ? "descending" : "ascending") : "none" }, button);
    })));
    const sorted = rows.slice().sort(compare);
    setChildren(tbody, sorted.length ? sorted.map((row) => h("tr", rowAttrs ? rowAttrs(row) : null, columns.map((col) =>
      h("td", { class: col.numeric ? "num" : "" }, col.render ? col.render(row) : row[col.key])))) :
      h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty)));
  }
  render();
  return table;
}

export async function fetchOr404(path, signal) {
  try {
    return await api(path, { signal });
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

/** The base model's default for each empty hyperparameter input, as its placeholder. */
export function showModelDefaults(baseModels, modelInput, inputs) {
  const name = modelInput.value.trim();
  const entry = baseModels.find((m) => m.name === name);
  const family = name.startsWith("timm:") ? "image" : name.startsWith("hf:") ? "text" : null;
  const defaults = entry ? entry.defaults : family && baseModelsFamilyDefaults[family];
  for (const input of inputs) {
    const value = defaults ? defaults[input.dataset.hp] : null;
    input.placeholder = value == null ? "model default" : `${value} (default)`;
  }
}

/** Only the hyperparameters the user filled in: the rest take the base model's defaults on the server. */
export function filledHyperparameters(inputs) {
  const out = {};
  for (const input of inputs) if (input.value !== "") out[input.dataset.hp] = Number(input.value);
  return out;
}

/** `family_defaults` of the last GET /v1/base-models, for timm: and hf: references. */
export const baseModelsFamilyDefaults = {};

/**
 * A "New job" / "New sweep" button: toggles `formBox`, and each time it opens loads the
 * datasets and base models the form needs. The handler is attached when the button is
 * drawn, so a click while the page still loads is not lost. `onDatasets` gets the index.
 */
export function formToggle(button, formBox, signal, { title, build, onDatasets }) {
  button.addEventListener("click", async () => {
    if (!formBox.hidden) { formBox.hidden = true; return; }
    try {
      const datasets = await datasetIndex(signal);
      onDatasets(datasets);
      const catalog = await api("/v1/base-models", { signal });
      Object.assign(baseModelsFamilyDefaults, catalog.family_defaults || {});
      setChildren(formBox, card(title, datasets.size ? build(datasets, catalog.items)
        : notice("info", "Upload a dataset first (Datasets page).")));
    } catch (error) {
      if (signal.aborted) return;
      setChildren(formBox, notice("error", problemText(error)));
    }
    formBox.hidden = false;
  });
}

/** The list filters a page's hash may carry (`#/models?dataset_id=…&sweep_id=…`), as API query parameters. */
export const LIST_FILTERS = ["dataset_id", "sweep_id"];

/** `?dataset_id=…&sweep_id=…` of the filters set in `query` ("" when none), for the list's API path. */
export function filterQuery(query) {
  const params = new URLSearchParams();
  for (const key of LIST_FILTERS) if (query.get(key)) params.set(key, query.get(key));
  const text = params.toString();
  return text ? `?${text}` : "";
}

/** A sweep as a filter option: its short id, dataset and candidate losses. */
function sweepOption(sweep, datasets) {
  const dataset = datasets.get(sweep.spec.dataset_id);
  const losses = (sweep.spec.candidates || []).map((c) => c.name).join("/");
  return [sweep.id, `${shortId(sweep.id)} · ${dataset ? dataset.name : "deleted dataset"} · ${losses}`];
}

/**
 * The dataset and sweep selects of a list page. A choice goes into the page's hash
 * (`#<path>?dataset_id=…`), so a filtered list can be reloaded, linked and gone back from.
 */
export async function listFilters(path, query, datasets, signal) {
  const sweeps = await listAll("/v1/sweeps", { signal, maxPages: 1 });
  const options = {
    dataset_id: [...datasets.values()].map((d) => [d.id, d.name]),
    sweep_id: sweeps.map((s) => sweepOption(s, datasets)),
  };
  const labels = { dataset_id: ["Dataset", "All datasets"], sweep_id: ["Sweep", "All sweeps"] };
  const selects = LIST_FILTERS.map((key) => {
    const chosen = query.get(key) || "";
    const known = options[key].some(([value]) => value === chosen);
    const entries = chosen && !known ? [...options[key], [chosen, shortId(chosen)]] : options[key];
    const select = h("select", { id: `filter-${key.replace("_id", "")}`, "data-filter": key },
      h("option", { value: "" }, labels[key][1]), entries.map(([value, text]) => h("option", { value }, text)));
    select.value = chosen;
    return select;
  });
  for (const select of selects) {
    select.addEventListener("change", () => {
      const params = new URLSearchParams();
      for (const s of selects) if (s.value) params.set(s.dataset.filter, s.value);
      location.hash = `#${path}${params.toString() ? "?" + params : ""}`;
    });
  }
  return h("div", { class: "form-row list-filters", id: "list-filters" },
    selects.map((select, i) => h("div", { class: "field" },
      h("label", { for: select.id }, labels[LIST_FILTERS[i]][0]), select)));
}

/** A sweep child's mark in a list: a link to its sweep, and its role (trial or replicate). */
export function sweepMarker(sweepId, role) {
  if (!sweepId) return null;
  return h("span", { class: "sweep-marker small", "data-sweep-id": sweepId, title: "a child job of this sweep" },
    "sweep ", link(`/sweeps/${encodePath(sweepId)}`, h("code", null, shortId(sweepId))), role ? ` · ${role}` : "");
}
