// How long a job will take. Measured speeds from jobs this browser watched win; then a speed
// a node advertises (`seconds_per_epoch_mp` in /api/nodes, when nodes send one); then a
// rough figure for the kind of device the nodes have.

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

/** Seconds a job should take: `{seconds, measured}`. */
export function estimate(method, epochs, pixels, nodes) {
  const mp = Math.max(0.01, pixels / 1e6);
  const work = method === "gatys" ? epochs * mp : mp;
  const seen = measured()[method];
  if (seen && seen.rate > 0) return { seconds: seen.start + work * seen.rate, measured: true };
  const able = nodes.filter((n) => (n.methods || []).includes(method));
  const pool = able.length ? able : nodes;
  const advertised = pool.map((n) => Number(n.seconds_per_epoch_mp)).filter((v) => v > 0);
  const device = pool.length && pool.every(isCpu) ? "cpu" : "gpu";
  const [rate, start] = GUESS[device][method] || GUESS.gpu.gatys;
  if (advertised.length && method === "gatys") {
    return { seconds: start + work * Math.min(...advertised), measured: false };
  }
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
