"""The weights the explorer looks through: the checkpoint's, or one snapshot of its training.

    Weights(arch, state_dict, ident)    one set of weights in both backends (built when first
                                        asked for), with what is computed once per set of
                                        weights: the float64 copy for finite differences and
                                        the test images' channel means (``responses``)
    Timeline(run_folder, arch)          the snapshots ``train --snapshots K`` kept in the run
                                        folder (``scratchcnn.study.snapshots``): ``entries()``
                                        lists them, ``weights(i)`` loads snapshot i, keeping the
                                        KEPT most recently used ones in memory

A snapshot of the tutorial's network is 16.8 MB; its state_dict and both backends' copies
make ~50 MB, ~85 MB once a finite difference has built its float64 copy. KEPT = 4 bounds the
timeline's memory to about 350 MB, and a slider dragged back and forth over a few neighbouring
moments still finds them loaded. Loading one (reading the file, building both backends) took
~0.2 s on two cores (``explore --measure`` times it).
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
        self.responses_cache = {}          # (backend, layer, images) -> responses(); measure clears it

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

    def responses(self, name, layer, images, normalize):
        """How much every test image excites each channel of ``layer``, through backend ``name``
        (computed once per backend, layer and number of images): float32 (N, C), for a layer with (C, h, w) outputs
        the mean of each channel over its h x w positions; for the logits layer the logits. The
        dreams' top-9 images are the largest of one column."""
        with self.lock:
            key = (name, layer, len(images))
            if key not in self.responses_cache:
                self.responses_cache[key] = channel_means(self.backend(name), layer, images, normalize)
            return self.responses_cache[key]

    def rank_all(self, name, images, normalize):
        """Fill ``responses`` for every layer with feature maps in one pass (the explorer's start-up
        does it for the checkpoint's weights, so no channel dream waits for its ranking)."""
        with self.lock:
            for layer, means in all_channel_means(self.backend(name), images, normalize).items():
                self.responses_cache.setdefault((name, layer, len(images)), means)


def all_channel_means(backend, images, normalize, batch_size=250):
    """{layer: float32 (N, C)} for every layer with (C, h, w) outputs, in one pass of ``images``
    through the network: ``channel_means`` of each, for the price of the deepest one."""
    from scratchcnn.data import to_float

    arch = backend.model.arch
    maps = list(arch.map_layers)
    if not maps:
        return {}
    last = arch.layer_names.index(maps[-1])
    chunks = {name: [] for name in maps}
    for i in range(0, len(images), batch_size):
        x = np.ascontiguousarray(to_float(images[i:i + batch_size], normalize), np.float32)
        for name, out in _forward_each(backend, x, arch.layer_names[:last + 1], chunks):
            chunks[name].append(out.mean(axis=(2, 3), dtype=np.float64).astype(np.float32))
    return {name: (np.concatenate(c) if c else np.zeros((0, arch.output_shape(name)[0]), np.float32))
            for name, c in chunks.items()}


def _forward_each(backend, x, names, keep):
    """(name, output) for each of ``names`` (the network's first layers, in order) that is in
    ``keep``, running ``x`` through all of them once (torch's outputs become NumPy only there)."""
    if backend.name == "scratch":
        model = backend.model.eval()
        for name, lyr in model.layers[:len(names)]:
            x = lyr.forward(x)
            if name in keep:
                yield name, x
        return
    torch, model = backend.torch, backend.model
    model.eval()
    with torch.no_grad():
        t = torch.from_numpy(x).to(backend.device)
        for name in names:
            t = getattr(model, name)(t)
            if name in keep:
                yield name, t.float().cpu().numpy()


def channel_means(backend, layer, images, normalize, batch_size=250):
    """float32 (N, C): each channel's mean over its positions of ``layer``'s output (or the
    logits, for the last layer), for uint8 ``images`` (N, C, H, W), in eval mode. Only the
    layers up to ``layer`` run (both backends run their layers in order): ranking the test
    split by a first convolution's channel costs a tenth of a whole forward pass."""
    from scratchcnn.data import to_float

    arch = backend.model.arch
    names = arch.layer_names
    chunks = []
    for i in range(0, len(images), batch_size):
        x = np.ascontiguousarray(to_float(images[i:i + batch_size], normalize), np.float32)
        if layer == names[-1]:
            chunks.append(np.asarray(backend.predict(x), np.float32))
            continue
        out = _forward_to(backend, x, names[:names.index(layer) + 1])
        chunks.append(out.mean(axis=(2, 3), dtype=np.float64).astype(np.float32))
    return np.concatenate(chunks) if chunks else np.zeros((0, arch.output_shape(layer)[0]), np.float32)


def _forward_to(backend, x, names):
    """The output of the last of ``names`` (the network's first layers, in order) for ``x``."""
    (_, out), = _forward_each(backend, x, names, {names[-1]})
    return out


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
