// The relay's HTTP API (docs/api.md), as small async functions.
//
// Every failure becomes an `ApiError` whose `message` is the relay's own sentence (its JSON
// `{"error": ...}`), or a network error with `status` 0.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }

  get network() {
    return this.status === 0;
  }
}

async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { cache: "no-store", ...options });
  } catch (err) {
    throw new ApiError(0, String(err && err.message ? err.message : err));
  }
  let body = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || "");
  }
  return body;
}

/** Styles, methods available now and the relay's limits. */
export function styles() {
  return call("/api/styles");
}

/** Connected nodes. */
export function nodes() {
  return call("/api/nodes");
}

/** Create a job from a FormData (multipart); answers the job's view. */
export function submit(form) {
  return call("/api/jobs", { method: "POST", body: form });
}

/** A job's current view. */
export function job(id) {
  return call(`/api/jobs/${encodeURIComponent(id)}`);
}

/** Cancel a job. */
export function cancel(id) {
  return call(`/api/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/** Delete an ended job and its images now (204: no body). */
export function remove(id) {
  return call(`/api/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/** Show a job in the public gallery (once done), or withdraw it. */
export function share(id, on, shareStyle = false) {
  const path = `/api/jobs/${encodeURIComponent(id)}/share`;
  if (!on) return call(path, { method: "DELETE" });
  return call(`${path}?share_style=${shareStyle ? "true" : "false"}`, { method: "POST" });
}

/** A page of the public gallery, newest first; `cursor` from the page before. */
export function gallery(cursor = null) {
  return call(cursor ? `/api/gallery?cursor=${encodeURIComponent(cursor)}` : "/api/gallery");
}

/** Report a gallery item to the relay's operator. */
export function report(url) {
  return call(url, { method: "POST" });
}

/** The WebSocket URL of a job's events. */
export function eventsUrl(id) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api/jobs/${encodeURIComponent(id)}/events`;
}
