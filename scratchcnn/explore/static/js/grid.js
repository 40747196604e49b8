// The test-image browser (left): filters, pages of thumbnails, and your own picture.
import {api, showError} from "./api.js";
import {state, outputs} from "./store.js";
import {$, el} from "./util.js";

let onSelect = () => {};

export function initGrid(select) {
  onSelect = select;
  const names = state.info.classes;
  names.forEach((c, i) => $("filter-class").appendChild(el("option", {value: String(i), text: `${i} ${c}`})));
  outputs().forEach((c, i) => $("filter-pred").appendChild(el("option", {value: String(i), text: `${i} ${c}`})));
  const reload = () => { readControls(); state.grid.offset = 0; loadGrid().catch(showError); };
  for (const id of ["filter-class", "filter-pred", "filter-wrong", "sort"]) $(id).addEventListener("change", reload);
  $("prev").addEventListener("click", () => {
    state.grid.offset = Math.max(0, state.grid.offset - state.grid.limit); loadGrid().catch(showError);
  });
  $("next").addEventListener("click", () => { state.grid.offset += state.grid.limit; loadGrid().catch(showError); });
  $("upload").addEventListener("change", (ev) => upload(ev.target.files[0]));
}

function readControls() {
  Object.assign(state.grid, {cls: $("filter-class").value, pred: $("filter-pred").value,
                             wrong: $("filter-wrong").checked, sort: $("sort").value});
}

// Show the test images of true class `cls` predicted as `pred` (a confusion-matrix cell).
export function filterGrid(cls, pred) {
  $("filter-class").value = String(cls);
  $("filter-pred").value = String(pred);
  $("filter-wrong").checked = false;
  readControls();
  state.grid.offset = 0;
  return loadGrid();
}

export async function loadGrid() {
  const g = state.grid;
  const q = new URLSearchParams({offset: g.offset, limit: g.limit, backend: state.backend, cls: g.cls,
                                 pred: g.pred, wrong: g.wrong ? "1" : "", sort: g.sort});
  const r = await api(`/api/images?${q}`);
  const grid = $("grid");
  grid.replaceChildren();
  const names = state.info.classes, outs = outputs();
  for (const it of r.items) {
    const wrong = it.pred !== it.label;
    const b = el("button", {className: "thumb" + (wrong ? " wrong" : "") + (it.image === state.image ? " selected" : ""),
                            title: `#${it.index}: ${names[it.label]}; predicted ${outs[it.pred]} ${(100 * it.conf).toFixed(1)}%`,
                            "aria-label": `test image ${it.index}, ${names[it.label]}, predicted ${outs[it.pred]}`,
                            "data-image": it.image},
                 [el("img", {src: it.png, alt: ""})]);
    const bar = el("span", {className: "conf"});
    bar.style.width = `${Math.round(100 * it.conf)}%`;
    b.appendChild(bar);
    b.addEventListener("click", () => onSelect(it.image).catch(showError));
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

export function markSelected() {
  for (const t of document.querySelectorAll(".thumb")) t.classList.toggle("selected", t.dataset.image === state.image);
}

// An upload's error is said once, beside the file input (not also in the error box).
async function upload(file) {
  if (!file) return;
  const msg = $("upload-msg");
  msg.classList.remove("bad");
  msg.textContent = "uploading ...";
  try {
    const res = await fetch("/api/upload", {method: "POST", body: file,
                                             headers: {"Content-Type": file.type || "application/octet-stream"}});
    const data = await res.json();
    if (!res.ok) { msg.classList.add("bad"); msg.textContent = data.error; return; }
    msg.textContent = `${file.name}, resized to 32x32`;
    await onSelect(data.image);
  } catch (err) {
    msg.classList.add("bad");
    msg.textContent = String(err.message || err);
  }
}
