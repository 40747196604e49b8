// The Training run tab: the curves of metrics.json (train and test loss, train and test
// accuracy) with readable ticks, the per-layer statistics, and the confusion matrix of the
// test split, whose cells open the test images they count.
import {api} from "./api.js";
import {setBadge, state} from "./store.js";
import {$, el, fmt, niceTicks} from "./util.js";

// Lines on a canvas: series [{label, colour, points: [[x, y]]}]; the legend sits above the
// plot, outside it, so no line crosses it. marker: an x to draw a vertical line at.
export function plotLines(canvas, series, {ymin = null, ymax = null, xlabel = "epoch", marker = null} = {}) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, L = 50, T = 30, B = 34, R = 14;
  ctx.clearRect(0, 0, W, H);
  series = series.filter((s) => s.points.length);
  if (!series.length) return;
  const xs = series.flatMap((s) => s.points.map((p) => p[0])).concat(marker === null ? [] : [marker]), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const yt = niceTicks(ymin ?? Math.min(...ys), ymax ?? Math.max(...ys), 5);
  const lo = ymin ?? Math.min(yt.ticks[0], ...ys), hi = ymax ?? Math.max(yt.ticks[yt.ticks.length - 1], Math.max(...ys));
  const px = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), py = (y) => H - B - (y - lo) / (hi - lo || 1) * (H - B - T);
  ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  ctx.strokeStyle = "#e4e4e4"; ctx.fillStyle = "#444"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const y of yt.ticks) {
    if (y < lo - 1e-12 || y > hi + 1e-12) continue;
    ctx.beginPath(); ctx.moveTo(L, py(y)); ctx.lineTo(W - R, py(y)); ctx.stroke();
    ctx.fillText(String(y), L - 5, py(y));
  }
  const xt = niceTicks(x0, x1, Math.min(8, x1 - x0));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const x of xt.ticks) if (Number.isInteger(x) && x >= x0 && x <= x1) ctx.fillText(String(x), px(x), H - B + 5);
  ctx.fillText(xlabel, (L + W - R) / 2, H - 14);
  ctx.strokeStyle = "#999";
  ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  if (marker !== null) {
    ctx.strokeStyle = "#f08c00"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(px(marker), T); ctx.lineTo(px(marker), H - B); ctx.stroke();
  }
  let lx = L;
  ctx.textAlign = "left"; ctx.textBaseline = "middle";
  for (const s of series) {                     // the legend, above the plot
    ctx.fillStyle = s.colour; ctx.fillRect(lx, 9, 14, 4);
    ctx.fillStyle = "#333"; ctx.fillText(s.label, lx + 18, 11);
    lx += 26 + ctx.measureText(s.label).width;
  }
  for (const s of series) {
    ctx.strokeStyle = s.colour; ctx.fillStyle = s.colour; ctx.lineWidth = 2;
    ctx.beginPath();
    s.points.forEach(([x, y], i) => { if (i === 0) ctx.moveTo(px(x), py(y)); else ctx.lineTo(px(x), py(y)); });
    ctx.stroke();
    for (const [x, y] of s.points) { ctx.beginPath(); ctx.arc(px(x), py(y), 3, 0, 2 * Math.PI); ctx.fill(); }
  }
}

export function drawCurves(epochs, marker = null) {
  const pts = (key, k = 1) => epochs.filter((e) => e[key] !== undefined && e[key] !== null).map((e) => [e.epoch, k * e[key]]);
  plotLines($("curve-loss"), [{label: "train loss", colour: "#1c7ed6", points: pts("train_loss")},
                              {label: "test loss", colour: "#e8590c", points: pts("test_loss")}], {ymin: 0, marker});
  plotLines($("curve-acc"), [{label: "train accuracy %", colour: "#1c7ed6", points: pts("train_acc", 100)},
                             {label: "test accuracy %", colour: "#e8590c", points: pts("test_acc", 100)}],
            {ymin: 0, ymax: 100, marker});
}

let runEpochs = [];

// The time slider moved: the curves again, with a line where the chosen snapshot was taken.
export function markMoment() {
  if (runEpochs.length) drawCurves(runEpochs, state.snapshotAt);
}

export async function showRun() {
  const r = await api("/api/run");
  runEpochs = r.epochs;
  setBadge("run", null);
  const has = r.epochs.length > 0;
  $("run-none").hidden = has;
  $("run-body").hidden = !has;
  if (has) {
    $("run-source").textContent = `from ${r.source}; ${r.epochs.length} epochs`;
    drawCurves(r.epochs, state.snapshotAt);
    showStats(r.epochs);
  }
  await showConfusion();
}

function showStats(epochs) {
  const withStats = epochs.filter((e) => e.layer_stats);
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

let onCell = () => {};
export function initConfusion(callback) { onCell = callback; }

export async function showConfusion() {
  const c = await api(`/api/confusion?backend=${state.backend}`);
  const t = $("confusion");
  t.replaceChildren();
  const outs = c.outputs;
  t.appendChild(el("tr", {}, [el("th", {text: "true \u2193 / predicted \u2192"}), ...outs.map((o) => el("th", {text: o, title: o}))]));
  c.matrix.forEach((row, i) => {
    const total = row.reduce((a, v) => a + v, 0) || 1;
    t.appendChild(el("tr", {}, [el("th", {text: c.classes[i]}), ...row.map((v, j) => {
      const cell = el("button", {className: "cm" + (i === j ? " diag" : ""), "data-true": String(i), "data-pred": String(j),
                                 text: String(v), disabled: v === 0 ? true : null,
                                 title: `${v} test images of ${c.classes[i]} predicted as ${outs[j]}`});
      const a = v / total;
      cell.style.background = i === j ? `rgba(43, 138, 62, ${0.1 + 0.8 * a})` : `rgba(201, 42, 42, ${v ? 0.1 + 0.8 * a : 0})`;
      if (a > 0.55) cell.style.color = "#fff";
      cell.addEventListener("click", () => onCell(i, j));
      return el("td", {}, [cell]);
    })]));
  });
  $("confusion-caption").textContent = `${c.n} test images through the ${c.backend} backend: ` +
    `${(100 * c.accuracy).toFixed(1)}% on the diagonal. Click a cell to see its images.`;
  t.dataset.backend = c.backend;
}
