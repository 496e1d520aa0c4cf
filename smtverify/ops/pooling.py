"""Max and average pooling (ONNX padding, ceil mode, count_include_pad)."""
from __future__ import annotations

import numpy as np

from .base import NodeSpec, Operator, register
from .windows import Window


class _Pool(Operator):
    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if spec.n_outputs_used > 1:
            raise spec.fail("the Indices output is not supported")
        if "kernel_shape" not in spec.attrs:
            raise spec.fail("attribute kernel_shape is required")
        self.window = Window.from_spec(spec, tuple(spec.attrs["kernel_shape"]))

    def _reduce_axes(self, x: np.ndarray) -> tuple[int, ...]:
        spatial = x.ndim - 2
        return tuple(range(2 + spatial, 2 + 2 * spatial))


@register
class MaxPool(_Pool):
    op_type = "MaxPool"

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        return self.window.patches(x, -np.inf).max(axis=self._reduce_axes(x))


@register
class AveragePool(_Pool):
    op_type = "AveragePool"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if any(d != 1 for d in self.window.dilations):
            raise spec.fail("dilations are not supported for AveragePool")
        self.count_include_pad = bool(spec.attrs.get("count_include_pad", 0))

    def divisors(self, spatial: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        """Cells each window averages over, shape (1, 1, *out): real cells, plus the explicit pads
        if count_include_pad; the cells a ceil-mode window reaches past the padding never count."""
        ones = np.ones((1, 1) + tuple(spatial), dtype=dtype)
        counted = self.window.patches(ones, float(self.count_include_pad), 0.0)
        return counted.sum(axis=self._reduce_axes(ones))

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        total = self.window.patches(x, 0.0).sum(axis=self._reduce_axes(x))
        return (total / self.divisors(x.shape[2:], x.dtype)).astype(x.dtype, copy=False)
