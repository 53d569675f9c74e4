// The page in English and Simplified Chinese (strings in lang/); the choice is remembered.
//
// Static text carries `data-i18n="key"` (and `data-i18n-attr="attr:key;..."`); code calls
// `t(key, values)`, where `{name}` in a string is replaced by `values.name`.

import en from "./lang/en.js";
import zh, { NAMES_ZH, SERVER_ZH } from "./lang/zh-CN.js";

const KEY = "stylerelay.lang";
const STRINGS = { en, "zh-CN": zh };

function slugOf(text) {
  return String(text).toLowerCase().replace(/^([a-z]+:)+/, "").replace(/[\s_]+/g, "-");
}

/** A style's name in the current language (`id` as in /api/styles, `name` its English one). */
export function styleName(id, name) {
  if (current === "en") return name;
  return NAMES_ZH[id] || NAMES_ZH[slugOf(id)] || NAMES_ZH[slugOf(name)] || name;
}

/** A painter's name (and a year like "c. 1831") in the current language. */
export function credit(artist, year) {
  if (current === "en") return t("style.by", { artist, year });
  return t("style.by", { artist: NAMES_ZH[artist] || artist, year: String(year).replace(/^c\. ?/, "约 ") });
}

export const LANGS = Object.keys(STRINGS);
let current = "en";

/** The language chosen before, else the browser's, else English. */
export function initialLang() {
  const saved = localStorage.getItem(KEY);
  if (saved && saved in STRINGS) return saved;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

export function lang() {
  return current;
}

/** The string for `key` with `{name}` placeholders filled; `a|b` picks by `values.n`. */
export function t(key, values = {}) {
  let text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (text.includes("|")) {
    const [one, many] = text.split("|");
    text = values.n === 1 ? one : many;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in values ? String(values[name]) : m));
}

/** A relay message, in Chinese where the page knows it. */
export function server(text) {
  if (!text || current === "en") return text || "";
  for (const [pattern, zh] of SERVER_ZH) {
    if (pattern.test(text)) return text.replace(pattern, zh);
  }
  return text;
}

/** Switch the language, remember it, and rewrite every marked element. */
export function setLang(code, root = document) {
  current = code in STRINGS ? code : "en";
  localStorage.setItem(KEY, current);
  document.documentElement.lang = current;
  document.title = t("title");
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr, t(key));
    }
  }
}

/** A duration in words: 8 s, 3 min, 1 h 20 min. */
export function duration(seconds) {
  const s = Math.max(1, Math.round(seconds));
  if (s < 90) return t("time.s", { n: s });
  const min = Math.round(s / 60);
  if (min < 90) return t("time.min", { n: min });
  return t("time.h", { n: Math.floor(min / 60), m: min % 60 });
}

/** A byte count in words: 10 MB, 340 KB. */
export function bytes(n) {
  if (n >= 1024 * 1024) {
    const mb = n / (1024 * 1024);
    return t("size.mb", { n: mb >= 10 ? Math.round(mb) : mb.toFixed(1).replace(/\.0$/, "") });
  }
  return t("size.kb", { n: Math.max(1, Math.round(n / 1024)) });
}
