// The dashboard's behaviour: everything it shows comes from the public API (/v1/...), fetched with the
// API key kept in this tab's sessionStorage when the service has keys. Data is put in the page with
// textContent only, never as markup.
"use strict";

const KEY_ITEM = "bnjobs.apiKey";
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const JOBS_REFRESH_MS = 2000;
const EXPERIMENTS_REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

const openAccess = document.body.dataset.openAccess === "true";
const $ = (selector) => document.querySelector(selector);

const state = {
  jobId: null, job: null, metrics: [], stream: null,
  modelId: null, experimentId: null, experimentShown: null, timers: [], session: 0,
  datasetNames: new Map(),  // an upload's id -> its name: uploads are shown by name, the id on hover
};

class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.fields = error.fields || [];
  }
}

// --- API ----------------------------------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function request(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.ok) return response;
  let error = { code: "http_error", message: `${response.status} ${response.statusText}` };
  try {
    error = (await response.json()).error || error;
  } catch (_) { /* not the API's error shape */ }
  if (response.status === 401 && !openAccess) forgetKey(error.message);
  throw new ApiError(response.status, error);
}

const getJson = async (path) => (await request(path)).json();

/** The JSON at `path`, or null when the key changed or was forgotten while it was on its way. */
async function getCurrentJson(path) {
  const session = state.session;
  const data = await getJson(path);
  return session === state.session ? data : null;
}

// --- API keys -----------------------------------------------------------------------------------

function setupKeyForm() {
  const form = $("#key-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_ITEM, key);
    $("#key-input").value = "";
    try {
      await request("/v1/datasets");  // any valid key may read it: proves the key before anything else
    } catch (error) {
      $("#key-message").textContent = error.message;
      return;
    }
    start();
  });
  $("#key-forget").addEventListener("click", () => forgetKey("key forgotten"));
}

function forgetKey(reason) {
  sessionStorage.removeItem(KEY_ITEM);
  stop();
  for (const id of ["#job-rows", "#model-rows", "#bn-rows", "#experiment-rows", "#variant-rows", "#dataset-select"]) {
    $(id).replaceChildren();
  }
  shownRows.clear();
  for (const id of ["#job-detail", "#model-detail", "#experiment-detail"]) $(id).hidden = true;
  $("#key-forget").hidden = true;
  $("#key-message").textContent = `${reason}: enter an API key to see jobs and models`;
}

// --- Jobs -----------------------------------------------------------------------------------------

/** A built-in dataset by its name, an upload by its id. */
function datasetOf(spec) {
  return spec.dataset.name ?? spec.dataset.id;
}

function networkOf(model) {
  if (model.architecture === "resnet") return `resnet-${model.depth}, width ${model.width}`;
  return `${model.architecture} ${JSON.stringify(model.hidden_sizes)}`;
}

/** What people read for a dataset: a built-in's name, an upload's name (its id while unknown). */
function datasetLabel(ref) {
  return ref.name ?? state.datasetNames.get(ref.id) ?? ref.id;
}

/** `job_3b70…`: enough to tell rows apart; the whole id is on hover and in the detail panel. */
function shortId(id) {
  const cut = id.lastIndexOf("_") + 5;
  return cut > 4 && id.length > cut ? `${id.slice(0, cut)}…` : id;
}

// The answer each list shows now, as JSON: an unchanged answer leaves the rows (and a click on one) be.
const shownRows = new Map();

function showRows(tbody, items, row) {
  const answer = JSON.stringify(items);
  if (shownRows.get(tbody.id) === answer) return;
  shownRows.set(tbody.id, answer);
  tbody.replaceChildren(...items.map(row));
}

/** A newest-first listing into its table, or its error above the table; the page, or null. */
async function refreshList(path, tbody, errorLine, row) {
  try {
    const page = await getCurrentJson(path);
    if (!page) return null;
    showRows($(tbody), page.items, row);
    $(errorLine).textContent = "";
    return page;
  } catch (error) {
    $(errorLine).textContent = error.message;
    return null;
  }
}

/** A table row for the item `id` (a job, model or experiment), marked when it is the one shown below. */
function itemRow(key, id, shownId, cells) {
  const row = document.createElement("tr");
  row.dataset[key] = id;
  row.append(...cells);
  row.classList.toggle("selected", id === shownId);
  return row;
}

const statusCell = (status) => cell(status, `status status-${status}`);

function cell(text, className, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  if (title) td.title = title;
  return td;
}

const idCell = (id) => cell(shortId(id), "id", id);
const textCell = (text) => cell(text, "", text);
const numberCell = (text) => cell(text, "number");

/** A bar of epochs done, and `epoch/epochs`. */
function progressCell(job) {
  const td = cell("", "progress");
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.dataset.status = job.status;
  const done = document.createElement("span");
  const fraction = job.progress.epochs ? job.progress.epoch / job.progress.epochs : 0;
  done.style.width = `${Math.round(fraction * 1000) / 10}%`;
  bar.append(done);
  td.append(bar, `${job.progress.epoch}/${job.progress.epochs}`);
  return td;
}

// Month, day, hours and minutes (UTC, as the API answers); the whole time is on hover.
const formatTime = (iso) => iso.slice(5, 16).replace("T", " ");
const timeCell = (iso) => cell(formatTime(iso), "", iso);
const formatAccuracy = (value) => (value === undefined || value === null ? "" : value.toFixed(3));

function jobRow(job) {
  const last = job.metrics[job.metrics.length - 1];
  return itemRow("jobId", job.id, state.jobId, [
    idCell(job.id), textCell(job.name), statusCell(job.status), progressCell(job),
    numberCell(formatAccuracy(last && last.val_accuracy)), cell(datasetLabel(job.spec.dataset), "", datasetOf(job.spec)),
    timeCell(job.created_at),
  ]);
}

const refreshJobs = () => refreshList("/v1/jobs?limit=20", "#job-rows", "#jobs-error", jobRow);

/** On opening the page, the newest running job (else the newest job) is the one whose curves are shown. */
async function showLatestJob() {
  const page = await refreshJobs();
  if (!page || state.jobId || !page.items.length) return;
  const running = page.items.find((job) => job.status === "running");
  selectJob((running ?? page.items[0]).id);
}

function selectJob(jobId) {
  if (state.stream) state.stream.abort();
  state.jobId = jobId;
  state.job = null;
  state.metrics = [];
  for (const row of document.querySelectorAll("#job-rows tr")) row.classList.toggle("selected", row.dataset.jobId === jobId);
  $("#job-detail").hidden = false;
  $("#job-title").textContent = jobId;
  $("#job-name").textContent = "";
  $("#job-status").textContent = "…";
  $("#job-info").textContent = "";
  $("#job-model").hidden = true;
  $("#job-cancel").hidden = true;
  drawChart();
  followJob(jobId);
}

async function followJob(jobId) {
  const controller = new AbortController();
  state.stream = controller;
  try {
    const job = await getJson(`/v1/jobs/${encodeURIComponent(jobId)}`);
    if (state.jobId !== jobId) return;
    state.job = job;
    showJob(state.job);
    // The stream replays every finished epoch, then sends each new one: the chart starts from it alone.
    const response = await request(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { signal: controller.signal });
    await readEvents(response, (kind, data) => onJobEvent(jobId, kind, data));
  } catch (error) {
    if (controller.signal.aborted) return;
    $("#job-info").textContent = error.message;
    // A dropped stream (a restarted API, say) is picked up again while the job is still the one shown.
    if (!(error instanceof ApiError)) setTimeout(() => state.jobId === jobId && !FINISHED.has(state.job?.status) && selectJob(jobId), 2000);
  }
}

async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

function onJobEvent(jobId, kind, data) {
  if (jobId !== state.jobId) return;
  if (kind === "status") {
    state.job = { ...state.job, status: data.status, attempts: data.attempts };
    showJob(state.job);
  } else if (kind === "epoch") {
    state.metrics = [...state.metrics.filter((m) => m.epoch !== data.epoch), data];
    drawChart();
  } else if (kind === "end") {
    state.job = data;
    state.metrics = data.metrics;
    showJob(data);
    drawChart();
    refreshJobs();
    refreshModels();
    refreshExperiments();
  }
}

function showJob(job) {
  if (job.name) $("#job-name").textContent = job.name;
  $("#job-status").textContent = job.status;
  $("#job-status").className = `status-${job.status}`;
  const recalibration = job.recalibration;
  const parts = recalibration
    ? [`BN statistics of ${recalibration.parent_model_id} recomputed over `
      + (recalibration.dataset ? datasetLabel(recalibration.dataset) : "its training split")]
    : [`${datasetLabel(job.spec.dataset)}, ${networkOf(job.spec.model)}`,
      `${job.spec.training.optimizer} lr ${job.spec.training.learning_rate}, batch ${job.spec.training.batch_size}`];
  if (job.workers && job.workers.length > 1) {
    parts.push(`workers ${job.workers.map((worker, i) => `${worker} (${job.devices[i]})`).join(", ")}`);
  } else if (job.worker) {
    parts.push(`worker ${job.worker}`);
  }
  if (job.world_size > 1) parts.push(`world size ${job.world_size}`);  // data-parallel: the batch shared by that many processes
  if (job.error) parts.push(`${job.error.code}: ${job.error.message}`);
  $("#job-info").textContent = parts.join(" · ");
  $("#job-model").hidden = !job.model_id;
  $("#job-cancel").hidden = FINISHED.has(job.status);
  showActivations(job);
}

/** Under training.track_activations, the percentile curves once the job has ended (drawn once per job). */
function showActivations(job) {
  const img = $("#job-activations");
  const tracked = !job.recalibration && job.spec.training.track_activations;
  img.hidden = !tracked;
  if (!tracked || !FINISHED.has(job.status) || img.dataset.jobId === job.id) return;
  img.dataset.jobId = job.id;
  showPlot(img, `/v1/jobs/${encodeURIComponent(job.id)}/activations.png`, () => state.job && state.job.id === job.id);
}

// --- Chart --------------------------------------------------------------------------------------

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

const CHART_PANELS = [
  { title: "loss", series: ["train_loss", "val_loss"], fixedMax: null },
  { title: "accuracy", series: ["train_accuracy", "val_accuracy"], fixedMax: 1 },
];

function drawChart() {
  const chart = $("#job-chart");
  const epochs = Math.max(state.job ? state.job.progress.epochs : 1, state.metrics.length, 1);
  const metrics = [...state.metrics].sort((a, b) => a.epoch - b.epoch);
  const panelWidth = 240, height = 220, margin = { left: 40, right: 10, top: 22, bottom: 30 };
  const nodes = [];
  CHART_PANELS.forEach((panel, index) => {
    const x0 = index * panelWidth + margin.left, x1 = (index + 1) * panelWidth - margin.right;
    const y0 = height - margin.bottom, y1 = margin.top;
    const values = metrics.flatMap((m) => panel.series.map((name) => m[name]));
    const top = panel.fixedMax ?? Math.max(...values, 1e-9) * 1.05;
    const x = (epoch) => x0 + (epochs === 1 ? 0 : ((epoch - 1) / (epochs - 1)) * (x1 - x0));
    const y = (value) => y0 - (Math.min(value, top) / top) * (y0 - y1);
    nodes.push(svg("text", { x: x0, y: 14, class: "panel-title" }, panel.title));
    for (const fraction of [0, 0.5, 1]) {
      const value = top * fraction;
      nodes.push(svg("line", { x1: x0, x2: x1, y1: y(value), y2: y(value), class: fraction ? "grid" : "axis" }));
      nodes.push(svg("text", { x: x0 - 4, y: y(value) + 4, "text-anchor": "end" }, value.toFixed(2)));
    }
    nodes.push(svg("line", { x1: x0, x2: x0, y1: y0, y2: y1, class: "axis" }));
    nodes.push(svg("text", { x: x0, y: y0 + 16 }, "epoch 1"));
    nodes.push(svg("text", { x: x1, y: y0 + 16, "text-anchor": "end" }, `${epochs}`));
    for (const name of panel.series) {
      const kind = name.startsWith("train") ? "train" : "val";
      const points = metrics.map((m) => `${x(m.epoch).toFixed(1)},${y(m[name]).toFixed(1)}`);
      nodes.push(svg("polyline", { points: points.join(" "), class: kind, "data-series": name }));
      // A single epoch is a point, not a line: a dot shows it.
      for (const m of metrics) nodes.push(svg("circle", { cx: x(m.epoch), cy: y(m[name]), r: 2.5, class: kind }));
    }
    nodes.push(svg("text", { x: x1 - 84, y: 14, class: "train" }, "— train"));
    nodes.push(svg("text", { x: x1 - 32, y: 14, class: "val" }, "— val"));
  });
  chart.replaceChildren(...nodes);
  const last = metrics[metrics.length - 1];
  const total = metrics.reduce((sum, m) => sum + m.seconds, 0);
  $("#job-pace").textContent = last
    ? `epoch ${last.epoch} took ${last.seconds.toFixed(3)} s; ${total.toFixed(2)} s over ${metrics.length} epochs` +
      (last.learning_rate == null ? "" : `; learning rate ${Number(last.learning_rate.toPrecision(4))}`)
    : "";
}

// --- Models -------------------------------------------------------------------------------------

/** The ids of the models with the highest validation accuracy of each dataset among `models`. */
function bestModels(models) {
  const best = new Map();
  for (const model of models) {
    const leader = best.get(model.dataset);
    if (!leader || model.final_metrics.val_accuracy > leader.final_metrics.val_accuracy) best.set(model.dataset, model);
  }
  return new Set([...best.values()].map((model) => model.id));
}

function modelRow(model, _index, models) {
  const best = bestModels(models).has(model.id);
  const row = itemRow("modelId", model.id, state.modelId, [
    idCell(model.id), textCell(model.name), cell(datasetLabel(model.spec.dataset), "", model.dataset),
    numberCell(model.parameter_count.toLocaleString("en-US")),
    numberCell(formatAccuracy(model.final_metrics.val_accuracy) + (best ? " ★" : "")), timeCell(model.created_at),
  ]);
  row.classList.toggle("best", best);
  return row;
}

const refreshModels = () => refreshList("/v1/models?limit=20", "#model-rows", "#models-error", modelRow);

async function selectModel(modelId) {
  state.modelId = modelId;
  for (const row of document.querySelectorAll("#model-rows tr")) row.classList.toggle("selected", row.dataset.modelId === modelId);
  $("#model-detail").hidden = false;
  $("#model-title").textContent = modelId;
  $("#model-name").textContent = "";
  $("#model-error").textContent = "";
  $("#bn-rows").replaceChildren();
  $("#model-info").textContent = "";
  $("#model-drift").textContent = "";
  $("#model-serving").textContent = "";
  const plot = $("#bn-plot");
  clearPlot(plot);
  const base = `/v1/models/${encodeURIComponent(modelId)}`;
  try {
    const [model, batchnorm, drift] = await Promise.all(
      [getJson(base), getJson(`${base}/batchnorm`), getJson(`${base}/drift`)],
    );
    if (state.modelId !== modelId) return;
    // The job that trained it, with its curves, in the job panel: a model's whole story on one screen.
    if (state.jobId !== model.job_id) selectJob(model.job_id);
    $("#model-name").textContent = model.name;
    $("#model-info").textContent = [
      `${datasetLabel(model.spec.dataset)}, ${networkOf(model.spec.model)}`,
      `${model.parameter_count} parameters`, `val acc ${formatAccuracy(model.final_metrics.val_accuracy)}`,
      ...(model.parent_id ? [`BN statistics recalibrated from ${model.parent_id}`] : []),
    ].join(" · ");
    // GroupNorm and LayerNorm layers have no running statistics: null, shown as an empty cell.
    const mean = (values) => {
      if (values === null) return "";
      return (values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN).toFixed(3);
    };
    const served = new Map(drift.layers.map((layer) => [layer.name, layer]));
    $("#bn-rows").replaceChildren(...batchnorm.layers.map((layer) => {
      const seen = served.get(layer.name);
      const row = document.createElement("tr");
      row.append(cell(layer.name), numberCell(String(layer.num_features)), numberCell(mean(layer.gamma)),
        numberCell(mean(layer.beta)), numberCell(mean(layer.running_mean)), numberCell(mean(layer.running_var)),
        numberCell(seen ? String(seen.samples) : ""), numberCell(formatRatio(seen?.mean_shift)),
        numberCell(formatRatio(seen?.variance_ratio)),
        cell(seen?.drifted ? "yes" : "no", seen?.drifted ? "drifted" : ""));
      return row;
    }));
    $("#model-drift").textContent = driftSummary(drift);
    $("#model-serving").textContent = servingSummary(model.serving);
    // GroupNorm and LayerNorm keep no statistics: there is nothing to recalibrate.
    $("#model-recalibration").hidden = !batchnorm.layers.some((layer) => layer.running_mean !== null);
    await showPlot(plot, `${base}/batchnorm/plot.png`, () => state.modelId === modelId);
  } catch (error) {
    $("#model-error").textContent = error.message;
  }
}

const servingSummary = (serving) => (serving.folded
  ? `Served with ${serving.folded_layers.join(", ")} folded into the layer before each.`
  : `Served unfolded${serving.note ? `: ${serving.note}` : "."}`);

const formatRatio = (value) => (value === undefined || value === null ? "" : value.toFixed(2));

/** What the drift monitor says of the model's served inputs, against BN's frozen statistics. */
function driftSummary(drift) {
  const served = `Served ${drift.samples_seen} samples since ${formatTime(drift.since)}`;
  if (drift.applies === false) return `${served}: ${drift.note}.`;
  const t = drift.thresholds;
  const rule = `a layer drifts when its inputs' mean moves over ${t.mean_shift} σ or their variance ratio leaves `
    + `${t.variance_ratio_min}–${t.variance_ratio_max}, after ${t.min_samples} samples`;
  const drifted = drift.layers.filter((layer) => layer.drifted).map((layer) => layer.name);
  const verdict = drifted.length ? `covariate shift in ${drifted.join(", ")}` : "no BN layer has drifted";
  return `${served}: ${verdict} (${rule}).`;
}

// An <img src> cannot carry the API key: a PNG is fetched with it and shown from a blob URL.
const plotUrls = new Map();

function clearPlot(img) {
  img.removeAttribute("src");
  if (plotUrls.has(img.id)) URL.revokeObjectURL(plotUrls.get(img.id));
  plotUrls.delete(img.id);
}

async function showPlot(img, path, stillWanted) {
  const png = await (await request(path)).blob();
  if (!stillWanted()) return;
  clearPlot(img);
  plotUrls.set(img.id, URL.createObjectURL(png));
  img.src = plotUrls.get(img.id);
}

// --- Experiments --------------------------------------------------------------------------------

function bestVariant(experiment) {
  const scored = experiment.variants.filter((v) => v.best_val_accuracy !== null);
  return scored.reduce((best, v) => (v.best_val_accuracy > best.best_val_accuracy ? v : best), scored[0]);
}

function experimentRow(experiment) {
  const best = bestVariant(experiment);
  return itemRow("experimentId", experiment.id, state.experimentId, [
    cell(experiment.name, "", `${experiment.name} (${experiment.id}, ${experiment.created_at})`), statusCell(experiment.status),
    numberCell(String(experiment.variants.length)),
    cell(best ? `${best.name} ${formatAccuracy(best.best_val_accuracy)}` : "", "", best ? best.name : ""),
  ]);
}

async function refreshExperiments() {
  const page = await refreshList("/v1/experiments?limit=20", "#experiment-rows", "#experiments-error", experimentRow);
  const shown = page?.items.find((experiment) => experiment.id === state.experimentId);
  if (shown) showExperiment(shown);
}

async function selectExperiment(experimentId) {
  state.experimentId = experimentId;
  state.experimentShown = null;
  for (const row of document.querySelectorAll("#experiment-rows tr")) {
    row.classList.toggle("selected", row.dataset.experimentId === experimentId);
  }
  $("#experiment-detail").hidden = false;
  $("#experiment-title").textContent = experimentId;
  $("#experiment-name").textContent = "";
  $("#experiment-status").textContent = "…";
  $("#experiment-cancel").hidden = true;
  $("#experiment-error").textContent = "";
  $("#variant-rows").replaceChildren();
  clearPlot($("#experiment-plot"));
  try {
    const experiment = await getJson(`/v1/experiments/${encodeURIComponent(experimentId)}`);
    if (state.experimentId === experimentId) showExperiment(experiment);
  } catch (error) {
    $("#experiment-error").textContent = error.message;
  }
}

/** The experiment's table, and its curves once more whenever the table changed. */
async function showExperiment(experiment) {
  const table = JSON.stringify(experiment);
  if (table === state.experimentShown) return;
  state.experimentShown = table;
  $("#experiment-name").textContent = experiment.name;
  $("#experiment-status").textContent = experiment.status;
  $("#experiment-status").className = `status-${experiment.status}`;
  $("#experiment-cancel").hidden = experiment.status === "finished";
  $("#variant-rows").replaceChildren(...experiment.variants.map((v) => itemRow("jobId", v.job_id, state.jobId, [
    textCell(v.name), idCell(v.job_id), statusCell(v.status),
    numberCell(formatAccuracy(v.final_val_accuracy)), numberCell(formatAccuracy(v.best_val_accuracy)),
    numberCell(v.epochs_to_target ?? ""), cell(v.diverged ? "yes" : "no"),
  ])));
  try {
    await showPlot($("#experiment-plot"), `/v1/experiments/${encodeURIComponent(experiment.id)}/plot.png`,
      () => state.experimentShown === table);
  } catch (error) {
    $("#experiment-error").textContent = error.message;
  }
}

// --- The form -------------------------------------------------------------------------------------

function setPath(target, path, value) {
  const names = path.split(".");
  const last = names.pop();
  for (const name of names) target = target[name] ??= {};
  target[last] = value;
}

// Values the browser cannot read as numbers are sent as typed: the API names the field that is wrong.
function parseNumber(text) {
  const number = Number(text);
  return text !== "" && Number.isFinite(number) ? number : text;
}

function jobBody(form) {
  const body = {};
  for (const input of form.querySelectorAll("[name][data-kind]")) {
    const text = input.value.trim();
    if (text === "") continue;  // left empty: the service's default
    const kind = input.dataset.kind;
    const value = kind === "number" ? parseNumber(text)
      : kind === "list" ? text.split(/[\s,]+/).filter(Boolean).map(parseNumber) : text;
    // The dataset's option says which field names it: `dataset.name` (built-in) or `dataset.id` (upload).
    setPath(body, input.selectedOptions?.[0]?.dataset.field ?? input.name, value);
  }
  return body;
}

function clearFieldErrors(form) {
  for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
  for (const field of form.querySelectorAll(".field.invalid")) field.classList.remove("invalid");
  $("#form-error").textContent = "";
}

// The API names `model.hidden_sizes.1` or `model`: each error goes to the form field it is about.
function fieldFor(form, path) {
  const spans = [...form.querySelectorAll(".field-error")];
  const exact = spans.find((span) => path === span.dataset.for || path.startsWith(`${span.dataset.for}.`));
  return exact || null;
}

function showFieldErrors(form, error) {
  const unplaced = [];
  for (const { field, message } of error.fields) {
    const span = fieldFor(form, field);
    if (span) {
      span.textContent = span.textContent ? `${span.textContent}; ${message}` : message;
      span.closest(".field").classList.add("invalid");
    } else {
      unplaced.push(`${field}: ${message}`);
    }
  }
  $("#form-error").textContent = error.fields.length && !unplaced.length ? "the service refused the job" : [error.message, ...unplaced].join("; ");
}

function setupJobForm() {
  const form = $("#job-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    $("#job-submit").disabled = true;
    try {
      const response = await request("/v1/jobs", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(jobBody(form)),
      });
      const job = await response.json();
      await refreshJobs();
      selectJob(job.id);
    } catch (error) {
      if (error instanceof ApiError) showFieldErrors(form, error);
      else $("#form-error").textContent = error.message;
    } finally {
      $("#job-submit").disabled = false;
    }
  });
  $("#dataset-select").addEventListener("change", (event) => {
    const option = event.target.selectedOptions[0];
    if (option && option.dataset.numClasses) form.querySelector("[name='model.num_classes']").value = option.dataset.numClasses;
  });
}

function setupUploadForm() {
  const form = $("#upload-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = $("#upload-message");
    const body = new FormData();
    for (const [name, value] of new FormData(form)) {
      if (value instanceof File ? value.name : value.trim()) body.append(name, value);  // empty: the service's default
    }
    message.className = "message";
    message.textContent = "uploading…";
    $("#upload-submit").disabled = true;
    try {
      const dataset = await (await request("/v1/datasets", { method: "POST", body })).json();
      message.textContent = `${dataset.name}: ${dataset.num_samples} samples, ${dataset.num_classes} classes, `
        + `stored as ${dataset.id}; picked for the next job`;
      form.reset();
      await refreshDatasets();
      const select = $("#dataset-select");
      select.value = dataset.id;
      select.dispatchEvent(new Event("change"));
    } catch (error) {
      message.className = "message error";
      message.textContent = error instanceof ApiError && error.fields.length
        ? error.fields.map(({ field, message: text }) => `${field}: ${text}`).join("; ") : error.message;
    } finally {
      $("#upload-submit").disabled = false;
    }
  });
}

function datasetOption(dataset) {
  const upload = dataset.source === "upload";
  const option = document.createElement("option");
  option.value = upload ? dataset.id : dataset.name;
  option.textContent = upload ? `${dataset.name} (upload ${dataset.id})` : dataset.name;
  option.dataset.field = upload ? "dataset.id" : "dataset.name";
  option.dataset.numClasses = dataset.num_classes;
  return option;
}

async function refreshDatasets() {
  const select = $("#dataset-select");
  try {
    const answer = await getCurrentJson("/v1/datasets");
    if (!answer) return;
    const { items } = answer;
    state.datasetNames = new Map(items.filter((dataset) => dataset.id).map((dataset) => [dataset.id, dataset.name]));
    const options = items.map(datasetOption);
    const shown = [...select.options].map((option) => option.value);
    if (shown.join("\n") === options.map((option) => option.value).join("\n")) return;  // as rendered: leave the form be
    const chosen = select.value;
    select.replaceChildren(...options);
    if (options.some((option) => option.value === chosen)) select.value = chosen;
    if (select.value !== chosen) select.dispatchEvent(new Event("change"));
  } catch (error) {
    $("#form-error").textContent = error.message;
  }
}

// --- Start ----------------------------------------------------------------------------------------

function stop() {
  state.session += 1;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  if (state.stream) state.stream.abort();
  state.jobId = state.modelId = state.experimentId = null;
}

async function start() {
  stop();
  const session = state.session;
  document.body.dataset.loaded = "false";
  if (!openAccess) {
    $("#key-forget").hidden = false;
    $("#key-message").textContent = "using the key of this tab";
  }
  state.timers = [setInterval(refreshJobs, JOBS_REFRESH_MS), setInterval(refreshExperiments, EXPERIMENTS_REFRESH_MS)];
  // Names of uploads first, so that the lists show them; then every list at once.
  await refreshDatasets();
  await Promise.all([showLatestJob(), refreshModels(), refreshExperiments()]);
  if (session === state.session) document.body.dataset.loaded = "true";  // the tests wait for this
}

/** A click on an id in a detail panel's title copies it. */
function setupCopy() {
  document.addEventListener("click", async (event) => {
    const id = event.target.closest(".copyable");
    if (!id || !id.textContent) return;
    try {
      await navigator.clipboard.writeText(id.textContent);
      id.classList.add("copied");
      setTimeout(() => id.classList.remove("copied"), 1500);
    } catch (_) { /* no clipboard here (not a secure context): the id can still be selected */ }
  });
}

function setup() {
  // A click on a row of a table shows the job, model or experiment it names.
  for (const [tbody, key, select] of [["#job-rows", "jobId", selectJob], ["#variant-rows", "jobId", selectJob],
    ["#model-rows", "modelId", selectModel], ["#experiment-rows", "experimentId", selectExperiment]]) {
    $(tbody).addEventListener("click", (event) => {
      const row = event.target.closest("tr");
      if (row && row.dataset[key]) select(row.dataset[key]);
    });
  }
  $("#experiment-cancel").addEventListener("click", async () => {
    try {
      const path = `/v1/experiments/${encodeURIComponent(state.experimentId)}/cancel`;
      showExperiment(await (await request(path, { method: "POST" })).json());
      refreshJobs();
    } catch (error) {
      $("#experiment-error").textContent = error.message;
    }
  });
  $("#model-recalibrate").addEventListener("click", async () => {
    try {
      const path = `/v1/models/${encodeURIComponent(state.modelId)}/recalibrate`;
      const job = await (await request(path, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      })).json();
      await refreshJobs();
      selectJob(job.id);
    } catch (error) {
      $("#model-error").textContent = error.message;
    }
  });
  $("#job-model").addEventListener("click", () => state.job && state.job.model_id && selectModel(state.job.model_id));
  $("#job-cancel").addEventListener("click", async () => {
    try {
      showJob(await (await request(`/v1/jobs/${encodeURIComponent(state.jobId)}/cancel`, { method: "POST" })).json());
    } catch (error) {
      $("#job-info").textContent = error.message;
    }
  });
  setupJobForm();
  setupUploadForm();
  setupCopy();
  if (openAccess || sessionStorage.getItem(KEY_ITEM)) {
    start();
  } else {
    $("#key-message").textContent = "enter an API key to see jobs and models";
  }
  if (!openAccess) setupKeyForm();
}

document.addEventListener("DOMContentLoaded", setup);
