// The cmi serve page: pick or drop a photo, POST it to /v1/segment, show the overlay and legend.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { colors: new Map(), photoUrl: null, file: null };

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function askForKey(message) {
  $("key-row").hidden = false;
  setStatus(message, true);
  $("api-key").focus();
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${body.error.message} (${response.status} ${body.error.code})`;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `request failed: ${response.status} ${response.statusText}`;
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (response.status === 401) {
    $("model").textContent = "This server needs an API key.";
    askForKey("Enter the API key to use this server.");
    return;
  }
  if (!response.ok) {
    $("model").textContent = await errorText(response);
    return;
  }
  const model = await response.json();
  state.colors = new Map(model.classes.map((c) => [c.id, c.color]));
  $("model").textContent =
    `Model ${model.id} (${model.num_classes} classes, ${model.input_size} px input)`;
  if (!$("key-row").hidden) setStatus("API key accepted.");
}

function percent(value) {
  return `${(value * 100).toFixed(1)} %`;
}

function showResult(body, roundTripMs) {
  $("overlay").src = `data:image/jpeg;base64,${body.overlay_jpeg_base64}`;
  $("latency").textContent =
    `${body.image.width}×${body.image.height} px · server ${body.latency_ms.toFixed(0)} ms ` +
    `(inference ${body.inference_ms.toFixed(0)} ms) · round trip ${roundTripMs.toFixed(0)} ms`;
  const rows = body.classes.map((c) => {
    const tr = document.createElement("tr");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = state.colors.get(c.id) || "#000000";
    swatch.setAttribute("aria-hidden", "true");
    const cells = [swatch, c.name, percent(c.share), percent(c.confidence)];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      if (i >= 2) td.className = "num";
      td.append(value);
      tr.append(td);
    });
    return tr;
  });
  $("legend").querySelector("tbody").replaceChildren(...rows);
  cmiNutrition.show(body);
  $("results").hidden = false;
  setStatus(`Found ${body.classes.length} classes.`);
}

async function upload(file) {
  if (!file) return;
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = URL.createObjectURL(file);
  state.file = file;
  $("photo").src = state.photoUrl;
  setStatus(`Segmenting ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  const start = performance.now();
  let response;
  try {
    response = await fetch(`/v1/segment?overlay=true${cmiNutrition.query()}`, {
      method: "POST",
      body: form,
      headers: headers(),
    });
  } catch (err) {
    setStatus(`Network error: ${err.message}`, true);
    return;
  }
  if (response.status === 401) {
    askForKey("The server needs a valid API key.");
    return;
  }
  if (!response.ok) {
    setStatus(await errorText(response), true);
    return;
  }
  const body = await response.json();
  if (state.colors.size === 0) await loadModel();
  showResult(body, performance.now() - start);
}

// Post the current photo again (the plate size changed); resolve to the JSON body or null.
async function segmentAgain(url) {
  if (!state.file) return null;
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form, headers: headers() });
  } catch (err) {
    setStatus(`Network error: ${err.message}`, true);
    return null;
  }
  if (!response.ok) {
    setStatus(await errorText(response), true);
    return null;
  }
  return response.json();
}

function setupDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) =>
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    }),
  );
  ["dragleave", "drop"].forEach((type) =>
    drop.addEventListener(type, () => drop.classList.remove("dragging")),
  );
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) upload(file);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", (event) => upload(event.target.files[0]));
  $("api-key").addEventListener("change", loadModel);
  $("form").addEventListener("submit", (event) => event.preventDefault());
  setupDrop();
  cmiNutrition.setup(segmentAgain, setStatus);
  loadModel().catch((err) => setStatus(`Could not reach the server: ${err.message}`, true));
});
