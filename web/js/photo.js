// The photo: a file picker, drag and drop anywhere on the page, a preview, and the checks
// that refuse a non-image or an over-limit file before anything is uploaded.

import { $, showError } from "./dom.js";
import { checkImage, limitsText, privacyText } from "./files.js";
import { bytes, t } from "./i18n.js";

export class Photo {
  constructor(onChange) {
    this.onChange = onChange;
    this.limits = null;
    this.current = null;
    // The picker, and on phones the camera (`capture`): either gives the photo.
    for (const id of ["photo", "photo-camera"]) {
      const input = $(id);
      input.addEventListener("change", () => {
        const file = input.files && input.files[0];
        if (file) this.use(file);
      });
    }
    this.watchDrops();
  }

  setLimits(limits) {
    this.limits = limits;
    this.relabel();
  }

  relabel() {
    if (this.limits) {
      $("photo-limits").textContent = limitsText(this.limits);
      $("photo-privacy").textContent = privacyText(this.limits);
    }
    if (this.current) {
      const { file, width, height } = this.current;
      $("photo-preview").alt = t("photo.alt", { name: file.name });
      $("photo-name").textContent = width
        ? `${file.name} — ${t("photo.dims", { w: width, h: height, size: bytes(file.size) })}`
        : `${file.name} — ${bytes(file.size)}, ${t("photo.nopreview")}`;
    }
  }

  /** Check a file and, if it passes, make it the photo. */
  async use(file) {
    if (!this.limits) return;
    const checked = await checkImage(file, this.limits);
    if (checked.error) {
      showError("photo-error", checked.error, $("photo"));
      $("photo").value = "";
      $("photo-camera").value = "";
      return;
    }
    showError("photo-error", "", $("photo"));
    if (this.current && this.current.url) URL.revokeObjectURL(this.current.url);
    this.current = checked;
    const preview = $("photo-preview");
    if (checked.url) preview.src = checked.url;
    else preview.removeAttribute("src");
    preview.hidden = !checked.url;
    $("drop").classList.add("has-photo");
    this.relabel();
    this.onChange(checked);
  }

  watchDrops() {
    const veil = $("dropveil");
    let depth = 0;
    const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
    document.addEventListener("dragenter", (e) => {
      if (!hasFiles(e)) return;
      depth += 1;
      veil.classList.add("is-on");
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) veil.classList.remove("is-on");
    });
    document.addEventListener("dragover", (e) => {
      if (hasFiles(e)) e.preventDefault();
    });
    document.addEventListener("drop", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0;
      veil.classList.remove("is-on");
      const file = e.dataTransfer.files[0];
      if (!file) return;
      // A drop on the style gallery is a style image; anywhere else it is the photo.
      if (e.target.closest && e.target.closest("#gallery")) {
        document.dispatchEvent(new CustomEvent("style-drop", { detail: [...e.dataTransfer.files] }));
      } else {
        this.use(file);
      }
    });
  }
}
