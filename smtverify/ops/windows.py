"""Sliding-window geometry shared by Conv and the pooling operators (ONNX padding rules)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import NodeSpec


@dataclass(frozen=True)
class Window:
    """Kernel, strides, dilations and padding of a sliding-window operator over the spatial axes."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    auto_pad: str
    pads: tuple[int, ...]          # ONNX layout: all begins, then all ends
    ceil_mode: bool = False

    @classmethod
    def from_spec(cls, spec: NodeSpec, kernel: tuple[int, ...]) -> "Window":
        rank = len(kernel)
        if rank == 0:
            raise spec.fail("the kernel has no spatial axes (W or kernel_shape has fewer than 3 dims)")
        window = cls(
            kernel=tuple(int(k) for k in kernel),
            strides=tuple(int(s) for s in spec.attrs.get("strides", [1] * rank)),
            dilations=tuple(int(d) for d in spec.attrs.get("dilations", [1] * rank)),
            auto_pad=spec.text("auto_pad", "NOTSET"),
            pads=tuple(int(p) for p in spec.attrs.get("pads", [0] * (2 * rank))),
            ceil_mode=bool(spec.attrs.get("ceil_mode", 0)),
        )
        if not (len(window.strides) == len(window.dilations) == rank and len(window.pads) == 2 * rank):
            raise spec.fail("strides, dilations and pads must match the kernel's rank")
        if min(window.pads, default=0) < 0 or min(window.strides + window.dilations) < 1:
            raise spec.fail("negative pads or non-positive strides/dilations")
        if window.auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise spec.fail(f"auto_pad '{window.auto_pad}' is not an ONNX value")
        return window

    def extent(self, axis: int) -> int:
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def geometry(self, spatial: tuple[int, ...]) -> tuple[list[int], list[int], list[int]]:
        """(pad_begin, pad_end, output_size) per spatial axis for an input of this spatial size."""
        begins, ends, sizes = [], [], []
        for axis, size in enumerate(spatial):
            extent, stride = self.extent(axis), self.strides[axis]
            if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                out = math.ceil(size / stride)
                total = max((out - 1) * stride + extent - size, 0)
                small = total // 2
                begin = small if self.auto_pad == "SAME_UPPER" else total - small
                end = total - begin
            elif self.auto_pad == "VALID":
                begin = end = 0
                out = (size - extent) // stride + 1
            else:
                begin, end = self.pads[axis], self.pads[axis + len(spatial)]
                span = size + begin + end - extent
                out = (math.ceil(span / stride) if self.ceil_mode else span // stride) + 1
                if self.ceil_mode and (out - 1) * stride >= size + begin:
                    out -= 1       # a last window starting inside the end padding is dropped
            begins.append(begin)
            ends.append(end)
            sizes.append(out)
        return begins, ends, sizes

    def patches(self, x: np.ndarray, fill: float, overhang_fill: float | None = None) -> np.ndarray:
        """All windows of x (batch, channels, *spatial): shape (batch, channels, *out, *kernel).

        Explicit padding holds `fill`; the cells a ceil-mode window reaches past the padding hold
        `overhang_fill` (default `fill`), so average pooling can count them differently.
        """
        spatial = x.shape[2:]
        begins, ends, sizes = self.geometry(spatial)
        # Extra end padding so that the last (ceil-mode) window is complete; it holds `fill`.
        extra = [max((o - 1) * s + self.extent(a) - (n + b + e), 0)
                 for a, (o, s, n, b, e) in enumerate(zip(sizes, self.strides, spatial, begins, ends))]
        if any(begins) or any(ends):
            x = np.pad(x, [(0, 0), (0, 0)] + list(zip(begins, ends)), constant_values=fill)
        if any(extra):
            x = np.pad(x, [(0, 0), (0, 0)] + [(0, e) for e in extra],
                       constant_values=fill if overhang_fill is None else overhang_fill)
        extents = tuple(self.extent(a) for a in range(len(spatial)))
        axes = tuple(range(2, 2 + len(spatial)))
        view = np.lib.stride_tricks.sliding_window_view(x, extents, axis=axes)
        out_slices = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(sizes, self.strides))
        kernel_slices = tuple(slice(None, None, d) for d in self.dilations)
        return view[(slice(None), slice(None)) + out_slices + kernel_slices]
