// Small shared helpers: DOM building, number formatting, colour maps, legends.
// Nothing here knows about layers or the server.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "className") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}

// One number, 4 significant digits: 0.1234, -6.590e-4, 1.235e+5.
export function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return (a >= 1e4 || a < 1e-3) ? v.toExponential(digits - 1) : v.toPrecision(digits);
}

// A formatter for a whole table of numbers, so every cell has the same shape: one common
// power of ten (shown once, in the caption) and a fixed number of decimals.
export function tableFormat(values, digits = 3) {
  let m = 0;
  for (const v of values) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
  if (m === 0) return {f: (v) => (v === 0 ? "0" : fmt(v, digits)), scale: ""};
  const e = Math.floor(Math.log10(m));
  if (e >= -2 && e < 4) {
    const dec = Math.max(0, digits - 1 - e);
    return {f: (v) => v.toFixed(dec), scale: ""};
  }
  const p = Math.pow(10, e);
  return {f: (v) => (v / p).toFixed(digits - 1), scale: `\u00d7 1e${e}`};
}

// ------------------------------------------------------------------ colour maps
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const HOT = [[0, 0, 0], [180, 0, 0], [255, 90, 0], [255, 220, 0], [255, 255, 255]];
// Blue - white - red, centred at 0 (a perceptually even-ish RdBu).
const RDBU = [[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247], [253, 219, 199],
              [239, 138, 98], [178, 24, 43]];

export function ramp(stops, t) {
  t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  return stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
}
export const hot = (t) => ramp(HOT, t);
export const viridis = (t) => ramp(VIRIDIS, t);
export const diverging = (t) => ramp(RDBU, (Math.max(-1, Math.min(1, t)) + 1) / 2);   // t in [-1, 1]

// A colour scale: signed -> diverging over [-m, m]; else sequential over [lo, hi].
export function makeScale(lo, hi, signed) {
  if (signed) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return {signed, lo: -m, hi: m, colour: (v) => diverging(v / m)};
  }
  const a = Math.min(0, lo), b = hi > a ? hi : a + 1;
  return {signed, lo: a, hi: b, colour: (v) => viridis((v - a) / (b - a))};
}

export function minmax(data, offset = 0, n = data.length) {
  let lo = Infinity, hi = -Infinity;
  for (let i = offset; i < offset + n; i++) { const v = data[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

// Draw an h x w map (data[offset + y*w + x]) into a canvas of h x w pixels.
export function drawMap(canvas, data, offset, h, w, scale) {
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = scale.colour(data[offset + i]);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// A colour bar with its end values (and 0 in the middle of a diverging one).
export function legend(scale, label) {
  const cv = el("canvas", {width: "200", height: "1", className: "legend-bar"});
  const ctx = cv.getContext("2d"), img = ctx.createImageData(200, 1);
  for (let i = 0; i < 200; i++) {
    const [r, g, b] = scale.colour(scale.lo + (scale.hi - scale.lo) * i / 199);
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  const ticks = el("div", {className: "legend-ticks"}, [el("span", {text: fmt(scale.lo, 3)}),
    el("span", {text: scale.signed ? "0" : ""}), el("span", {text: fmt(scale.hi, 3)})]);
  return el("div", {className: "legend"}, [el("span", {className: "legend-label", text: label}),
                                           el("div", {className: "legend-body"}, [cv, ticks])]);
}

export function loadImage(src) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = () => reject(new Error("could not draw the image"));
    im.src = src;
  });
}

// Nice axis ticks: multiples of 1, 2 or 5 x 10^k covering [lo, hi].
export function niceTicks(lo, hi, target = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / target, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) ticks.push(Number(v.toPrecision(12)));
  return {ticks, step};
}
