// The try-it page: API key, images, target, one row per job, and the compare view.

import { Api, ApiError } from "./api.js";
import { CompareViewer } from "./compare.js";

const KEY_STORAGE = "metalic-api-key";
const POLL_MS = 400;
const JPEG_AI_BPP = [0.06, 0.12, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0];
const TARGETS = {
  bpp: { label: "Target bits per pixel", field: "target_bpp", min: 0.01, max: 8, step: 0.01, value: 0.5,
         range: [0.05, 2], ticks: JPEG_AI_BPP, help: "0.01 to 8 bpp. The marks are the JPEG-AI test rates." },
  psnr: { label: "Target PSNR in dB", field: "target_psnr", min: 15, max: 60, step: 0.5, value: 32,
          range: [20, 45], ticks: [25, 30, 35, 40], help: "15 to 60 dB: the encoder aims for at least this PSNR." },
};
const STAGE_ORDER = ["rate_search", "refine", "adapt_lambda", "bias_search", "verify"];
const STAGE_NAMES = {
  loading: "starting", rate_search: "rate search", refine: "latent refinement", adapt_lambda: "λ adaptation",
  bias_search: "bias-cluster search", verify: "decoder check", done: "finishing", total: "total",
};
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

const $ = (selector, root = document) => root.querySelector(selector);
const body = document.body;
const api = new Api(body.dataset.prefix, () => $("#api-key").value.trim());
const viewer = new CompareViewer($("#compare"));
const jobs = [];
let chosen = [];
let shown = null; // the job in the compare view

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const fmt = {
  bytes: (n) => `${Number(n).toLocaleString("en")} B`,
  size: (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`),
  bpp: (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3)),
  db: (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2)),
  ssim: (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(4)),
  seconds: (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2)),
};

function announce(text) {
  $("#announcer").textContent = text;
}

function showMessage(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

// ---- API key (sessionStorage: it lives as long as the tab) ----------------------------
function setupKey() {
  const input = $("#api-key");
  input.value = sessionStorage.getItem(KEY_STORAGE) || "";
  input.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, input.value.trim()));
  $("#api-key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    input.value = "";
    input.focus();
  });
}

// ---- Choosing images: picker, drop, paste -------------------------------------------
function addFiles(files) {
  for (const file of files) chosen.push(file);
  renderChosen();
  showMessage($("#form-message"), "");
}

function renderChosen() {
  const list = $("#chosen-files");
  list.replaceChildren(
    ...chosen.map((file, index) => {
      const remove = el("button", { type: "button", class: "link", text: "Remove",
                                    "aria-label": `Remove ${file.name}` });
      remove.addEventListener("click", () => {
        chosen.splice(index, 1);
        renderChosen();
        $("#file-input").focus();
      });
      return el("li", {}, el("span", { text: `${file.name} (${fmt.size(file.size)})` }), " ", remove);
    }),
  );
}

function setupFiles() {
  const input = $("#file-input");
  const zone = $("#drop-zone");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    addFiles(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])].filter((file) => file.type.startsWith("image/"));
    if (!files.length) return;
    event.preventDefault();
    addFiles(files.map((file, i) => new File([file], file.name && file.name !== "image.png" ? file.name
      : `pasted-${Date.now()}-${i}.${(file.type.split("/")[1] || "png").replace("jpeg", "jpg")}`, { type: file.type })));
  });
}

// ---- Target -------------------------------------------------------------------------
function targetKind() {
  return document.querySelector('input[name="target-kind"]:checked').value;
}

function setupTarget() {
  const range = $("#target-range");
  const number = $("#target-number");
  const apply = () => {
    const t = TARGETS[targetKind()];
    $("#target-label").textContent = t.label;
    $("#target-help").textContent = t.help;
    Object.assign(range, { min: t.range[0], max: t.range[1], step: t.step });
    Object.assign(number, { min: t.min, max: t.max, step: t.step });
    range.value = number.value = t.value;
    range.setAttribute("aria-valuetext", `${t.value}`);
    $("#target-ticks").replaceChildren(...t.ticks.map((v) => el("option", { value: v, label: String(v) })));
  };
  for (const radio of document.querySelectorAll('input[name="target-kind"]')) radio.addEventListener("change", apply);
  range.addEventListener("input", () => {
    number.value = range.value;
    range.setAttribute("aria-valuetext", range.value);
  });
  number.addEventListener("input", () => {
    range.value = number.value;
  });
  apply();
}

function encodeOptions() {
  const t = TARGETS[targetKind()];
  const value = Number($("#target-number").value);
  if (!Number.isFinite(value) || value < t.min || value > t.max) {
    throw new ApiError(`The target must be a number from ${t.min} to ${t.max}.`, { code: "invalid-target" });
  }
  const options = { [t.field]: value, preset: $("#preset").value };
  for (const control of document.querySelectorAll("[data-option]")) {
    if (control.value !== "") options[control.dataset.option] = control.value;
  }
  return options;
}

// ---- One row per job ----------------------------------------------------------------
class JobRow {
  constructor(file, options) {
    this.file = file;
    this.options = options;
    this.id = null;
    this.status = "uploading";
    this.job = null;
    this.urls = {};
    this.variants = null;
    this.compareData = null;
    const index = jobs.length + 1;
    const name = el("h3", { class: "job-name", id: `job-${index}-name`, text: file.name });
    this.badge = el("span", { class: "badge", text: "uploading" });
    this.detail = el("span", { class: "job-detail" });
    this.progress = el("progress", { class: "job-progress", "aria-labelledby": `job-${index}-name` });
    this.result = el("p", { class: "job-result" });
    this.error = el("p", { class: "problem", role: "alert", hidden: true });
    this.cancelButton = el("button", { type: "button", class: "secondary", text: "Cancel",
                                       "aria-label": `Cancel ${file.name}` });
    this.compareButton = el("button", { type: "button", text: "Compare", hidden: true,
                                        "aria-label": `Compare ${file.name}` });
    this.retryButton = el("button", { type: "button", class: "secondary", text: "Retry", hidden: true,
                                      "aria-label": `Retry ${file.name}` });
    this.downloads = el("span", { class: "downloads" });
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.compareButton.addEventListener("click", () => showCompare(this, true));
    this.retryButton.addEventListener("click", () => this.submit());
    const thumb = el("img", { class: "thumb", alt: "" });
    thumb.addEventListener("error", () => thumb.remove());
    thumb.src = this.url("original", file);
    this.node = el(
      "li",
      { class: "job", "data-status": this.status },
      thumb,
      el("div", { class: "job-main" }, name, el("p", { class: "job-status" }, this.badge, " ", this.detail),
         this.progress, this.result, this.error),
      el("div", { class: "job-actions" }, this.cancelButton, this.retryButton, this.compareButton, this.downloads),
    );
    $("#jobs").append(this.node);
    $("#jobs-empty").hidden = true;
  }

  url(name, blob) {
    if (this.urls[name]) URL.revokeObjectURL(this.urls[name]);
    this.urls[name] = URL.createObjectURL(blob);
    return this.urls[name];
  }

  setStatus(status, detail = "") {
    const changed = status !== this.status;
    this.status = status;
    this.node.dataset.status = status;
    this.badge.textContent = status;
    this.detail.textContent = detail;
    this.cancelButton.hidden = TERMINAL.has(status) || status === "rejected";
    if (changed) announce(`${this.file.name}: ${status}`);
  }

  fail(message) {
    showMessage(this.error, message);
    this.progress.hidden = true;
  }

  async submit() {
    this.retryButton.hidden = true;
    showMessage(this.error, "");
    this.progress.hidden = false;
    this.progress.removeAttribute("value");
    this.setStatus("uploading");
    try {
      this.job = await api.encode(this.file, this.options);
    } catch (err) {
      this.setStatus("rejected");
      this.fail(err.message);
      this.retryButton.hidden = false;
      return;
    }
    this.id = this.job.id;
    this.node.dataset.jobId = this.id;
    this.render(this.job);
    this.poll();
  }

  async poll() {
    while (!TERMINAL.has(this.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      try {
        this.render(await api.job(this.id));
      } catch (err) {
        if (err.status === 404 || err.status === 401) {
          this.setStatus("failed");
          this.fail(err.message);
          return;
        }
        // The service may be restarting: say so and keep trying.
        this.detail.textContent = `${err.message} Still trying…`;
      }
    }
    if (this.status === "succeeded") await this.finish();
  }

  render(job) {
    this.job = job;
    const p = job.progress;
    if (job.status === "running" && p) {
      const parts = [STAGE_NAMES[p.stage] || p.stage || "running"];
      if (p.step !== null && p.step !== undefined) parts.push(p.steps ? `step ${p.step} of ${p.steps}` : `step ${p.step}`);
      if (p.bpp !== null && p.bpp !== undefined) parts.push(`${fmt.bpp(p.bpp)} bpp`);
      if (p.psnr !== null && p.psnr !== undefined) parts.push(`${fmt.db(p.psnr)} dB`);
      this.setStatus("running", parts.join(" · "));
      if (p.steps) {
        this.progress.max = p.steps;
        this.progress.value = Math.min(p.step || 0, p.steps);
        this.progress.setAttribute("aria-valuetext", parts.join(", "));
      } else {
        this.progress.removeAttribute("value");
      }
    } else if (job.status === "queued") {
      this.setStatus("queued", "waiting for a worker");
    } else if (job.status === "succeeded") {
      this.setStatus("succeeded", "fetching the result…");
      this.progress.max = 1;
      this.progress.value = 1;
    } else if (job.status === "failed") {
      this.setStatus("failed");
      this.fail(`The encode failed (${job.error?.type || "error"}): ${job.error?.detail || "no reason given"}`);
    } else if (job.status === "canceled") {
      this.setStatus("canceled", "canceled");
      this.progress.hidden = true;
    } else {
      this.setStatus(job.status);
    }
  }

  async cancel() {
    if (!this.id) return;
    this.cancelButton.disabled = true;
    try {
      this.render(await api.cancel(this.id));
      if (!TERMINAL.has(this.status)) this.detail.textContent = "canceling at the next step…";
    } catch (err) {
      showMessage(this.error, err.message);
    } finally {
      this.cancelButton.disabled = false;
    }
  }

  async finish() {
    const meta = this.job.result.metadata;
    this.result.textContent = `${fmt.bytes(this.job.result.bytes)} · ${fmt.bpp(meta.bpp)} bpp · ${fmt.db(meta.psnr)} dB PSNR`
      + ` · ${fmt.seconds(meta.seconds?.total)} s`;
    const stem = this.file.name.replace(/\.[^.]+$/, "") || "image";
    try {
      const bitstream = await api.bitstream(this.id);
      this.downloads.append(el("a", { href: this.url("mlic", bitstream), download: `${stem}.mlic`,
                                      text: "Download .mlic", class: "download" }));
      const png = await api.decode(bitstream);
      this.urls.decoded = this.url("decoded", png);
      this.downloads.append(el("a", { href: this.urls.decoded, download: `${stem}.metalic.png`,
                                      text: "Download decoded PNG", class: "download" }));
    } catch (err) {
      this.fail(`The encode succeeded, but its result could not be fetched: ${err.message}`);
      return;
    }
    this.detail.textContent = "done";
    this.compareButton.hidden = false;
    if (!shown) showCompare(this, false);
    try {
      this.compareData = await api.compare(this.file, this.job.result.bytes);
    } catch (err) {
      this.compareData = { error: err.message };
    }
    if (shown === this) renderCompare(this);
  }

  variantList() {
    const meta = this.job.result.metadata;
    const setting = [meta.preset, meta.target_bpp ? `target ${meta.target_bpp} bpp` : null,
      meta.target_psnr ? `target ${meta.target_psnr} dB` : null].filter(Boolean).join(", ");
    const data = this.compareData && !this.compareData.error ? this.compareData : null;
    const list = [
      { key: "original", label: "Original", src: data ? `data:image/png;base64,${data.original}` : this.urls.original,
        bytes: this.file.size, note: "the upload" },
      { key: "metalic", label: "metalic", src: this.urls.decoded, bytes: this.job.result.bytes, bpp: meta.bpp,
        psnr: meta.psnr, ms_ssim: meta.ms_ssim, setting, href: this.urls.mlic, download: "the .mlic" },
    ];
    for (const b of data?.baselines || []) {
      const src = `data:${b.media_type};base64,${b.data}`;
      list.push({ key: b.codec, label: b.codec.toUpperCase().replace("WEBP", "WebP"), src, bytes: b.bytes,
                  bpp: b.bpp, psnr: b.psnr, setting: `quality ${b.quality}${b.fits ? "" : " (smallest it makes: over the budget)"}`,
                  href: src, download: `this ${b.codec.toUpperCase()}`, ext: b.codec === "jpeg" ? "jpg" : b.codec });
    }
    return list;
  }
}

// ---- Compare view -------------------------------------------------------------------
function showCompare(row, focus) {
  shown = row;
  const section = $("#compare");
  section.hidden = false;
  $("#compare-name").textContent = `: ${row.file.name}`;
  $("#left-select").dataset.key = "original";
  $("#right-select").dataset.key = "metalic";
  renderCompare(row);
  if (focus) {
    section.scrollIntoView({ block: "start" });
    $("#viewer").focus({ preventScroll: true });
  }
}

function optionLabel(v) {
  const parts = [v.label];
  if (v.bytes !== undefined) parts.push(fmt.bytes(v.bytes));
  if (v.psnr !== undefined) parts.push(`${fmt.db(v.psnr)} dB`);
  return parts.join(" · ");
}

function renderCompare(row) {
  const variants = row.variantList();
  row.variants = variants;
  const byKey = Object.fromEntries(variants.map((v) => [v.key, v]));
  for (const id of ["#left-select", "#right-select"]) {
    const select = $(id);
    const keep = byKey[select.dataset.key] ? select.dataset.key : id === "#left-select" ? "original" : "metalic";
    select.replaceChildren(...variants.map((v) => el("option", { value: v.key, text: optionLabel(v) })));
    select.value = keep;
    select.dataset.key = keep;
  }
  updateViewer();
  const meta = row.job.result.metadata;
  const width = row.compareData?.width || meta.width;
  const height = row.compareData?.height || meta.height;
  viewer.setImageSize(width, height);

  const tbody = $("#metrics-table tbody");
  tbody.replaceChildren(
    ...variants.filter((v) => v.key !== "original").map((v) =>
      el("tr", { "data-codec": v.key },
        el("th", { scope: "row", text: v.label }),
        el("td", { text: fmt.bytes(v.bytes) }),
        el("td", { text: fmt.bpp(v.bpp) }),
        el("td", { text: fmt.db(v.psnr) }),
        el("td", { text: v.key === "metalic" ? (v.ms_ssim === null ? "– (image too small)" : fmt.ssim(v.ms_ssim)) : "–" }),
        el("td", { text: v.setting || "" }),
        el("td", {}, v.href ? el("a", { href: v.href, download: `${row.file.name.replace(/\.[^.]+$/, "")}.${v.ext || "mlic"}`,
                                       text: "Download", "aria-label": `Download ${v.download}` }) : ""),
      )),
  );
  const stages = meta.stages || {};
  const seconds = meta.seconds || {};
  const names = [...STAGE_ORDER.filter((s) => s in seconds || s in stages),
    ...Object.keys(seconds).filter((s) => !STAGE_ORDER.includes(s) && s !== "total")];
  const rows = names.map((name) => {
    const info = name === "rate_search" ? stages.forward : stages[name];
    let text = "";
    if (info?.skipped) text = `skipped: ${info.skipped}`;
    else if (info && info.psnr !== undefined) {
      text = `${fmt.bpp(info.bpp)} bpp, ${fmt.db(info.psnr)} dB`;
      if (info.gain_db !== undefined) text += `, ${info.gain_db >= 0 ? "+" : ""}${fmt.db(info.gain_db)} dB over the forward pass`;
      if (info.kept === false) text += " (not kept: no better)";
    }
    return el("tr", {}, el("th", { scope: "row", text: STAGE_NAMES[name] || name }),
      el("td", { text: fmt.seconds(seconds[name]) }), el("td", { text }));
  });
  rows.push(el("tr", { class: "total" }, el("th", { scope: "row", text: "total" }),
    el("td", { text: fmt.seconds(seconds.total) }), el("td", { text: meta.device ? `on ${meta.device}` : "" })));
  $("#timings-table tbody").replaceChildren(...rows);
  const notes = [...(meta.warnings || [])];
  if (row.compareData?.error) notes.push(`The JPEG, WebP and AVIF versions are not available: ${row.compareData.error}`);
  else if (!row.compareData) notes.push("Coding JPEG, WebP and AVIF at the same number of bytes…");
  else if (row.compareData.unavailable?.length) notes.push(`This server cannot write ${row.compareData.unavailable.join(", ")}.`);
  const message = $("#compare-message");
  showMessage(message, notes.join(" "));
  message.setAttribute("role", row.compareData?.error ? "alert" : "status");
}

function updateViewer() {
  if (!shown?.variants) return;
  const byKey = Object.fromEntries(shown.variants.map((v) => [v.key, v]));
  const left = byKey[$("#left-select").value];
  const right = byKey[$("#right-select").value];
  if (left && right) viewer.show(left, right);
}

function setupCompare() {
  for (const id of ["#left-select", "#right-select"]) {
    $(id).addEventListener("change", (event) => {
      event.target.dataset.key = event.target.value;
      updateViewer();
    });
  }
  const swap = () => {
    const l = $("#left-select");
    const r = $("#right-select");
    [l.value, r.value] = [r.value, l.value];
    [l.dataset.key, r.dataset.key] = [l.value, r.value];
    updateViewer();
  };
  viewer.onSwap = swap;
  $("#swap-sides").addEventListener("click", swap);
  const box = () => $("#viewer").getBoundingClientRect();
  $("#zoom-in").addEventListener("click", () => viewer.zoomAt(1.25, box().width / 2, box().height / 2));
  $("#zoom-out").addEventListener("click", () => viewer.zoomAt(0.8, box().width / 2, box().height / 2));
  $("#zoom-reset").addEventListener("click", () => viewer.fit());
}

// ---- Submit -------------------------------------------------------------------------
function setupForm() {
  $("#encode-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const message = $("#form-message");
    if (!$("#api-key").value.trim()) {
      showMessage(message, "Enter an API key first: metalic serve prints one when it starts.");
      $("#api-key").focus();
      return;
    }
    if (!chosen.length) {
      showMessage(message, "Choose, drop or paste at least one image.");
      $("#file-input").focus();
      return;
    }
    let options;
    try {
      options = encodeOptions();
    } catch (err) {
      showMessage(message, err.message);
      $("#target-number").focus();
      return;
    }
    showMessage(message, "");
    const files = chosen;
    chosen = [];
    renderChosen();
    for (const file of files) {
      const row = new JobRow(file, options);
      jobs.push(row);
      row.submit();
    }
  });
}

async function checkService() {
  const status = $("#service-status");
  const ready = await api.ready();
  if (!ready) status.textContent = "The service does not answer.";
  else if (ready.status === "ready") status.textContent = `Ready: ${ready.workers} worker${ready.workers === 1 ? "" : "s"}.`;
  else status.textContent = `Not ready yet: ${ready.detail || "starting"}.`;
  status.dataset.ready = ready?.status === "ready" ? "true" : "false";
}

setupKey();
setupFiles();
setupTarget();
setupCompare();
setupForm();
checkService();
body.dataset.app = "ready";
