"""Convolution (any number of spatial axes, strides, pads, dilations, groups)."""
from __future__ import annotations

import numpy as np

from .base import NodeSpec, Operator, register
from .windows import Window


@register
class Conv(Operator):
    op_type = "Conv"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        weight = spec.constant(1, "the kernel W")
        self.groups = int(spec.attrs.get("group", 1))
        kernel = tuple(spec.attrs.get("kernel_shape", weight.shape[2:]))
        if tuple(kernel) != tuple(weight.shape[2:]):
            raise spec.fail(f"kernel_shape {list(kernel)} does not match W's shape {list(weight.shape)}")
        if self.groups < 1:
            raise spec.fail(f"group={self.groups}: it must be a positive number of channel groups")
        if weight.shape[0] % self.groups:
            raise spec.fail(f"{weight.shape[0]} output channels are not divisible by group={self.groups}")
        self.window = Window.from_spec(spec, kernel)

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x, w = args[0], args[1]
        if x.shape[1] != w.shape[1] * self.groups:
            raise self.spec.fail(f"input has {x.shape[1]} channels, W expects {w.shape[1] * self.groups}")
        patches = self.window.patches(x, 0.0)                  # (B, C, *out, *k)
        spatial = x.ndim - 2
        batch, out_size = x.shape[0], patches.shape[2:2 + spatial]
        per_group_in, per_group_out = w.shape[1], w.shape[0] // self.groups
        outputs = []
        for g in range(self.groups):
            p = patches[:, g * per_group_in:(g + 1) * per_group_in]
            wg = w[g * per_group_out:(g + 1) * per_group_out]
            # Move channels next to the kernel axes so one tensordot contracts (channel, kernel).
            p = np.moveaxis(p, 1, 1 + spatial)                 # (B, *out, C_g, *k)
            y = np.tensordot(p, wg, axes=(list(range(1 + spatial, p.ndim)), list(range(1, wg.ndim))))
            outputs.append(np.moveaxis(y, -1, 1))              # (B, M_g, *out)
        y = outputs[0] if self.groups == 1 else np.concatenate(outputs, axis=1)
        if len(args) > 2 and args[2] is not None:
            y = y + args[2].reshape((1, -1) + (1,) * spatial)
        return y.reshape((batch, w.shape[0]) + tuple(out_size))
