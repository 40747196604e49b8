"""The weights the explorer looks through: the checkpoint's, or one snapshot of its training.

    Weights(arch, state_dict, ident)    one set of weights in both backends (built when first
                                        asked for), with what is computed once per set of
                                        weights: the float64 copy for finite differences and
                                        every test image's channel means (``responses``)
    Timeline(run_folder, arch)          the snapshots ``train --snapshots K`` kept in the run
                                        folder (``scratchcnn.study.snapshots``): ``entries()``
                                        lists them, ``weights(i)`` loads snapshot i, keeping the
                                        KEPT most recently used ones in memory

A snapshot of the tutorial's network is 16.8 MB; in both backends, with its float64 copy,
about 70 MB. KEPT = 4 bounds the timeline's memory to about 300 MB, and a slider dragged back
and forth over a few neighbouring moments still finds them loaded. Loading one takes a
fraction of a second (``explore --measure`` times it).
"""
import os
import threading
from collections import OrderedDict

import numpy as np

from scratchcnn.errors import UserError
from scratchcnn.explore.errors import ApiError

KEPT = 4


class Weights:
    """One set of the network's weights, in whichever backends are asked for.

    ``ident`` names it in the explorer's caches ("final", or the snapshot's file and its
    modification time, so a folder trained again is not mistaken for the old one)."""

    def __init__(self, arch, state_dict, ident, backends=None):
        self.arch, self.state_dict, self.ident = arch, state_dict, ident
        self.backends = dict(backends or {})
        self.lock = threading.RLock()
        self._float64 = None
        self._responses = {}

    def backend(self, name):
        with self.lock:
            if name not in self.backends:
                from scratchcnn.backends import make_backend
                b = make_backend(name, arch=self.arch)
                b.load_state_dict(self.state_dict)
                self.backends[name] = b
            return self.backends[name]

    def float64(self):
        """The float64 copy of the network the finite differences run on (built once)."""
        from scratchcnn.explore.finite import Float64Network

        with self.lock:
            if self._float64 is None:
                self._float64 = Float64Network(self.arch, self.state_dict)
            return self._float64

    def responses(self, name, images, normalize):
        """How much every test image excites every channel, through backend ``name`` (computed
        once, in one pass over ``images``): {layer: float32 (N, C)}, for each layer with (C, h, w)
        outputs the mean of each channel over its h x w positions, and for the logits layer the
        logits themselves. The dreams' top-9 images are the largest of one column."""
        with self.lock:
            if name not in self._responses:
                self._responses[name] = channel_means(self.backend(name), images, normalize)
            return self._responses[name]


def channel_means(backend, images, normalize, batch_size=250):
    """{layer: float32 (N, C)} for uint8 ``images`` (N, C, H, W), eval mode (see Weights.responses)."""
    from scratchcnn.data import to_float

    arch = backend.model.arch
    maps = [s.name for s in arch.layers if len(s.out_shape) == 3]
    logits = arch.layer_names[-1]
    chunks = {name: [] for name in (*maps, logits)}
    for i in range(0, len(images), batch_size):
        x = np.ascontiguousarray(to_float(images[i:i + batch_size], normalize), np.float32)
        acts = _activations(backend, x, list(chunks))
        for name in maps:
            chunks[name].append(acts[name].mean(axis=(2, 3), dtype=np.float64).astype(np.float32))
        chunks[logits].append(np.asarray(acts[logits], np.float32))
    return {name: (np.concatenate(c) if c else np.zeros((0, arch.output_shape(name)[0]), np.float32))
            for name, c in chunks.items()}


def _activations(backend, x, names):
    """The outputs of the layers ``names`` for the batch ``x``: the scratch model keeps every
    layer's output anyway; torch's are recorded by forward hooks."""
    if backend.name == "scratch":
        acts = backend.model.eval().forward_intermediates(x)
        return {n: acts[n] for n in names}
    torch, model = backend.torch, backend.model
    found = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: found.__setitem__(n, o)) for n in names]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(x).to(backend.device))
    finally:
        for h in hooks:
            h.remove()
    return {n: found[n].float().cpu().numpy() for n in names}


class Timeline:
    """The snapshots of the run folder the checkpoint is in (none: ``entries()`` is [])."""

    def __init__(self, run_folder, arch, allow_custom=False):
        self.run_folder, self.arch, self.allow_custom = run_folder, arch, allow_custom
        self.kept = OrderedDict()
        self.lock = threading.RLock()

    def entries(self):
        """``list_snapshots`` of the run folder, read again each time (a training run may still
        be adding to it), with each one's position on the curves' epoch axis: "at" = epoch - 1 +
        step / steps per epoch (the last snapshot of epoch E is at E, where its point is)."""
        from scratchcnn.study.snapshots import list_snapshots

        try:
            entries = list_snapshots(self.run_folder)
        except UserError:                      # no snapshots/index.json: trained without --snapshots
            return []
        per_epoch = {}
        for e in entries:
            per_epoch[e["epoch"]] = max(per_epoch.get(e["epoch"], 0), e["step"])
        return [{**e, "index": i, "at": e["epoch"] - 1 + e["step"] / per_epoch[e["epoch"]]}
                for i, e in enumerate(entries)]

    def check(self, index):
        """A snapshot index from a request -> its entry (ApiError 400 / 404 when there is none)."""
        entries = self.entries()
        if not entries:
            raise ApiError(404, "this run has no snapshots (train with --snapshots K to keep the weights "
                                "K times per epoch)")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(entries):
            raise ApiError(400, f"snapshot {index!r} is out of range: this run has {len(entries)} "
                                f"(0..{len(entries) - 1})")
        return entries[index]

    def weights(self, index):
        """Snapshot ``index``'s Weights, loaded once and kept while among the KEPT most recent."""
        from scratchcnn.study.snapshots import load_snapshot

        entry = self.check(index)
        try:
            ident = f"{entry['file']}@{os.stat(entry['path']).st_mtime_ns}"
        except OSError:
            raise ApiError(404, f"the snapshot file {entry['file']} is missing from {self.run_folder}") from None
        with self.lock:
            if ident in self.kept:
                self.kept.move_to_end(ident)
                return self.kept[ident]
            try:
                s = load_snapshot(self.run_folder, index, allow_custom=self.allow_custom)
            except UserError as e:
                raise ApiError(400, str(e)) from None
            if s["arch"] != self.arch:
                raise ApiError(400, f"snapshot {index} holds another network ({s['arch'].name}) than the "
                                    f"checkpoint ({self.arch.name}); was the folder trained again?")
            self.kept[ident] = Weights(self.arch, s["model"], ident)
            while len(self.kept) > KEPT:
                self.kept.popitem(last=False)
            return self.kept[ident]
