"""Central finite differences of the class score, in float64: the third opinion on a gradient.

The scratch backend's hand-written backward pass and torch's autograd are two ways of
computing ds/d(something). A finite difference is a third that shares no code with
either: nudge that one number up and down by h and watch the class score s = z_target,

    ds/da ~ (s(a + h) - s(a - h)) / (2 h)

It runs on a float64 copy of the network (``scratchcnn.model.Network(arch,
dtype=np.float64)`` with the checkpoint's weights, eval mode), so float32 rounding
does not swamp the difference. The error of the central difference is O(h^2) where s is
smooth, plus about 1e-16 |s| / h of rounding; h = STEP * max(1, |a|). Where a ReLU or
a max-pool is within h of switching, the difference straddles the kink and disagrees
with both backends, which are exact there: that is the one case in which it is wrong,
and the answer says so (``kink``: the one-sided slopes (s(a+h) - s(a)) / h and
(s(a) - s(a-h)) / h disagree, which curvature alone cannot make them do at this h).

    net = Float64Network(arch, state_dict)
    net.activation_gradient(x, "conv2", (7, 4, 9), target)     # x float (3, H, W); "input" too
    net.weight_gradient(x, "conv1", "weight", (5, 0, 1, 2), target)
"""
from collections import OrderedDict

import numpy as np

STEP = 1e-5
KINK = 1e-2                  # one-sided slopes this far apart (relative): a kink, not curvature
CACHED_IMAGES = 8


class Float64Network:
    """A float64 copy of the network in eval mode, and the finite differences of a class score."""

    def __init__(self, arch, state_dict):
        from scratchcnn.model import Network

        self.net = Network(arch, dtype=np.float64)
        self.net.load_state_dict(state_dict)
        self.net.eval()
        self.names = [name for name, _ in self.net.layers]
        self._outputs = OrderedDict()

    def outputs(self, x):
        """{"input": x, layer: its output} of one image (float64 copies; the last few are cached)."""
        x = np.asarray(x, np.float64)
        key = x.tobytes()
        if key in self._outputs:
            self._outputs.move_to_end(key)
            return self._outputs[key]
        a, out = x[None], {"input": x.copy()}
        for name, layer in self.net.layers:
            a = layer.forward(a)
            out[name] = np.array(a[0], copy=True)
        self._outputs[key] = out
        while len(self._outputs) > CACHED_IMAGES:
            self._outputs.popitem(last=False)
        return out

    def _score_after(self, start, a, target):
        """The class score when the layers after ``start`` ("input": all of them) run on ``a``."""
        first = 0 if start == "input" else self.names.index(start) + 1
        a = a[None]
        for _, layer in self.net.layers[first:]:
            a = layer.forward(a)
        return float(a[0, target])

    def activation_gradient(self, x, layer, index, target):
        """ds/d(layer's output)[index] ("input": ds/dx) by a central difference."""
        outputs = self.outputs(x)
        base = outputs[layer]
        index = tuple(index)
        h = STEP * max(1.0, abs(float(base[index])))
        up, down = base.copy(), base.copy()
        up[index] += h
        down[index] -= h
        return _central(self._score_after(layer, up, target), float(outputs[self.names[-1]][target]),
                        self._score_after(layer, down, target), h)

    def weight_gradient(self, x, layer, param, index, target):
        """ds/d(layer.param)[index] by a central difference (the weight is put back after)."""
        p = dict(getattr(self.net, layer).parameters())[param].data
        index = tuple(index)
        keep = float(p[index])
        h = STEP * max(1.0, abs(keep))
        x = np.asarray(x, np.float64)
        try:
            p[index] = keep + h
            up = self._score_after("input", x, target)
            p[index] = keep - h
            down = self._score_after("input", x, target)
        finally:
            p[index] = keep
        return _central(up, float(self.outputs(x)[self.names[-1]][target]), down, h)


def _central(up, mid, down, h):
    """The central difference, and whether s has a kink between -h and +h: its one-sided slopes
    differ by more than the O(h) that curvature explains (a ReLU or a max-pool switching there)."""
    right, left = (up - mid) / h, (mid - down) / h
    kink = abs(right - left) > KINK * max(abs(right), abs(left)) + 1e-9
    return {"value": (up - down) / (2 * h), "step": h, "right": right, "left": left, "kink": bool(kink)}
