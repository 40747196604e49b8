// One layer's numbers on screen: maps (C x H x W), strips (vectors), bars (the logits and
// the softmax), and a Conv2d's weight gradient. Every number can be hovered (its value,
// position and channel), reached with the keyboard (arrows, Enter) and clicked (explained).
// Which drawing a layer gets depends on its output's shape and kind, never on its name.
import {decode} from "./api.js";
import {state, outputs} from "./store.js";
import {drawBars} from "./summary.js";
import {$, drawMap, el, fmt, legend, makeScale, minmax} from "./util.js";

// The number under the mouse or the keyboard cursor, said in one line (and in a tooltip).
function readout(text, ev) {
  $("readout").textContent = text;
  const tip = $("tip");
  if (!ev) { tip.hidden = true; return; }
  tip.textContent = text;
  tip.hidden = false;
  tip.style.left = `${ev.clientX + 14}px`;
  tip.style.top = `${ev.clientY + 12}px`;
}
function clearReadout() { $("tip").hidden = true; }

// A canvas of `rows` x `cols` cells (each `px` CSS pixels) that can be hovered, clicked
// and walked with the keyboard. cell(y, x) -> {text, index} or null where there is no number.
function interactive(canvas, rows, cols, px, cell, onPick) {
  canvas.style.width = `${cols * px}px`;
  canvas.style.height = `${rows * px}px`;
  canvas.tabIndex = 0;
  let cursor = [0, 0];
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [Math.min(rows - 1, Math.max(0, Math.floor((ev.clientY - r.top) / r.height * rows))),
            Math.min(cols - 1, Math.max(0, Math.floor((ev.clientX - r.left) / r.width * cols)))];
  };
  canvas.addEventListener("mousemove", (ev) => { const c = cell(...at(ev)); if (c) readout(c.text, ev); });
  canvas.addEventListener("mouseleave", clearReadout);
  canvas.addEventListener("click", (ev) => {
    cursor = at(ev);                                     // the keyboard goes on from the clicked cell
    const c = cell(...cursor);
    if (c) onPick(c.index);
  });
  const showCursor = (ev) => {
    if (ev && ev.type === "focus" && canvas.matches(":hover")) return;   // focused by a click: no cursor box
    const c = cell(...cursor);
    if (c) readout(c.text);
    placeBox(canvas, "cursor", cursor[0], cursor[1], rows, cols);
  };
  canvas.addEventListener("focus", showCursor);
  canvas.addEventListener("blur", () => removeBox(canvas, "cursor"));
  canvas.addEventListener("keydown", (ev) => {
    const moves = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]};
    if (moves[ev.key]) {
      cursor = [Math.min(rows - 1, Math.max(0, cursor[0] + moves[ev.key][0])),
                Math.min(cols - 1, Math.max(0, cursor[1] + moves[ev.key][1]))];
      showCursor();
      ev.preventDefault();
    } else if (ev.key === "Enter" || ev.key === " ") {
      const c = cell(...cursor);
      if (c) onPick(c.index);
      ev.preventDefault();
    }
  });
}

// A box over cell (y, x) of a canvas inside its .frame: the explained number or the cursor.
function placeBox(canvas, cls, y, x, rows, cols, h = 1, w = 1) {
  removeBox(canvas, cls);
  const m = el("span", {className: cls});
  m.style.left = `${100 * x / cols}%`; m.style.top = `${100 * y / rows}%`;
  m.style.width = `${100 * w / cols}%`; m.style.height = `${100 * h / rows}%`;
  canvas.parentElement.appendChild(m);
}
function removeBox(canvas, cls) {
  for (const old of canvas.parentElement.querySelectorAll(`.${cls}`)) old.remove();
}

const channelName = (L, k) => (L.channels ? L.channels[k] : `ch ${k}`);

// Draw /api/layer's answer `r` for layer L; onPick(index) explains one number.
export function renderLayer(r, L, grad, onPick) {
  const box = $("layer-maps"), legends = $("legends");
  box.replaceChildren();
  legends.replaceChildren();
  $("readout").textContent = "hover: a value; click (or Tab, arrows, Enter): how it was computed";
  const v = decode(r), signed = grad || L.signed;
  const what = grad ? "ds/d" : "";
  if (r.shape.length === 3) {
    const [C, H, W] = r.shape, px = Math.max(2, Math.floor(96 / Math.max(H, W)));
    const shared = makeScale(r.min, r.max, signed);
    const perChannel = state.scale === "channel";
    legends.appendChild(legend(perChannel ? makeScale(signed ? -1 : 0, 1, signed) : shared,
      perChannel ? (signed ? "each map: \u00b1 its own max |value|" : "each map: 0 .. its own max")
                 : (signed ? "all maps, diverging, 0 = white" : "all maps, 0 .. max")));
    for (let k = 0; k < C; k++) {
      let scale = shared;
      if (perChannel) {
        const [lo, hi] = minmax(v, k * H * W, H * W);
        scale = makeScale(lo, hi, signed);
      }
      const cv = el("canvas", {"data-channel": String(k), "aria-label": `${L.name} ${channelName(L, k)}`});
      drawMap(cv, v, k * H * W, H, W, scale);
      interactive(cv, H, W, px, (y, x) => ({index: [k, y, x],
        text: `${what}${L.name} ${channelName(L, k)} (y ${y}, x ${x}) = ${fmt(v[(k * H + y) * W + x])}`}), onPick);
      const cap = perChannel ? `${channelName(L, k)} \u00b1${fmt(Math.max(-scale.lo, scale.hi), 2)}` : channelName(L, k);
      box.appendChild(el("div", {className: "chan"}, [el("div", {className: "frame"}, [cv]), el("span", {text: cap})]));
    }
  } else if (L.kind === "Softmax" || L.name === state.info.logits) {
    const bars = el("div", {className: "bars"});
    const a = state.analysis;
    drawBars(bars, Array.from(v), outputs(), a.pred, a.label, L.kind !== "Softmax" || grad, (i) => onPick([i]),
             state.pick && state.pick.layer === L.name ? state.pick.index[0] : null);
    box.appendChild(bars);
  } else {
    const n = r.shape[0], w = n >= 4096 ? 128 : n > 64 ? 32 : n, h = Math.ceil(n / w);
    const px = Math.max(4, Math.min(24, Math.floor(1024 / w)));
    const padded = new Float32Array(w * h);
    padded.set(v);
    const scale = makeScale(r.min, r.max, signed);
    legends.appendChild(legend(scale, signed ? "diverging, 0 = white" : "0 .. max"));
    const cv = el("canvas", {"data-channel": "0", "aria-label": `${L.name}: ${n} units`});
    drawMap(cv, padded, 0, h, w, scale);
    interactive(cv, h, w, px, (y, x) => (y * w + x < n ? {index: [y * w + x],
      text: `${what}${L.name} unit ${y * w + x} = ${fmt(v[y * w + x])}`} : null), onPick);
    box.appendChild(el("div", {className: "strip"}, [el("div", {className: "frame"}, [cv]), el("div", {className: "muted",
      text: `${n} units in rows of ${w}: unit i at row i / ${w}, column i mod ${w}`})]));
  }
}

// ds/dW of a Conv2d: rows = output channel f, columns = input channel c, one KHxKW tile each.
export function renderWeights(r, L, onPick) {
  const box = $("weight-maps");
  box.replaceChildren();
  const [F, C, KH, KW] = r.shape, v = decode(r);
  const rows = F * (KH + 1) - 1, cols = C * (KW + 1) - 1;
  const scale = makeScale(r.min, r.max, true);
  const cv = el("canvas", {id: "weight-canvas", "aria-label": `ds/d${L.name}.weight`});
  cv.width = cols; cv.height = rows;
  const ctx = cv.getContext("2d"), img = ctx.createImageData(cols, rows);
  for (let i = 0; i < 4 * rows * cols; i += 4) img.data.set([200, 200, 200, 255], i);
  const at = (f, c, i, j) => ((f * C + c) * KH + i) * KW + j;
  for (let f = 0; f < F; f++) for (let c = 0; c < C; c++) for (let i = 0; i < KH; i++) for (let j = 0; j < KW; j++) {
    const [R, G, B] = scale.colour(v[at(f, c, i, j)]);
    img.data.set([R, G, B, 255], 4 * ((f * (KH + 1) + i) * cols + c * (KW + 1) + j));
  }
  ctx.putImageData(img, 0, 0);
  const px = Math.max(2, Math.min(8, Math.floor(480 / cols)));
  interactive(cv, rows, cols, px, (y, x) => {
    const f = Math.floor(y / (KH + 1)), i = y % (KH + 1), c = Math.floor(x / (KW + 1)), j = x % (KW + 1);
    if (i === KH || j === KW) return null;                          // the grey gaps between kernels
    return {index: [f, c, i, j], text: `ds/d${L.name}.weight[${f}, ${c}, ${i}, ${j}] = ${fmt(v[at(f, c, i, j)])}`};
  }, (index) => onPick(index, "weight"));
  box.append(el("h4", {text: `ds/d(${L.name}.weight): ${F} output \u00d7 ${C} input channels, one ${KH}\u00d7${KW} kernel each ` +
                             "(rows: output channel, columns: input channel); click a tap to see its sum over positions"}),
             legend(scale, "diverging, 0 = white"), el("div", {className: "frame weights"}, [cv]));
}

// Outline the explained number in the maps (if it is on screen).
export function markPick(pick) {
  for (const old of document.querySelectorAll("#layer-maps .marker, #weight-maps .marker")) old.remove();
  if (!pick || pick.layer !== state.layer) return;
  if (pick.mode === "weight") {
    const cv = $("weight-canvas");
    if (!cv) return;
    const [f, c, i, j] = pick.index, [, , KH, KW] = state.weightData.shape;
    placeBox(cv, "marker", f * (KH + 1) + i, c * (KW + 1) + j, cv.height, cv.width);
    return;
  }
  const r = state.layerData;
  if (!r) return;
  if (r.shape.length === 3) {
    const cv = document.querySelector(`#layer-maps canvas[data-channel='${pick.index[0]}']`);
    if (cv) placeBox(cv, "marker", pick.index[1], pick.index[2], r.shape[1], r.shape[2]);
  } else {
    const cv = document.querySelector("#layer-maps canvas");
    if (!cv) return;
    const n = r.shape[0], w = n >= 4096 ? 128 : n > 64 ? 32 : n;
    placeBox(cv, "marker", Math.floor(pick.index[0] / w), pick.index[0] % w, Math.ceil(n / w), w);
  }
}
