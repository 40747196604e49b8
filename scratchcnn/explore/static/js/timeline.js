// The time slider ("watch it learn"): when the run kept snapshots (train --snapshots K), a
// slider over them in the header. Its last position is the checkpoint itself; any other is
// one snapshot, and then every view asks the server with that snapshot's weights. The play
// button steps through them, each step once the page has drawn the one before.
import {api, showError} from "./api.js";
import {state} from "./store.js";
import {$} from "./util.js";

let snapshots = [], onMoment = async () => {}, playing = false;

export async function initTimeline(changed) {
  onMoment = changed;
  snapshots = (await api("/api/snapshots")).snapshots;
  const box = $("timeline");
  box.hidden = snapshots.length === 0;
  if (!snapshots.length) return;
  const slider = $("moment");
  slider.max = String(snapshots.length);                 // 0..n-1: a snapshot; n: the checkpoint
  slider.value = slider.max;
  label();
  slider.addEventListener("input", label);
  slider.addEventListener("change", () => { stop(); go().catch(showError); });
  $("play").addEventListener("click", () => (playing ? stop() : play().catch(showError)));
}

// The snapshot the slider is at (null: the checkpoint), and its place on the curves' epoch axis.
export function moment() {
  const i = Number($("moment").value);
  return i < snapshots.length ? snapshots[i] : null;
}

function label() {
  const s = moment();
  $("moment-label").textContent = s ? `epoch ${s.epoch}, step ${s.step} (${s.images_seen.toLocaleString()} images seen)`
    : "the checkpoint (end of training)";
}

async function go() {
  const s = moment();
  state.snapshot = s ? s.index : null;
  state.snapshotAt = s ? s.at : null;
  label();
  await onMoment(s);
  document.body.dataset.moment = state.snapshot === null ? "final" : String(state.snapshot);   // drawn (tests wait for it)
}

async function play() {
  playing = true;
  $("play").textContent = "\u275a\u275a";
  const slider = $("moment");
  if (Number(slider.value) >= snapshots.length) slider.value = "0";
  else slider.value = String(Number(slider.value) + 1);
  while (playing) {
    await go();
    await new Promise((resolve) => setTimeout(resolve, 400));
    if (!playing || Number(slider.value) >= snapshots.length) break;
    slider.value = String(Number(slider.value) + 1);
  }
  stop();
}

function stop() {
  playing = false;
  $("play").textContent = "\u25b6";
}
