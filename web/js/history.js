// Earlier jobs of this browser: their ids in localStorage, their pictures from the relay.
// A job the relay no longer knows (its result expired) is dropped from the list.

import * as api from "./api.js";
import { $, el, showError } from "./dom.js";
import { lang, server, t } from "./i18n.js";

const KEY = "stylerelay.jobs";
const KEEP = 40;

function ids() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(list) ? list.filter((x) => typeof x === "string") : [];
  } catch {
    return [];
  }
}

function save(list) {
  localStorage.setItem(KEY, JSON.stringify(list.slice(0, KEEP)));
}

/** Remember a job (newest first). */
export function remember(id) {
  save([id, ...ids().filter((x) => x !== id)]);
}

/** Forget a job. */
export function forget(id) {
  save(ids().filter((x) => x !== id));
}

function when(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(lang(), { dateStyle: "medium", timeStyle: "short" });
}

function card(job) {
  const date = when(job.created);
  const open = `#job=${encodeURIComponent(job.id)}`;
  const result = job.result_url
    ? el("img", { src: job.result_url, alt: t("results.alt", { date }), loading: "lazy" })
    : job.partial // cancelled or failed: the painting as far as it got
      ? el("img", { src: job.partial.url, alt: t("job.alt.partial"), loading: "lazy" })
      : job.preview_url
        ? el("img", { src: job.preview_url, alt: t("job.alt.preview"), loading: "lazy" })
        : el("span", { class: "history__blank", "aria-hidden": "true" });
  const first = (job.styles || [])[0];
  const styleSrc =
    (job.style_urls || [])[0] ||
    (first && first.id.startsWith("fast:") ? `/api/styles/${first.id}/thumbnail` : null);
  const style = styleSrc
    ? el("img", { class: "history__style", src: styleSrc, alt: t("results.alt.style"), loading: "lazy" })
    : null;
  return el("li", { class: "history__item", dataset: { job: job.id } }, [
    el("a", { class: "history__pics", href: open, "aria-label": `${t("results.open")} — ${date}` }, [
      el("img", { src: job.content_url, alt: t("results.alt.content", { date }), loading: "lazy" }),
      result,
      style,
    ]),
    el("div", { class: "history__meta" }, [
      el("span", { class: `badge badge--${job.state}`, text: t(`job.state.${job.state}`) }),
      el("span", { class: "history__method", text: t(`method.${job.method}`) }),
      el("time", { datetime: job.created || "", text: date }),
    ]),
    el("div", { class: "history__actions" }, [
      el("a", { class: "button button--small", href: open, text: t("results.open") }),
      FINAL.has(job.state) ? deleteButton(job, date) : null,
      el("button", {
        type: "button",
        class: "button button--small button--ghost",
        "aria-label": `${t("results.forget")} — ${date}`,
        text: "×",
        title: t("results.forget"),
        onclick: () => {
          forget(job.id);
          refresh();
        },
      }),
    ]),
  ]);
}

const FINAL = new Set(["done", "failed", "cancelled"]);

// "Delete now": the relay deletes the job, its photo, style uploads and result at once.
function deleteButton(job, date) {
  const button = el("button", {
    type: "button",
    class: "button button--small button--danger history__delete",
    "aria-label": `${t("results.delete")} — ${date}`,
    text: t("results.delete"),
    title: t("results.delete.title"),
  });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api.remove(job.id);
    } catch (err) {
      if (err.status !== 404) {
        button.disabled = false;
        const why = err.network ? t("err.network") : server(err.message);
        showError("results-error", t("results.delete.failed", { why }));
        return;
      }
    }
    forget(job.id);
    refresh();
  });
  return button;
}

const POLL = 5000;
const RETRY = 5000;
let generation = 0;
let timer = null;

/** Reload the list from the relay; while some job is unfinished, again every few seconds. */
export async function refresh() {
  generation += 1;
  const mine = generation;
  clearTimeout(timer);
  const list = ids();
  let unreachable = false;
  const jobs = await Promise.all(
    list.map(async (id) => {
      try {
        return await api.job(id);
      } catch (err) {
        if (err.status === 404) forget(id);
        else unreachable = true;
        return null;
      }
    }),
  );
  // A later refresh started meanwhile: its answer is the newer one.
  if (mine !== generation) return;
  const failed = $("results-failed");
  if (unreachable) {
    // Not "Nothing yet": the jobs exist, the relay just did not answer. Keep what was shown
    // and try again; a reconnect elsewhere on the page refreshes at once.
    failed.hidden = false;
    $("results-empty").hidden = true;
    timer = setTimeout(refresh, RETRY);
    return;
  }
  failed.hidden = true;
  const shown = jobs.filter(Boolean);
  $("history").replaceChildren(...shown.map(card));
  $("results-empty").hidden = shown.length > 0;
  if (shown.some((job) => job.state === "queued" || job.state === "running")) {
    timer = setTimeout(refresh, POLL);
  }
}
