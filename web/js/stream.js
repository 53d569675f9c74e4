// A job's event stream: one WebSocket that comes back after a network drop.
//
// The relay sends the job's current state first on every connection, so resuming is just
// reconnecting. Reconnects wait a full-jitter exponential backoff (0.5 s doubling to 15 s),
// and go at once when the browser says it is online again. A ping every 15 s, answered by
// "pong", finds connections that died without a close.

import * as api from "./api.js";

const BASE = 500;
const CAP = 15000;
const PING_EVERY = 15000;
const PONG_WITHIN = 8000;
const FINAL = new Set(["done", "failed", "cancelled"]);

export class JobStream {
  /**
   * @param {string} id the job id
   * @param {(event: object) => void} onEvent every JSON event, plus {type: "gone"}
   * @param {(state: {kind: string, seconds?: number}) => void} onConn connection changes
   */
  constructor(id, onEvent, onConn) {
    this.id = id;
    this.onEvent = onEvent;
    this.onConn = onConn;
    this.ws = null;
    this.attempt = 0;
    this.finished = false;
    this.stopped = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.dropped = false;
    this.onOnline = () => {
      if (this.retryTimer !== null) {
        clearTimeout(this.retryTimer);
        this.retryTimer = null;
        this.connect();
      }
    };
    this.onOffline = () => {
      if (!this.finished) this.onConn({ kind: "offline" });
    };
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.connect();
  }

  connect() {
    if (this.stopped || this.finished) return;
    const ws = new WebSocket(api.eventsUrl(this.id));
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.schedulePing();
    };
    ws.onmessage = (msg) => {
      if (ws !== this.ws) return;
      clearTimeout(this.pongTimer);
      if (msg.data === "pong") return;
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (event.type === "state") {
        this.attempt = 0;
        if (this.dropped) this.onConn({ kind: "open" });
        this.dropped = false;
      }
      const state = event.type === "state" ? event.job && event.job.state : event.type;
      if (FINAL.has(state)) this.finish();
      this.onEvent(event);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.clearPing();
      if (!this.finished && !this.stopped) this.lost(opened);
    };
  }

  async lost(opened) {
    this.dropped = true;
    if (!opened) {
      // The upgrade itself failed: perhaps the job is gone, or the relay is down.
      try {
        const job = await api.job(this.id);
        if (FINAL.has(job.state)) {
          this.finish();
          this.onEvent({ type: "state", job });
          return;
        }
      } catch (err) {
        if (err.status === 404) {
          this.finish();
          this.onEvent({ type: "gone" });
          return;
        }
      }
    }
    if (this.stopped || this.finished) return;
    const ceiling = Math.min(CAP, BASE * 2 ** this.attempt);
    const delay = Math.max(250, Math.random() * ceiling);
    this.attempt += 1;
    this.onConn({ kind: navigator.onLine ? "reconnecting" : "offline", seconds: delay / 1000 });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  schedulePing() {
    this.clearPing();
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send("ping");
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.drop(), PONG_WITHIN);
    }, PING_EVERY);
  }

  clearPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  /** Give up on the current socket without waiting for its close (it may never come). */
  drop() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this.clearPing();
    ws.onclose = null;
    ws.close();
    if (!this.finished && !this.stopped) this.lost(true);
  }

  finish() {
    this.finished = true;
    this.cleanup();
  }

  /** Stop listening for good. */
  stop() {
    this.stopped = true;
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
    this.cleanup();
  }

  cleanup() {
    this.clearPing();
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
  }
}
