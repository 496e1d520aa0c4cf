"""Batch normalisation in inference mode: a per-channel affine map."""
from __future__ import annotations

import numpy as np

from .base import NodeSpec, Operator, register


@register
class BatchNormalization(Operator):
    op_type = "BatchNormalization"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if spec.n_outputs_used > 1 or int(spec.attrs.get("training_mode", 0)):
            raise spec.fail("training mode (running statistics outputs) is not supported")
        for position, what in enumerate(("scale", "B", "mean", "var"), start=1):
            spec.constant(position, what)
        self.epsilon = float(spec.attrs.get("epsilon", 1e-5))

    def scale_and_shift(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The equivalent y = a * x + b per channel, computed in float64 then cast."""
        scale, bias, mean, var = (self.spec.constants[i].astype(np.float64) for i in range(1, 5))
        a = scale / np.sqrt(var + self.epsilon)
        return a.astype(dtype), (bias - a * mean).astype(dtype)

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        scale, bias, mean, var = args[1:5]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        eps = x.dtype.type(self.epsilon)
        # The same formula, in the same order, as the ONNX definition.
        return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape)
                + bias.reshape(shape))
