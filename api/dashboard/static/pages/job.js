// One job: live charts (train/val loss, mAP, micro/macro F1 per epoch) fed by the job's
// /events stream, the per-class AP table, spec, error and a cancel button.

import { api, followJob } from "../api.js";
import { card, definitionList, encodePath, h, link, notice, progressBar, setChildren, stat, statusBadge } from "../dom.js";
import { chartBox, chartRegistry, epochChart, PALETTE } from "../charts.js";
import { baseModel, bestSoFar, dateTime, duration, lossName, lossParams, num, progressFraction, progressText, shortId, FINAL_STATUSES } from "../format.js";
import { fetchOr404, pageHeader, problemText, sortableTable } from "./common.js";

function perClassRows(point) {
  return Object.entries(point.per_class_ap || {}).map(([label, ap]) => ({ label, ap }));
}

function apBar(ap) {
  if (ap === null || ap === undefined) return h("span", { class: "muted" }, "— (no positives in validation)");
  const fill = h("span", { class: "meter-fill" });
  fill.style.width = `${Math.round(ap * 100)}%`;
  return h("span", { class: "meter-row" }, h("span", { class: "meter" }, fill), h("span", { class: "meter-value" }, num(ap)));
}

function specSection(job) {
  const spec = job.spec;
  const hp = spec.hyperparameters || {};
  const metadata = Object.entries(job.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return [
    definitionList([
      ["Name", job.name || "—"], ["Metadata", metadata || "—"],
      ["Dataset", link(`/datasets/${encodePath(spec.dataset_id)}`, h("code", null, spec.dataset_id))],
      ["Base model", h("code", null, spec.base_model)],
      ["Loss", `${lossName(spec.loss)}  ${lossParams(spec.loss)}`],
      ["Epochs", hp.epochs], ["Batch size", hp.batch_size], ["Learning rate", hp.learning_rate],
      ["Weight decay", hp.weight_decay], ["Validation fraction", hp.val_fraction], ["Seed", hp.seed],
      ["Max length / image size", `${hp.max_length} / ${hp.image_size}`],
      ["Mixed precision", hp.mixed_precision], ["Early stopping", hp.early_stopping_patience ?? "off"],
    ]),
    h("details", { class: "raw" }, h("summary", null, "Spec as JSON"), h("pre", null, JSON.stringify(spec, null, 2))),
  ];
}

export async function jobPage({ root, params: [jobId], signal }) {
  document.title = `Job ${shortId(jobId)} · aplserve`;
  let job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal });
  const dataset = await fetchOr404(`/v1/datasets/${encodeURIComponent(job.spec.dataset_id)}`, signal);
  const charts = chartRegistry();
  const epochs = job.spec.hyperparameters.epochs;

  const titleBadge = h("span", { id: "job-status" });
  const connection = h("span", { class: "connection", id: "connection" });
  const cancelButton = h("button", { type: "button", class: "button danger", id: "cancel-job" }, "Cancel job");
  const modelLink = h("span");
  const actions = [modelLink, link(`/compare?ids=${encodeURIComponent(job.id)}`, "Compare…"), cancelButton];
  const messageBox = h("div");
  const errorBox = h("div", { id: "job-error" });
  const stats = h("div", { class: "stats", id: "job-stats" });
  const perClassBox = h("div", { id: "per-class" });
  const pointsNote = h("span", { class: "muted", id: "points-note" });
  const eventsList = h("ol", { class: "events", id: "job-events" });
  const eventsBox = h("div", { class: "table-wrap" }, eventsList);
  const seenEvents = new Set();
  function addEvent(event) {
    if (seenEvents.has(event.id)) return;
    seenEvents.add(event.id);
    eventsList.append(h("li", { class: `event level-${event.level}`, "data-type": event.type },
      h("span", { class: "muted small" }, dateTime(event.created_at)), " ",
      h("span", { class: "event-type" }, event.type), " ", event.message));
  }

  const lossBox = chartBox("Loss", { name: "loss" });
  const mapBox = chartBox("Validation mAP", { name: "map" });
  const f1Box = chartBox("Validation F1", { name: "f1" });
  const lossChart = charts.keep(epochChart(lossBox, [
    { label: "train loss", color: PALETTE[0] }, { label: "validation loss", color: PALETTE[1], dash: true }], { yTitle: "loss", epochs }));
  const mapChart = charts.keep(epochChart(mapBox, [{ label: "mAP", color: PALETTE[2] }], { yTitle: "mAP", yMin: 0, yMax: 1, epochs }));
  const f1Chart = charts.keep(epochChart(f1Box, [
    { label: "micro F1", color: PALETTE[3] }, { label: "macro F1", color: PALETTE[4], dash: true }], { yTitle: "F1", yMin: 0, yMax: 1, epochs }));

  const subtitle = [
    h("strong", null, lossName(job.spec.loss)), " · ", h("span", { title: job.spec.base_model }, baseModel(job.spec.base_model)),
    " · ", dataset ? link(`/datasets/${encodePath(dataset.id)}`, dataset.name) : h("span", { class: "muted" }, "dataset deleted"),
    " · ", `created ${dateTime(job.created_at)}`, " · ", connection,
    job.sweep_id ? [" · ", link(`/sweeps/${encodePath(job.sweep_id)}`, `sweep ${shortId(job.sweep_id)}`)] : null,
  ];
  setChildren(root,
    pageHeader(h("span", null, "Job ", h("code", null, shortId(job.id)), " ",
      job.name ? h("span", { id: "job-name" }, job.name) : null, " ", titleBadge), { subtitle, actions }),
    messageBox, errorBox, stats,
    h("div", { class: "chart-grid" }, lossBox.box, mapBox.box, f1Box.box),
    h("div", { class: "two-col" },
      card(h("span", null, "Per-class average precision ", pointsNote), perClassBox),
      card("Spec", specSection(job))),
    card(h("span", null, "Events ", h("span", { class: "muted small" }, "(the job's stored history)")), eventsBox));

  const points = new Map(); // "epoch:step" -> point
  function latestPoint() {
    let latest = null;
    for (const p of points.values()) if (!latest || p.step > latest.step || (p.step === latest.step && p.epoch > latest.epoch)) latest = p;
    return latest;
  }
  function renderPerClass() {
    const latest = latestPoint();
    setChildren(pointsNote, latest ? `(epoch ${latest.epoch}, ${points.size} evaluation${points.size === 1 ? "" : "s"})` : "");
    if (!latest) {
      setChildren(perClassBox, h("p", { class: "muted" }, "Appears after the first evaluation."));
      return;
    }
    setChildren(perClassBox, h("div", { class: "table-wrap" }, sortableTable([
      { key: "label", label: "Label", render: (r) => h("span", { class: "label-name" }, r.label) },
      { key: "ap", label: "AP", numeric: true, render: (r) => apBar(r.ap) },
    ], perClassRows(latest), { initial: { key: "ap", descending: true }, className: "per-class-table" })));
  }
  function addPoint(p) {
    points.set(`${p.epoch}:${p.step}`, p);
    lossChart.add(0, { x: p.epoch, y: p.train_loss });
    lossChart.add(1, { x: p.epoch, y: p.val_loss });
    mapChart.add(0, { x: p.epoch, y: p.map });
    f1Chart.add(0, { x: p.epoch, y: p.micro_f1 });
    f1Chart.add(1, { x: p.epoch, y: p.macro_f1 });
  }

  function renderJob() {
    setChildren(titleBadge, statusBadge(job.status));
    root.dataset.jobStatus = job.status;
    cancelButton.hidden = FINAL_STATUSES.has(job.status);
    cancelButton.disabled = !!job.cancel_requested;
    if (Date.now() > armedUntil) cancelButton.textContent = job.cancel_requested ? "Cancelling…" : "Cancel job";
    setChildren(modelLink, job.model_id ? link(`/models/${encodePath(job.model_id)}`, h("span", { class: "button" }, "Open model")) : null);
    setChildren(errorBox, job.error ? notice("error", h("strong", null, job.error.code), ": ", job.error.message) : null);
    const best = job.best_metrics || {};
    setChildren(stats,
      stat("Progress", progressBar(progressFraction(job), progressText(job)), "wide"),
      stat(bestSoFar(job) ? "Best mAP so far (validation)" : "Best mAP (validation)", num(best.map), "accent"),
      stat("Best epoch", best.epoch ?? "—"),
      stat("Micro F1", num(best.micro_f1)),
      stat("Macro F1", num(best.macro_f1)),
      stat("Val loss", num(best.val_loss, 4)),
      best.test ? stat(`Test mAP (${best.test.num_samples})`, num(best.test.map), "accent") : null,
      stat("Running time", duration(job.started_at, job.finished_at)));
  }

  // Two clicks (the second within 5 s) instead of a confirm() dialog.
  let armedUntil = 0;
  cancelButton.addEventListener("click", async () => {
    if (Date.now() > armedUntil) {
      armedUntil = Date.now() + 5000;
      cancelButton.textContent = "Click again to cancel";
      setTimeout(() => { if (Date.now() >= armedUntil) renderJob(); }, 5100);
      return;
    }
    armedUntil = 0;
    cancelButton.disabled = true;
    try {
      job = await api(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST", signal });
      renderJob();
    } catch (error) {
      setChildren(messageBox, notice("error", problemText(error)));
      cancelButton.disabled = false;
    }
  });

  renderJob();
  renderPerClass();
  const ticker = setInterval(() => { if (!FINAL_STATUSES.has(job.status)) renderJob(); }, 1000); // running time

  if (FINAL_STATUSES.has(job.status)) {
    const series = await api(`/v1/jobs/${encodeURIComponent(job.id)}/metrics`, { signal });
    series.series.forEach(addPoint);
    const stored = await api(`/v1/jobs/${encodeURIComponent(job.id)}/events?limit=500`, { signal });
    stored.items.forEach(addEvent);
    renderPerClass();
    setChildren(connection, h("span", { class: "dot done" }), "finished");
  } else {
    let perClassTimer = null;
    followJob(job.id, {
      signal,
      onConnection: (state) => {
        const labels = { live: "live", reconnecting: "reconnecting…", ended: "finished", closed: "closed" };
        setChildren(connection, h("span", { class: `dot ${state}` }), labels[state] || state);
        connection.dataset.state = state;
      },
      onStatus: (next) => { job = next; renderJob(); },
      onHistory: addEvent,
      onMetric: (p) => {
        addPoint(p);
        clearTimeout(perClassTimer);
        perClassTimer = setTimeout(renderPerClass, 100);
      },
    }).catch((error) => {
      if (!signal.aborted) setChildren(messageBox, notice("error", `Live updates stopped: ${problemText(error)}`));
    });
  }
  return () => {
    clearInterval(ticker);
    charts.destroyAll();
  };
}
