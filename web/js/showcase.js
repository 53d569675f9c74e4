// The public gallery: results people chose to share (GET /api/gallery), newest first, a page
// at a time. Thumbnails load lazily; each links to the full picture; visitors may report one.

import * as api from "./api.js";
import { $, apiMessage, el, showError } from "./dom.js";
import { lang, styleName, t } from "./i18n.js";

export class Showcase {
  constructor() {
    this.items = [];
    this.next = null;
    this.reported = new Set();
    $("showcase-more").addEventListener("click", () => this.load(this.next));
  }

  /** Load the first page (no cursor) or the one after `cursor`. */
  async load(cursor = null) {
    try {
      const page = await api.gallery(cursor);
      this.items = cursor ? [...this.items, ...page.items] : page.items;
      this.next = page.next_cursor;
      showError("showcase-error", "");
    } catch (err) {
      showError("showcase-error", apiMessage(err));
    }
    this.render();
  }

  render() {
    $("showcase-empty").hidden = this.items.length > 0;
    $("showcase-more").hidden = !this.next;
    $("showcase-grid").replaceChildren(...this.items.map((item) => this.tile(item)));
  }

  tile(item) {
    const style = item.style.name ? styleName(item.style.id, item.style.name) : t("showcase.own");
    const date = new Date(item.shared).toLocaleDateString(lang());
    const img = el("img", {
      src: item.thumbnail_url,
      alt: t("showcase.alt", { style }),
      loading: "lazy",
      decoding: "async",
      width: String(Math.min(320, item.width)),
      height: String(Math.round((Math.min(320, item.width) * item.height) / item.width)),
    });
    const link = el("a", { class: "showcase__pic", href: item.image_url, target: "_blank", rel: "noopener" }, [img]);
    const report = el("button", { type: "button", class: "showcase__report" }, [
      this.reported.has(item.id) ? t("showcase.reported") : t("showcase.report"),
    ]);
    report.disabled = this.reported.has(item.id);
    report.addEventListener("click", () => this.report(item, report));
    const caption = el("p", { class: "showcase__meta" }, [
      el("span", { class: "showcase__style" }, [style]),
      el("span", {}, [`${t(`method.${item.method}`)} · ${date}`]),
    ]);
    return el("li", { class: "showcase__item", "data-item": item.id }, [link, caption, report]);
  }

  async report(item, button) {
    button.disabled = true;
    try {
      await api.report(item.report_url);
      this.reported.add(item.id);
      button.textContent = t("showcase.reported");
    } catch (err) {
      button.disabled = false;
      showError("showcase-error", apiMessage(err));
    }
  }
}
