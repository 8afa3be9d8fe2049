// Calls to the metalic API, with every error turned into one readable message.
//
// The API answers every error as application/problem+json ({title, detail, code,
// errors?}); anything else (a proxy's HTML page, a dropped connection) still
// becomes an ApiError, so the page always has a sentence to show.

export class ApiError extends Error {
  constructor(message, { status = 0, code = "network-error", retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function describeValidation(errors) {
  return errors
    .map((e) => {
      const where = (e.loc || []).filter((part) => part !== "body").join(".");
      return where ? `${where}: ${e.msg}` : e.msg;
    })
    .join("; ");
}

export async function problemMessage(response) {
  const type = response.headers.get("content-type") || "";
  const retryAfter = response.headers.get("retry-after");
  if (type.includes("json")) {
    try {
      const body = await response.json();
      let message = body.detail || body.title || `HTTP ${response.status}`;
      if (body.title && body.detail && body.title.toLowerCase() !== body.detail.toLowerCase()) {
        message = `${body.title}: ${body.detail}`;
      }
      if (Array.isArray(body.errors) && body.errors.length) {
        message += ` (${describeValidation(body.errors)})`;
      }
      if (retryAfter) message += ` Retry in ${retryAfter} s.`;
      return new ApiError(message, { status: response.status, code: body.code || "http-error", retryAfter });
    } catch (_) {
      // fall through to the generic message
    }
  }
  return new ApiError(`The server answered ${response.status} ${response.statusText || ""}`.trim(), {
    status: response.status,
    code: "http-error",
    retryAfter,
  });
}

export class Api {
  constructor(prefix, getKey) {
    this.prefix = prefix || "";
    this.getKey = getKey;
  }

  async request(method, path, { body = null, expect = "json" } = {}) {
    const headers = {};
    const key = this.getKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(this.prefix + path, { method, headers, body });
    } catch (err) {
      throw new ApiError(`Could not reach the service (${err.message}). Is metalic serve still running?`);
    }
    if (!response.ok) throw await problemMessage(response);
    if (expect === "blob") return response.blob();
    return response.json();
  }

  encode(file, options) {
    const form = new FormData();
    form.append("file", file, file.name || "image");
    for (const [name, value] of Object.entries(options)) {
      if (value !== null && value !== undefined && value !== "") form.append(name, String(value));
    }
    return this.request("POST", "/encode", { body: form });
  }

  job(id) {
    return this.request("GET", `/jobs/${encodeURIComponent(id)}`);
  }

  cancel(id) {
    return this.request("DELETE", `/jobs/${encodeURIComponent(id)}`);
  }

  bitstream(id) {
    return this.request("GET", `/jobs/${encodeURIComponent(id)}/bitstream`, { expect: "blob" });
  }

  decode(bitstream) {
    const form = new FormData();
    form.append("file", bitstream, "image.mlic");
    return this.request("POST", "/decode", { body: form, expect: "blob" });
  }

  compare(file, budget) {
    const form = new FormData();
    form.append("file", file, file.name || "image");
    form.append("budget", String(budget));
    return this.request("POST", "/compare", { body: form });
  }

  async ready() {
    try {
      const response = await fetch(`${this.prefix}/readyz`);
      return await response.json();
    } catch (_) {
      return null;
    }
  }
}
