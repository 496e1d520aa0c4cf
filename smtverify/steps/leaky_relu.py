"""LeakyRelu: the kink (relu.py) with slope alpha below 0."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedOperatorError
from .relu import Kink


@dataclass
class LeakyRelu(Kink):
    """ONNX LeakyRelu (opsets 6 and 16): x for x >= 0, alpha * x below, alpha exactly as stored."""

    @classmethod
    def from_layer(cls, layer, shape_in: tuple[int, ...], file: str) -> "LeakyRelu":
        """The step of one LeakyRelu layer. The kink's relaxations need a convex, non-decreasing
        function: alpha in [0, 1]."""
        alpha = layer.operator.alpha
        if not 0.0 <= alpha <= 1.0:
            raise UnsupportedOperatorError(f"LeakyRelu with alpha {alpha:g} cannot be verified (alpha must lie "
                                           "in [0, 1])", file=file, node=layer.name)
        return cls(int(np.prod(layer.shape)), [layer.name], alpha)
