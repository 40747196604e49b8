// The formula panel: one number of the network written out. /api/pixel says which
// explanation it is ("formula"); each has its renderer here. Forward: how the layer
// computed the number from its input. Backward: how the layer above sent the gradient
// back, beside the scratch backend's value, torch's and a float64 finite difference.
import {decode} from "./api.js";
import {layerInfo, outputs, state} from "./store.js";
import {$, drawMap, el, fmt, makeScale, tableFormat} from "./util.js";

const SHOWN_BLOCKS = 6;            // of a convolution's per-channel blocks, the largest few are open

const b = (text, id) => el("b", {text, id});
const chanName = (layer, c) => (layerInfo(layer)?.channels ? layerInfo(layer).channels[c] : `ch ${c}`);
const idx = (index) => `[${index.join(", ")}]`;

// A table of numbers with one format for all its cells; cls(i, j) adds a class to a cell.
// Exported for the browser test's check that its columns line up.
export function matrix(rows, cls = () => "", caption = "") {
  const {f, scale} = tableFormat(rows.flat().filter((v) => v !== null));
  const texts = rows.map((row) => row.map((v) => (v === null ? "\u00b7" : f(v))));
  // every cell as wide as the longest number of the table, so the columns line up
  const width = `${Math.max(4, ...texts.flat().map((s) => s.length)) + 0.5}ch`;
  const t = el("table", {className: "num-table"}, texts.map((row, i) => el("tr", {}, row.map((text, j) => {
    const td = el("td", {className: cls(i, j), text});
    td.style.width = width;
    return td;
  }))));
  // fixed layout: the browser may not narrow a column with shorter numbers to fit a small panel
  t.style.tableLayout = "fixed";
  t.style.width = `calc(${Math.max(1, ...rows.map((r) => r.length))} * (${width} + 7px))`;
  return el("div", {className: "mat"}, [t, el("div", {className: "mat-cap", text: [caption, scale].filter(Boolean).join(" ")})]);
}

// Blocks of a sum over channels (conv forward: input channels; conv backward: output
// channels): chips of every partial sum, the largest |partial| blocks open, a toggle for all.
function blocks(partial, name, makeBlock) {
  const order = partial.map((v, c) => c).sort((a, c) => Math.abs(partial[c]) - Math.abs(partial[a]));
  const chips = el("div", {className: "chips"}, order.map((c) => el("span", {className: "chip", text: `${name(c)}: ${fmt(partial[c], 3)}`})));
  const box = el("div", {id: "pixel-blocks", className: "blocks"});
  const fill = (all) => {
    box.replaceChildren(...order.slice(0, all ? order.length : SHOWN_BLOCKS).map((c) => makeBlock(c)));
  };
  fill(false);
  const parts = [el("div", {className: "muted", text: `partial sums, largest |value| first (${partial.length}):`}), chips, box];
  if (partial.length > SHOWN_BLOCKS) {
    let all = false;
    const btn = el("button", {className: "small", text: `show all ${partial.length} blocks`});
    btn.addEventListener("click", () => { all = !all; fill(all); btn.textContent = all ? `show the largest ${SHOWN_BLOCKS}` : `show all ${partial.length} blocks`; });
    parts.splice(2, 0, btn);
  }
  return parts;
}

function block(title, tables) {
  const row = [];
  tables.forEach(([t, op], k) => { if (k) row.push(el("span", {className: "op", text: op})); row.push(t); });
  return el("div", {className: "block"}, [el("div", {className: "block-title", text: title}), el("div", {className: "row"}, row)]);
}

function termsTable(head, terms, cells) {
  const all = terms.flatMap((t) => cells(t).filter((v) => typeof v === "number"));
  const {f} = tableFormat(all);
  return el("table", {className: "num-table terms"}, [el("tr", {}, head.map((h) => el("th", {text: h}))),
    ...terms.map((t) => el("tr", {}, cells(t).map((v) => el("td", {text: typeof v === "number" ? f(v) : String(v)}))))]);
}

// Where tap k of output position v reads: v*S + k - P, written as simply as the numbers allow.
const tap = (v, S, P, k) => `${S === 1 ? v : `${v}\u00b7${S}`}+${k}${P ? `-${P}` : ""}`;
const at = (p) => (p ? ` = (c ${p[0]}, y ${p[1]}, x ${p[2]})` : "");

// ------------------------------------------------------------------ forward
const FORWARD = {
  input(p) {
    const [c, y, x] = p.index;
    const line = `${chanName("input", c)} pixel (y ${y}, x ${x}) = ${p.raw} / 255 = ${fmt(p.scaled, 6)}`;
    return [el("div", {className: "eq", text: line}),
            p.mean === null ? el("div", {className: "muted", text: "(no normalisation: the network sees pixel / 255)"})
              : el("div", {className: "eq", text: `normalised: (${fmt(p.scaled, 6)} - mean ${fmt(p.mean, 4)}) / std ${fmt(p.std, 4)}`})];
  },
  conv(p) {
    const [KH, KW] = p.kernel_size, [SH, SW] = p.stride, [PH, PW] = p.padding, C = p.patch.length;
    const eq = `${p.layer}[${p.channel}, ${p.y}, ${p.x}] = ${p.has_bias ? `bias[${p.channel}] + ` : ""}` +
      `\u03a3_c \u03a3_i,j ${p.input}[c, ${tap(p.y, SH, PH, "i")}, ${tap(p.x, SW, PW, "j")}] \u00b7 W[${p.channel}, c, i, j]`;
    const note = `c = 0..${C - 1}, i = 0..${KH - 1}, j = 0..${KW - 1}: the ${KH}\u00d7${KW} window starts at row ${p.top}, ` +
      `column ${p.left} of ${p.input}; outside it the input is the zero padding (grey)`;
    const pad = (i, j) => (p.inside[i][j] ? "" : "pad");
    return [el("div", {className: "eq", text: eq}), el("div", {className: "muted", text: note}),
      ...blocks(p.partial, (c) => chanName(p.input, c), (c) => block(`${chanName(p.input, c)}: partial sum ${fmt(p.partial[c])}`,
        [[matrix(p.patch[c], pad, "input"), ""], [matrix(p.kernel[c], () => "", "kernel"), "\u2299"],
         [matrix(p.products[c], pad, "products"), "="]])),
      el("div", {className: "eq total"}, ["sum of ", String(p.n_products), " products = ", b(fmt(p.sum, 8), "px-sum"),
        ...(p.has_bias ? [";  + bias ", b(fmt(p.bias, 8), "px-bias")] : [])])];
  },
  elementwise(p) {
    const v = fmt(p.input_value, 6), x = `${p.input}${idx(p.index)}`;
    const fn = {ReLU: `max(${x}, 0) = max(${v}, 0)`, Tanh: `tanh(${x}) = tanh(${v})`,
                Sigmoid: `1 / (1 + e^-${x}) = 1 / (1 + e^-(${v}))`,
                LeakyReLU: p.input_value > 0 ? `${x} = ${v} (positive)` : `${p.negative_slope} \u00b7 ${x} = ${p.negative_slope} \u00b7 ${v}`,
                Dropout: `${x} = ${v} (dropout, p = ${p.p}, is off at test time: the output is the input)`}[p.function];
    return [el("div", {className: "eq", text: `${p.layer}${idx(p.index)} = ${fn}`})];
  },
  maxpool(p) {
    const [wy, wx] = p.winner;
    return [el("div", {className: "eq", text: `${p.layer}${idx(p.index)} = max of ${p.input}[${p.channel}, ${p.top}..${p.top + p.kernel_size[0] - 1}, ` +
                                               `${p.left}..${p.left + p.kernel_size[1] - 1}] (the winner is highlighted; only it gets the gradient back)`}),
            el("div", {className: "row"}, [matrix(p.window, (i, j) => (i === wy && j === wx ? "win" : ""), "window")])];
  },
  avgpool(p) {
    return [el("div", {className: "eq", text: `${p.layer}${idx(p.index)} = mean of ${p.input}[${p.channel}, ${p.top}..${p.top + p.kernel_size[0] - 1}, ` +
                                               `${p.left}..${p.left + p.kernel_size[1] - 1}] = ${fmt(p.sum, 6)} / ${p.count}`}),
            el("div", {className: "row"}, [matrix(p.window, () => "", "window")])];
  },
  batchnorm(p) {
    return [el("div", {className: "eq", text: `${p.layer}${idx(p.index)} = (x - running_mean) / \u221a(running_var + eps) \u00b7 weight + bias`}),
            el("div", {className: "eq", text: `= (${fmt(p.input_value, 6)} - ${fmt(p.running_mean, 6)}) / \u221a(${fmt(p.running_var, 6)} + ${p.eps}) ` +
                                              `\u00b7 ${fmt(p.weight, 6)} + ${fmt(p.bias, 6)}`}),
            el("div", {className: "eq", text: `= ${fmt(p.xhat, 6)} \u00b7 ${fmt(p.weight, 6)} + ${fmt(p.bias, 6)}   (eval mode: the running statistics, not the batch's)`})];
  },
  flatten(p) {
    const s = p.source;
    return [el("div", {className: "eq", text: `${p.layer}[${p.index[0]}] = ${p.input}[${s.join(", ")}]   ` +
                                              `(index ${p.index[0]} = ${s[0]}\u00b7${p.source_shape[1] * p.source_shape[2]} + ${s[1]}\u00b7${p.source_shape[2]} + ${s[2]})`})];
  },
  linear(p) {
    return [el("div", {className: "eq", text: `${p.layer}[${p.unit}] = ${p.has_bias ? `bias[${p.unit}] + ` : ""}\u03a3_j W[${p.unit}, j] \u00b7 ${p.input}[j],  j = 0..${p.n_in - 1}`}),
            el("div", {className: "muted", text: `the ${p.terms.length} largest products |W\u00b7x| (of ${p.n_in}; ${p.zeros} inputs are 0):`}),
            termsTable(["j", "x_j", "W[i, j]", "product"], p.terms, (t) => [`${t.j}${at(t.at)}`, t.x, t.w, t.product]),
            el("div", {className: "eq", text: `+ the other ${p.n_rest} products, summed: ${fmt(p.rest, 6)}`}),
            el("div", {className: "eq total"}, ["sum of products = ", b(fmt(p.sum, 8), "px-sum"),
              ...(p.has_bias ? [";  + bias ", b(fmt(p.bias, 8), "px-bias")] : [])])];
  },
  softmax(p) {
    const names = outputs();
    const rows = p.logits.map((z, k) => [names[k], z, z - p.shift, p.exps[k]]);
    const t = termsTable(["class", "logit z", "z - max z", "exp(z - max z)"], rows.map((r) => r), (r) => r);
    t.querySelectorAll("tr")[p.unit + 1].classList.add("picked");
    return [el("div", {className: "eq", text: `p[${p.unit}] = exp(z_${p.unit} - max z) / \u03a3_k exp(z_k - max z)   (subtracting max z = ${fmt(p.shift)} changes nothing but keeps exp from overflowing)`}),
            t, el("div", {className: "eq", text: `= ${fmt(p.exps[p.unit], 6)} / ${fmt(p.sum, 6)}`})];
  },
  none(p) {
    return [el("div", {className: "muted", text: `${p.kind} has no written-out formula here: it is a layer of your own. Its value is shown below.`})];
  },
};

// ------------------------------------------------------------------ backward
const g = (name) => `ds/d${name}`;
const BACKWARD = {
  score(p) {
    const names = outputs();
    return [el("div", {className: "eq", text: `s = ${state.info.logits}[${p.target}], the logit of '${names[p.target]}'. So ds/d${state.info.logits}[i] = 1 for i = ${p.target} and 0 for every other i.`}),
            el("div", {className: "eq", text: `ds/d${state.info.logits}[${p.unit}] (${names[p.unit]}) = ${p.unit === p.target ? 1 : 0}`})];
  },
  conv_input(p) {
    const [KH, KW] = p.kernel_size, [SH, SW] = p.stride, [PH, PW] = p.padding, n = p.next.name;
    const pos = (v, P, S) => (S === 1 ? `${v}+${P}-i` : `(${v}+${P}-i)/${S}`);
    const eq = `${g(p.layer)}[${p.channel}, ${p.y}, ${p.x}] = \u03a3_f \u03a3_i,j ${g(n)}[f, ${pos(p.y, PH, SH)}, ` +
      `${pos(p.x, PW, SW).replace("-i", "-j")}] \u00b7 W[f, ${p.channel}, i, j]`;
    const note = `the transposed convolution: ${n}'s kernels slide back over its gradient map. Tap (i, j) takes the gradient of the ` +
      `output pixel that read this number through that tap; where no output pixel did (a position outside ${n}'s map, or between ` +
      `its strides) it reads the gradient map's zero padding (grey). ${p.n_terms} terms.`;
    const pad = (i, j) => (p.valid[i][j] ? "" : "pad");
    return [el("div", {className: "eq", text: eq}), el("div", {className: "muted", text: note}),
      ...blocks(p.partial, (f) => `f ${f}`, (f) => block(`output channel ${f}: partial sum ${fmt(p.partial[f])}`,
        [[matrix(p.upstream[f], pad, `${g(n)}[${f}] at the taps`), ""], [matrix(p.weights[f], () => "", `W[${f}, ${p.channel}]`), "\u2299"],
         [matrix(p.products[f], pad, "products"), "="]]))];
  },
  elementwise_input(p) {
    const n = p.next.name, e = idx(p.index), up = fmt(p.upstream, 6);
    const local = {ReLU: `the gate: ${p.next.name}'s input ${fmt(p.input_value, 4)} is ${p.input_value > 0 ? "> 0, open (1)" : "\u2264 0, closed (0)"}`,
                   LeakyReLU: p.input_value > 0 ? "the input is > 0: slope 1" : `the input is \u2264 0: slope ${p.negative_slope}`,
                   Tanh: `1 - tanh\u00b2 = 1 - ${fmt(p.output_value, 6)}\u00b2`, Sigmoid: `\u03c3(1 - \u03c3) = ${fmt(p.output_value, 6)} \u00b7 (1 - ${fmt(p.output_value, 6)})`,
                   Dropout: "dropout is off at test time: 1"}[p.function];
    return [el("div", {className: "eq", text: `${g(p.layer)}${e} = ${g(n)}${e} \u00b7 ${p.function}'(x) = ${up} \u00b7 ${fmt(p.local, 6)}`}),
            el("div", {className: "muted", text: `${p.function}'(x): ${local}`})];
  },
  maxpool_input(p) {
    const n = p.next.name;
    const items = p.windows.map((w) => {
      const cls = (i, j) => [w.top + i === w.winner[0] && w.left + j === w.winner[1] ? "win" : "",
                             w.top + i === p.y && w.left + j === p.x ? "me" : ""].join(" ");
      return el("div", {className: "block"}, [el("div", {className: "block-title", text:
        `window (${w.y}, ${w.x}): ${w.routed ? `the winner is this number: it gets ${g(n)}[${p.channel}, ${w.y}, ${w.x}] = ${fmt(w.upstream)}` : `the winner is (${w.winner.join(", ")}): this number gets 0`}`}),
        matrix(w.window, cls, `rows ${w.top}.., columns ${w.left}..`)]);
    });
    return [el("div", {className: "eq", text: `${g(p.layer)}${idx(p.index)} = \u03a3 over the windows holding (${p.y}, ${p.x}) whose maximum it is of ${g(n)}[${p.channel}, window]`}),
            el("div", {className: "muted", text: `max-pooling routes each window's gradient to its winner (highlighted) only; this number is outlined. ${p.windows.length} window(s) hold it.`}),
            el("div", {className: "blocks"}, items)];
  },
  avgpool_input(p) {
    const n = p.next.name, k = p.kernel_size[0] * p.kernel_size[1];
    return [el("div", {className: "eq", text: `${g(p.layer)}${idx(p.index)} = \u03a3 over the windows holding (${p.y}, ${p.x}) of ${g(n)}[${p.channel}, window] / ${k}`}),
            termsTable(["window (y, x)", `${g(n)}`, `share (/ ${k})`], p.windows, (w) => [`(${w.y}, ${w.x})`, w.upstream, w.share])];
  },
  batchnorm_input(p) {
    const n = p.next.name;
    return [el("div", {className: "eq", text: `${g(p.layer)}${idx(p.index)} = ${g(n)}${idx(p.index)} \u00b7 weight / \u221a(running_var + eps)`}),
            el("div", {className: "eq", text: `= ${fmt(p.upstream, 6)} \u00b7 ${fmt(p.weight, 6)} / \u221a(${fmt(p.running_var, 6)} + ${p.eps})  (eval mode: the statistics are constants)`})];
  },
  flatten_input(p) {
    return [el("div", {className: "eq", text: `${g(p.layer)}${idx(p.index)} = ${g(p.next.name)}[${p.unit}]   (Flatten only reshapes: the gradient is reshaped back)`})];
  },
  linear_input(p) {
    const n = p.next.name;
    return [el("div", {className: "eq", text: `${g(p.layer)}[${p.unit}]${at(p.at)} = \u03a3_i ${g(n)}[i] \u00b7 W[i, ${p.unit}],  i = 0..${p.n_out - 1}   (a column of W\u1d40 \u00b7 ${g(n)})`}),
            termsTable(["i", `${g(n)}[i]`, `W[i, ${p.unit}]`, "product"], p.terms, (t) => [t.i, t.upstream, t.w, t.product]),
            el("div", {className: "eq", text: `+ the other ${p.n_rest} products, summed: ${fmt(p.rest, 6)}`})];
  },
  conv_weight(p) {
    const [f, c, i, j] = p.index, [SH, SW] = p.stride, [PH, PW] = p.padding;
    const maps = [["upstream", `${g(p.layer)}[${f}]`], ["input", `${p.input_layer}[${c}] read by tap (${i}, ${j})`], ["products", "products"]].map(([k, cap]) => {
      const a = p[k], v = decode(a), [h, w] = a.shape, cv = el("canvas");
      drawMap(cv, v, 0, h, w, makeScale(a.min, a.max, true));
      cv.style.width = `${Math.max(2, Math.floor(96 / Math.max(h, w))) * w}px`;
      return el("figure", {}, [cv, el("figcaption", {text: cap})]);
    });
    return [el("div", {className: "eq", text: `${g(p.layer)}.weight[${f}, ${c}, ${i}, ${j}] = \u03a3_y,x ${g(p.layer)}[${f}, y, x] \u00b7 ${p.input_layer}[${c}, ${tap("y", SH, PH, i)}, ${tap("x", SW, PW, j)}]`}),
            el("div", {className: "muted", text: `one term per output position (${p.shape.join("\u00d7")}); ${p.padded} of them read the zero padding. The weight is shared by every position, so its gradient sums them all.`}),
            el("div", {className: "row"}, maps),
            termsTable(["(y, x)", "upstream", "input", "product"], p.terms, (t) => [`(${t.y}, ${t.x})`, t.upstream, t.input, t.product]),
            el("div", {className: "eq", text: `+ the other ${p.n_rest} products, summed: ${fmt(p.rest, 6)}`})];
  },
  none(p) {
    return [el("div", {className: "muted", text: `${p.next.kind} has no written-out backward here: it is a layer of your own.`})];
  },
};

function threeNumbers(p) {
  const val = (v, id) => el("td", {id, text: v === null ? "n/a" : v.toPrecision(8)});
  const dif = (v, id) => el("td", {id, text: v === null ? "" : fmt(v, 2)});
  const d = p.differences;
  return el("div", {className: "three"}, [
    el("table", {className: "num-table three-table"}, [
      el("tr", {}, ["", "value", "|Δ| from scratch", "|Δ| from torch"].map((h) => el("th", {text: h}))),
      el("tr", {}, [el("th", {text: "scratch (hand-written backward)"}), val(p.scratch, "fx-scratch"), el("td"), dif(d.scratch_torch, "fx-d-st")]),
      el("tr", {}, [el("th", {text: "torch (autograd)"}), val(p.torch, "fx-torch"), dif(d.scratch_torch), el("td")]),
      el("tr", {}, [el("th", {text: `finite difference (float64, h = ${fmt(p.step, 2)})`}), val(p.finite_difference, "fx-fd"),
                    dif(d.scratch_fd, "fx-d-sf"), dif(d.torch_fd, "fx-d-tf")])]),
    p.kink ? el("div", {className: "kink", id: "fx-kink", text: `s has a kink here: its slope is ${fmt(p.slopes[1], 4)} to the right ` +
      `and ${fmt(p.slopes[0], 4)} to the left (a ReLU or a max-pool switches within h), so the finite difference averages the two. ` +
      "The backends take the one side the layer's backward defines."}) : null,
    el("div", {className: "muted", text: "The finite difference nudges this one number by \u00b1h in a float64 copy of the network and " +
      "measures the class score: (s(+h) - s(-h)) / 2h. It shares no code with either backend; it is off only where a ReLU " +
      "or a max-pool switches within h."})]);
}

export function title(p) {
  const i = p.index;
  if (p.mode === "weight") return `${g(p.layer)}.weight[${i.join(", ")}]`;
  const where = i.length === 3 ? `[channel ${i[0]}] at (y=${i[1]}, x=${i[2]})` : `[unit ${i[0]}]`;
  return `${p.mode === "forward" ? "" : "ds/d"}${p.layer}${where}`;
}

// Render /api/pixel's answer into the panel.
export function renderFormula(p) {
  const names = outputs();
  $("formula-empty").hidden = true;
  $("formula-title").textContent = title(p);
  const L = layerInfo(p.layer);
  $("formula-context").textContent = `${p.mode === "forward" ? "forward" : "backward"}; image ${state.image}, ${p.backend} backend, ` +
    `${p.mode === "forward" ? "" : `s = logit of '${names[p.target]}', `}${L ? L.kind : ""}` +
    (p.mode === "gradient" && p.next ? `; sent back through ${p.next.name} (${p.next.kind})` : "");
  const render = (p.mode === "forward" ? FORWARD : BACKWARD)[p.formula] || (p.mode === "forward" ? FORWARD.none : BACKWARD.none);
  const body = $("formula-body");
  body.replaceChildren(...render(p));
  const result = $("formula-result");
  const diffText = p.computed === null || p.value === null ? "" :
    `  (difference ${fmt(Math.abs(p.computed - p.value), 2)}: float32 rounding; written out in float64)`;
  result.replaceChildren(...(p.computed === null ? [] : ["written out: ", b(p.computed.toPrecision(8), "fx-computed"), ";  "]),
    `the value in the ${p.mode === "weight" ? "weight gradient" : "map"} (${p.backend}): `, b(p.value === null ? "n/a" : p.value.toPrecision(8), "fx-value"),
    diffText);
  $("formula-three").replaceChildren(...(p.mode === "forward" ? [] : [threeNumbers(p)]));
}

export function closeFormula() {
  $("formula-empty").hidden = false;
  $("formula-title").textContent = "";
  $("formula-context").textContent = "";
  for (const id of ["formula-body", "formula-result", "formula-three"]) $(id).replaceChildren();
  $("formula").dataset.for = "";
}
