// The one state store. Views read `state`; only the actions in main.js change it, and
// every change goes through `update`, which re-draws what depends on what changed.
import {$, fmt} from "./util.js";

export const state = {
  info: null,             // /api/info: classes, layers (name, kind, shape, args, signed ...)
  tab: "explore",
  image: null,            // "test:7" | "upload:1"
  backend: "scratch",
  mode: "forward",        // "forward" | "gradient"
  target: null,           // the class whose logit the gradients explain; null: the predicted one
  layer: null,            // the layer whose maps are shown
  scale: "shared",        // "shared" | "channel": one colour scale for all maps, or one each
  grid: {offset: 0, limit: 48, cls: "", pred: "", wrong: false, sort: "index"},
  analysis: null,         // /api/analyze of (image, backend, target)
  layerData: null,        // /api/layer of the shown layer
  snapshot: null,         // the time slider: null, the checkpoint's weights; i, snapshot i of the run
  snapshotAt: null,       // where that snapshot is on the curves' epoch axis (epoch - 1 + step / steps)
  pick: null,             // {layer, mode: "forward" | "gradient" | "weight", index}: the number explained
  version: 0,             // bumped by every change; an answer for an older version is dropped
};

// The layer entry of /api/info, by name.
export function layerInfo(name) {
  return state.info.layers.find((L) => L.name === name);
}
export function layerIndex(name) {
  return state.info.layers.findIndex((L) => L.name === name);
}
// The class names of the network's outputs.
export const outputs = () => state.info.outputs;

// The header's scratch-vs-torch badge: each tab says what it shows, or nothing.
const badges = {};
export function setBadge(tab, what, value, scale) {
  badges[tab] = what === null ? null : {what, value, scale};
  if (tab === state.tab) showBadge();
}
export function showBadge() {
  const b = badges[state.tab], box = $("diff");
  box.hidden = !b;
  if (!b) { box.dataset.value = ""; return; }
  const rel = b.scale > 0 && b.value !== null ? ` (${(b.value / b.scale).toExponential(1)} of max |value|)` : "";
  box.textContent = `scratch vs torch, ${b.what}: max |\u0394| = ${fmt(b.value, 2)}${rel}`;
  box.dataset.value = b.value === null ? "" : String(b.value);
  box.dataset.what = b.what;
}
