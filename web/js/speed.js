// How long a job will take. The pace of the nodes that would take it wins (`pace` in
// /api/nodes: measured by each node at start-up, corrected by the relay with its finished
// jobs); then speeds from jobs this browser watched; then a rough figure for the kind of
// device the nodes have.

const KEY = "stylerelay.speed";

// Seconds per epoch per megapixel (gatys) or per megapixel (one-pass methods), plus a fixed
// start-up cost, for a typical GPU and a typical CPU.
const GUESS = {
  gpu: { gatys: [0.4, 4], fast: [0.4, 1.5], arbitrary: [0.8, 2] },
  cpu: { gatys: [9, 6], fast: [6, 2], arbitrary: [10, 3] },
};

function measured() {
  try {
    return JSON.parse(localStorage.getItem(KEY) || "{}");
  } catch {
    return {};
  }
}

function isCpu(node) {
  return /\bcpu\b|xeon|epyc|ryzen|core\(tm\)/i.test(String(node.device || "cpu"));
}

// The relay's formula, line for line (relay/estimates.py; tests/test_estimates.py checks
// that both give the same seconds).
const GATYS_START_EPOCHS = 2.0;

/** Seconds a job takes at `pace` ({seconds, seconds_per_mp} per epoch or per job). */
export function jobSeconds(pace, method, epochs, pixels) {
  const units = method === "gatys" ? epochs + GATYS_START_EPOCHS : 1.0;
  return units * (pace.seconds + (pace.seconds_per_mp * pixels) / 1e6);
}

/** The nodes that would take a job: they serve the method and its size and epochs. */
function able(method, epochs, pixels, nodes) {
  return nodes.filter(
    (n) =>
      (n.methods || []).includes(method) &&
      !n.paused &&
      (method !== "gatys" || !(n.max_epochs < epochs)) &&
      !(n.max_pixels < pixels),
  );
}

/** Seconds a job should take: `{seconds, measured}`. */
export function estimate(method, epochs, pixels, nodes) {
  const takers = able(method, epochs, pixels, nodes);
  const pool = takers.length ? takers : nodes;
  const paced = pool.map((n) => (n.pace || {})[method]).filter((p) => p && p.seconds >= 0 && p.seconds_per_mp >= 0);
  if (paced.length) {
    const seconds = Math.min(...paced.map((p) => jobSeconds(p, method, epochs, pixels)));
    return { seconds, measured: true, paced: true };
  }
  const mp = Math.max(0.01, pixels / 1e6);
  const work = method === "gatys" ? epochs * mp : mp;
  const seen = measured()[method];
  if (seen && seen.rate > 0) return { seconds: seen.start + work * seen.rate, measured: true };
  const device = pool.length && pool.every(isCpu) ? "cpu" : "gpu";
  const [rate, start] = GUESS[device][method] || GUESS.gpu.gatys;
  return { seconds: start + work * rate, measured: false };
}

/** Remember how fast a finished job ran (a moving average per method). */
export function record(method, epochs, pixels, seconds) {
  if (!(seconds > 0) || !(pixels > 0)) return;
  const mp = pixels / 1e6;
  const work = method === "gatys" ? epochs * mp : mp;
  const rate = seconds / work;
  const all = measured();
  const old = all[method];
  all[method] = {
    rate: old ? old.rate * 0.6 + rate * 0.4 : rate,
    start: 0,
  };
  localStorage.setItem(KEY, JSON.stringify(all));
}
