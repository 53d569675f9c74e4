// Small DOM helpers shared by the page's modules.

import { t } from "./i18n.js";

/** The element with this id (it must exist). */
export function $(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from the page`);
  return found;
}

/** Build an element: `el("img", {src, alt}, [children])`; `class`, `text` and `on*` handled. */
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of [].concat(children)) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** Show a message in an error slot (and mark the field it describes invalid). */
export function showError(id, text, field = null) {
  const slot = $(id);
  slot.textContent = text;
  slot.hidden = !text;
  if (field) field.setAttribute("aria-invalid", text ? "true" : "false");
}

/** Clear error slots. */
export function clearErrors(...ids) {
  for (const id of ids) showError(id, "");
}

/** An API error in plain words: the relay's own sentence, or what went wrong on the way. */
export function apiMessage(err) {
  if (err.network) return t("err.network");
  if (err.message) return t("err.server", { why: err.message });
  return t("err.status", { status: err.status });
}
