"""Element-wise activations and the final Softmax."""
from __future__ import annotations

import numpy as np

from .base import NodeSpec, Operator, register


@register
class Relu(Operator):
    op_type = "Relu"

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return np.maximum(args[0], 0)


@register
class LeakyRelu(Operator):
    """x for x >= 0, alpha * x below (opsets 6 and 16; opset 1's consumed_inputs is ignored)."""

    op_type = "LeakyRelu"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.alpha = float(spec.attrs.get("alpha", np.float32(0.01)))   # the float32 attribute's default
        if not np.isfinite(self.alpha):
            raise spec.fail(f"alpha must be finite, not {self.alpha}")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        return np.where(x >= 0, x, x * x.dtype.type(self.alpha))


@register
class Sigmoid(Operator):
    op_type = "Sigmoid"

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        # exp of a negative magnitude never overflows: the two branches are each stable.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


@register
class Tanh(Operator):
    op_type = "Tanh"

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return np.tanh(args[0])


@register
class Softmax(Operator):
    """Softmax; accepted only as the network's last node (it never changes the class)."""

    op_type = "Softmax"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if not spec.extra.get("is_output", False):
            raise spec.fail("Softmax is supported only as the last node of the network")
        self.legacy = spec.opset < 13   # before opset 13 Softmax works on the input coerced to 2-D
        self.axis = int(spec.attrs.get("axis", 1 if self.legacy else -1))

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        if self.legacy:
            axis = self.axis % x.ndim
            flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
            return _softmax(flat, 1).reshape(x.shape)
        return _softmax(x, self.axis)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
