// The style gallery: paintings, fast styles and the person's own style images.
//
// Tiles are real radio buttons (one style) or checkboxes (blend mode) inside labels, so the
// keyboard and screen readers work without extra code. A blend uses one kind of style only,
// because the relay takes either style ids of one method or uploaded images.

import { $, el, showError } from "./dom.js";
import { checkImage } from "./files.js";
import { credit, styleName, t } from "./i18n.js";

const KINDS = ["painting", "fast", "upload"];
// Fast styles beyond this many fold away behind a "show all" button.
const FOLD = 12;
// The least share a blended style can have, in %: each style must still count.
const MIN_SHARE = 5;

/** Whole percentages in proportion to `weights`, adding up to exactly 100. */
export function shares(weights) {
  const total = weights.reduce((sum, w) => sum + w, 0) || 1;
  const exact = weights.map((w) => (100 * w) / total);
  const whole = exact.map(Math.floor);
  let left = 100 - whole.reduce((sum, w) => sum + w, 0);
  // Largest remainders first get the points rounding left over.
  const order = exact.map((e, i) => [e - whole[i], i]).sort((a, b) => b[0] - a[0]);
  for (const [, i] of order) {
    if (left <= 0) break;
    whole[i] += 1;
    left -= 1;
  }
  return whole;
}

/** A node's bare style slug ("ochre-sky") as a title ("Ochre Sky"); real names untouched. */
function pretty(name) {
  if (name !== name.toLowerCase()) return name;
  return name.replace(/[-_]+/g, " ").replace(/\b\p{L}/gu, (c) => c.toUpperCase());
}

export class Gallery {
  constructor(onChange) {
    this.onChange = onChange;
    this.styles = [];
    this.limits = null;
    this.uploads = [];
    this.selected = [];
    this.weights = new Map();
    this.blend = false;
    this.uploadCount = 0;
    this.showAll = false;
    $("blend").addEventListener("change", (e) => this.setBlend(e.target.checked));
  }

  /** New styles from the relay (keeps a choice that still exists). */
  load(styles, limits) {
    this.styles = styles;
    this.limits = limits;
    const known = new Set(this.items().map((i) => i.key));
    this.selected = this.selected.filter((k) => known.has(k));
    this.render();
  }

  items() {
    const fromRelay = this.styles.map((s) => ({
      key: s.id,
      id: s.id,
      kind: s.kind === "fast" ? "fast" : "painting",
      name: styleName(s.id, s.kind === "fast" ? pretty(s.name) : s.name),
      credit: s.artist ? credit(s.artist, s.year) : "",
      thumb: s.thumbnail_url,
    }));
    return [...fromRelay, ...this.uploads];
  }

  find(key) {
    return this.items().find((i) => i.key === key);
  }

  /** The chosen styles: `{kind, items: [{id | file, name, thumb, weight}]}`, or null. */
  /** Each item's weight is its share of the blend in % (they add up to 100). */
  selection() {
    if (!this.selected.length) return null;
    const raw = this.selected.map((key) => this.weights.get(key) ?? 50);
    const share = shares(raw);
    const items = this.selected.map((key, i) => ({ ...this.find(key), weight: share[i] }));
    return { kind: items[0].kind, items };
  }

  /** One slider moved to `value`%: the others share the rest as they shared it before. */
  setShare(key, value) {
    const items = this.selection().items;
    const cap = 100 - MIN_SHARE * (items.length - 1);
    const mine = Math.max(MIN_SHARE, Math.min(cap, value));
    const others = items.filter((i) => i.key !== key);
    // Above each other's floor, the rest is split in the proportion the others had.
    const spare = others.map((i) => Math.max(0, i.weight - MIN_SHARE));
    const room = 100 - mine - MIN_SHARE * others.length;
    const extra = spare.some((v) => v > 0) ? spare : others.map(() => 1);
    const total = extra.reduce((sum, v) => sum + v, 0);
    this.weights.set(key, mine);
    others.forEach((item, i) => this.weights.set(item.key, MIN_SHARE + (room * extra[i]) / total));
  }

  setBlend(on) {
    this.blend = on;
    if (!on && this.selected.length > 1) this.selected = this.selected.slice(0, 1);
    this.render();
    this.changed();
  }

  /** Choose a style by key, as a click would. */
  pick(key, on = true) {
    const item = this.find(key);
    if (!item) return;
    showError("style-error", "");
    if (!this.blend) {
      this.selected = on ? [key] : [];
    } else if (!on) {
      this.selected = this.selected.filter((k) => k !== key);
    } else {
      const first = this.selected.length ? this.find(this.selected[0]) : null;
      if (first && first.kind !== item.kind) {
        this.selected = [];
        this.note(t("style.kind.mixed"));
      }
      const max = this.limits ? this.limits.max_styles : 4;
      if (this.selected.length >= max) {
        this.note(t("style.max", { n: max }));
      } else if (!this.selected.includes(key)) {
        this.selected.push(key);
      }
    }
    this.sync();
    this.changed();
  }

  note(text) {
    const hint = $("style-hint");
    hint.textContent = text;
    hint.classList.add("hint--note");
  }

  changed() {
    this.renderBlend();
    this.onChange(this.selection());
  }

  async addUpload(files) {
    for (const file of files) {
      const checked = await checkImage(file, this.limits);
      if (checked.error) {
        showError("style-error", checked.error);
        continue;
      }
      this.uploadCount += 1;
      const key = `upload:${this.uploadCount}`;
      this.uploads.push({
        key,
        kind: "upload",
        file,
        name: t("style.own", { n: this.uploadCount }),
        credit: file.name,
        thumb: checked.url,
      });
      this.render();
      this.pick(key);
    }
  }

  removeUpload(key) {
    const gone = this.uploads.find((u) => u.key === key);
    this.uploads = this.uploads.filter((u) => u.key !== key);
    this.selected = this.selected.filter((k) => k !== key);
    if (gone) URL.revokeObjectURL(gone.thumb);
    this.render();
    this.changed();
    $("style-upload").focus();
  }

  // ---- drawing ------------------------------------------------------------------------

  render() {
    const root = $("gallery");
    const focused = document.activeElement && document.activeElement.dataset.key;
    root.replaceChildren();
    const items = this.items();
    for (const kind of KINDS) {
      let group = items.filter((i) => i.kind === kind);
      const folds = kind === "fast" && group.length > FOLD;
      if (folds && !this.showAll) {
        // Chosen styles stay in view even when folded away.
        group = group.filter((item, index) => index < FOLD || this.selected.includes(item.key));
      }
      const tiles = group.map((item) => this.tile(item));
      if (kind === "upload") tiles.push(this.uploadTile());
      const body = tiles.length
        ? el("div", { class: "gallery", role: "group", "aria-labelledby": `group-${kind}` }, tiles)
        : el("p", { class: "hint", text: t("style.group.fast.empty") });
      const more = folds
        ? el("button", {
            type: "button",
            class: "button button--ghost button--small gallery-group__more",
            "aria-expanded": String(this.showAll),
            text: this.showAll ? t("style.fewer") : t("style.all", { n: items.filter((i) => i.kind === kind).length }),
            onclick: () => {
              this.showAll = !this.showAll;
              this.render();
              root.querySelector(".gallery-group__more")?.focus();
            },
          })
        : null;
      root.append(
        el("div", { class: "gallery-group" }, [
          el("h3", { class: "gallery-group__title", id: `group-${kind}` }, [
            t(`style.group.${kind}`),
            el("span", { class: "gallery-group__note", text: t(`style.group.${kind}.note`) }),
          ]),
          body,
          more,
        ]),
      );
    }
    const hint = $("style-hint");
    hint.classList.remove("hint--note");
    const max = this.limits ? this.limits.max_styles : 4;
    hint.textContent = this.blend ? t("style.hint.blend", { n: max }) : t("style.hint");
    if (focused) root.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
    this.sync();
    this.renderBlend();
  }

  tile(item) {
    const input = el("input", {
      type: this.blend ? "checkbox" : "radio",
      name: "style",
      value: item.key,
      class: "tile__input",
      dataset: { key: item.key },
      onchange: (e) => this.pick(item.key, e.target.checked),
    });
    const art = item.thumb
      ? el("img", { src: item.thumb, alt: "", loading: "lazy", decoding: "async" })
      : el("span", { class: "tile__letter", "aria-hidden": "true", text: item.name.slice(0, 1).toUpperCase() });
    const children = [
      input,
      el("span", { class: "tile__art" }, [art, el("span", { class: "tile__tick", "aria-hidden": "true" })]),
      el("span", { class: "tile__name", text: item.name }),
      item.credit ? el("span", { class: "tile__credit", text: item.credit }) : null,
    ];
    const label = el("label", { class: "tile", dataset: { kind: item.kind } }, children);
    if (item.kind !== "upload") return label;
    const remove = el("button", {
      type: "button",
      class: "tile__remove",
      "aria-label": t("style.remove", { name: item.name }),
      text: "×",
      onclick: () => this.removeUpload(item.key),
    });
    return el("div", { class: "tile-wrap" }, [label, remove]);
  }

  uploadTile() {
    const input = el("input", {
      type: "file",
      id: "style-upload",
      class: "sr-only",
      accept: "image/png,image/jpeg,image/webp",
      multiple: this.blend,
      dataset: { key: "style-upload" },
      onchange: (e) => {
        const files = [...e.target.files];
        e.target.value = "";
        this.addUpload(files);
      },
    });
    return el("label", { class: "tile tile--add", for: "style-upload" }, [
      input,
      el("span", { class: "tile__art tile__art--add", "aria-hidden": "true", text: "+" }),
      el("span", { class: "tile__name", text: this.uploads.length ? t("style.upload.more") : t("style.upload") }),
    ]);
  }

  /** Reflect the selection on the inputs without rebuilding them. */
  sync() {
    for (const input of $("gallery").querySelectorAll(".tile__input")) {
      const on = this.selected.includes(input.value);
      input.checked = on;
      input.closest(".tile").classList.toggle("is-selected", on);
    }
  }

  renderBlend() {
    const panel = $("blend-panel");
    const list = $("blend-list");
    const sel = this.selection();
    panel.hidden = !(this.blend && sel && sel.items.length > 1);
    if (panel.hidden) return;
    const idOf = (key) => `w-${key.replace(/[^\w-]/g, "_")}`;
    // Sliders and figures show the same thing, each style's share of the blend.
    const show = () => {
      for (const it of this.selection().items) {
        const range = list.querySelector(`#${idOf(it.key)}`);
        if (range) range.value = String(it.weight);
        const out = list.querySelector(`output[for="${idOf(it.key)}"]`);
        if (out) out.textContent = `${it.weight}%`;
      }
    };
    list.replaceChildren(
      ...sel.items.map((item) => {
        const id = idOf(item.key);
        const out = el("output", { for: id, text: `${item.weight}%` });
        const range = el("input", {
          type: "range",
          id,
          min: String(MIN_SHARE),
          max: String(100 - MIN_SHARE * (sel.items.length - 1)),
          step: "1",
          value: String(item.weight),
          "aria-label": t("style.weight.label", { name: item.name }),
          oninput: (e) => {
            this.setShare(item.key, Number(e.target.value));
            show();
          },
        });
        const thumb = item.thumb ? el("img", { src: item.thumb, alt: "" }) : null;
        return el("li", { class: "blend__item" }, [
          thumb,
          el("label", { for: id, class: "blend__name", text: item.name }),
          range,
          out,
        ]);
      }),
    );
  }
}
