"""My own layers, checked against PyTorch with `scratchcnn checklayer` and used in a network spec.

The walk-through that builds this file is docs/write-your-own-layer.md.

    scratchcnn checklayer examples/my_layers.py:MyLeakyReLU --torch LeakyReLU --args '{"negative_slope": 0.1}'
"""
import numpy as np

from scratchcnn.layer_base import Layer


class MyLeakyReLU(Layer):
    """Leaky ReLU, elementwise on an input of any shape:

        out   = x                    where x > 0
              = negative_slope * x   elsewhere

        dL/dx = dout                     where x > 0
              = negative_slope * dout    elsewhere (at x = 0 too, as torch does)

    It has no parameters. torch_kind names the torch.nn class computing the same thing,
    so that `checklayer`, `train --check-layers` and the torch backend have a twin.
    """
    torch_kind = "LeakyReLU"
    GRADCHECK_INPUT = "away_from_zero"   # the kink is at 0: check with inputs at least 0.1 away from it

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        self.x = x                                        # what backward needs
        return np.where(x > 0, x, self.negative_slope * x)

    def backward(self, dout):
        return np.where(self.x > 0, dout, self.negative_slope * dout)
