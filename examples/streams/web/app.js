// The streams example's page: plain ES module, no framework, no build step.
// Each section below is self-contained and talks to one plain HTTP route of the service.

const $ = (id) => document.getElementById(id);

// A tiny element builder: el("li", { className: "x" }, "text", child).
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function humanSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// Show a state both as a pill's text and as the section's data-state (tests read the latter).
function setState(section, pill, state, label = state) {
  section.dataset.state = state;
  pill.textContent = label;
  pill.dataset.state = state;
}

function showError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

// The message of an error the server sent as JSON ({"code", "message"}), or the status line.
async function errorMessage(response) {
  try {
    const body = await response.json();
    const error = body.error ?? body;
    if (error.message) return `${error.code ?? response.status}: ${error.message}`;
  } catch {
    // not JSON: fall through to the status line
  }
  return `HTTP ${response.status} ${response.statusText}`;
}

// Hex sha256 of a Blob or buffer; crypto.subtle only exists in secure contexts (https, localhost).
async function sha256Hex(data) {
  if (!globalThis.crypto?.subtle) return "(sha256 needs https or localhost)";
  const buffer = data instanceof Blob ? await data.arrayBuffer() : data;
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// 1. Text stream: fetch + response.body.getReader(), one list item per chunk.

function setupTextStream() {
  const section = $("text");
  const pill = $("text-status");
  const list = $("text-items");
  let controller = null;

  $("text-start").addEventListener("click", async () => {
    controller = new AbortController();
    list.replaceChildren();
    $("text-start").disabled = true;
    $("text-stop").disabled = false;
    setState(section, pill, "running");
    try {
      const interval = Number($("text-interval").value) || 300;
      const response = await fetch(`/api/test_stream?interval_ms=${interval}`, {
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      const reader = response.body.getReader();
      const decoder = new TextDecoder(); // { stream: true } keeps split UTF-8 sequences intact
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const text = decoder.decode(value, { stream: true });
        if (text) list.append(el("li", {}, text));
        list.scrollTop = list.scrollHeight;
      }
      setState(section, pill, "done", "ended");
    } catch (error) {
      if (error.name === "AbortError") setState(section, pill, "stopped");
      else setState(section, pill, "error", `error: ${error.message}`);
    } finally {
      $("text-start").disabled = false;
      $("text-stop").disabled = true;
    }
  });

  $("text-stop").addEventListener("click", () => controller?.abort());
}

// ---------------------------------------------------------------------------------------------
// 2. JSON stream: NDJSON parsed line by line as the bytes arrive.

// Yields each parsed line of an NDJSON body; a line may be split across chunks.
async function* ndjson(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) yield JSON.parse(line);
    }
  }
  if (buffer.trim()) yield JSON.parse(buffer); // a last line without its newline
}

// A little dog face drawn in SVG (no emoji font needed), tinted differently per dog.
function dogFace(n) {
  const face = el("span", { className: "face" });
  face.style.setProperty("--hue", String((n * 47 + 20) % 360));
  face.innerHTML = `<svg viewBox="0 0 40 40" aria-hidden="true">
    <ellipse class="ear" cx="9" cy="15" rx="6" ry="10" transform="rotate(25 9 15)"/>
    <ellipse class="ear" cx="31" cy="15" rx="6" ry="10" transform="rotate(-25 31 15)"/>
    <circle class="head" cx="20" cy="22" r="13"/>
    <ellipse class="muzzle" cx="20" cy="28" rx="7.5" ry="5.5"/>
    <circle class="eye" cx="15" cy="20" r="1.8"/><circle class="eye" cx="25" cy="20" r="1.8"/>
    <ellipse class="eye" cx="20" cy="25.5" rx="2.6" ry="1.8"/>
  </svg>`;
  return face;
}

function dogCard(dog) {
  const n = Number(dog.name?.match(/\d+/)?.[0] ?? 0);
  return el(
    "li",
    { className: "dog" },
    dogFace(n),
    el("strong", { className: "dog-name" }, dog.name ?? "?"),
    el("span", { className: "muted" }, `age ${dog.age ?? 0}`), // proto3 JSON omits zeros
  );
}

function setupDogs() {
  const section = $("dogs");
  const pill = $("dogs-status");
  const list = $("dogs-list");
  const button = $("dogs-start");

  button.addEventListener("click", async () => {
    list.replaceChildren();
    showError($("dogs-error"), "");
    button.disabled = true;
    setState(section, pill, "running");
    try {
      const interval = Number($("dogs-interval").value) || 0;
      const response = await fetch(`/api/json_stream?interval_ms=${interval}`);
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const item of ndjson(response.body)) {
        if (item.error) throw new Error(`${item.error.code}: ${item.error.message}`);
        list.append(dogCard(item));
      }
      setState(section, pill, "done", `${list.children.length} dogs`);
    } catch (error) {
      showError($("dogs-error"), error.message);
      setState(section, pill, "error");
    } finally {
      button.disabled = false;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// 3. Server-sent events: EventSource reconnects by itself and sends Last-Event-ID.

function setupSse() {
  const section = $("sse");
  const pill = $("sse-status");
  const list = $("sse-events");
  const badge = $("sse-reconnects");
  let source = null;
  let lastId = null;
  let dropped = false; // the connection broke since it was last open
  let reconnects = 0;

  const countReconnect = () => {
    reconnects += 1;
    section.dataset.reconnects = String(reconnects);
    badge.querySelector("b").textContent = String(reconnects);
    badge.hidden = false;
  };

  const close = (state, label) => {
    source?.close();
    source = null;
    setState(section, pill, state, label);
    $("sse-start").disabled = false;
    $("sse-stop").disabled = true;
  };

  const open = (url) => {
    source = new EventSource(url);
    setState(section, pill, "connecting");

    source.onopen = () => {
      if (dropped) countReconnect();
      dropped = false;
      setState(section, pill, "open");
    };

    source.onmessage = (event) => {
      const id = Number(event.lastEventId);
      const item = el("li", {}, el("span", { className: "id" }, `#${event.lastEventId}`), event.data);
      item.dataset.id = event.lastEventId;
      if (lastId !== null && id !== lastId + 1) item.classList.add("gap"); // would show a gap
      lastId = id;
      list.append(item);
      while (list.children.length > 500) list.firstElementChild.remove();
      list.scrollTop = list.scrollHeight;
    };

    // A clean end of a finite stream.
    source.addEventListener("end", () => close("ended"));

    // "error" is both the server's in-band `event: error` (with data) and a broken connection.
    source.addEventListener("error", (event) => {
      if (event.data) {
        const error = JSON.parse(event.data);
        if (error.code === "unavailable") {
          // The server is going away (e.g. restarting): the browser reconnects by itself.
          dropped = true;
          setState(section, pill, "reconnecting");
          return;
        }
        showError($("sse-error"), `${error.code}: ${error.message}`);
        close("error");
      } else if (source.readyState === EventSource.CONNECTING) {
        dropped = true; // the browser retries after the server's `retry:` delay
        setState(section, pill, "reconnecting");
      } else {
        // The browser gave up (e.g. an HTTP error status): retry ourselves from the next id.
        dropped = true;
        source.close();
        setState(section, pill, "reconnecting");
        const next = lastId === null ? "" : `&start=${lastId + 1}`;
        setTimeout(() => source?.readyState === EventSource.CLOSED && open(baseUrl() + next), 2000);
      }
    });
  };

  const baseUrl = () => `/api/test_stream?interval_ms=${Number($("sse-interval").value) || 500}`;

  $("sse-start").addEventListener("click", () => {
    list.replaceChildren();
    showError($("sse-error"), "");
    lastId = null;
    dropped = false;
    reconnects = 0;
    section.dataset.reconnects = "0";
    badge.hidden = true;
    $("sse-start").disabled = true;
    $("sse-stop").disabled = false;
    open(baseUrl());
  });

  $("sse-stop").addEventListener("click", () => close("closed"));
}

// ---------------------------------------------------------------------------------------------
// 4. Upload: XMLHttpRequest for upload progress; name, size and type travel as headers.

// Content-Disposition with an ASCII fallback name and, for other names, RFC 5987 filename*.
function contentDisposition(name) {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  if (ascii === name) return `attachment; filename="${name}"`;
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/upload_as_file_stream");
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("X-Content-Size", String(file.size));
    xhr.setRequestHeader("Content-Disposition", contentDisposition(file.name));
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    xhr.onload = () => {
      const body = xhr.response ?? {};
      if (xhr.status === 200) resolve(body);
      else reject(new Error(body.message ? `${body.code}: ${body.message}` : `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("network error"));
    xhr.send(file);
  });
}

function setupUpload(refreshFiles) {
  const section = $("upload");
  const drop = $("drop");
  const input = $("file-input");
  let progressEvents = 0;

  const upload = async (files) => {
    for (const file of files) {
      progressEvents = 0;
      section.dataset.progressEvents = "0";
      section.dataset.state = "running";
      showError($("upload-error"), "");
      $("upload-result").hidden = true;
      $("upload-transfer").hidden = false;
      $("upload-name").textContent = file.name;
      const bar = $("upload-progress");
      bar.value = 0;
      try {
        const summary = await uploadFile(file, (sent, total) => {
          progressEvents += 1;
          section.dataset.progressEvents = String(progressEvents);
          bar.value = total ? sent / total : 0;
          $("upload-numbers").textContent = `${humanSize(sent)} / ${humanSize(total)}`;
        });
        bar.value = 1;
        $("upload-filename").textContent = summary.filename;
        $("upload-size").textContent = `${humanSize(summary.size)} (${Number(summary.size).toLocaleString()} bytes)`;
        $("upload-sha").textContent = summary.sha256;
        $("upload-result").hidden = false;
        section.dataset.state = "done";
      } catch (error) {
        showError($("upload-error"), `${file.name}: ${error.message}`);
        section.dataset.state = "error";
      }
      refreshFiles();
    }
  };

  // Dragging over the zone must be "accepted" (preventDefault) for a drop to happen.
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload([...event.dataTransfer.files]);
  });
  input.addEventListener("change", () => {
    upload([...input.files]);
    input.value = "";
  });
}

// ---------------------------------------------------------------------------------------------
// 5. Downloads: a fetch that resumes with Range/If-Range when the connection breaks.

class FatalError extends Error {}

// Downloads `url` into memory; retries a broken transfer up to `retries` times from where it
// stopped. onProgress(received, total, attempt) is called for every chunk.
async function resumableDownload(url, { retries = 5, onProgress = () => {} } = {}) {
  let chunks = [];
  let received = 0;
  let total = null;
  let etag = null;
  let type = "application/octet-stream";

  for (let attempt = 1; ; attempt += 1) {
    try {
      const headers = {};
      if (received > 0) {
        headers.Range = `bytes=${received}-`;
        if (etag) headers["If-Range"] = etag; // only resume the very same file
      }
      const response = await fetch(url, { headers, cache: "no-store" });
      if (received > 0 && response.status === 200) {
        chunks = []; // the file changed (If-Range failed): the server sent all of it again
        received = 0;
      } else if (!response.ok || (received > 0 && response.status !== 206)) {
        throw new FatalError(await errorMessage(response));
      }
      etag = response.headers.get("ETag") ?? etag;
      type = response.headers.get("Content-Type") ?? type;
      const range = response.headers.get("Content-Range")?.match(/\/(\d+)$/);
      const length = response.headers.get("X-Content-Size") ?? response.headers.get("Content-Length");
      total = range ? Number(range[1]) : length !== null ? Number(length) : total;

      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read(); // rejects when the connection breaks
        if (done) break;
        chunks.push(value);
        received += value.length;
        onProgress(received, total, attempt);
      }
      if (total !== null && received < total) throw new Error("connection closed early");
      return { blob: new Blob(chunks, { type }), attempts: attempt };
    } catch (error) {
      if (error instanceof FatalError || attempt > retries) throw error;
      onProgress(received, total, attempt, error);
      await sleep(Math.min(250 * 2 ** (attempt - 1), 4000)); // back off a little
    }
  }
}

function fileRow(file) {
  const url = `/api/files/${encodeURIComponent(file.name)}`;
  const bar = el("progress", { max: 1, value: 0 });
  const status = el("span", { className: "muted status" });
  const result = el("div", { className: "download-result" });
  const button = el("button", { className: "primary small" }, "Resumable");
  const row = el(
    "tr",
    {},
    el("td", { className: "name" }, file.name),
    el("td", { className: "num-col" }, humanSize(file.size)),
    el("td", {}, el("div", { className: "download" }, button, bar, status), result),
    el("td", {}, el("a", { href: url, download: file.name }, "Plain link")),
  );
  row.dataset.name = file.name;
  row.dataset.size = String(file.size);
  row.dataset.state = "idle";

  button.addEventListener("click", async () => {
    button.disabled = true;
    row.dataset.state = "running";
    result.replaceChildren();
    try {
      const { blob, attempts } = await resumableDownload(url, {
        onProgress: (received, total, attempt, error) => {
          row.dataset.attempts = String(attempt);
          row.dataset.received = String(received);
          if (error) row.dataset.lastError = error.message;
          bar.value = total ? received / total : 0;
          const note = error ? ` · interrupted, resuming…` : attempt > 1 ? ` · attempt ${attempt}` : "";
          status.textContent = `${humanSize(received)}${total ? ` / ${humanSize(total)}` : ""}${note}`;
        },
      });
      const sha = await sha256Hex(blob);
      const link = el("a", { href: URL.createObjectURL(blob), download: file.name }, `Save ${file.name}`);
      const tries = attempts > 1 ? ` after ${attempts} attempts` : "";
      status.textContent = `${humanSize(blob.size)} received${tries}`;
      result.append(link, el("code", { className: "sha" }, sha));
      row.dataset.attempts = String(attempts);
      row.dataset.state = "done";
    } catch (error) {
      status.textContent = `failed: ${error.message}`;
      row.dataset.state = "error";
    } finally {
      button.disabled = false;
    }
  });
  return row;
}

function setupDownloads() {
  const section = $("downloads");
  const body = $("files-list");

  const refresh = async () => {
    section.dataset.state = "loading";
    try {
      const response = await fetch("/api/files", { cache: "no-store" });
      if (!response.ok) throw new Error(await errorMessage(response));
      const { files = [] } = await response.json(); // sizes are strings: uint64 in JSON
      // Keep the rows of unchanged files, so a download in progress keeps its row.
      const rows = new Map([...body.children].map((row) => [`${row.dataset.name}:${row.dataset.size}`, row]));
      body.replaceChildren(...files.map((f) => rows.get(`${f.name}:${f.size}`) ?? fileRow(f)));
      const bytes = files.reduce((sum, f) => sum + Number(f.size), 0);
      $("files-summary").textContent = `${files.length} files · ${humanSize(bytes)}`;
      section.dataset.state = "ready";
    } catch (error) {
      $("files-summary").textContent = `could not list files: ${error.message}`;
      section.dataset.state = "error";
    }
  };

  $("files-refresh").addEventListener("click", refresh);
  refresh();
  return refresh;
}

// ---------------------------------------------------------------------------------------------

setupTextStream();
setupDogs();
setupSse();
setupUpload(setupDownloads());
document.body.dataset.ready = "true";

// The helpers, for anyone who wants them elsewhere (and for the browser tests).
export { ndjson, resumableDownload, contentDisposition, sha256Hex };
