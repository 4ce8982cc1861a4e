// Formatting numbers, dates, sizes and job descriptions for display.

export function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toFixed(digits);
}

export function pct(value) {
  if (value === null || value === undefined) return "—";
  return `${(value * 100).toFixed(1)}%`;
}

export function dateTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "—";
}

export function duration(start, end) {
  if (!start) return "—";
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  if (!(ms >= 0)) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

const PARAM_SYMBOLS = { alpha1: "α₁", alpha2: "α₂", beta: "β", gamma_pos: "γ₊", gamma_neg: "γ₋", clip: "m" };

export function lossName(loss) {
  return loss && loss.name ? loss.name.toUpperCase() : "—";
}

/** "α₁=0 α₂=1.75 β=1 γ₊=0 γ₋=4 m=0.05" */
export function lossParams(loss) {
  if (!loss) return "";
  return Object.entries(PARAM_SYMBOLS)
    .filter(([key]) => loss[key] !== null && loss[key] !== undefined)
    .map(([key, sym]) => `${sym}=${+Number(loss[key]).toFixed(4)}`)
    .join(" ");
}

/** A short base-model name: local `hf:` paths are cut to their last segment. */
export function baseModel(name) {
  if (!name) return "—";
  const m = /^hf:(.*[\\/])([^\\/]+)[\\/]?$/.exec(name);
  return m ? `hf:…/${m[2]}` : name;
}

/** Fraction done of a job, from its progress (steps when known, else epochs). */
export function progressFraction(job) {
  if (job.status === "succeeded") return 1;
  const p = job.progress || {};
  if (p.steps > 0) return Math.min(1, p.step / p.steps);
  if (p.epochs > 0) return Math.min(1, p.epoch / p.epochs);
  return 0;
}

export function progressText(job) {
  const p = job.progress || {};
  const epochs = p.epochs || (job.spec && job.spec.hyperparameters && job.spec.hyperparameters.epochs) || 0;
  if (job.status === "queued") {
    return job.queue_position !== null && job.queue_position !== undefined
      ? `queued · ${job.queue_position} ahead` : "queued";
  }
  return `epoch ${p.epoch || 0}/${epochs}`;
}

// The one list of final job states (core/jobs/status.py FINAL_STATUSES on the server).
export const FINAL_STATUSES = new Set(["succeeded", "failed", "cancelled"]);

/** Whether a job's best metrics are the best evaluation so far of a job still running. */
export function bestSoFar(job) {
  return !!(job.best_metrics && job.best_metrics.so_far) && !FINAL_STATUSES.has(job.status);
}

/** A job's best validation mAP, "0.513 so far" while it runs. */
export function bestMapText(job) {
  const value = num(job.best_metrics && job.best_metrics.map);
  return bestSoFar(job) ? `${value} so far` : value;
}
