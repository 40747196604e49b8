// scratchcnn explore: the page's logic. Plain JavaScript, no libraries, no build step.
// The server computes; this file asks it (fetch + JSON) and draws on <canvas>.
// Arrays arrive as {shape, data: base64 of little-endian float32, min, max}.
"use strict";

const state = {
  info: null, image: null, backend: "scratch", mode: "forward", target: null,
  layer: "conv1", offset: 0, limit: 48, analysis: null, layerData: null, diffs: {}, pixel: null,
};

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ helpers
async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(body)};
  const res = await fetch(path, opts);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
  return data;
}

function showError(err) {
  const box = $("error");
  box.textContent = String(err.message || err);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function decode(arr) {
  const bin = atob(arr.data);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "n/a";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return (a >= 1e4 || a < 1e-3) ? v.toExponential(digits - 1) : v.toFixed(digits);
}

function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "className") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}

// Colour maps: viridis-like for activations, blue-white-red for signed values, hot for heat maps.
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const HOT = [[0, 0, 0], [180, 0, 0], [255, 90, 0], [255, 220, 0], [255, 255, 255]];
function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  return stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
}
function diverging(t) {            // t in [-1, 1]
  t = Math.max(-1, Math.min(1, t));
  const a = Math.round(255 * (1 - Math.abs(t)));
  return t < 0 ? [a, a, 255] : [255, a, a];
}
function colour(v, lo, hi, signed) {
  if (signed) { const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1; return diverging(v / m); }
  return ramp(VIRIDIS, hi > lo ? (v - lo) / (hi - lo) : 0.5);
}

// Draw an h x w map from `data` starting at `offset` into a canvas of h x w pixels.
function drawMap(canvas, data, offset, h, w, lo, hi, signed) {
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = colour(data[offset + i], lo, hi, signed);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = () => reject(new Error("could not draw the image"));
    im.src = src;
  });
}

// The image, scaled up pixel by pixel, with an optional heat map (0..max) over it.
async function drawOverlay(canvas, png, heat) {
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
    const t = v[i] / peak, [r, g, b] = ramp(HOT, t);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b;
    img.data[4 * i + 3] = Math.round(220 * Math.sqrt(Math.max(0, t)));
  }
  sctx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

function setDiff(what, value, scale) {
  state.diffs = {[what]: value};
  const rel = scale > 0 && value !== null ? ` (${(value / scale).toExponential(1)} of max |value|)` : "";
  $("diff").textContent = `scratch vs torch, ${what}: max |\u0394| = ${fmt(value, 2)}${rel}`;
  $("diff").dataset.value = value === null ? "" : String(value);
}

// ------------------------------------------------------------------ image browser
async function loadGrid() {
  const q = new URLSearchParams({offset: state.offset, limit: state.limit, backend: state.backend,
                                 cls: $("filter-class").value, wrong: $("filter-wrong").checked ? "1" : "",
                                 sort: $("sort").value});
  const r = await api(`/api/images?${q}`);
  const grid = $("grid");
  grid.replaceChildren();
  const names = state.info.classes;
  for (const it of r.items) {
    const wrong = it.pred !== it.label;
    const b = el("button", {className: "thumb" + (wrong ? " wrong" : "") + (it.image === state.image ? " selected" : ""),
                            title: `#${it.index}: ${names[it.label]}; predicted ${names[it.pred]} ${(100 * it.conf).toFixed(1)}%`,
                            "data-image": it.image},
                 [el("img", {src: it.png, alt: names[it.label]})]);
    const bar = el("span", {className: "conf"});
    bar.style.width = `${Math.round(100 * it.conf)}%`;
    b.appendChild(bar);
    b.addEventListener("click", () => selectImage(it.image).catch(showError));
    grid.appendChild(b);
  }
  const last = Math.min(r.offset + r.items.length, r.total);
  $("page").textContent = r.total ? `${r.offset + 1}-${last} of ${r.total}` : "none";
  $("grid-info").textContent = `${state.info.n_test} ${state.info.dataset} test images; ${state.backend} gets ` +
    `${(100 * r.accuracy).toFixed(1)}% right (${r.wrong} wrong, red border). Bar: confidence.`;
  $("prev").disabled = r.offset === 0;
  $("next").disabled = last >= r.total;
  grid.dataset.query = q.toString();          // what the grid shows now (tests wait for it)
}

async function upload(file) {
  if (!file) return;
  $("upload-msg").textContent = "uploading ...";
  const res = await fetch("/api/upload", {method: "POST", body: file,
                                           headers: {"Content-Type": file.type || "application/octet-stream"}});
  const data = await res.json();
  if (!res.ok) { $("upload-msg").textContent = data.error; throw new Error(data.error); }
  $("upload-msg").textContent = `${file.name}, resized to 32x32`;
  await selectImage(data.image);
}

// ------------------------------------------------------------------ one image
async function selectImage(image) {
  state.image = image;
  for (const t of document.querySelectorAll(".thumb")) t.classList.toggle("selected", t.dataset.image === image);
  await refresh();
}

async function refresh() {
  if (!state.image) return;
  const a = await api("/api/analyze", {image: state.image, backend: state.backend, class: state.target});
  state.analysis = a;
  const names = state.info.classes;
  await drawOverlay($("input-big"), a.png, null);
  $("image-caption").textContent = (a.label === null ? "your picture" : `${a.image}, label: ${names[a.label]}`) +
    `; predicted: ${names[a.pred]}`;
  drawBars($("prob-bars"), a.probs, names, a.pred, a.label, false);
  const grad = state.mode === "gradient";
  await drawOverlay($("saliency"), a.png, grad ? a.saliency : null);
  await drawOverlay($("gradcam"), a.png, grad ? a.gradcam : null);
  $("target-caption").textContent = grad
    ? `s = logit of '${names[a.target]}'${state.target === null ? " (the predicted class)" : ""}; ` +
      `saliency and Grad-CAM differ between backends by at most ${fmt(a.diff.saliency, 2)} and ${fmt(a.diff.gradcam, 2)}`
    : "switch to gradients to see which pixels the class's logit depends on";
  await showLayer(state.layer);
}

function drawBars(box, values, names, pred, label, signed) {
  box.replaceChildren();
  const m = Math.max(...values.map(Math.abs)) || 1;
  values.forEach((v, i) => {
    const fill = el("div", {className: "fill"});
    fill.style.width = `${Math.max(0, signed ? 50 * Math.abs(v) / m : 100 * v)}%`;
    if (signed) { fill.style.marginLeft = v < 0 ? `${50 - 50 * Math.abs(v) / m}%` : "50%"; }
    const row = el("div", {className: "bar" + (i === pred ? " pred" : "") + (i === label ? " label" : ""),
                           "data-class": String(i)},
                   [el("span", {className: "name", text: names[i]}), el("div", {className: "track"}, [fill]),
                    el("span", {className: "num", text: signed ? fmt(v) : `${(100 * v).toFixed(2)}%`})]);
    box.appendChild(row);
  });
}

// ------------------------------------------------------------------ the network and one layer
function drawNetwork() {
  const box = $("network");
  box.replaceChildren();
  state.info.layers.forEach((L, i) => {
    if (i > 0) box.appendChild(el("span", {className: "arrow", text: "\u2192"}));
    const b = el("div", {className: "layer" + (L.name === state.layer ? " selected" : ""), "data-layer": L.name,
                         title: L.kind},
                 [el("div", {text: L.name}), el("div", {className: "shape", text: L.shape.join("\u00d7")})]);
    b.addEventListener("click", () => showLayer(L.name).catch(showError));
    box.appendChild(b);
  });
}

const LAYER_NOTES = {
  input: "the image as the network sees it (scaled as in training), one map per colour channel",
  conv1: "conv1 output before ReLU: click a pixel to see its sum written out",
  act1: "ReLU(conv1)", drop1: "dropout is off at test time: the same as act1",
  conv2: "conv2 output before ReLU: click a pixel to see its sum written out",
  act2: "ReLU(conv2)", pool2: "2x2 max-pooling of act2", flat: "pool2 flattened to 8192 numbers (c, y, x order)",
  fc3: "fc3 = W x + b, 512 units", act3: "ReLU(fc3)", drop3: "dropout is off at test time: the same as act3",
  fc4: "the logits, one per class", softmax: "softmax of the logits: the probabilities",
};

async function showLayer(name) {
  state.layer = name;
  for (const b of document.querySelectorAll(".layer")) b.classList.toggle("selected", b.dataset.layer === name);
  if (!state.image) return;
  const grad = state.mode === "gradient" && name !== "softmax";
  const r = await api("/api/layer", {image: state.image, backend: state.backend, class: state.target,
                                     layer: name, mode: grad ? "gradient" : "forward"});
  state.layerData = r;
  const names = state.info.classes;
  const what = grad ? `ds/d(${name} output), s = logit of '${names[r.target]}'` : `${name} output`;
  $("layer-title").textContent = `${what}: shape ${r.shape.join("\u00d7")}, range ${fmt(r.min)} .. ${fmt(r.max)}`;
  $("layer-note").textContent = (grad ? "blue < 0 < red, one scale for all channels. " : "") +
    (state.mode === "gradient" && name === "softmax" ? "(gradients start at the logit, before softmax) " : "") +
    LAYER_NOTES[name];
  setDiff(`${name} ${grad ? "gradient" : "output"}`, r.diff, Math.max(Math.abs(r.min), Math.abs(r.max)));
  const box = $("layer-maps");
  box.replaceChildren();
  const v = decode(r);
  if (r.shape.length === 3) {
    const [c, h, w] = r.shape;
    for (let k = 0; k < c; k++) {
      const cv = el("canvas", {"data-channel": String(k)});
      drawMap(cv, v, k * h * w, h, w, r.min, r.max, grad);
      if (name === "conv1" || name === "conv2") {
        cv.addEventListener("click", (ev) => {
          const rect = cv.getBoundingClientRect();
          const x = Math.min(w - 1, Math.floor((ev.clientX - rect.left) / rect.width * w));
          const y = Math.min(h - 1, Math.floor((ev.clientY - rect.top) / rect.height * h));
          showPixel(name, k, y, x).catch(showError);
        });
      }
      box.appendChild(el("div", {className: "chan" + (h < 32 ? " small" : "")},
                         [el("div", {className: "frame"}, [cv]), el("span", {text: `ch ${k}`})]));
    }
  } else if (name === "fc4" || name === "softmax") {
    const bars = el("div", {className: "bars"});
    drawBars(bars, Array.from(v), names, state.analysis.pred, state.analysis.label, name === "fc4");
    box.appendChild(bars);
  } else {
    const n = r.shape[0], w = n >= 4096 ? 128 : 32, h = Math.ceil(n / w);
    const padded = new Float32Array(w * h);
    padded.set(v);
    const cv = el("canvas");
    drawMap(cv, padded, 0, h, w, r.min, r.max, grad);
    cv.style.width = `${w * (n >= 4096 ? 6 : 16)}px`;
    box.appendChild(el("div", {className: "strip"}, [cv, el("div", {className: "muted",
      text: `${n} units in rows of ${w}, unit i at row i / ${w}, column i mod ${w}`})]));
  }
  if (name !== "conv1" && name !== "conv2") $("pixel-view").hidden = true;
  const px = state.pixel;
  if (px && px.layer === name && !$("pixel-view").hidden) markPixel(px.channel, px.y, px.x, 32, 32);
  document.body.dataset.shown = `${r.backend} ${name} ${r.mode}`;     // what is drawn now (tests wait for it)
}

// ------------------------------------------------------------------ one output pixel of a convolution
// A square over the clicked output pixel of the map it was clicked in.
function markPixel(channel, y, x, h, w) {
  for (const old of document.querySelectorAll(".marker")) old.remove();
  const canvas = document.querySelector(`#layer-maps canvas[data-channel='${channel}']`);
  if (!canvas) return;
  const m = el("span", {className: "marker"});
  m.style.left = `${100 * x / w}%`; m.style.top = `${100 * y / h}%`;
  m.style.width = `${100 / w}%`; m.style.height = `${100 / h}%`;
  canvas.parentElement.appendChild(m);                  // the .frame around the canvas
}

async function showPixel(layer, channel, y, x) {
  const p = await api("/api/pixel", {image: state.image, backend: state.backend, class: state.target,
                                     layer, channel, y, x});
  state.pixel = {layer, channel, y, x};
  markPixel(channel, y, x, 32, 32);
  const view = $("pixel-view");
  view.hidden = false;
  const nIn = p.kernel.length;
  $("pixel-title").textContent = `${layer}[channel ${channel}] at (y=${y}, x=${x})`;
  $("pixel-formula").textContent =
    `= bias[${channel}] + \u03a3_c \u03a3_i,j ${p.input}[c, ${y}+i-1, ${x}+j-1] \u00b7 W[${channel}, c, i, j]` +
    `   (c = 0..${nIn - 1}, i, j = 0..2; outside the image the input is the zero padding)`;
  const total = $("pixel-total");
  total.replaceChildren(
    "sum of ", el("span", {text: String(nIn * 9)}), " products = ", el("b", {id: "px-sum", text: p.sum.toPrecision(8)}),
    ";  + bias ", el("b", {id: "px-bias", text: p.bias.toPrecision(8)}),
    " = ", el("b", {id: "px-computed", text: p.computed.toPrecision(8)}),
    ";  the value in the map: ", el("b", {id: "px-value", text: p.value.toPrecision(8)}),
    `  (difference ${fmt(Math.abs(p.computed - p.value), 2)}, float32 rounding)`);
  setDiff(`${layer}[${channel}, ${y}, ${x}]`, p.diff, Math.abs(p.value));
  const blocks = $("pixel-blocks");
  blocks.replaceChildren();
  for (let c = 0; c < nIn; c++) {
    let s = 0;
    const table = (m, cls) => el("table", {}, m.map((row, i) => el("tr", {}, row.map((val, j) =>
      el("td", {className: cls && !p.inside[i][j] ? "pad" : "", text: fmt(val, 3)})))));
    p.products[c].forEach((row) => row.forEach((v) => { s += v; }));
    blocks.appendChild(el("div", {className: "block"}, [
      el("div", {text: `input channel ${c}: partial sum ${fmt(s)}`}),
      el("div", {className: "row"}, [table(p.patch[c], true), el("span", {className: "op", text: "\u2299"}),
                                     table(p.kernel[c], false), el("span", {className: "op", text: "="}),
                                     table(p.products[c], true)])]));
  }
}

// ------------------------------------------------------------------ filters tab
async function showFilters() {
  const f = await api("/api/filters");
  const w1 = decode(f.conv1), box = $("filters-conv1");
  box.replaceChildren();
  for (let k = 0; k < 32; k++) {
    const base = k * 27;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < 27; i++) { lo = Math.min(lo, w1[base + i]); hi = Math.max(hi, w1[base + i]); }
    const cv = el("canvas", {width: "3", height: "3"}), ctx = cv.getContext("2d"), img = ctx.createImageData(3, 3);
    for (let p = 0; p < 9; p++) {
      for (let ch = 0; ch < 3; ch++) {
        img.data[4 * p + ch] = Math.round(255 * (hi > lo ? (w1[base + ch * 9 + p] - lo) / (hi - lo) : 0.5));
      }
      img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    box.appendChild(el("div", {className: "chan"}, [cv, el("span", {text: `ch ${k}`})]));
  }
  const w2 = decode(f.conv2), cv = $("filters-conv2"), size = 32 * 4 - 1;
  cv.width = size; cv.height = size;
  const ctx = cv.getContext("2d"), img = ctx.createImageData(size, size);
  const m = Math.max(Math.abs(f.conv2.min), Math.abs(f.conv2.max)) || 1;
  for (let i = 0; i < 4 * size * size; i += 4) { img.data[i] = img.data[i + 1] = img.data[i + 2] = 190; img.data[i + 3] = 255; }
  for (let o = 0; o < 32; o++) for (let c = 0; c < 32; c++) for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
    const [r, g, b] = diverging(w2[((o * 32 + c) * 3 + i) * 3 + j] / m), p = 4 * ((o * 4 + i) * size + c * 4 + j);
    img.data[p] = r; img.data[p + 1] = g; img.data[p + 2] = b;
  }
  ctx.putImageData(img, 0, 0);
  $("filters-range").textContent = `conv1 weights ${fmt(f.conv1.min)} .. ${fmt(f.conv1.max)}; ` +
    `conv2 weights ${fmt(f.conv2.min)} .. ${fmt(f.conv2.max)} (colour scale \u00b1${fmt(m)})`;
}

// ------------------------------------------------------------------ training run tab
function plotLines(canvas, series, ylabel, ymin, ymax) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, L = 52, B = 34, T = 10, R = 10;
  ctx.clearRect(0, 0, W, H);
  const xs = series[0].points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const lo = ymin ?? Math.min(...ys), hi = ymax ?? Math.max(...ys, lo + 1e-9);
  const px = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), py = (y) => H - B - (y - lo) / (hi - lo) * (H - B - T);
  ctx.strokeStyle = "#999"; ctx.fillStyle = "#444"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  for (let k = 0; k <= 4; k++) {
    const y = lo + k * (hi - lo) / 4;
    ctx.fillText(String(Number(y.toPrecision(3))), 2, py(y) + 4);
  }
  for (const x of xs) ctx.fillText(String(x), px(x) - 3, H - B + 14);
  ctx.fillText("epoch", W / 2, H - 4);
  ctx.save(); ctx.translate(10, H / 2); ctx.restore();
  for (const s of series) {
    ctx.strokeStyle = s.colour; ctx.fillStyle = s.colour; ctx.lineWidth = 2;
    ctx.beginPath();
    s.points.forEach(([x, y], i) => { if (i === 0) ctx.moveTo(px(x), py(y)); else ctx.lineTo(px(x), py(y)); });
    ctx.stroke();
    for (const [x, y] of s.points) { ctx.beginPath(); ctx.arc(px(x), py(y), 3, 0, 2 * Math.PI); ctx.fill(); }
  }
  ctx.fillStyle = "#444";
  ctx.fillText(ylabel, L + 6, T + 10);
}

async function showRun() {
  const r = await api("/api/run");
  const has = r.epochs.length > 0;
  $("run-none").hidden = has;
  $("run-body").hidden = !has;
  if (!has) return;
  $("run-source").textContent = `from ${r.source}; ${r.epochs.length} epochs`;
  plotLines($("curve-loss"), [{colour: "#1c7ed6", points: r.epochs.map((e) => [e.epoch, e.train_loss])}],
            "cross-entropy", 0, null);
  plotLines($("curve-acc"), [{colour: "#1c7ed6", points: r.epochs.map((e) => [e.epoch, 100 * e.train_acc])},
                             {colour: "#e8590c", points: r.epochs.map((e) => [e.epoch, 100 * e.test_acc])}],
            "accuracy %", 0, 100);
  const withStats = r.epochs.filter((e) => e.layer_stats);
  $("stats-none").hidden = withStats.length > 0;
  const sel = $("stats-epoch");
  sel.replaceChildren(...withStats.map((e) => el("option", {value: String(e.epoch), text: `epoch ${e.epoch}`})));
  sel.hidden = withStats.length === 0;
  const draw = () => {
    const e = withStats.find((x) => String(x.epoch) === sel.value);
    const t = $("stats");
    t.replaceChildren();
    if (!e) return;
    t.appendChild(el("tr", {}, ["layer", "act mean", "act std", "act min", "act max", "grad std", "grad max |g|",
                                "dead ReLU", "update / weight"].map((h) => el("th", {text: h}))));
    for (const [name, s] of Object.entries(e.layer_stats.layers)) {
      const cells = [name, fmt(s.act.mean), fmt(s.act.std), fmt(s.act.min), fmt(s.act.max), fmt(s.grad.std),
                     fmt(Math.max(Math.abs(s.grad.min), Math.abs(s.grad.max))),
                     s.dead === undefined ? "" : `${(100 * s.dead).toFixed(1)}%`,
                     s.update_ratio === undefined ? "" : s.update_ratio.toExponential(1)];
      t.appendChild(el("tr", {}, cells.map((c) => el("td", {text: c}))));
    }
  };
  sel.onchange = draw;
  if (withStats.length) { sel.value = String(withStats[withStats.length - 1].epoch); draw(); }
}

// ------------------------------------------------------------------ start
function switchTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const t of ["explore", "filters", "run"]) $(`tab-${t}`).hidden = t !== name;
  if (name === "filters") showFilters().catch(showError);
  if (name === "run") showRun().catch(showError);
}

async function main() {
  state.info = await api("/api/info");
  const info = state.info;
  $("ckpt").textContent = `${info.checkpoint}` + (info.epoch ? ` (epoch ${info.epoch})` : "") +
    `; ${info.dataset}`;
  for (const sel of [$("filter-class"), $("target")]) {
    info.classes.forEach((c, i) => sel.appendChild(el("option", {value: String(i), text: `${i} ${c}`})));
  }
  drawNetwork();
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => switchTab(b.dataset.tab));
  const reload = () => { state.offset = 0; loadGrid().catch(showError); };
  $("filter-class").addEventListener("change", reload);
  $("filter-wrong").addEventListener("change", reload);
  $("sort").addEventListener("change", reload);
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); loadGrid().catch(showError); });
  $("next").addEventListener("click", () => { state.offset += state.limit; loadGrid().catch(showError); });
  $("upload").addEventListener("change", (ev) => upload(ev.target.files[0]).catch(showError));
  $("backend").addEventListener("change", (ev) => {
    state.backend = ev.target.value;
    loadGrid().catch(showError);
    refresh().catch(showError);
  });
  $("mode").addEventListener("change", (ev) => { state.mode = ev.target.value; refresh().catch(showError); });
  $("target").addEventListener("change", (ev) => {
    state.target = ev.target.value === "" ? null : Number(ev.target.value);
    refresh().catch(showError);
  });
  await loadGrid();
  const first = document.querySelector(".thumb");
  if (first) await selectImage(first.dataset.image);
  document.body.dataset.ready = "1";
}

main().catch(showError);
