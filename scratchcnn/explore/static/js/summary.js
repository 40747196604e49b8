// The summary row: the image (with the receptive field of the explained pixel outlined),
// the softmax probabilities, and the explanations of the class score drawn over the image.
import {decode} from "./api.js";
import {state, outputs} from "./store.js";
import {$, el, fmt, hot, loadImage} from "./util.js";

// The image, scaled up pixel by pixel, with an optional heat map (0..max) over it.
export async function drawOverlay(canvas, png, heat) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  const im = await loadImage(png);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(im, 0, 0, canvas.width, canvas.height);
  if (!heat) return;
  const [h, w] = heat.shape, v = decode(heat), peak = heat.max > 0 ? heat.max : 1;
  const small = document.createElement("canvas");
  small.width = w; small.height = h;
  const sctx = small.getContext("2d"), img = sctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const t = Math.max(0, v[i] / peak), [r, g, b] = hot(t);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b;
    img.data[4 * i + 3] = Math.round(220 * Math.sqrt(t));
  }
  sctx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

export function drawBars(box, values, names, pred, label, signed, onPick, picked) {
  box.replaceChildren();
  const m = Math.max(...values.map(Math.abs)) || 1;
  values.forEach((v, i) => {
    const fill = el("div", {className: "fill"});
    fill.style.width = `${Math.max(0, signed ? 50 * Math.abs(v) / m : 100 * v)}%`;
    if (signed) { fill.style.marginLeft = v < 0 ? `${50 - 50 * Math.abs(v) / m}%` : "50%"; }
    const cls = "bar" + (i === pred ? " pred" : "") + (i === label ? " label" : "") + (i === picked ? " picked" : "");
    const row = el(onPick ? "button" : "div", {className: cls, "data-class": String(i)},
                   [el("span", {className: "name", text: names[i]}), el("div", {className: "track"}, [fill]),
                    el("span", {className: "num", text: signed ? fmt(v) : `${(100 * v).toFixed(2)}%`})]);
    if (onPick) row.addEventListener("click", () => onPick(i));
    box.appendChild(row);
  });
}

export async function renderSummary(a, onClass) {
  const names = outputs();
  await drawOverlay($("input-big"), a.png, null);
  $("image-caption").textContent = (a.label === null ? "your picture" : `${a.image}, label: ${state.info.classes[a.label]}`) +
    `; predicted: ${names[a.pred]}`;
  drawBars($("prob-bars"), a.probs, names, a.pred, a.label, false, onClass, state.target);
  await drawOverlay($("saliency"), a.png, a.saliency);
  if (a.gradcam) await drawOverlay($("gradcam"), a.png, a.gradcam);
  $("gradcam-fig").hidden = !a.gradcam;
  $("gradcam-caption").textContent = `Grad-CAM on ${a.gradcam_layer}`;
  $("target-caption").textContent = `explaining s = logit of '${names[a.target]}'` +
    (state.target === null ? " (the predicted class; click a probability to explain another)" : "") +
    `; scratch and torch differ by at most ${fmt(a.diff.saliency, 2)} (saliency)` +
    (a.gradcam ? ` and ${fmt(a.diff.gradcam, 2)} (Grad-CAM)` : "");
}

// Outline the input pixels [y0..y1] x [x0..x1] the explained number depends on (null: none).
export function showRegion(region) {
  const box = $("rf");
  if (!region) { box.hidden = true; $("rf-caption").textContent = ""; return; }
  const [y0, y1, x0, x1] = region, [, H, W] = state.info.layers[0].shape;
  box.hidden = false;
  box.style.left = `${100 * x0 / W}%`; box.style.top = `${100 * y0 / H}%`;
  box.style.width = `${100 * (x1 - x0 + 1) / W}%`; box.style.height = `${100 * (y1 - y0 + 1) / H}%`;
  box.dataset.region = region.join(",");
  $("rf-caption").textContent = `outlined: the input pixels it depends on, rows ${y0}-${y1}, columns ${x0}-${x1} ` +
    `(${y1 - y0 + 1}\u00d7${x1 - x0 + 1})`;
}
