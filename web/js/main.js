// The page's entry point: loads styles and limits, wires the form to the relay, follows the
// job named in the address (`#job=<id>`), and keeps the node count in the header fresh.

import * as api from "./api.js";
import { $, apiMessage, clearErrors, showError } from "./dom.js";
import { Gallery } from "./gallery.js";
import * as history from "./history.js";
import { initialLang, setLang, t } from "./i18n.js";
import { askIfLong } from "./informed.js";
import { JobView } from "./job.js";
import { Live } from "./live.js";
import { Photo } from "./photo.js";
import { Settings } from "./settings.js";
import { Showcase } from "./showcase.js";

const NODE_POLL = 10000;
// While the relay does not answer, look again sooner: the page heals soon after it is back.
const NODE_RETRY = 3000;
const ERROR_SLOTS = [
  "style-error",
  "photo-error",
  "method-error",
  "epochs-error",
  "size-error",
  "advanced-error",
  "email-error",
  "submit-error",
];

const settings = new Settings();
const gallery = new Gallery((sel) => settings.setKind(sel ? sel.kind : null));
const photo = new Photo((p) => settings.setPhoto(p));
const showcase = new Showcase();
const job = new JobView((id) => {
  const item = gallery.find(id);
  return item ? { name: item.name, thumb: item.thumb } : null;
});
const live = new Live({
  submit: async (form) => {
    const view = await api.submit(form);
    job.open(view.id);
    history.refresh();
  },
});
let nodes = null;
let styleCount = -1;
let retry = null;
let nodeTimer = null;
let reachable = true;

// ---- loading ------------------------------------------------------------------------------

async function loadStyles() {
  clearTimeout(retry);
  try {
    const data = await api.styles();
    $("load-error").hidden = true;
    gallery.load(data.styles, data.limits);
    photo.setLimits(data.limits);
    settings.load(data.methods, data.limits);
    live.load(data.styles, data.limits);
    // The e-mail field only where the relay sends mail: elsewhere an address would go nowhere.
    $("email-row").hidden = !data.limits.email;
    styleCount = data.styles.length;
    $("go").disabled = false;
    return true;
  } catch (err) {
    const banner = $("load-error");
    banner.textContent = t("load.failed", { why: err.message || err.status });
    banner.hidden = false;
    retry = setTimeout(loadStyles, 5000);
    return false;
  }
}

function paintNodes() {
  const text = $("nodes-text");
  const box = $("nodes");
  if (nodes === null) {
    text.textContent = t("nodes.unknown");
    return;
  }
  box.classList.toggle("is-online", nodes.length > 0);
  text.textContent = nodes.length ? t("nodes.some", { n: nodes.length }) : t("nodes.none");
}

async function pollNodes() {
  clearTimeout(nodeTimer);
  try {
    const data = await api.nodes();
    const before = nodes ? nodes.length : null;
    nodes = data.nodes;
    settings.setNodes(nodes);
    settings.setReachable(true);
    const back = !reachable;
    reachable = true;
    const fast = new Set(nodes.flatMap((n) => n.styles || []));
    // Fast styles come and go with nodes: reload the gallery when their number changes.
    const have = gallery.styles.filter((s) => s.kind === "fast").length;
    if (styleCount >= 0 && fast.size !== have) await loadStyles();
    if (back) relayBack({ nodes: false });
    // A node came or went: what the open job waits for may have changed with it.
    else if (before !== null && before !== nodes.length) job.reread();
  } catch {
    // The header keeps its last word; estimates hide until the relay answers again.
    reachable = false;
    settings.setReachable(false);
  }
  paintNodes();
  clearTimeout(nodeTimer); // a poll started by a reconnect meanwhile set one too
  nodeTimer = setTimeout(pollNodes, reachable ? NODE_POLL : NODE_RETRY);
}

/** The relay answers again (after a restart or a network drop): read everything the page
 *  shows from it again, so nothing from before the outage lingers. */
function relayBack({ nodes: pollToo = true } = {}) {
  if (pollToo) pollNodes();
  if (styleCount < 0) loadStyles();
  job.reread();
  history.refresh();
}

// ---- submitting ---------------------------------------------------------------------------

/** Which field an API refusal is about, so its message can stand next to it. */
function fieldOf(status, message) {
  const m = message.toLowerCase();
  if (m.includes("e-mail")) return "email-error";
  if (m.includes("photo")) return "photo-error";
  if (m.includes("style image")) return "style-error";
  if (status === 413) return "photo-error";
  if (m.includes("epochs")) return "epochs-error";
  if (m.includes("`size`")) return "size-error";
  if (/`(content_weight|style_weight|tv_weight|learning_rate|optimizer|seed|init|style_scale|pooling|strength)`/.test(m)) {
    return "advanced-error";
  }
  if (m.includes("style")) return "style-error";
  if (m.includes("method")) return "method-error";
  return "submit-error";
}

async function submit(event) {
  event.preventDefault();
  clearErrors(...ERROR_SLOTS);
  const selection = gallery.selection();
  const chosen = photo.current;
  if (!selection) {
    showError("style-error", t("style.none"));
    $("gallery").querySelector("input")?.focus();
    $("style-h").scrollIntoView({ behavior: "smooth", block: "center" });
    return;
  }
  if (!chosen) {
    showError("photo-error", t("photo.none"), $("photo"));
    $("photo").focus();
    return;
  }
  const form = new FormData();
  form.append("content", chosen.file, chosen.file.name);
  for (const item of selection.items) {
    if (item.file) form.append("style_image", item.file, item.file.name);
    else form.append("style", item.id);
  }
  if (selection.items.length > 1) {
    form.append("style_weights", selection.items.map((i) => i.weight).join(","));
  }
  if (!settings.fill(form)) return;
  form.append("filename", chosen.file.name);
  const email = $("email").value.trim();
  if (!$("email-row").hidden && email) {
    if (!$("email").checkValidity()) {
      showError("email-error", t("email.bad"), $("email"));
      $("email").focus();
      return;
    }
    form.append("email", email);
  }
  askIfLong(settings.seconds());
  if ($("share").checked) {
    form.append("share", "true");
    if ($("share-style").checked) form.append("share_style", "true");
  }
  const button = $("go");
  button.disabled = true;
  button.textContent = t("submit.busy");
  try {
    const view = await api.submit(form);
    job.open(view.id);
    history.refresh();
  } catch (err) {
    const slot = err.network ? "submit-error" : fieldOf(err.status, err.message || "");
    showError(slot, apiMessage(err));
    $(slot).scrollIntoView({ behavior: "smooth", block: "center" });
  } finally {
    button.disabled = false;
    button.textContent = t("submit");
  }
}

// ---- the address --------------------------------------------------------------------------

function followHash() {
  const match = /^#job=([\w-]+)$/.exec(location.hash);
  if (match && (!job.job || job.job.id !== match[1] || $("job").hidden)) job.open(match[1]);
}

// ---- language -----------------------------------------------------------------------------

function applyLang(code) {
  setLang(code);
  $("lang").value = code;
  gallery.render();
  settings.render();
  photo.relabel();
  job.relabel();
  live.relabel();
  showcase.render();
  paintNodes();
  if (!$("go").disabled) $("go").textContent = t("submit");
  history.refresh();
}

// ---- start --------------------------------------------------------------------------------

applyLang(initialLang());
$("lang").addEventListener("change", (e) => applyLang(e.target.value));
$("create").addEventListener("submit", submit);
document.addEventListener("style-drop", (e) => gallery.addUpload(e.detail));
window.addEventListener("hashchange", followHash);
document.addEventListener("gallery-changed", () => showcase.load());
document.addEventListener("relay-back", () => relayBack());
// The job's stream dropped: check the relay now, so stale estimates hide at once.
document.addEventListener("relay-lost", () => pollNodes());
$("results-retry").addEventListener("click", () => history.refresh());
window.addEventListener("online", () => relayBack());
// Sharing is off unless the person ticks it; the style image only if they tick that too.
$("share").addEventListener("change", (e) => {
  $("share-style-row").hidden = !e.target.checked;
  if (!e.target.checked) $("share-style").checked = false;
});
$("go").disabled = true;
loadStyles().then(() => {
  followHash();
  document.body.dataset.ready = "1";
});
pollNodes();
history.refresh();
showcase.load();
