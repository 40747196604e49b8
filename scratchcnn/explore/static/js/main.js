// scratchcnn explore: the page's entry point and its actions. Plain ES modules, no build step.
// The server computes; the views ask it (fetch + JSON) and draw. Every user action changes
// the one state store (store.js) here and re-draws what depends on it: the summary, the
// layer's maps, and the formula panel, which always belongs to what is on screen (it is
// fetched again for the new image, backend, mode or class, and closes with another layer).
import {api, showError} from "./api.js";
import {closeFormula, renderFormula, title} from "./formula.js";
import {filterGrid, initGrid, loadGrid, markSelected} from "./grid.js";
import {markPick, renderLayer, renderWeights} from "./maps.js";
import {drawNetwork, kindNote, markLayer} from "./network.js";
import {showFilters} from "./filters.js";
import {initConfusion, markMoment, showConfusion, showRun} from "./run.js";
import {dreamsChanged, initDreams, showDreams} from "./dreams.js";
import {initTimeline} from "./timeline.js";
import {layerInfo, outputs, setBadge, showBadge, state} from "./store.js";
import {renderSummary, showRegion} from "./summary.js";
import {$, el, fmt} from "./util.js";

let layerVersion = 0, pickVersion = 0;      // an answer for an older request is dropped
const TABS = ["explore", "filters", "run", "dreams"];

// ------------------------------------------------------------------ actions
async function selectImage(image) {
  state.image = image;
  markSelected();
  await refresh(true);
  dreamsChanged();
}

async function setBackend(name) {
  state.backend = name;
  const work = [loadGrid(), refresh(true)];
  if (state.tab === "run") work.push(showConfusion());
  await Promise.all(work);
  dreamsChanged();
}

// The time slider: every view again, with the weights of that moment of training.
async function setMoment() {
  const work = [refresh(true)];
  if (state.tab === "filters") work.push(showFilters());
  await Promise.all(work);
  markMoment();
  if (state.tab === "dreams") await showDreams();
}

// Open an image (a dream's top-9) in the Explore tab.
async function openImage(image) {
  switchTab("explore");
  await selectImage(image);
}

async function setMode(mode) { state.mode = mode; await refresh(false); }

async function setTarget(cls) {
  state.target = cls;
  $("target").value = cls === null ? "" : String(cls);
  await refresh(true);
}

async function setLayer(name) { state.layer = name; markLayer(); await refresh(false); }

function setScale(scale) {
  state.scale = scale;
  if (state.layerData) drawLayer(state.layerData);
}

// Explain one number of the shown view: index into the layer's output (or its weight).
async function pick(index, kind) {
  const grad = state.mode === "gradient" && layerInfo(state.layer).kind !== "Softmax";
  state.pick = {layer: state.layer, mode: kind === "weight" ? "weight" : grad ? "gradient" : "forward", index};
  markPick(state.pick);
  await showPick(true);
}

function closePick() { state.pick = null; showPick(false).catch(showError); }

// ------------------------------------------------------------------ drawing
// After a change: the analysis (when the image, backend or class changed), the layer, the pick.
async function refresh(analysis) {
  const v = ++layerVersion;
  pickVersion++;
  if (!state.image) return;
  if (analysis || !state.analysis) {
    const a = await api("/api/analyze", {image: state.image, backend: state.backend, class: state.target,
                                         snapshot: state.snapshot});
    if (v !== layerVersion) return;
    state.analysis = a;
    await renderSummary(a, (i) => setTarget(i).catch(showError));
    if (v !== layerVersion) return;
  }
  followPick();
  await showLayer(v);
  if (v !== layerVersion) return;
  await showPick(false);
}

// The pick stays with its layer: on another layer it closes; a forward pick becomes the
// gradient of the same number in gradient mode and back; a weight's closes in forward mode.
function followPick() {
  const p = state.pick;
  if (!p) return;
  const softmax = layerInfo(p.layer).kind === "Softmax";
  if (p.layer !== state.layer || (p.mode === "weight" && state.mode !== "gradient")) state.pick = null;
  else if (p.mode !== "weight") p.mode = state.mode === "gradient" && !softmax ? "gradient" : "forward";
}

async function showLayer(v) {
  const L = layerInfo(state.layer);
  const grad = state.mode === "gradient" && L.kind !== "Softmax";
  const r = await api("/api/layer", {image: state.image, backend: state.backend, class: state.target,
                                     snapshot: state.snapshot, layer: L.name, mode: grad ? "gradient" : "forward"});
  if (v !== layerVersion) return;
  state.layerData = r;
  let w = null;
  if (grad && L.kind === "Conv2d") {
    w = await api("/api/layer", {image: state.image, backend: state.backend, class: state.target,
                                 snapshot: state.snapshot, layer: L.name, mode: "weight"});
    if (v !== layerVersion) return;
  }
  state.weightData = w;
  drawLayer(r);
  $("weight-maps").replaceChildren();
  if (w) renderWeights(w, L, (index) => pick(index, "weight").catch(showError));
  markPick(state.pick);
  document.body.dataset.shown = `${r.backend} ${L.name} ${r.mode}`;     // what is drawn now (tests wait for it)
}

function drawLayer(r) {
  const L = layerInfo(r.layer), grad = r.mode === "gradient", names = outputs();
  const what = grad ? `ds/d(${L.name} output), s = logit of '${names[r.target]}'` :
    L.kind === "Input" ? "the input image" : `${L.name} output`;
  $("layer-title").textContent = `${what}: shape ${r.shape.join("\u00d7")}, range ${fmt(r.min)} .. ${fmt(r.max)}`;
  $("layer-note").textContent = `${L.kind}: ${kindNote(L)}` +
    (state.mode === "gradient" && L.kind === "Softmax" ? " (the gradients start at the logit, before the softmax: shown forward)" : "") +
    (L.receptive_field ? `; each output pixel sees ${L.receptive_field.join("\u00d7")} input pixels` : "");
  setBadge("explore", `${L.name} ${grad ? "gradient" : "output"}`, r.diff, Math.max(Math.abs(r.min), Math.abs(r.max)));
  renderLayer(r, L, grad, (index) => pick(index).catch(showError));
  markPick(state.pick);
}

async function showPick(scroll) {
  const v = ++pickVersion, p = state.pick;
  if (!p) {
    closeFormula();
    showRegion(null);
    markPick(null);
    return;
  }
  const r = await api("/api/pixel", {image: state.image, backend: state.backend, class: state.target,
                                     snapshot: state.snapshot, layer: p.layer, mode: p.mode, index: p.index});
  if (v !== pickVersion) return;
  renderFormula(r);
  showRegion(r.region);
  markPick(p);
  setBadge("explore", title(r), r.diff, Math.abs(r.value ?? 0));
  const panel = $("formula");
  panel.dataset.for = `${r.backend} ${r.layer} ${r.mode} ${r.index.join(",")} ${state.image} ${r.target}`;
  if (scroll) panel.scrollIntoView({block: "nearest"});
}

function switchTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll(".tab")) {
    b.classList.toggle("active", b.dataset.tab === name);
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
  }
  for (const t of TABS) $(`tab-${t}`).hidden = t !== name;
  showBadge();
  if (name === "filters") showFilters().catch(showError);
  if (name === "run") showRun().catch(showError);
  if (name === "dreams") showDreams().catch(showError);
}

// ------------------------------------------------------------------ start
async function main() {
  state.info = await api("/api/info");
  const info = state.info;
  $("ckpt").textContent = `${info.checkpoint}` + (info.epoch ? ` (epoch ${info.epoch})` : "") +
    `; network ${info.arch}, ${info.layers.length - 2} layers; ${info.dataset}`;
  state.layer = info.layers[1].name;
  outputs().forEach((c, i) => $("target").appendChild(el("option", {value: String(i), text: `${i} ${c}`})));
  drawNetwork((name) => setLayer(name).catch(showError));
  initGrid((image) => selectImage(image));
  initConfusion((i, j) => { switchTab("explore"); filterGrid(i, j).catch(showError); });
  initDreams((image) => openImage(image).catch(showError));
  await initTimeline(() => setMoment());
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => switchTab(b.dataset.tab));
  $("backend").addEventListener("change", (ev) => setBackend(ev.target.value).catch(showError));
  $("mode").addEventListener("change", (ev) => setMode(ev.target.value).catch(showError));
  $("target").addEventListener("change", (ev) => setTarget(ev.target.value === "" ? null : Number(ev.target.value)).catch(showError));
  $("scale").addEventListener("change", (ev) => setScale(ev.target.value));
  $("formula-close").addEventListener("click", closePick);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && state.pick) closePick(); });
  await loadGrid();
  const first = document.querySelector(".thumb");
  if (first) await selectImage(first.dataset.image);
  document.body.dataset.ready = "1";
}

main().catch(showError);
