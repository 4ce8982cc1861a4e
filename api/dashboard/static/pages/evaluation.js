// A model's evaluation on its validation split, from one GET /v1/models/{id}/evaluation:
// the PR curve of a label with its chosen threshold marked, a threshold slider whose
// precision and recall are read off that stored curve (no request per move), the
// reliability diagram before and after calibration (after: on cells no calibrator saw), and the
// per-label table. Where the evidence was too thin for a tuned threshold or a calibrator, the
// label says "not enough evidence" and why, instead of a number that looks like advice.

import { chartBox, PALETTE, unitChart } from "../charts.js";
import { card, h, setChildren, stat } from "../dom.js";
import { num } from "../format.js";
import { sortableTable } from "./common.js";

const POLICY_NAMES = { max_f1: "max F1", precision_at: "precision at", recall_at: "recall at", fixed: "fixed" };

/**
 * Precision and recall of `score >= value` read off a stored curve (thresholds ascending): the
 * point with the smallest stored threshold at or above `value`. Exact where the curve kept every
 * point; above the highest score nothing is predicted (recall 0, precision undefined).
 */
export function curveAt(curve, value) {
  const t = curve.thresholds;
  let lo = 0;
  let hi = t.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (t[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  if (lo >= t.length) return { threshold: null, precision: null, recall: 0 };
  return { threshold: t[lo], precision: curve.precision[lo], recall: curve.recall[lo] };
}

export function policyText(decision) {
  if (!decision) return "—";
  const name = POLICY_NAMES[decision.policy] || decision.policy;
  return decision.target === null || decision.target === undefined ? name : `${name} ${num(decision.target, 2)}`;
}

function curvePoints(curve) {
  return curve.recall.map((r, i) => ({ x: r, y: curve.precision[i], t: curve.thresholds[i] }));
}

/** True when the label kept the fallback threshold for want of evidence. */
export function lacksEvidence(entry) {
  return entry.threshold_source === "fallback";
}

function sourceText(entry) {
  if (lacksEvidence(entry)) return "not enough evidence · fallback";
  if (entry.target_reached === false) return "tuned · target not reached";
  return entry.threshold_source;
}

function sourceCell(row) {
  const warn = row.target_reached === false || lacksEvidence(row);
  return h("span", { class: warn ? "badge warn" : "", title: row.threshold_reason || "" }, row.source);
}

function calibrationCell(row) {
  return h("span", { class: "calibration-method", title: row.calibration_reason || "" }, row.calibration || "—");
}

function prCard(evaluation, charts) {
  const entries = evaluation.per_label;
  const select = h("select", { id: "eval-label", "aria-label": "Label" },
    entries.map((e, i) => h("option", { value: String(i) }, e.label)));
  const slider = h("input", { id: "threshold-slider", type: "range", min: 0, max: 1, step: "any", "aria-label": "Threshold" });
  const readout = {
    value: h("output", { id: "slider-threshold" }), precision: h("output", { id: "slider-precision" }),
    recall: h("output", { id: "slider-recall" }),
  };
  const chosen = h("div", { class: "small muted", id: "chosen-threshold" });
  const figure = chartBox("Precision–recall curve", { name: "pr-curve", tall: true });
  const chart = charts.keep(unitChart(figure, [
    { label: "PR curve", color: PALETTE[0], points: [], line: true },
    { label: "chosen threshold", color: PALETTE[1], points: [], radius: 7, pointStyle: "rectRot" },
    { label: "slider", color: PALETTE[2], points: [], radius: 5 },
  ], { xTitle: "recall", yTitle: "precision",
    tooltip: (ctx) => `recall ${num(ctx.parsed.x)} · precision ${num(ctx.parsed.y)}` +
      (ctx.raw.t !== undefined ? ` · threshold ${num(ctx.raw.t)}` : "") }));

  function moveSlider() {
    const entry = entries[Number(select.value)];
    const value = Number(slider.value);
    const at = curveAt(entry.pr_curve, value);
    readout.value.value = num(value);
    readout.precision.value = num(at.precision);
    readout.recall.value = num(at.recall);
    chart.data.datasets[2].data = at.precision === null ? [] : [{ x: at.recall, y: at.precision, t: at.threshold }];
    chart.update("none");
  }
  function showLabel() {
    const entry = entries[Number(select.value)];
    figure.box.dataset.label = entry.label;
    figure.box.dataset.points = String(entry.pr_curve.thresholds.length);
    chart.data.datasets[0].data = curvePoints(entry.pr_curve);
    chart.data.datasets[1].data = [{ x: entry.recall, y: entry.precision, t: entry.threshold }];
    chart.data.datasets[1].label = `chosen threshold ${num(entry.threshold)}`;
    setChildren(chosen, `Chosen threshold ${num(entry.threshold)} (${sourceText(entry)}): precision `,
      num(entry.precision), ", recall ", num(entry.recall), ", F1 ", num(entry.f1), ` · ${entry.support} positives · AP `,
      num(entry.ap), lacksEvidence(entry) && entry.threshold_reason ? ` · ${entry.threshold_reason}` : "");
    slider.value = String(entry.threshold);
    moveSlider();
  }
  select.addEventListener("change", showLabel);
  slider.addEventListener("input", moveSlider);
  showLabel();
  return card("Precision and recall by label",
    h("div", { class: "form-row eval-controls" },
      h("div", { class: "field" }, h("label", { for: "eval-label" }, "Label"), select),
      h("div", { class: "field grow" }, h("label", { for: "threshold-slider" }, "Threshold"), slider),
      h("div", { class: "slider-readout" }, h("span", null, "threshold ", readout.value), h("span", null, "precision ", readout.precision),
        h("span", null, "recall ", readout.recall))),
    chosen, figure.box,
    h("p", { class: "small muted footnote" },
      "The slider reads precision and recall off the stored curve (at most 101 points, the nearest one at or above the slider's value); it sends no request."));
}

function reliabilityPoints(bins) {
  return bins.filter((b) => b.count > 0).map((b) => ({ x: b.confidence, y: b.frequency, n: b.count }));
}

function reliabilityCard(calibration, charts) {
  const figure = chartBox("Reliability diagram", { name: "reliability", tall: true });
  const { before, after } = calibration.reliability;
  charts.keep(unitChart(figure, [
    { label: `before: raw sigmoid (ECE ${num(calibration.ece_before)})`, color: PALETTE[1], points: reliabilityPoints(before), line: true, radius: 4 },
    { label: `after: ${calibration.method === "none" ? "no calibration" : calibration.method} (ECE ${num(calibration.ece_after)}, held out)`,
      color: PALETTE[0], points: reliabilityPoints(after), line: true, radius: 4 },
    { label: "", color: "#94a3b8", points: [{ x: 0, y: 0 }, { x: 1, y: 1 }], line: true, dash: true },
  ], { xTitle: "mean score in bin", yTitle: "fraction positive",
    tooltip: (ctx) => `score ${num(ctx.parsed.x)} · positive ${num(ctx.parsed.y)}` + (ctx.raw.n ? ` · ${ctx.raw.n} cells` : "") }));
  figure.box.dataset.after = String(reliabilityPoints(after).length);
  const measured = calibration.ece_measured_on ? ` "After" is measured on ${calibration.ece_measured_on}.` : "";
  return card("Calibration", figure.box,
    h("p", { class: "small muted footnote", id: "reliability-note" },
      `${calibration.ece_bins} equal-width bins over every label cell of the split; on the diagonal a score means what it says.${measured}`));
}

function labelTable(evaluation) {
  return card("Per label", h("div", { class: "table-wrap scroll" }, sortableTable([
    { key: "label", label: "Label", render: (r) => h("span", { class: "label-name" }, r.label) },
    { key: "support", label: "Support", numeric: true },
    { key: "ap", label: "AP", numeric: true, render: (r) => num(r.ap) },
    { key: "threshold", label: "Threshold", numeric: true, render: (r) => num(r.threshold) },
    { key: "source", label: "Source", render: sourceCell },
    { key: "threshold_reason", label: "Why", render: (r) => h("span", { class: "small muted" }, r.threshold_reason || "") },
    { key: "precision", label: "Precision", numeric: true, render: (r) => num(r.precision) },
    { key: "recall", label: "Recall", numeric: true, render: (r) => num(r.recall) },
    { key: "f1", label: "F1", numeric: true, render: (r) => num(r.f1) },
    { key: "calibration", label: "Calibration", render: calibrationCell },
    { key: "temperature", label: "Temperature", numeric: true, render: (r) => num(r.temperature, 2) },
  ], evaluation.per_label.map((e) => ({ ...e, source: sourceText(e) })),
  { initial: { key: "support", descending: true }, className: "evaluation-table" })));
}

/** The evaluation part of the model page; charts go into `charts` (freed when the page is left). */
export function evaluationSection(evaluation, charts) {
  const cal = evaluation.calibration;
  return h("div", { id: "evaluation", dataset: { split: evaluation.split } },
    h("h2", { class: "section-title" }, `Evaluation on the ${evaluation.split} split (${evaluation.num_samples} samples)`),
    h("div", { class: "stats" },
      stat("Decision", policyText(evaluation.decision)),
      stat("min_labels", evaluation.decision.min_labels),
      stat("mAP, frequent third", num(evaluation.map_frequent)),
      stat("mAP, rare third", num(evaluation.map_rare)),
      stat("ECE before → after", `${num(cal.ece_before)} → ${num(cal.ece_after)}`)),
    evidenceNote(evaluation),
    h("div", { class: "two-col" }, prCard(evaluation, charts), reliabilityCard(cal, charts)),
    labelTable(evaluation));
}

/** Which labels kept the fallback threshold, and why: the "not enough evidence" state. */
function evidenceNote(evaluation) {
  const thin = evaluation.per_label.filter(lacksEvidence);
  if (!thin.length) return h("div", { id: "evidence-note", hidden: true });
  return card("Not enough evidence",
    h("p", { class: "small" }, `${thin.length} of ${evaluation.per_label.length} labels keep the fallback threshold: ` +
      "the validation split cannot carry a tuned one, so their decisions are \"more likely than not\" on calibrated scores."),
    h("ul", { id: "evidence-note", class: "small" },
      thin.map((e) => h("li", { dataset: { label: e.label } }, h("strong", null, e.label), ` (${e.support} positives): ${e.threshold_reason || "too few positives"}`))));
}
