// Keeping the person informed while they wait elsewhere: the job's progress in the tab's
// title, and a browser notification when it ends. Permission for notifications is asked
// only when a job is expected to take long enough to wait in another tab.

import { t } from "./i18n.js";

const BRAND = "Stylerelay";
const ASK_OVER = 60;
const RESTORE_AFTER = 4000;

let restoreTimer = null;
let pendingRestore = false;

function restore() {
  clearTimeout(restoreTimer);
  pendingRestore = false;
  document.title = t("title");
}

/** Put a short word on the tab ("42% · Stylerelay"), or the page's own title for none. */
export function tabTitle(word) {
  clearTimeout(restoreTimer);
  pendingRestore = false;
  document.title = word ? `${word} · ${BRAND}` : t("title");
}

/** The job ended: say so on the tab, then give the tab its title back a few seconds after
 *  the person has seen it (at once if they are looking, else when they come back). */
export function tabEnded(word) {
  tabTitle(word);
  if (document.visibilityState === "visible") restoreTimer = setTimeout(restore, RESTORE_AFTER);
  else pendingRestore = true;
}

/** Stop showing a job on the tab. */
export function tabClear() {
  restore();
}

document.addEventListener("visibilitychange", () => {
  if (pendingRestore && document.visibilityState === "visible") {
    pendingRestore = false;
    restoreTimer = setTimeout(restore, RESTORE_AFTER);
  }
});

function supported() {
  return typeof window.Notification === "function";
}

/** Before a job of about `seconds`: ask for notifications if it is long and never asked. */
export function askIfLong(seconds) {
  if (!(seconds > ASK_OVER) || !supported() || Notification.permission !== "default") return;
  // Called from the submit click, so the browser sees a person's gesture behind the prompt.
  Promise.resolve(Notification.requestPermission()).catch(() => {});
}

/** The job ended: a notification, when allowed and the person is not looking at the page. */
export function notifyEnded(job, text) {
  if (!supported() || Notification.permission !== "granted") return;
  if (document.visibilityState === "visible" && document.hasFocus()) return;
  try {
    const note = new Notification(t(`notify.${job.state}`), {
      body: text,
      tag: `stylerelay-${job.id}`,
      icon: "/favicon.svg",
    });
    note.onclick = () => {
      window.focus();
      note.close();
    };
  } catch {
    // Some browsers (Chrome on Android) only notify from a service worker: the title says it.
  }
}
