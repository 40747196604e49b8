// The Dreams tab: what the network dreams of (a class, or one channel of any layer with
// feature maps, beside the 9 test images that excite it most), a fooling image made from
// the chosen image, and where the network looks (occlusion beside saliency and Grad-CAM).
// The server runs study/dreams.py; this draws. Layers are offered by their output's shape
// (channels of maps) and named with their kind, never chosen by name.
import {api, decode, showError} from "./api.js";
import {plotLines} from "./run.js";
import {outputs, state} from "./store.js";
import {drawBars, drawOverlay} from "./summary.js";
import {$, el, fmt, legend, loadImage, makeScale} from "./util.js";

let onOpen = () => {};
let dreamVersion = 0, foolVersion = 0, occVersion = 0;     // an answer for an older request is dropped
const drawn = {dream: null, occlusion: null, foolImage: null};  // what is on screen: not asked for again

// Layers whose output has channels of feature maps (C, h, w): a Conv2d, its activation, a pooling ...
const mapLayers = () => state.info.layers.filter((L) => L.kind !== "Input" && L.shape.length === 3);

export function initDreams(openImage) {
  onOpen = openImage;
  const names = outputs();
  for (const id of ["dream-class", "fool-target"]) {
    names.forEach((c, i) => $(id).appendChild(el("option", {value: String(i), text: `${i} ${c}`})));
  }
  const layers = mapLayers();
  layers.forEach((L) => $("dream-layer").appendChild(el("option", {value: L.name, text: `${L.name} (${L.kind}, ${L.shape[0]} channels)`})));
  const firstConv = layers.find((L) => L.kind === "Conv2d");
  if (firstConv) $("dream-layer").value = firstConv.name;
  if (!layers.length) $("dream-what").querySelector("option[value='channel']").disabled = true;
  const whatChanged = () => {
    const channel = $("dream-what").value === "channel";
    $("dream-class-box").hidden = channel;
    $("dream-layer-box").hidden = !channel;
    $("dream-channel-box").hidden = !channel;
    layerChanged();
  };
  const layerChanged = () => {
    const L = layers.find((x) => x.name === $("dream-layer").value);
    if (L) $("dream-channel").max = String(L.shape[0] - 1);
  };
  $("dream-what").addEventListener("change", () => { whatChanged(); dream().catch(showError); });
  $("dream-layer").addEventListener("change", () => { layerChanged(); dream().catch(showError); });
  for (const id of ["dream-class", "dream-channel"]) $(id).addEventListener("change", () => dream().catch(showError));
  $("dream-go").addEventListener("click", () => dream().catch(showError));
  $("fool-method").addEventListener("change", () => { $("fool-eps-box").hidden = $("fool-method").value !== "fgsm"; });
  const epsText = () => { $("fool-eps-text").textContent = `${$("fool-eps").value}/255 per pixel`; };
  $("fool-eps").addEventListener("input", epsText);
  $("fool-eps").addEventListener("change", () => fool().catch(showError));
  epsText();
  $("fool-go").addEventListener("click", () => fool().catch(showError));
  $("fool-target").addEventListener("change", () => fool().catch(showError));
  $("occ-go").addEventListener("click", () => occlusion().catch(showError));
  whatChanged();
}

// Everything the tab shows, for the image, backend and moment chosen now.
export async function showDreams() {
  if (state.analysis && drawn.foolImage !== state.image) {    // another image: fool it into the next class
    drawn.foolImage = state.image;
    $("fool-target").value = String((state.analysis.pred + 1) % outputs().length);
  }
  await Promise.all([dream(true), occlusion(true)]);
}

// What the tab shows after the image, backend or moment changed (only while it is open).
export function dreamsChanged() {
  if (state.tab === "dreams") showDreams().catch(showError);
}

const snapshot = () => state.snapshot;

// unlessShown: skip the request when its answer is already on screen (the tab opened again).
async function dream(unlessShown = false) {
  const channel = $("dream-what").value === "channel";
  const body = {backend: state.backend, snapshot: snapshot(), seed: Number($("dream-seed").value),
                steps: Number($("dream-steps").value)};
  if (channel) Object.assign(body, {layer: $("dream-layer").value, channel: Number($("dream-channel").value)});
  else body.class = Number($("dream-class").value);
  const key = JSON.stringify(body);
  if (unlessShown && key === drawn.dream) return;
  const v = ++dreamVersion;
  const r = await api("/api/dream", body);
  if (v !== dreamVersion) return;
  const names = outputs();
  const what = channel ? `${r.layer} channel ${r.channel} (its mean activation)` : `class '${names[r.class]}' (its logit)`;
  await drawOverlay($("dream-image"), r.png, null);
  $("dream-caption").textContent = `${what}: ${fmt(r.start_score)} \u2192 ${fmt(r.score)} in ${r.steps} steps; ` +
    `the network says ${names[r.pred]} ${(100 * r.probs[r.pred]).toFixed(1)}%`;
  plotLines($("dream-scores"), [{label: channel ? "channel mean" : "logit", colour: "#1c7ed6",
                                 points: r.scores.map((s, i) => [i, s])}], {xlabel: "step"});
  const among = r.ranked < state.info.n_test ? ` (of the first ${r.ranked})` : "";
  $("dream-top-title").textContent = (channel ? `the 9 test images it responds to most` :
    `the 9 test images with the largest '${names[r.class]}' logit`) + among;
  $("dream-top").replaceChildren(...r.top.map((t) => {
    const b = el("button", {title: `#${t.index}, ${state.info.classes[t.label]}: ${fmt(t.value)} (click: explore it)`,
                            "data-image": t.image}, [el("img", {src: t.png, alt: `test image ${t.index}`}),
                                                     el("span", {text: fmt(t.value, 3)})]);
    b.addEventListener("click", () => onOpen(t.image));
    return b;
  }));
  drawn.dream = key;
  $("tab-dreams").dataset.dream = `${r.backend} ${channel ? `${r.layer}:${r.channel}` : `class:${r.class}`} ${r.snapshot ?? "final"}`;
}

async function fool() {
  if (!state.image) return;
  const v = ++foolVersion;
  const method = $("fool-method").value;
  const r = await api("/api/fool", {image: state.image, backend: state.backend, snapshot: snapshot(),
                                     target: Number($("fool-target").value), method,
                                     epsilon: Number($("fool-eps").value) / 255});
  if (v !== foolVersion) return;
  const names = outputs();
  $("fool-message").textContent = r.message;
  $("fool-message").classList.toggle("bad", !r.success);
  await drawOverlay($("fool-before"), r.png_before, null);
  await drawOverlay($("fool-after"), r.png, null);
  await drawOverlay($("fool-diff"), r.difference, null);
  $("fool-diff-caption").textContent = `the change \u00d7${fmt(r.magnification, 3)} (grey: none; largest ${r.max_change}/255)`;
  const label = state.analysis && state.analysis.image === r.image ? state.analysis.label : null;
  drawBars($("fool-bars-before"), r.before, names, r.pred_before, label, false, null, r.target);
  drawBars($("fool-bars-after"), r.after, names, r.pred_after, label, false, null, r.target);
  $("tab-dreams").dataset.fool = `${r.backend} ${r.image} ${r.target} ${r.method} ${r.success}`;
}

async function occlusion(unlessShown = false) {
  if (!state.image) return;
  const body = {image: state.image, backend: state.backend, snapshot: snapshot(), class: state.target,
                patch: Number($("occ-patch").value), stride: Number($("occ-stride").value), fill: $("occ-fill").value};
  const key = JSON.stringify(body);
  if (unlessShown && key === drawn.occlusion) return;
  const v = ++occVersion;
  const r = await api("/api/occlusion", body);
  if (v !== occVersion) return;
  const a = state.analysis;
  if (a) {                                         // saliency and Grad-CAM of the same image and class
    await drawOverlay($("occ-saliency"), a.png, a.saliency);
    $("occ-gradcam-fig").hidden = !a.gradcam;
    if (a.gradcam) await drawOverlay($("occ-gradcam"), a.png, a.gradcam);
  }
  const scale = makeScale(r.map.min, r.map.max, true);
  await drawSigned($("occ-map"), a ? a.png : null, r.map, scale);
  $("occ-caption").textContent = `drop of p('${outputs()[r.target]}') when a ${r.patch}\u00d7${r.patch} patch covers it`;
  $("occ-legend").replaceChildren(legend(scale, "red: covering it lowers the probability"));
  drawn.occlusion = key;
  $("tab-dreams").dataset.occlusion = `${r.backend} ${r.image} ${r.target}`;
}

// A signed map (diverging colours, 0 = transparent) over the image.
async function drawSigned(canvas, png, map, scale) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingEnabled = false;
  if (png) ctx.drawImage(await loadImage(png), 0, 0, canvas.width, canvas.height);
  const [h, w] = map.shape, values = decode(map), m = Math.max(-scale.lo, scale.hi) || 1;
  const small = document.createElement("canvas");
  small.width = w; small.height = h;
  const sctx = small.getContext("2d"), img = sctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [R, G, B] = scale.colour(values[i]);
    img.data.set([R, G, B, Math.round(230 * Math.min(1, Math.abs(values[i]) / m))], 4 * i);
  }
  sctx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}
