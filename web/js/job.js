// The job being watched: queue position, progress, live preview, cancel, and the finished
// picture next to its photo and style. All of it is driven by the job's event stream, whose
// first message is the job's whole state, so opening, reloading and reconnecting are alike.

import * as api from "./api.js";
import { $, apiMessage, el, showError } from "./dom.js";
import * as history from "./history.js";
import { duration, server, t } from "./i18n.js";
import { notifyEnded, tabClear, tabEnded, tabTitle } from "./informed.js";
import { record } from "./speed.js";
import { JobStream } from "./stream.js";

const FINAL = new Set(["done", "failed", "cancelled"]);

export class JobView {
  /** @param {(id: string) => {name: string, thumb: string | null} | null} styleInfo */
  constructor(styleInfo) {
    this.styleInfo = styleInfo;
    this.stream = null;
    this.job = null;
    this.rate = null;
    this.announced = -1;
    this.connected = true;
    this.titled = null;
    $("job-cancel").addEventListener("click", () => this.cancel());
    $("job-dock-cancel").addEventListener("click", () => this.cancel());
    // Before/after: the result is clipped at the slider's position (CSSOM, allowed by the CSP).
    $("job-ba-range").addEventListener("input", (e) => this.split(e.target.value));
    $("job-copy").addEventListener("click", () => this.copy());
    $("job-new").addEventListener("click", () => this.close());
    $("job-share").addEventListener("click", () => this.toggleShare());
  }

  /** Watch a job: show its section, remember it, and follow its events. */
  open(id, { focus = true } = {}) {
    if (this.stream) this.stream.stop();
    this.job = { id, state: "queued" };
    this.rate = null;
    this.announced = -1;
    this.connected = true;
    this.titled = null;
    history.remember(id);
    if (location.hash !== `#job=${id}`) window.history.replaceState(null, "", `#job=${encodeURIComponent(id)}`);
    const section = $("job");
    section.hidden = false;
    section.dataset.job = id;
    showError("job-error", "");
    $("job-conn").hidden = true;
    $("job-result").hidden = true;
    $("job-result").removeAttribute("src");
    this.wanted = null;
    $("job-announce").textContent = "";
    $("job-placeholder").hidden = false;
    $("job-content").removeAttribute("src");
    $("job-styles").replaceChildren();
    $("job-progress").hidden = true;
    $("job-bar").value = 0;
    $("job-ba").hidden = true;
    $("job-ba-range").value = "50";
    this.split(50);
    this.paint();
    if (focus) {
      section.scrollIntoView({ behavior: "smooth", block: "start" });
      $("job-h").focus({ preventScroll: true });
    }
    this.stream = new JobStream(
      id,
      (event) => this.onEvent(event),
      (conn) => this.onConn(conn),
    );
  }

  close() {
    if (this.stream) this.stream.stop();
    this.stream = null;
    this.titled = null;
    tabClear();
    $("job").hidden = true;
    window.history.replaceState(null, "", location.pathname + location.search);
    $("create").scrollIntoView({ behavior: "smooth" });
    $("style-h").focus({ preventScroll: true });
  }

  onConn(conn) {
    const line = $("job-conn");
    clearTimeout(this.connTimer);
    line.hidden = false;
    line.classList.toggle("is-ok", conn.kind === "open");
    // A time left measured before the drop says nothing now: hidden until events flow again.
    this.connected = conn.kind === "open";
    if (!this.connected) this.rate = null;
    if (this.job) this.paint();
    if (conn.kind === "open") {
      line.textContent = t("job.reconnected");
      this.connTimer = setTimeout(() => (line.hidden = true), 4000);
      // The relay is back: the rest of the page (nodes, My results) reads itself again too.
      document.dispatchEvent(new CustomEvent("relay-back"));
      return;
    }
    document.dispatchEvent(new CustomEvent("relay-lost"));
    if (conn.kind === "offline") {
      line.textContent = t("job.offline");
    } else {
      line.textContent = t("job.reconnecting", { s: Math.max(1, Math.round(conn.seconds)) });
    }
  }

  onEvent(event) {
    const job = this.job;
    switch (event.type) {
      case "state":
      case "done":
      case "failed":
      case "cancelled":
        Object.assign(job, event.job);
        if (event.type === "failed" && event.error) job.error = event.error;
        break;
      case "queued":
        Object.assign(job, {
          state: "queued",
          position: event.position,
          waiting_reason: event.reason,
          starts_in: event.starts_in ?? null,
        });
        job.requeued = event.requeued ? event.attempts : null;
        break;
      case "started":
        Object.assign(job, { state: "running", node: event.node, epoch: null });
        break;
      case "progress":
        this.learn(event.epoch);
        Object.assign(job, { state: "running", epoch: event.epoch, epochs: event.epochs });
        break;
      case "preview":
        job.preview_url = event.url;
        break;
      case "gone":
        job.state = "gone";
        history.forget(job.id);
        break;
      default:
        return;
    }
    this.paint();
    if (FINAL.has(job.state) && event.type !== "state") this.finished();
    else if (FINAL.has(job.state)) history.refresh();
  }

  /** Read the watched job again (after the relay came back): its state as the relay has it
   *  now, so a reason for waiting that no longer holds does not linger. */
  async reread() {
    const job = this.job;
    if (!job || $("job").hidden || job.state === "gone") return;
    try {
      const view = await api.job(job.id);
      if (this.job !== job) return;
      this.onEvent({ type: "state", job: view });
    } catch (err) {
      if (err.status === 404 && this.job === job) this.onEvent({ type: "gone" });
    }
  }

  /** Note when an epoch was seen, to tell the time left from the pace since watching began. */
  learn(epoch) {
    const now = performance.now();
    if (!this.rate || epoch < this.rate.epoch) this.rate = { first: epoch, since: now };
    this.rate.epoch = epoch;
  }

  secondsLeft() {
    const r = this.rate;
    const job = this.job;
    if (!r || !job.epochs) return null;
    const elapsed = (performance.now() - r.since) / 1000;
    // Too few epochs or too short a time says little: events can arrive in bursts.
    if (r.epoch - r.first < 2 || elapsed < 1) return null;
    return (elapsed / (r.epoch - r.first)) * (job.epochs - job.epoch);
  }

  finished() {
    const job = this.job;
    if (job.state === "done" && job.started && job.finished) {
      const seconds = (Date.parse(job.finished) - Date.parse(job.started)) / 1000;
      record(job.method, job.epochs || 1, job.width * job.height, seconds);
    }
    notifyEnded(job, this.statusLine());
    history.refresh();
    if (job.state === "failed" || job.state === "cancelled") this.awaitPartial();
  }

  // ---- drawing ------------------------------------------------------------------------

  paint() {
    const job = this.job;
    const state = job.state;
    const badge = $("job-state");
    badge.className = `badge badge--${state}`;
    badge.textContent = state === "gone" ? "—" : t(`job.state.${state}`);
    $("job-status").textContent = this.statusLine();
    this.paintTitle();
    const active = state === "queued" || state === "running";
    $("job-cancel").hidden = !active;
    // Shown on phones only (CSS): the card scrolls away, the dock keeps Cancel in reach.
    $("job-dock").hidden = !active;
    $("job-dock-text").textContent = badge.textContent;
    if (!active) $("job-ba").hidden = true;
    $("job-new").hidden = !(FINAL.has(state) || state === "gone");
    if (state === "gone") {
      showError("job-error", t("job.gone"));
      $("job-images").hidden = true;
      $("job-link-row").hidden = true;
      $("job-download").hidden = true;
      return;
    }
    $("job-images").hidden = false;
    this.paintProgress();
    this.paintImages();
    const done = state === "done";
    const partial = this.partial();
    const download = $("job-download");
    download.hidden = !(done || partial);
    if (done) download.href = job.result_url;
    else if (partial) download.href = partial.src;
    download.textContent = t(done || !partial ? "job.download" : "job.download.partial");
    const share = $("job-share");
    share.hidden = !done;
    share.textContent = job.shared ? t("job.unshare") : t("job.share");
    share.setAttribute("aria-pressed", job.shared ? "true" : "false");
    const link = `${location.origin}/#job=${encodeURIComponent(job.id)}`;
    $("job-link").value = link;
    $("job-link-row").hidden = false;
  }

  statusLine() {
    const job = this.job;
    switch (job.state) {
      case "queued": {
        const n = job.position ?? "…";
        if (job.requeued) return `${t("job.requeued", { n: job.requeued })} ${t("job.queued", { n })}`;
        const why = job.waiting_reason || "";
        if (why.startsWith("No node is online")) return t("job.queued.none", { n });
        if (typeof job.starts_in === "number" && typeof job.position === "number") {
          // The relay's estimate from the pace of the nodes that could take it.
          const ahead = t("job.ahead", { n: job.position - 1, time: duration(job.starts_in) });
          return why ? `${ahead} ${server(why)}` : ahead;
        }
        return why ? t("job.queued.why", { n, why: server(why) }) : t("job.queued", { n });
      }
      case "running":
        if (job.epoch === null || job.epoch === undefined) return t("job.started", { node: job.node || "?" });
        return t("job.running", { node: job.node || "?" });
      case "done":
        return t("job.done");
      case "failed":
        return this.withPartial(t("job.failed", { why: server(job.error) || "?" }));
      case "cancelled":
        return this.withPartial(t("job.cancelled"));
      default:
        return "";
    }
  }

  /** The painting so far of a job that ended without a result (its node's latest
   *  checkpoint): where to load it, the epoch it reached and the job's planned epochs. */
  partial() {
    const job = this.job;
    const p = job.partial;
    if (!p || (job.state !== "failed" && job.state !== "cancelled")) return null;
    // The URL stays the same while a later checkpoint may replace the picture.
    return { src: `${p.url}?epoch=${p.epoch}`, epoch: p.epoch, max: job.epochs ?? job.max_epochs ?? "?" };
  }

  withPartial(line) {
    const p = this.partial();
    return p ? `${line} ${t("job.partial", { epoch: p.epoch, max: p.max })}` : line;
  }

  /** A cancelled or failed Gatys job's node sends its last checkpoint as it stops, a moment
   *  after the job ended: read the job again a few times to show it. */
  awaitPartial() {
    const job = this.job;
    if (!job || job.method !== "gatys" || !job.started) return;
    const seen = job.partial ? job.partial.epoch : 0;
    for (const delay of [1000, 3000, 7000]) {
      setTimeout(async () => {
        if (this.job !== job || (job.partial && job.partial.epoch > seen)) return;
        try {
          const view = await api.job(job.id);
          if (this.job !== job || !view.partial) return;
          job.partial = view.partial;
          this.paint();
        } catch {
          // The next try, or the job's own state, will tell.
        }
      }, delay);
    }
  }

  /** The job's state on the browser tab, for a person waiting in another one. */
  paintTitle() {
    const job = this.job;
    const state = job.state;
    if (state === "gone") {
      tabClear();
    } else if (FINAL.has(state)) {
      // Once per ending, so a later repaint (language, sharing) does not hold the title.
      if (this.titled !== state) tabEnded(t(`job.state.${state}`));
    } else if (state === "queued") {
      tabTitle(t("title.queued", { n: job.position ?? "…" }));
    } else {
      const pct = this.percent();
      tabTitle(pct === null ? t("job.state.running") : `${pct}%`);
    }
    this.titled = state;
  }

  /** How far a running job is, in %, or null when unknown (one-pass methods: no steps). */
  percent() {
    const job = this.job;
    if (job.epoch === null || job.epoch === undefined || !(job.epochs > 1)) return null;
    return Math.min(100, Math.round((100 * job.epoch) / job.epochs));
  }

  /** Say the progress in steps of 10% to screen readers, not at every epoch. */
  announce(pct) {
    const step = Math.floor(pct / 10) * 10;
    if (step <= this.announced) return;
    this.announced = step;
    $("job-announce").textContent = t("job.announce", { pct: step });
  }

  paintProgress() {
    const job = this.job;
    const box = $("job-progress");
    const running = job.state === "running" && job.epoch !== null && job.epoch !== undefined;
    box.hidden = !(running || job.state === "done");
    if (box.hidden) return;
    const max = job.epochs || 1;
    const bar = $("job-bar");
    if (max <= 1 && job.state === "running") {
      // One pass has no steps to count: the bar moves without a figure until it is done.
      bar.removeAttribute("value");
      $("job-dock-bar").removeAttribute("value");
      const text = t("job.onepass");
      $("job-progress-text").textContent = text;
      bar.setAttribute("aria-valuetext", text);
      return;
    }
    const epoch = job.state === "done" ? max : job.epoch;
    const pct = Math.min(100, Math.round((100 * epoch) / max));
    bar.value = pct;
    $("job-dock-bar").value = pct;
    if (job.state === "running") $("job-dock-text").textContent = `${$("job-state").textContent} · ${pct}%`;
    let text = max > 1 ? t("job.progress", { epoch, max, pct }) : `${pct}%`;
    const left = job.state === "running" && this.connected ? this.secondsLeft() : null;
    if (left !== null) text += ` · ${t("job.left", { time: duration(left) })}`;
    $("job-progress-text").textContent = text;
    bar.setAttribute("aria-valuetext", text);
    if (job.state === "running") this.announce(pct);
  }

  paintImages() {
    const job = this.job;
    const content = $("job-content");
    if (job.content_url && content.getAttribute("src") !== job.content_url) {
      content.src = job.content_url;
      content.alt = t("job.alt.content");
    }
    const styles = $("job-styles");
    if (!styles.childElementCount && job.styles) {
      const urls = job.style_urls || [];
      let imageIndex = 0;
      styles.replaceChildren(
        ...job.styles.map((s) => {
          const info = this.styleInfo(s.id) || { name: s.id, thumb: null };
          const url = s.id.startsWith("fast:") ? info.thumb : urls[imageIndex] || info.thumb;
          if (!s.id.startsWith("fast:")) imageIndex += 1;
          const name = s.id === "upload" ? t("style.own", { n: imageIndex }) : info.name;
          if (url && s.id.startsWith("fast:")) {
            // A fast style has no picture of its own: its thumbnail is the style painted on
            // a sample photo, so it is named as such, not passed off as the style itself.
            return el("span", { class: "compare__fast" }, [
              el("img", { src: url, alt: t("job.alt.style", { name }) }),
              el("span", { class: "compare__fastname", text: t("job.fastSample", { name }) }),
            ]);
          }
          return url
            ? el("img", { src: url, alt: t("job.alt.style", { name }) })
            : el("span", { class: "compare__named", text: name });
        }),
      );
    }
    const result = $("job-result");
    const caption = $("job-result-caption");
    const partial = this.partial();
    const src = job.state === "done" ? job.result_url : partial ? partial.src : job.preview_url;
    if (src && src !== this.wanted) {
      this.wanted = src;
      // Load off screen and swap when ready: no flicker, and a preview that fails to load
      // (the network dropped) leaves the last good one in place.
      const next = new Image();
      next.onload = () => {
        if (this.wanted !== src) return;
        result.src = src;
        result.hidden = false;
        $("job-placeholder").hidden = true;
      };
      next.onerror = () => {
        if (this.wanted === src) this.wanted = null;
      };
      next.src = src;
    }
    if (!src && !result.hidden) result.hidden = true;
    this.paintBeforeAfter();
    $("job-placeholder").hidden = result.hidden ? FINAL.has(job.state) : true;
    result.alt = t(job.state === "done" ? "job.alt.result" : partial ? "job.alt.partial" : "job.alt.preview");
    caption.textContent = partial
      ? t("job.partial.caption", { epoch: partial.epoch, max: partial.max })
      : t(job.state === "done" || !src ? "job.result" : "job.preview");
  }

  /** The before/after comparison, once there is a result to compare with the photo. */
  paintBeforeAfter() {
    const job = this.job;
    const ready = job.state === "done" && job.content_url && job.result_url;
    $("job-ba").hidden = !ready;
    if (!ready) return;
    const before = $("job-ba-before");
    const after = $("job-ba-after");
    if (before.getAttribute("src") !== job.content_url) before.src = job.content_url;
    if (after.getAttribute("src") !== job.result_url) after.src = job.result_url;
    before.alt = t("job.alt.before");
    after.alt = t("job.alt.result");
  }

  split(value) {
    const pct = Math.max(0, Math.min(100, Number(value)));
    $("job-ba-frame").style.setProperty("--split", `${pct}%`);
    $("job-ba-range").setAttribute("aria-valuetext", `${pct}%`);
  }

  async cancel() {
    const button = $("job-cancel");
    button.disabled = true;
    try {
      const view = await api.cancel(this.job.id);
      Object.assign(this.job, view);
      this.paint();
      if (this.stream) this.stream.finish();
      history.refresh();
      this.awaitPartial();
    } catch (err) {
      showError("job-error", t("job.cancel.failed", { why: err.network ? t("err.network") : server(err.message) }));
    } finally {
      button.disabled = false;
    }
  }

  async copy() {
    const input = $("job-link");
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      document.execCommand?.("copy");
    }
    const button = $("job-copy");
    button.textContent = t("job.copied");
    setTimeout(() => (button.textContent = t("job.copy")), 1500);
  }

  /** Show the finished job in the public gallery, or withdraw it (at any time). */
  async toggleShare() {
    const job = this.job;
    const button = $("job-share");
    button.disabled = true;
    try {
      const view = await api.share(job.id, !job.shared);
      job.shared = view.shared;
      job.gallery_id = view.gallery_id;
      showError("job-error", "");
      document.dispatchEvent(new CustomEvent("gallery-changed"));
    } catch (err) {
      showError("job-error", apiMessage(err));
    } finally {
      button.disabled = false;
      this.paint();
    }
  }

  /** Redraw in the current language. */
  relabel() {
    if (this.job && !$("job").hidden) this.paint();
  }
}
