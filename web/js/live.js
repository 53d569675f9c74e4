// Live mode: the camera painted frame by frame through the relay's /api/live WebSocket
// (docs/api.md, "Live"). The page sends a frame whenever fewer than two are at the node,
// shows each painted one beside the camera with the frame rate and the delay (capture to
// display, by the page's own clock), follows the size the relay asks for, and can snap the
// current frame to a normal full-size job.

import { $, el } from "./dom.js";
import { server, styleName, t } from "./i18n.js";

const IN_FLIGHT = 2;
const FRAME_TAG = 1;
const STYLE_TAG = 2;
const OWN_SIDE = 512;
const QUALITY = 0.7;
const WINDOW_MS = 2000;
// A camera gives about 30 frames a second, and the relay takes no more (relay/live.py MAX_FPS).
const MIN_GAP_MS = 1000 / 30;

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api/live`;
}

/** An image (video, bitmap) drawn on a canvas with its long side at most `side`. */
function drawScaled(source, width, height, side) {
  const scale = Math.min(1, side / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(16, Math.round(width * scale));
  canvas.height = Math.max(16, Math.round(height * scale));
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  return canvas;
}

function blobOf(canvas, quality = QUALITY) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
}

function median(values) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export class Live {
  /** `submit(form)`: send a snapped frame as a normal job (main.js opens it). */
  constructor({ submit }) {
    this.submit = submit;
    this.styles = [];
    this.limits = null;
    this.chosen = null;
    this.capturing = false;
    this.lastSend = 0;
    this.paced = null;
    this.ws = null;
    this.stream = null;
    this.running = false;
    this.ready = false;
    this.side = 320;
    this.seq = 0;
    this.sent = new Map();
    this.paintedAt = [];
    this.delays = [];
    this.status = null; // [key, values] of the last status line, for relabelling
    // The page's own counters, also read by the browser test and bench/live.py.
    this.stats = { sent: 0, painted: 0, dropped: 0, fps: 0, delay: 0, delays: [], side: 0 };
    window.stylerelayLive = this.stats;
    $("live-open").addEventListener("click", () => this.show());
    $("live-start").addEventListener("click", () => this.start());
    $("live-stop").addEventListener("click", () => this.stop());
    $("live-snap").addEventListener("click", () => this.snap());
    $("live-style").addEventListener("change", () => this.styleChanged());
    $("live-own").addEventListener("change", () => this.styleChanged());
  }

  /** The styles live mode offers: fast styles and paintings of /api/styles, and your own. */
  load(styles, limits) {
    this.styles = styles.filter((s) => s.kind === "fast" || s.kind === "painting");
    this.limits = limits;
    this.render();
  }

  render() {
    // Filled when the panel opens: its style names would otherwise stand twice in the page.
    if ($("live").hidden) return;
    const select = $("live-style");
    select.replaceChildren(
      ...this.styles.map((s) => el("option", { value: s.id, text: styleName(s.id, s.name) })),
      el("option", { value: "image", text: t("live.ownOption") }),
    );
    // The person's choice stays through a reload of the styles or of the language.
    if ([...select.options].some((o) => o.value === this.chosen)) select.value = this.chosen;
    else select.selectedIndex = 0;
    $("live-own-row").hidden = select.value !== "image";
  }

  relabel() {
    this.render();
    if (this.status) this.say(...this.status);
    this.paintStats();
  }

  show() {
    $("live").hidden = false;
    this.render();
    $("live-h").focus();
    $("live").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  say(key, values = {}) {
    this.status = key ? [key, values] : null;
    $("live-status").textContent = key ? t(key, values) : "";
  }

  // ---- starting and stopping --------------------------------------------------------------

  async start() {
    if (this.running) return;
    const style = $("live-style").value;
    if (style === "image" && !$("live-own").files[0]) {
      this.say("live.noOwn");
      return;
    }
    this.running = true;
    this.ready = false;
    this.side = Number($("live-size").value);
    this.seq = 0;
    this.sent.clear();
    this.paintedAt = [];
    this.delays = [];
    Object.assign(this.stats, { sent: 0, painted: 0, dropped: 0, fps: 0, delay: 0, delays: [] });
    this.buttons();
    this.say("live.starting");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: $("live-camera").value, width: { ideal: 1280 }, height: { ideal: 720 } },
      });
    } catch (err) {
      this.finish("live.noCamera", { why: err && err.message ? err.message : String(err) });
      return;
    }
    const video = $("live-raw");
    video.srcObject = this.stream;
    await video.play().catch(() => {});
    const ws = (this.ws = new WebSocket(socketUrl()));
    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => this.opened(style));
    ws.addEventListener("message", (e) => this.received(e.data));
    ws.addEventListener("close", () => {
      if (this.ws === ws && this.running) this.finish("live.lost");
    });
  }

  async opened(style) {
    if (style === "image") await this.sendOwn();
    this.ws.send(JSON.stringify({ type: "start", style, side: this.side }));
  }

  async sendOwn() {
    const file = $("live-own").files[0];
    const bitmap = await createImageBitmap(file);
    const blob = await blobOf(drawScaled(bitmap, bitmap.width, bitmap.height, OWN_SIDE), 0.9);
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const message = new Uint8Array(bytes.length + 1);
    message[0] = STYLE_TAG;
    message.set(bytes, 1);
    this.ws.send(message);
  }

  async styleChanged() {
    const style = $("live-style").value;
    this.chosen = style;
    $("live-own-row").hidden = style !== "image";
    if (!this.running || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (style === "image") {
      if (!$("live-own").files[0]) return;
      await this.sendOwn();
    }
    this.ws.send(JSON.stringify({ type: "style", style }));
  }

  stop() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "stop" }));
    }
    this.finish("live.end.stopped");
  }

  finish(key, values = {}) {
    this.running = false;
    this.ready = false;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    $("live-raw").srcObject = null;
    this.say(key, values);
    this.buttons();
  }

  buttons() {
    $("live-start").disabled = this.running;
    $("live-stop").disabled = !this.running;
    $("live-snap").disabled = !this.running;
  }

  // ---- from the relay ---------------------------------------------------------------------

  received(data) {
    if (typeof data !== "string") {
      this.painted(data);
      return;
    }
    const event = JSON.parse(data);
    switch (event.type) {
      case "ready":
        this.ready = true;
        this.side = Math.min(this.side, event.side);
        this.say("live.ready", { node: event.node });
        this.pump();
        break;
      case "size":
        this.side = event.side;
        this.say(event.lowered ? "live.lowered" : "live.raised", { side: event.side });
        break;
      case "dropped":
        if (this.sent.delete(event.seq)) this.pump();
        this.stats.dropped += 1;
        break;
      case "moved":
        this.ready = false;
        this.say("live.moved", { node: event.node });
        this.sent.clear();
        break;
      case "ended": {
        const known = [
          "no_node", "no_slot", "one_per_client", "time_up", "node_lost", "node_silent", "stopped",
        ];
        const reason = event.reason;
        if (known.includes(reason)) this.finish(`live.end.${reason}`);
        else if (reason === "node_ended") this.finish("live.end.node_ended", { why: server(event.message) });
        else this.finish("live.end.other", { why: server(event.message) });
        break;
      }
      case "error":
        $("live-stats").textContent = server(event.error);
        break;
      default:
        break;
    }
  }

  async painted(buffer) {
    const view = new DataView(buffer);
    if (view.getUint8(0) !== FRAME_TAG) return;
    const seq = view.getUint32(1);
    const sentAt = this.sent.get(seq);
    this.sent.delete(seq);
    this.pump();
    const bitmap = await createImageBitmap(new Blob([buffer.slice(5)], { type: "image/jpeg" }));
    const canvas = $("live-painted");
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    const now = performance.now();
    this.paintedAt.push(now);
    while (this.paintedAt.length && now - this.paintedAt[0] > WINDOW_MS) this.paintedAt.shift();
    if (sentAt !== undefined) {
      this.delays.push(now - sentAt);
      if (this.delays.length > 30) this.delays.shift();
      this.stats.delays.push(Math.round(now - sentAt));
    }
    this.stats.painted += 1;
    this.stats.fps = this.paintedAt.length > 1
      ? ((this.paintedAt.length - 1) * 1000) / (now - this.paintedAt[0])
      : 0;
    this.stats.delay = median(this.delays);
    this.stats.side = bitmap.width > bitmap.height ? bitmap.width : bitmap.height;
    this.paintStats();
  }

  paintStats() {
    if (!this.stats.painted) {
      $("live-stats").textContent = "";
      return;
    }
    $("live-stats").textContent = t("live.stats", {
      fps: this.stats.fps.toFixed(1),
      delay: Math.round(this.stats.delay),
      side: this.stats.side,
    });
  }

  // ---- to the relay -----------------------------------------------------------------------

  /** Send the camera's current frame if fewer than two are at the node. */
  async pump() {
    if (!this.ready || !this.ws || this.sent.size >= IN_FLIGHT || this.capturing) return;
    const video = $("live-raw");
    if (!video.videoWidth) {
      setTimeout(() => this.pump(), 50);
      return;
    }
    const wait = this.lastSend + MIN_GAP_MS - performance.now();
    if (wait > 0) {
      clearTimeout(this.paced);
      this.paced = setTimeout(() => this.pump(), wait);
      return;
    }
    this.capturing = true;
    try {
      const seq = ++this.seq;
      const started = performance.now();
      this.lastSend = started;
      this.sent.set(seq, started);
      const canvas = drawScaled(video, video.videoWidth, video.videoHeight, this.side);
      const bytes = new Uint8Array(await (await blobOf(canvas)).arrayBuffer());
      const message = new Uint8Array(bytes.length + 5);
      message[0] = FRAME_TAG;
      new DataView(message.buffer).setUint32(1, seq);
      message.set(bytes, 5);
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      this.ws.send(message);
      this.stats.sent += 1;
    } finally {
      this.capturing = false;
    }
    this.pump();
  }

  // ---- snapping ---------------------------------------------------------------------------

  /** The camera's current frame, full size (within the relay's limit), as a normal job. */
  async snap() {
    const video = $("live-raw");
    if (!video.videoWidth) return;
    const max = this.limits ? this.limits.max_size : 1024;
    const canvas = drawScaled(video, video.videoWidth, video.videoHeight, max);
    const blob = await blobOf(canvas, 0.92);
    const form = new FormData();
    form.append("content", blob, "live-snap.jpg");
    const style = $("live-style").value;
    if (style === "image") form.append("style_image", $("live-own").files[0]);
    else form.append("style", style);
    form.append("method", style.startsWith("fast:") ? "fast" : "arbitrary");
    form.append("size", String(Math.max(canvas.width, canvas.height)));
    form.append("filename", "live-snap.jpg");
    try {
      await this.submit(form);
      this.say("live.snapped");
    } catch (err) {
      $("live-stats").textContent = server(err.message || String(err.status));
    }
  }
}
