// Method and parameters: which methods fit the chosen style, the epochs/size/strength
// controls, the advanced panel, and an estimate of how long the job will take.
//
// A control carries the methods its job parameter applies to (`data-methods`, as the
// relay's table of job parameters says: tests/test_web_params.py holds them equal); it is
// hidden, and its value not sent, for any other method.

import { $, el, showError } from "./dom.js";
import { duration, t } from "./i18n.js";
import { estimate } from "./speed.js";

const ORDER = ["fast", "gatys", "arbitrary"];
// A Quality job longer than this on every node online makes Any image the default.
const SLOW_QUALITY = 180;
const FITS = { fast: ["fast"], painting: ["gatys", "arbitrary"], upload: ["gatys", "arbitrary"] };
const ADVANCED = [
  ["content-weight", "content_weight", "adv.content"],
  ["style-weight", "style_weight", "adv.style"],
  ["tv-weight", "tv_weight", "adv.tv"],
  ["learning-rate", "learning_rate", "adv.lr"],
];

export class Settings {
  constructor() {
    this.methods = [];
    this.limits = null;
    this.nodes = [];
    this.method = "gatys";
    this.kind = null;
    this.photo = null;
    this.reachable = true;
    for (const id of ["epochs", "size", "strength"]) {
      $(id).addEventListener("input", () => {
        $(id).dataset.touched = "1"; // before refresh, which sizes an untouched slider
        this.refresh();
      });
    }
  }

  load(methods, limits) {
    this.methods = methods;
    this.limits = limits;
    const epochs = $("epochs");
    epochs.max = String(this.epochCap());
    if (!epochs.dataset.touched) epochs.value = String(limits.default_epochs);
    const size = $("size");
    size.max = String(limits.max_size);
    if (!size.dataset.touched) size.value = String(limits.default_size);
    this.render();
  }

  setNodes(nodes) {
    this.nodes = nodes;
    this.refresh();
  }

  /** The highest epochs the slider allows: the relay's cap, and the best node's. */
  epochCap() {
    const gatys = this.methods.find((m) => m.id === "gatys");
    const relayCap = this.limits ? this.limits.max_epochs : 1;
    return Math.max(1, Math.min(relayCap, gatys ? gatys.max_epochs : relayCap));
  }

  /** The chosen style kind changed: keep the method if it fits, else take one that does. */
  setKind(kind) {
    this.kind = kind;
    const fits = kind ? FITS[kind] : ORDER;
    if (!fits.includes(this.method)) this.method = fits[0];
    if (fits.includes("arbitrary") && this.method === "gatys" && this.qualityTooSlow()) this.method = "arbitrary";
    this.render();
  }

  /** Whether no node online could finish a Quality job as set up in a few minutes. */
  qualityTooSlow() {
    if (!this.limits || !this.nodes.length) return false;
    const guess = estimate("gatys", Number($("epochs").value), this.pixels(), this.nodes);
    return guess.seconds >= SLOW_QUALITY;
  }

  /** Whether the relay answers: estimates made without it would be stale, so they hide. */
  setReachable(on) {
    if (on === this.reachable) return;
    this.reachable = on;
    this.refresh();
  }

  /** The estimated seconds of the job as now set up. */
  seconds() {
    const gatys = this.method === "gatys";
    return estimate(this.method, gatys ? Number($("epochs").value) : 1, this.pixels(), this.nodes).seconds;
  }

  setPhoto(photo) {
    this.photo = photo;
    this.refresh();
  }

  render() {
    const box = $("methods");
    const legend = box.querySelector("legend");
    const fits = this.kind ? FITS[this.kind] : ORDER;
    const cards = ORDER.map((id) => {
      const info = this.methods.find((m) => m.id === id) || { available: false };
      const fitting = fits.includes(id);
      const reason = fitting ? (info.available ? "" : t("method.offline")) : t(id === "fast" ? "method.needs.fast" : "method.needs.image");
      const input = el("input", {
        type: "radio",
        name: "method",
        value: id,
        class: "method__input",
        disabled: !fitting,
        "aria-describedby": `m-${id}-note m-${id}-eta${reason ? ` m-${id}-why` : ""}`,
        onchange: () => {
          this.method = id;
          this.refresh();
        },
      });
      input.checked = id === this.method;
      return el("label", { class: `method${fitting ? "" : " is-disabled"}` }, [
        input,
        el("span", { class: "method__top" }, [
          el("span", { class: "method__name", text: t(`method.${id}`) }),
          el("span", { class: "method__eta", id: `m-${id}-eta` }),
        ]),
        el("span", { class: "method__note", id: `m-${id}-note`, text: t(`method.${id}.note`) }),
        reason ? el("span", { class: "method__why", id: `m-${id}-why`, text: reason }) : null,
      ]);
    });
    box.replaceChildren(legend, ...cards);
    this.refresh();
  }

  /** The long side a one-pass job gets when the size slider was left alone: the photo's
   * own, up to the relay's cap (the relay decides the same when no `size` is sent). */
  photoSize() {
    if (!this.photoSized() || !this.photo || !this.photo.width) return null;
    return Math.min(Math.max(this.photo.width, this.photo.height), this.limits.max_size);
  }

  /** Whether the job is sized by its photo: a one-pass method, the size slider untouched. */
  photoSized() {
    return this.method !== "gatys" && !$("size").dataset.touched;
  }

  pixels() {
    const long = this.photoSize() || Number($("size").value) || 512;
    if (!this.photo || !this.photo.width) return Math.round((long * long * 3) / 4);
    const { width, height } = this.photo;
    const scale = long / Math.max(width, height);
    return Math.round(width * scale * height * scale);
  }

  /** Whether the job parameter `name` means anything for the chosen method. */
  applies(name) {
    const box = document.querySelector(`[data-param="${name}"]`);
    return box.dataset.methods.split(" ").includes(this.method);
  }

  /** Update outputs, which controls show, the epochs slider's state and every estimate. */
  refresh() {
    if (!this.limits) return;
    for (const box of document.querySelectorAll("[data-methods]")) {
      box.hidden = !box.dataset.methods.split(" ").includes(this.method);
    }
    const epochs = $("epochs");
    epochs.max = String(this.epochCap());
    const gatys = this.method === "gatys";
    epochs.disabled = !gatys;
    $("epochs-field").classList.toggle("is-off", !gatys);
    $("epochs-out").textContent = gatys ? epochs.value : "—";
    $("epochs-hint").textContent = gatys ? t("param.epochs.hint", { max: this.epochCap() }) : t("param.epochs.only");
    const own = this.photoSize();
    const size = $("size");
    if (!size.dataset.touched) size.value = String(own || this.limits.default_size);
    $("size-out").textContent = own ? t("param.size.photo", { n: own }) : `${size.value} px`;
    $("strength-out").textContent = `${$("strength").value}%`;
    const pixels = this.pixels();
    for (const id of ORDER) {
      const slot = document.getElementById(`m-${id}-eta`);
      if (!slot) continue;
      const guess = estimate(id, id === "gatys" ? Number(epochs.value) : 1, pixels, this.nodes);
      const slow = id === "gatys" && guess.seconds >= SLOW_QUALITY;
      slot.textContent = t(slow ? "method.eta.slow" : "method.eta", { time: duration(guess.seconds) });
      slot.hidden = !this.reachable;
    }
    const guess = estimate(this.method, gatys ? Number(epochs.value) : 1, pixels, this.nodes);
    const key = guess.paced ? "estimate.paced" : guess.measured ? "estimate.measured" : "estimate";
    const line = t(key, { time: duration(guess.seconds) });
    if (!this.reachable) $("estimate").textContent = t("estimate.offline");
    else $("estimate").textContent = this.nodes.length ? line : `${line}\n${t("estimate.wait")}`;
  }

  /** Append method and parameters to the job's form; false (errors shown) if one is bad. */
  fill(form) {
    form.append("method", this.method);
    if (this.method === "gatys") form.append("epochs", $("epochs").value);
    // Left alone, a one-pass job keeps the photo's size: the relay's default for it.
    if (!this.photoSized()) form.append("size", $("size").value);
    if (this.applies("strength")) form.append("strength", String(Number($("strength").value) / 100));
    form.append("keep_colors", $("keep-colors").checked ? "true" : "false");
    showError("advanced-error", "");
    return this.method === "gatys" ? this.fillAdvanced(form) : true;
  }

  /** Append the advanced (Gatys) settings that were filled in; false if one is bad. */
  fillAdvanced(form) {
    const refuse = (input, message) => {
      $("advanced").open = true;
      showError("advanced-error", message, input);
      input.focus();
      return false;
    };
    for (const [id, field, label] of ADVANCED) {
      const input = $(id);
      input.removeAttribute("aria-invalid");
      const raw = input.value.trim();
      if (!raw && !input.validity.badInput) continue;
      const value = Number(raw);
      if (!Number.isFinite(value) || value < 0 || !input.checkValidity()) {
        return refuse(input, t("adv.bad", { field: t(label) }));
      }
      form.append(field, raw);
    }
    const scale = $("style-scale");
    scale.removeAttribute("aria-invalid");
    if (scale.value.trim() || scale.validity.badInput) {
      const value = Number(scale.value.trim());
      if (!(value >= 0.05 && value <= 4) || scale.validity.badInput) return refuse(scale, t("adv.scale.bad"));
      form.append("style_scale", scale.value.trim());
    }
    for (const id of ["optimizer", "init", "pooling"]) {
      if ($(id).value) form.append(id, $(id).value);
    }
    const seed = $("seed");
    seed.removeAttribute("aria-invalid");
    if (seed.value.trim() || seed.validity.badInput) {
      if (!/^\d{1,18}$/.test(seed.value.trim())) return refuse(seed, t("adv.seed.bad"));
      form.append("seed", seed.value.trim());
    }
    return true;
  }
}
