// The network bar: every layer of the checkpoint's network, as /api/info lists it.
// What a layer is, is said from its KIND and arguments, never from its name.
import {state} from "./store.js";
import {$, el} from "./util.js";

const pairText = (v) => (Array.isArray(v) ? v.join("\u00d7") : `${v}\u00d7${v}`);

// One line on what a layer computes, from its kind and arguments.
export function kindNote(L) {
  const a = L.args || {};
  switch (L.kind) {
    case "Input": return "the image as the network sees it (scaled as in training), one map per colour channel";
    case "Conv2d": return `${a.out_channels} filters of ${pairText(a.kernel_size)} over ${a.in_channels} channels, ` +
      `stride ${pairText(a.stride ?? 1)}, padding ${pairText(a.padding ?? 0)}: out = bias + \u03a3 W\u00b7patch (before any activation)`;
    case "ReLU": return "max(x, 0) of each input value";
    case "LeakyReLU": return `x if x > 0 else ${a.negative_slope ?? 0.01}\u00b7x, each input value`;
    case "Tanh": return "tanh(x) of each input value";
    case "Sigmoid": return "1 / (1 + e^-x) of each input value";
    case "Dropout": return `dropout (p = ${a.p}) is off at test time: the output equals the input`;
    case "MaxPool2d": return `the largest value of each ${pairText(a.kernel_size)} window, stride ${pairText(a.stride ?? a.kernel_size)}`;
    case "AvgPool2d": return `the mean of each ${pairText(a.kernel_size)} window, stride ${pairText(a.stride ?? a.kernel_size)}`;
    case "BatchNorm2d": return "(x - running mean) / \u221a(running var + eps) \u00b7 weight + bias, per channel (eval mode: the running statistics)";
    case "Flatten": return `the ${L.in_shape.join("\u00d7")} maps as one vector of ${L.shape[0]} (c, y, x order)`;
    case "Linear": return `${a.out_features} units, each bias + \u03a3 W\u00b7x over ${a.in_features} inputs` +
      (L.name === state.info.logits ? ": the logits, one per class" : "");
    case "Softmax": return "softmax of the logits: the probabilities";
    default: return `${L.kind}: a layer of your own (no written-out formula here)`;
  }
}

export function drawNetwork(onLayer) {
  const box = $("network");
  box.replaceChildren();
  state.info.layers.forEach((L, i) => {
    if (i > 0) box.appendChild(el("span", {className: "arrow", text: "\u2192", "aria-hidden": "true"}));
    const b = el("button", {className: "layer" + (L.name === state.layer ? " selected" : ""), "data-layer": L.name,
                            "data-kind": L.kind, title: kindNote(L), "aria-pressed": String(L.name === state.layer)},
                 [el("div", {text: L.name}), el("div", {className: "kind", text: L.kind}),
                  el("div", {className: "shape", text: L.shape.join("\u00d7")})]);
    b.addEventListener("click", () => onLayer(L.name));
    box.appendChild(b);
  });
}

export function markLayer() {
  for (const b of document.querySelectorAll(".layer")) {
    b.classList.toggle("selected", b.dataset.layer === state.layer);
    b.setAttribute("aria-pressed", String(b.dataset.layer === state.layer));
  }
}
