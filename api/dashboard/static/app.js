// The dashboard shell: sign-in, navigation and a hash router (`#/jobs`, `#/jobs/<id>`,
// `#/sweeps[/<id>]`, `#/compare?ids=a,b`, `#/datasets[/<id>]`, `#/models[/<id>]`). Each page gets an
// AbortSignal that fires when the user leaves it, which stops its polling and streams.

import { api, ApiError, isAbort, session } from "./api.js";
import { h, notice, setChildren } from "./dom.js";
import { comparePage } from "./pages/compare.js";
import { datasetPage, datasetsPage } from "./pages/datasets.js";
import { jobPage } from "./pages/job.js";
import { jobsPage } from "./pages/jobs.js";
import { modelPage, modelsPage } from "./pages/models.js";
import { sweepPage, sweepsPage } from "./pages/sweeps.js";

const root = document.getElementById("app");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session");
let current = null; // { controller, cleanup }

const ROUTES = [
  [/^\/jobs$/, jobsPage, "jobs"],
  [/^\/jobs\/([^/]+)$/, jobPage, "jobs"],
  [/^\/sweeps$/, sweepsPage, "sweeps"],
  [/^\/sweeps\/([^/]+)$/, sweepPage, "sweeps"],
  [/^\/compare$/, comparePage, "compare"],
  [/^\/datasets$/, datasetsPage, "datasets"],
  [/^\/datasets\/([^/]+)$/, datasetPage, "datasets"],
  [/^\/models$/, modelsPage, "models"],
  [/^\/models\/([^/]+)$/, modelPage, "models"],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

function leavePage() {
  if (!current) return;
  current.controller.abort();
  try {
    if (current.cleanup) current.cleanup();
  } catch (error) {
    console.warn("page cleanup failed", error);
  }
  current = null;
}

function showSignedIn(signedIn) {
  nav.hidden = !signedIn;
  sessionBox.hidden = !signedIn;
}

function signInPage() {
  leavePage();
  showSignedIn(false);
  document.title = "Sign in · aplserve";
  const input = h("input", {
    id: "api-key", name: "api-key", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, placeholder: "paste your API key",
  });
  const message = h("div", { class: "form-message", role: "alert" });
  const button = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h("form", { class: "signin-form", id: "signin-form" },
    h("label", { for: "api-key" }, "API key"), input, button, message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    setChildren(message);
    try {
      await api("/v1/jobs?limit=1", { key });
      session.set(key);
      if (!location.hash || location.hash === "#/" || location.hash === "#/signin") location.hash = "#/jobs";
      else route();
    } catch (error) {
      setChildren(message, error instanceof ApiError && error.status === 401
        ? "That key was not accepted. Create one with `aplserve keys create --name NAME`."
        : `Could not reach the API: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });
  setChildren(root, h("div", { class: "signin" },
    h("div", { class: "signin-card card" },
      h("h1", null, "Sign in"),
      h("p", { class: "muted" }, "The dashboard shows the datasets, jobs and models of the key's owner. "
        + "The key is kept in this browser tab only (sessionStorage) and sent as a Bearer header."),
      form)));
  input.focus();
}

function route() {
  if (!session.key) {
    signInPage();
    return;
  }
  showSignedIn(true);
  const { path, query } = parseHash();
  leavePage();
  let matched = null;
  for (const [pattern, page, section] of ROUTES) {
    const m = pattern.exec(path);
    if (m) {
      matched = { page, section, params: m.slice(1).map(decodeURIComponent) };
      break;
    }
  }
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", matched && a.dataset.section === matched.section);
  const controller = new AbortController();
  current = { controller, cleanup: null };
  setChildren(root);
  if (!matched) {
    setChildren(root, notice("error", "There is no such page. ", h("a", { href: "#/jobs" }, "Go to the jobs.")));
    return;
  }
  const ctx = { root, params: matched.params, query, signal: controller.signal };
  Promise.resolve()
    .then(() => matched.page(ctx))
    .then((cleanup) => {
      if (current && current.controller === controller) current.cleanup = cleanup || null;
      else if (cleanup) cleanup();
    })
    .catch((error) => {
      if (isAbort(error) || controller.signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return; // handled by the sign-out event
      setChildren(root, notice("error", error.message || String(error)));
    });
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  location.hash = "#/jobs";
  signInPage();
});

window.addEventListener("aplserve:unauthorized", () => signInPage());
window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  if (isAbort(event.reason)) event.preventDefault();
});
route();
