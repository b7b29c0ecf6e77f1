// The gradfit playground: settings live in the URL, the fit runs on the server (gradfit's own loop),
// this script only sends settings and steps and draws what comes back (with plotly.js, served locally).
"use strict";

const $ = (id) => document.getElementById(id);
const BLUE = "#1f77b4", RED = "#d62728", PURPLE = "#9467bd", ORANGE = "#ff7f0e";
const DEFAULTS = { data: "generated", seed: 1989, noise: 3, model: "quadratic", method: "gd",
                   learning_rate: 1e-4, scale: false };
const LANDSCAPE_EVERY = 5;  // while running, refresh the landscape's contours every this many requests

let session = null;      // the server's state for this tab: id, data, records, ...
let records = [];        // every step so far (the server sends only the new ones)
let twin = null;         // the compared run ("compare with"): {session, records}, stepped with the first
let running = false;
let requests = 0;
let csvUpload = null;    // {text, filename}: an uploaded file stays in this tab (it is not in the link)
let busy = Promise.resolve();

// ---- settings <-> URL --------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(location.search);
  const num = (k, d) => (q.has(k) && q.get(k) !== "" && isFinite(+q.get(k)) ? +q.get(k) : d);
  return {
    setup: {
      data: q.get("data") === "upload" ? "upload" : "generated",
      seed: Math.round(num("seed", DEFAULTS.seed)),
      noise: num("noise", DEFAULTS.noise),
      model: q.get("model") || DEFAULTS.model,
      method: q.get("method") || DEFAULTS.method,
      learning_rate: Math.min(1, Math.max(1e-6, num("lr", DEFAULTS.learning_rate))),  // the slider's range
      scale: q.get("scale") === "1",
    },
    speed: q.get("speed") || "10",
    pair: q.get("pair") ? q.get("pair").split(",") : null,
    compare: q.get("compare") || "",
  };
}

function writeUrl() {
  const s = currentSetup();
  const q = new URLSearchParams();
  if (s.data === "upload") q.set("data", "upload");
  q.set("seed", s.seed); q.set("noise", s.noise); q.set("model", s.model); q.set("method", s.method);
  q.set("lr", formatRate(s.learning_rate)); q.set("scale", s.scale ? "1" : "0"); q.set("speed", $("speed").value);
  const pair = currentPair();
  if (pair) q.set("pair", pair.join(","));
  if ($("compare").value) q.set("compare", $("compare").value);
  history.replaceState(null, "", "?" + q.toString());
}

function showSetup(setup, speed, compare) {
  $("data-" + setup.data).checked = true;
  $("seed").value = setup.seed;
  $("noise").value = setup.noise;
  const m = setup.model.trim();
  const poly = /^poly(\d{1,2})$/.exec(m);
  if (m === "quadratic" || m === "linear") $("model-kind").value = m;
  else if (poly) { $("model-kind").value = "poly"; $("degree").value = poly[1]; }
  else { $("model-kind").value = "expression"; $("expression").value = m; }
  $("method").value = setup.method;
  if ($("method").value !== setup.method) $("method").value = DEFAULTS.method;  // a link with an unknown method
  $("scale").checked = setup.scale;
  $("lr").value = Math.log10(setup.learning_rate);
  exactRate = setup.learning_rate;
  $("speed").value = ["1", "10", "100"].includes(speed) ? speed : "10";
  $("compare").value = compare;
  if ($("compare").value !== compare) $("compare").value = "";  // a link with an unknown comparison
  showModelRows(); showRate();
}

function currentSetup() {
  const kind = $("model-kind").value;
  const model = kind === "poly" ? "poly" + $("degree").value : kind === "expression" ? $("expression").value : kind;
  return {
    data: $("data-upload").checked ? "upload" : "generated",
    seed: Math.round(+$("seed").value), noise: +$("noise").value, model: model, method: $("method").value,
    learning_rate: rate(), scale: $("scale").checked,
  };
}

let exactRate = null;  // a rate from a link, kept as given until the slider moves
function rate() { return exactRate !== null ? exactRate : +Math.pow(10, +$("lr").value).toPrecision(2); }
function formatRate(r) { return r >= 0.01 && r < 1000 ? String(+r.toPrecision(3)) : r.toExponential(2).replace(/\.?0+e/, "e"); }
function twinSetup(setup, compare) {
  // the compared run: the same data, start and rate, another method (or the same one, standardized <-> raw)
  return compare === "scale" ? { ...setup, scale: !setup.scale } : { ...setup, method: compare };
}
function runName(setup) {
  return `${setup.method} on ${setup.scale ? "standardized" : "raw"} parameters`;
}
const alive = (s) => ["ready", "running"].includes(s.status);

function currentPair() {
  const x = $("pair-x").value, y = $("pair-y").value;
  return x && y && x !== y ? [x, y] : null;
}

// ---- talking to the server -----------------------------------------------------------

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) { options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body); }
  const response = await fetch(path, options);
  const value = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(value && value.error ? value.error : `HTTP ${response.status}`);
  return value;
}

let pending = 0;  // queued and running tasks, shown as <body data-busy>: tests wait for "0"
function serial(task) {  // one request at a time: the next waits for the last
  pending += 1; document.body.dataset.busy = "1";
  const done = () => { pending -= 1; if (pending === 0) document.body.dataset.busy = "0"; };
  busy = busy.then(task, task).finally(done);
  return busy;
}

async function newSession(pair) {
  stop();
  const setup = currentSetup();
  const body = { setup };
  if (pair) body.pair = pair;
  if (setup.data === "upload") {
    if (!csvUpload) { showMessage("error", "Choose a CSV file to upload (a column of x, a column of y)."); return; }
    body.csv = csvUpload.text; body.filename = csvUpload.filename;
  }
  const old = session, oldTwin = twin, compare = $("compare").value;
  try {
    const state = await api("POST", "/api/sessions", body);
    let other = null;
    if (compare) {
      try { other = await api("POST", "/api/sessions", { ...body, setup: twinSetup(setup, compare) }); }
      catch (e) { api("DELETE", "/api/sessions/" + state.id).catch(() => {}); throw e; }  // no half-made pair
    }
    session = state; records = state.records.slice();
    twin = other ? { session: other, records: other.records.slice() } : null;
    for (const gone of [old, oldTwin && oldTwin.session]) {
      if (gone) api("DELETE", "/api/sessions/" + gone.id).catch(() => {});
    }
    drawAll(state);
    writeUrl();
  } catch (e) {
    if (pair && e.message.includes("`pair`")) return newSession(null);  // a link's pair the model lacks
    showMessage("error", e.message);
  }
}

async function step(count, withLandscape) {
  if (!session) return null;
  const body = { steps: count, learning_rate: rate(), landscape: withLandscape };
  const pair = currentPair();
  if (pair) body.pair = pair;
  try {
    const out = await api("POST", `/api/sessions/${session.id}/step`, body);
    if (twin && alive(twin.session)) {  // the compared run takes the same steps at the same rate
      const t = await api("POST", `/api/sessions/${twin.session.id}/step`, { steps: count, learning_rate: rate() });
      twin.records.push(...t.records);
      Object.assign(twin.session, t);
    }
    records.push(...out.records);
    Object.assign(session, out);
    if (out.landscape !== undefined) landscape = out.landscape;
    drawProgress(out);
    return out;
  } catch (e) {
    stop();
    showMessage("error", e.message);
    return null;
  }
}

async function run() {
  if (running) { stop(); return; }
  const going = () => session && (alive(session) || (twin && alive(twin.session)));
  if (!going()) return;
  running = true; $("run").textContent = "Pause"; $("run").classList.add("running");
  while (running) {
    requests += 1;
    const out = await serial(() => step(+$("speed").value, requests % LANDSCAPE_EVERY === 0));
    if (!out || !going()) break;
    await new Promise((r) => setTimeout(r, 40));
  }
  stop();
  if (session) serial(() => refreshLandscape());
}

function stop() { running = false; $("run").textContent = "Run"; $("run").classList.remove("running"); }

async function refreshLandscape() {
  if (!session) return;
  const pair = currentPair();
  try {
    const state = await api("GET", `/api/sessions/${session.id}` + (pair ? "?pair=" + pair.join(",") : ""));
    drawLandscape(state.landscape);
  } catch (e) { showMessage("error", e.message); }
}

// ---- drawing ---------------------------------------------------------------------------

const LAYOUT = { margin: { l: 50, r: 15, t: 10, b: 40 }, showlegend: false, font: { size: 12 } };
const CONFIG = { displayModeBar: false, responsive: true };

function drawAll(state) {
  fillPairs(state.param_names, state.landscape ? state.landscape.pair : null);
  $("best-rmse").textContent = state.optimum ? fmt(state.optimum.rmse) : "–";
  $("upload-note").hidden = state.setup.data !== "upload";
  $("upload-note").textContent = state.setup.data === "upload" && csvUpload
    ? `${csvUpload.filename}: ${state.data.x.length} points. An uploaded file is not part of the link.` : "";
  $("stability").textContent = state.stability ? state.stability : "";
  $("twin-status").hidden = !twin;
  $("twin-legend").hidden = !twin;
  $("twin-legend").textContent = twin
    ? `Red: ${runName(state.setup)}. Purple: ${runName(twin.session.setup)}, from the same start at the same rate.` : "";
  drawLandscape(state.landscape);
  drawProgress(state);
}

function drawProgress(p) {
  const names = session.param_names;
  $("step-count").textContent = p.step;
  $("rmse").textContent = fmt(p.rmse);
  if (p.message) showMessage(p.status, p.message); else hideMessage();

  if (twin) {
    $("twin-rmse").textContent = fmt(twin.session.rmse);
    $("twin-step-count").textContent = twin.session.step;
    const m = $("twin-message");
    m.hidden = !twin.session.message;
    m.className = twin.session.status;
    m.textContent = twin.session.message ? `Purple run (${twin.session.setup.method}): ${twin.session.message}` : "";
  } else $("twin-message").hidden = true;

  const range = yRange(), shown = p.curve_y.filter((v) => v !== null && v >= range[0] && v <= range[1]);
  const away = shown.length ? [] : [{ text: curveAway(p.curve_y), showarrow: false, xref: "paper", yref: "paper",
                                      x: 0.5, y: 0.95, font: { color: RED } }];
  const fits = [
    { x: session.data.x, y: session.data.y, mode: "markers", name: "data", marker: { color: BLUE, size: 7 } },
    { x: session.curve_x, y: tame(p.curve_y, range), mode: "lines", name: "fit", line: { color: RED, width: 2.5 } },
  ];
  if (twin) {
    fits.push({ x: session.curve_x, y: tame(twin.session.curve_y, range), mode: "lines", name: "compared fit",
                line: { color: PURPLE, width: 2, dash: "dash" } });
  }
  Plotly.react("fit-chart", fits, { ...LAYOUT, annotations: away, xaxis: { title: { text: "x" } },
    yaxis: { title: { text: "y" }, range } }, CONFIG);

  // a record holds the RMSE where its step started: after k steps is record k+1's, and now is p.rmse
  const steps = [...records.map((r) => r.step - 1), p.step], rmse = [...records.map((r) => r.rmse), p.rmse];
  const traces = [{ x: steps, y: rmse, mode: records.length < 60 ? "lines+markers" : "lines", name: "RMSE",
                    line: { color: RED }, marker: { size: 4 } }];
  if (session.optimum) {
    const end = Math.max(1, p.step);
    traces.push({ x: [0, end], y: [session.optimum.rmse, session.optimum.rmse], mode: "lines", name: "best",
                  line: { color: "#444", dash: "dash", width: 1 } });
  }
  const ticked = [...rmse, ...(session.optimum ? [session.optimum.rmse] : [])];
  if (twin) {
    const t = twin.records, now = twin.session;
    const twinRmse = [...t.map((r) => r.rmse), now.rmse];
    traces.push({ x: [...t.map((r) => r.step - 1), now.step], y: twinRmse, mode: t.length < 60 ? "lines+markers" : "lines",
                  name: "compared RMSE", line: { color: PURPLE, dash: "dash" }, marker: { size: 4 } });
    ticked.push(...twinRmse);
  }
  Plotly.react("rmse-chart", traces, { ...LAYOUT, xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "RMSE" }, type: "log", ...logTicks(ticked) } }, CONFIG);

  drawPath();
  drawTable();
}

function nextStep() {
  // plain gd's next step, -rate x its direction (the gradient itself on raw parameters); null for the other
  // methods, whose step also depends on the steps before it
  const d = session.gd_direction;
  return d && d.every((v) => v !== null) && alive(session) ? d.map((v) => -rate() * v) : null;
}

function drawTable() {
  const names = session.param_names, p = session, step = nextStep();
  const head = ["parameter", "now", "gradient", "next step", "start", "best fit", ...(twin ? ["purple now"] : [])];
  $("params-table").tHead.rows[0].replaceChildren(...head.map((h) => {
    const th = document.createElement("th"); th.textContent = h; return th;
  }));
  $("params-table").tBodies[0].replaceChildren(...names.map((n, i) => {
    const tr = document.createElement("tr");
    const cells = [n, fmt(p.params[i]), p.gradient ? fmt(p.gradient[i]) : "–", step ? fmt(step[i]) : "–",
                   fmt(session.start[i]), session.optimum ? fmt(session.optimum.params[i]) : "–"];
    if (twin) cells.push(fmt(twin.session.params[i]));
    for (const v of cells) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    return tr;
  }));
}

function curveAway(ys) {
  const finite = ys.filter((v) => v !== null);
  if (!finite.length) return "The fit curve overflowed: its values are no longer numbers.";
  const big = finite.reduce((a, v) => (Math.abs(v) > Math.abs(a) ? v : a), 0);
  return `The fit curve has left the picture: it reaches ${big.toExponential(1)}.`;
}

function logTicks(values) {
  // a log axis labelled in plain numbers (0.5, 1, 2, 5, 10, ...; 1e+22 for huge ones), never plotly's lone
  // digits ("5" for 0.5) between the powers of ten
  const finite = values.filter((v) => v !== null && Number.isFinite(v) && v > 0);
  if (!finite.length) return {};
  const lo = Math.floor(Math.log10(Math.min(...finite))), hi = Math.ceil(Math.log10(Math.max(...finite)));
  const decades = Math.max(hi - lo, 1);
  const every = Math.ceil(decades / 8);  // at most about eight labelled powers of ten
  const tickvals = [];
  for (let d = lo; d <= hi; d += every) {
    for (const m of decades <= 2 ? [1, 2, 5] : [1]) tickvals.push(m * 10 ** d);
  }
  const label = (v) => (v >= 1e-3 && v < 1e5 ? String(+v.toPrecision(3)) : v.toExponential(0));
  return { tickvals, ticktext: tickvals.map(label) };
}

function pathOnFrame(xs, ys, box) {
  // a diverging path jumps between far sides of the picture: a segment between two points both far outside
  // it would cross it as a stray straight line, so the path breaks there (the line still leaves the picture
  // in the direction it went)
  const out = (k) => xs[k] === null || ys[k] === null || xs[k] < box[0] || xs[k] > box[1] || ys[k] < box[2] || ys[k] > box[3];
  const x = [...xs], y = [...ys];
  for (let k = 1; k < xs.length; k++) {
    if (out(k) && out(k - 1)) { x[k] = null; y[k] = null; }
  }
  return [x, y];
}

function tame(values, range) {
  // a diverging run's numbers (1e150, ...) leave the picture anyway: clip them far outside it, so the
  // line still leaves in the right direction but the browser is never handed coordinates it cannot draw
  const span = range[1] - range[0] || 1, lo = range[0] - 1e3 * span, hi = range[1] + 1e3 * span;
  return values.map((v) => (v === null ? null : Math.min(hi, Math.max(lo, v))));
}

function yRange() {
  const ys = session.data.y.filter((v) => v !== null);
  const lo = Math.min(...ys), hi = Math.max(...ys), pad = 0.35 * (hi - lo || 1);
  return [lo - pad, hi + pad];
}

let landscape = null;
function drawLandscape(l) {
  landscape = l;  // the contours; the path on them is redrawn with every step
  if (!l) {
    Plotly.react("landscape-chart", [], { ...LAYOUT, annotations: [{ text: "A landscape needs two parameters.",
      showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }], xaxis: { visible: false },
      yaxis: { visible: false } }, CONFIG);
    return;
  }
  drawPath();
}

function drawPath() {
  const l = landscape;
  if (!l || !session) return;
  const i = session.param_names.indexOf(l.pair[0]), j = session.param_names.indexOf(l.pair[1]);
  const box = [l.a[0], l.a[l.a.length - 1], l.b[0], l.b[l.b.length - 1]];
  const onFrame = (path) => pathOnFrame(tame(path.map((p) => p[i]), box.slice(0, 2)),
                                        tame(path.map((p) => p[j]), box.slice(2)), box);
  const [pathX, pathY] = onFrame([session.start, ...records.map((r) => r.params)]);
  const traces = [
    { type: "contour", x: l.a, y: l.b, z: l.log10_loss, colorscale: "Viridis", ncontours: 25, name: "log10 loss",
      colorbar: { title: { text: "log10 loss", side: "right" }, thickness: 12 }, hovertemplate: "%{x}, %{y}: %{z:.3g}<extra></extra>" },
    { x: pathX, y: pathY, mode: "lines+markers", name: "path", line: { color: RED, width: 2 },
      marker: { size: 3, color: RED } },
    { x: [session.start[i]], y: [session.start[j]], mode: "markers", name: "start",
      marker: { color: "#fff", size: 10, line: { color: "#000", width: 1 } } },
  ];
  if (twin) {
    const [twinX, twinY] = onFrame([twin.session.start, ...twin.records.map((r) => r.params)]);
    traces.push({ x: twinX, y: twinY, mode: "lines+markers", name: "compared path",
                  line: { color: PURPLE, width: 2, dash: "dash" }, marker: { size: 3, color: PURPLE } });
  }
  const step = nextStep();
  if (step) {  // where gd's next step lands: lr x gradient, drawn to scale (it may leave the picture)
    const p = session.params;
    traces.push({ x: tame([p[i], p[i] + step[i]], box.slice(0, 2)), y: tame([p[j], p[j] + step[j]], box.slice(2)),
                  mode: "lines+markers", name: "next step", line: { color: "#fff", width: 2, dash: "dot" },
                  marker: { symbol: ["circle", "x"], size: [4, 9], color: "#fff" } });
  }
  if (session.optimum) {
    traces.push({ x: [session.optimum.params[i]], y: [session.optimum.params[j]], mode: "markers", name: "best fit",
                  marker: { symbol: "star", size: 15, color: "#ffd700", line: { color: "#000", width: 1 } } });
  }
  Plotly.react("landscape-chart", traces, { ...LAYOUT, annotations: gradientArrow(i, j, box),
    xaxis: { title: { text: l.pair[0] }, range: [l.a[0], l.a[l.a.length - 1]] },
    yaxis: { title: { text: l.pair[1] }, range: [l.b[0], l.b[l.b.length - 1]] } }, CONFIG);
}

function gradientArrow(i, j, box) {
  // downhill at the current point: -gradient, its two components scaled by one number (so the direction is
  // -gradient's in the parameters' own units) to reach a fifth of the way across the picture
  const p = session.params, g = session.gradient;
  if (!g || g[i] === null || g[j] === null || (g[i] === 0 && g[j] === 0)) return [];
  const inside = p[i] >= box[0] && p[i] <= box[1] && p[j] >= box[2] && p[j] <= box[3];
  if (!inside) return [];
  const k = 0.2 / Math.max(Math.abs(g[i]) / (box[1] - box[0]), Math.abs(g[j]) / (box[3] - box[2]));
  return [{ name: "gradient", x: p[i] - k * g[i], y: p[j] - k * g[j], ax: p[i], ay: p[j], xref: "x", yref: "y",
            axref: "x", ayref: "y", text: "", showarrow: true, arrowhead: 2, arrowsize: 1.2, arrowwidth: 2.5,
            arrowcolor: ORANGE }];
}

function fillPairs(names, pair) {
  for (const [id, k] of [["pair-x", 0], ["pair-y", 1]]) {
    const select = $(id);
    select.replaceChildren(...names.map((n) => { const o = document.createElement("option"); o.textContent = n; return o; }));
    select.value = pair ? pair[k] : names[Math.min(k, names.length - 1)];
    select.disabled = names.length < 2;
  }
}

function fmt(v) {
  if (v === null || v === undefined) return "overflow";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(4) : (+v.toPrecision(6)).toString();
}

function showMessage(kind, text) { const m = $("message"); m.className = kind; m.textContent = text; m.hidden = false; }
function hideMessage() { $("message").hidden = true; }
function showRate() {
  $("lr-value").textContent = formatRate(rate());
  $("lr").disabled = $("method").value === "lm";
}
function showModelRows() {
  $("degree-row").hidden = $("model-kind").value !== "poly";
  $("expression-row").hidden = $("model-kind").value !== "expression";
}

// ---- wiring ---------------------------------------------------------------------------

function restart() { serial(() => newSession(null)); }  // another model may have other parameters

function wire() {
  $("step").addEventListener("click", () => { stop(); serial(() => step(1, true)); });
  $("run").addEventListener("click", run);
  $("reset").addEventListener("click", () => {
    stop();
    serial(async () => {
      if (!session) return newSession(currentPair());
      try {
        const state = await api("POST", `/api/sessions/${session.id}/reset`, { learning_rate: rate(), pair: currentPair() || undefined });
        if (twin) {
          const t = await api("POST", `/api/sessions/${twin.session.id}/reset`, { learning_rate: rate() });
          twin = { session: t, records: t.records.slice() };
        }
        session = state; records = state.records.slice(); drawAll(state);
      } catch (e) { showMessage("error", e.message); }
    });
  });
  $("lr").addEventListener("input", () => {
    exactRate = null; showRate(); writeUrl();
    if (session) { drawPath(); drawTable(); }  // gd's next step is the new rate x the gradient
  });
  $("speed").addEventListener("change", writeUrl);
  for (const id of ["seed", "noise", "method", "scale", "degree", "compare"]) $(id).addEventListener("change", restart);
  $("model-kind").addEventListener("change", () => {
    showModelRows();
    if ($("model-kind").value !== "expression") restart(); else $("expression").focus();
  });
  $("expression").addEventListener("keydown", (e) => { if (e.key === "Enter") restart(); });
  $("method").addEventListener("change", showRate);
  $("data-generated").addEventListener("change", restart);
  $("data-upload").addEventListener("change", () => { if (csvUpload) restart(); else $("csv-file").click(); });
  $("csv-file").addEventListener("change", async () => {
    const file = $("csv-file").files[0];
    if (!file) return;
    if (file.size > 5 * 1024 * 1024) { showMessage("error", `${file.name} is larger than 5 MB.`); return; }
    csvUpload = { text: await file.text(), filename: file.name };
    $("data-upload").checked = true;
    restart();
  });
  for (const id of ["pair-x", "pair-y"]) $(id).addEventListener("change", () => { writeUrl(); serial(refreshLandscape); });
  $("share").addEventListener("click", async () => {
    writeUrl();
    try { await navigator.clipboard.writeText(location.href); $("share-note").textContent = "copied"; }
    catch (e) { $("share-note").textContent = "copy the address bar"; }
  });
}

window.addEventListener("pagehide", () => {  // leaving: free the server's session now, not after it expires
  if (session) fetch("/api/sessions/" + session.id, { method: "DELETE", keepalive: true }).catch(() => {});
});

window.addEventListener("DOMContentLoaded", () => {
  const { setup, speed, pair, compare } = readUrl();
  showSetup(setup, speed, compare);
  wire();
  if (setup.data === "upload") {
    $("data-generated").checked = true;
    showMessage("stopped", "This link used an uploaded CSV, which a link cannot carry: the article's data are shown. " +
                           "Choose “Upload a CSV” to load your file again.");
    const keep = $("message").textContent;
    serial(() => newSession(pair)).then(() => showMessage("stopped", keep));
    return;
  }
  serial(() => newSession(pair));
});
