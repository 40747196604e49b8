// The Filters tab: the weights of every Conv2d layer of the network. A layer that reads
// the image (3 input channels: R, G, B) is drawn as colour images; any other as a grid of
// kernels (rows: output channel, columns: input channel) on a diverging scale.
import {api, decode} from "./api.js";
import {setBadge, state} from "./store.js";
import {$, el, fmt, legend, makeScale, minmax} from "./util.js";

function rgbTiles(name, v, F, KH, KW) {
  const box = el("div", {className: "filters", id: `filters-${name}`});
  const n = 3 * KH * KW;
  for (let k = 0; k < F; k++) {
    const [lo, hi] = minmax(v, k * n, n);
    const cv = el("canvas", {width: String(KW), height: String(KH), "data-channel": String(k)});
    const ctx = cv.getContext("2d"), img = ctx.createImageData(KW, KH);
    for (let p = 0; p < KH * KW; p++) {
      for (let ch = 0; ch < 3; ch++) img.data[4 * p + ch] = Math.round(255 * (hi > lo ? (v[k * n + ch * KH * KW + p] - lo) / (hi - lo) : 0.5));
      img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    box.appendChild(el("div", {className: "chan"}, [cv, el("span", {text: `ch ${k}`})]));
  }
  return box;
}

function kernelGrid(name, w, v, F, C, KH, KW) {
  const rows = F * (KH + 1) - 1, cols = C * (KW + 1) - 1;
  const scale = makeScale(w.min, w.max, true);
  const cv = el("canvas", {id: `filters-${name}`, width: String(cols), height: String(rows)});
  const ctx = cv.getContext("2d"), img = ctx.createImageData(cols, rows);
  for (let i = 0; i < 4 * rows * cols; i += 4) img.data.set([190, 190, 190, 255], i);
  for (let o = 0; o < F; o++) for (let c = 0; c < C; c++) for (let i = 0; i < KH; i++) for (let j = 0; j < KW; j++) {
    const [r, g, b] = scale.colour(v[((o * C + c) * KH + i) * KW + j]);
    img.data.set([r, g, b, 255], 4 * ((o * (KH + 1) + i) * cols + c * (KW + 1) + j));
  }
  ctx.putImageData(img, 0, 0);
  const px = Math.max(1, Math.min(8, Math.floor(720 / cols)));
  cv.style.width = `${cols * px}px`;
  return el("div", {}, [legend(scale, "blue < 0 < red, one scale for the layer"), el("div", {className: "filter-grid"}, [cv])]);
}

export async function showFilters() {
  const f = await api(state.snapshot === null ? "/api/filters" : `/api/filters?snapshot=${state.snapshot}`);
  const box = $("filters-body");
  box.replaceChildren();
  setBadge("filters", null);              // the weights are the checkpoint's, the same in both backends
  if (!f.layers.length) box.appendChild(el("p", {className: "muted", text: "This network has no Conv2d layer."}));
  for (const L of f.layers) {
    const [F, C, KH, KW] = L.weight.shape, v = decode(L.weight);
    const range = el("div", {className: "muted filters-range", "data-layer": L.name,
                             text: `${L.name} weights ${fmt(L.weight.min)} .. ${fmt(L.weight.max)}`});
    if (L.reads_image && C === 3) {
      box.append(el("h2", {text: `${L.name}: ${F} kernels of ${KH}\u00d7${KW} over (R, G, B)`}),
                 el("p", {className: "muted", text: "Each kernel drawn as a tiny colour image, min-max normalised on its own."}),
                 rgbTiles(L.name, v, F, KH, KW), range);
    } else {
      box.append(el("h2", {text: `${L.name}: ${F} output \u00d7 ${C} input channels, one ${KH}\u00d7${KW} kernel each`}),
                 el("p", {className: "muted", text: "Rows: output channel; columns: input channel."}),
                 kernelGrid(L.name, L.weight, v, F, C, KH, KW), range);
    }
  }
  box.dataset.loaded = "1";
  box.dataset.snapshot = f.snapshot === null ? "final" : String(f.snapshot);
}
