// The /v1 JSON API from the browser, with the user's key as a Bearer header.
// The key lives in sessionStorage: it survives reloads of this tab and is gone when
// the tab is closed; it is never put in a URL (so it never lands in server logs).

import { FINAL_STATUSES } from "./format.js";

const KEY_NAME = "aplserve.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_NAME);
  },
  set(key) {
    sessionStorage.setItem(KEY_NAME, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_NAME);
  },
};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `request failed (${status})`);
    this.status = status;
    this.code = (problem && problem.code) || "http_error";
    this.problem = problem || {};
  }
}

export function isAbort(error) {
  return error && (error.name === "AbortError" || (error.cause && error.cause.name === "AbortError"));
}

function authHeaders(extra, key) {
  return { Authorization: `Bearer ${key ?? session.key ?? ""}`, ...extra };
}

async function failure(response, signOut = true) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    problem = { detail: response.statusText || `HTTP ${response.status}` };
  }
  if (response.status === 401 && signOut) {
    session.clear();
    window.dispatchEvent(new CustomEvent("aplserve:unauthorized"));
  }
  return new ApiError(response.status, problem);
}

/**
 * Call the API. `body`: a plain object (sent as JSON) or FormData. Returns the parsed JSON,
 * null for 204, or the Response itself with `raw: true` (downloads).
 */
export async function api(path, { method = "GET", body, headers = {}, signal, raw = false, key } = {}) {
  const init = { method, signal, headers: authHeaders({ Accept: "application/json", ...headers }, key) };
  if (body !== undefined) {
    if (body instanceof FormData) init.body = body;
    else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(path, init);
  // A 401 signs the tab out, except while a new key is being tried on the sign-in form.
  if (!response.ok) throw await failure(response, key === undefined);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** Every item of a paginated list (`{items, next_cursor}`), following cursors up to `maxPages`. */
export async function listAll(path, { signal, maxPages = 10, limit = 200 } = {}) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const url = `${path}${sep}limit=${limit}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
    const body = await api(url, { signal });
    items.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/**
 * Read one server-sent-events response with fetch() (EventSource cannot send an
 * Authorization header). Calls `onEvent({event, data, id})` per event and
 * `onRetry(ms)` when the server sets a reconnection delay. Resolves when the server
 * ends the stream.
 */
export async function readEventStream(path, { signal, lastEventId, onEvent, onRetry }) {
  const headers = authHeaders({ Accept: "text/event-stream" });
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await fetch(path, { headers, signal, cache: "no-store" });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = sseParser(onEvent, onRetry);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
  } finally {
    reader.releaseLock();
  }
}

/** The event-stream line protocol (WHATWG HTML, "Parsing an event stream"). */
export function sseParser(onEvent, onRetry) {
  let buffer = "";
  let data = [];
  let event = "";
  let id = null;
  function line(text) {
    if (text === "") {
      if (data.length) onEvent({ event: event || "message", data: data.join("\n"), id });
      data = [];
      event = "";
      return;
    }
    if (text.startsWith(":")) return; // comment / heartbeat
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id" && !value.includes("\0")) id = value;
    else if (field === "retry" && /^\d+$/.test(value) && onRetry) onRetry(Number(value));
  }
  return {
    push(chunk) {
      buffer += chunk;
      for (;;) {
        const match = /\r\n|\n|\r(?!$)/.exec(buffer);
        if (!match) break;
        line(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    },
  };
}

/**
 * Follow a job's `/events` until it reaches a final state or `signal` aborts,
 * reconnecting (with Last-Event-ID, so stored events and metric points are not
 * repeated) when the connection drops. `history` events are the job's stored history.
 */
export async function followJob(jobId, { signal, onStatus, onMetric, onHistory, onConnection }) {
  let lastEventId = null;
  let current = null;
  let retryMs = 2000;
  let finished = false;
  const path = `/v1/jobs/${encodeURIComponent(jobId)}/events`;
  while (!finished && !signal.aborted) {
    try {
      onConnection && onConnection("live");
      await readEventStream(path, {
        signal,
        lastEventId,
        onRetry: (ms) => { retryMs = ms; },
        onEvent: ({ event, data, id }) => {
          if (id) lastEventId = id;
          const body = JSON.parse(data);
          if (event === "metric") onMetric(body);
          else if (event === "history") onHistory && onHistory(body);
          else if (event === "status" || event === "progress") {
            // A status event is the whole job; a progress event only what moved, merged into it.
            current = event === "status" || current === null ? body : { ...current, ...body };
            if (FINAL_STATUSES.has(current.status)) finished = true;
            onStatus(current, event);
          }
        },
      });
    } catch (error) {
      if (isAbort(error) || signal.aborted) return;
      if (error instanceof ApiError && (error.status === 401 || error.status === 404)) throw error;
    }
    if (finished || signal.aborted) break;
    onConnection && onConnection("reconnecting");
    await sleep(retryMs, signal);
  }
  onConnection && onConnection(finished ? "ended" : "closed");
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal && signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Fetch with the key and save the body as a file (a link to a blob URL, clicked). */
export async function download(path, fallbackName, { signal } = {}) {
  const response = await api(path, { raw: true, signal, headers: { Accept: "*/*" } });
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*=UTF-8''([^;]+)|filename="?([^";]+)"?/i.exec(disposition);
  return saveBlob(blob, match ? decodeURIComponent(match[1] || match[2]) : fallbackName);
}

/** Save a blob as a file named `name` (a link to a blob URL, clicked). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return { name, size: blob.size };
}
