// Checking an image file in the page before it is uploaded: format by its first bytes (not
// by its name), the byte cap, then the pixel count, each refused with the limit in words.

import { bytes, t } from "./i18n.js";

const MAGIC = [
  { type: "image/png", test: (b) => b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 },
  { type: "image/jpeg", test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  {
    type: "image/webp",
    test: (b) => String.fromCharCode(...b.slice(0, 4)) === "RIFF" && String.fromCharCode(...b.slice(8, 12)) === "WEBP",
  },
  // HEIC/HEIF (iPhones): an ISO box `ftyp` naming a HEIF brand.
  {
    type: "image/heic",
    test: (b) =>
      String.fromCharCode(...b.slice(4, 8)) === "ftyp" &&
      ["heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"].includes(String.fromCharCode(...b.slice(8, 12))),
  },
];

function megapixels(n) {
  const mp = n / 1e6;
  return mp >= 10 ? String(Math.round(mp)) : mp.toFixed(1).replace(/\.0$/, "");
}

/** Where the photo goes and how long it stays: the note under the upload. */
export function privacyText(limits) {
  const seconds = limits.result_ttl_s || 86400;
  const hours = seconds / 3600;
  const time = Number.isInteger(hours)
    ? t("time.hours", { n: hours })
    : t("time.min", { n: Math.max(1, Math.round(seconds / 60)) });
  return t("photo.privacy", { time });
}

/** The limits sentence shown under the photo picker. */
export function limitsText(limits) {
  return t("photo.limits", { mb: bytes(limits.max_upload_bytes), mp: megapixels(limits.max_pixels) });
}

function dimensions(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight, url });
    img.onerror = () => {
      URL.revokeObjectURL(url);
      resolve(null);
    };
    img.src = url;
  });
}

/**
 * Check `file` against the relay's `limits`.
 * Answers `{error}` with a sentence, or `{file, url, width, height}` (an object URL to show).
 */
export async function checkImage(file, limits) {
  const name = file.name || "?";
  const head = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const kind = MAGIC.find((m) => m.test(head));
  if (!kind) return { error: t("photo.type", { name }) };
  if (file.size > limits.max_upload_bytes) {
    return { error: t("photo.big", { name, size: bytes(file.size), mb: bytes(limits.max_upload_bytes) }) };
  }
  // Most browsers cannot decode HEIC: the relay reads its size from the header and refuses it
  // there if it has too many pixels. No preview and no size here.
  if (kind.type === "image/heic") return { file, url: null, width: null, height: null };
  const dims = await dimensions(file);
  if (!dims) return { error: t("photo.broken", { name }) };
  const pixels = dims.width * dims.height;
  if (pixels > limits.max_pixels) {
    URL.revokeObjectURL(dims.url);
    return { error: t("photo.pixels", { name, mp: megapixels(pixels), max: megapixels(limits.max_pixels) }) };
  }
  return { file, ...dims };
}
