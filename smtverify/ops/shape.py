"""Operators that move values without computing: reshapes, transposes, padding, concatenation."""
from __future__ import annotations

import numpy as np

from .base import NodeSpec, Operator, register


def _axes_from(spec: NodeSpec, position: int) -> list[int] | None:
    """Axes given as an attribute (old opsets) or as a constant input (opset 13 on)."""
    if "axes" in spec.attrs:
        return [int(a) for a in spec.attrs["axes"]]
    if position < len(spec.inputs) and spec.inputs[position]:
        return [int(a) for a in spec.constant(position, "axes").reshape(-1)]
    return None


@register
class Identity(Operator):
    op_type = "Identity"

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return args[0]


@register
class Dropout(Operator):
    """Dropout at inference: the identity."""

    op_type = "Dropout"
    dynamic_positions = None

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if spec.n_outputs_used > 1:
            raise spec.fail("the mask output is not supported")
        if len(spec.inputs) > 2 and spec.inputs[2]:
            training = spec.constant(2, "training_mode")
            if bool(np.asarray(training).reshape(-1)[0]):
                raise spec.fail("training_mode=true is not inference")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return args[0]


@register
class Flatten(Operator):
    op_type = "Flatten"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.axis = int(spec.attrs.get("axis", 1))

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        axis = self.axis % x.ndim if self.axis < 0 else self.axis
        return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


@register
class Reshape(Operator):
    """Reshape. With a batch of inputs, the batch axis is kept and the rest takes the shape the
    network gives one input (`sample_shape`, set at import), so a hard-coded leading 1 still works."""

    op_type = "Reshape"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if "shape" in spec.attrs:
            self.target = [int(s) for s in spec.attrs["shape"]]
        else:
            self.target = [int(s) for s in spec.constant(1, "the target shape").reshape(-1)]
        self.allow_zero = bool(spec.attrs.get("allowzero", 0))
        self.sample_shape: tuple[int, ...] | None = None

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        if self.sample_shape is not None:
            return x.reshape((x.shape[0],) + self.sample_shape)
        target = [x.shape[i] if (s == 0 and not self.allow_zero) else s for i, s in enumerate(self.target)]
        return x.reshape(target)


@register
class Transpose(Operator):
    op_type = "Transpose"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        perm = spec.attrs.get("perm")
        self.perm = None if perm is None else [int(p) for p in perm]

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return np.transpose(args[0], self.perm)


@register
class Squeeze(Operator):
    op_type = "Squeeze"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.axes = _axes_from(spec, 1)

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        if self.axes is None:
            first = 0 if self.spec.constants else 1     # never squeeze the batch axis of data
            return np.squeeze(x, axis=tuple(i for i in range(first, x.ndim) if x.shape[i] == 1))
        return np.squeeze(x, axis=tuple(self.axes))


@register
class Unsqueeze(Operator):
    op_type = "Unsqueeze"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.axes = _axes_from(spec, 1)
        if self.axes is None:
            raise spec.fail("axes are required")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        rank = x.ndim + len(self.axes)
        return np.expand_dims(x, tuple(sorted(a % rank for a in self.axes)))


@register
class Concat(Operator):
    op_type = "Concat"
    dynamic_positions = None

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if "axis" not in spec.attrs:
            raise spec.fail("attribute axis is required")
        self.axis = int(spec.attrs["axis"])

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        rank = args[0].ndim
        if len(self.spec.constants) == len(args):      # constant folding: plain ONNX semantics
            return np.concatenate(args, axis=self.axis % rank)
        batch = max(a.shape[0] for a in args)
        # A constant operand holds one input's worth: repeat it along the batch.
        parts = [np.broadcast_to(a, (batch,) + a.shape[1:]) if i in self.spec.constants else a
                 for i, a in enumerate(args)]
        return np.concatenate(parts, axis=self.axis % rank)


@register
class Pad(Operator):
    op_type = "Pad"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.mode = spec.text("mode", "constant")
        if self.mode not in ("constant", "reflect", "edge"):
            raise spec.fail(f"mode '{self.mode}' is not supported")
        if "pads" in spec.attrs:
            pads = [int(p) for p in spec.attrs["pads"]]
            self.value = float(spec.attrs.get("value", 0.0))
            axes = None
        else:
            pads = [int(p) for p in spec.constant(1, "pads").reshape(-1)]
            has_value = len(spec.inputs) > 2 and spec.inputs[2]
            self.value = float(spec.constant(2, "constant_value").reshape(-1)[0]) if has_value else 0.0
            axes = _axes_from(spec, 3)
        if min(pads, default=0) < 0:
            raise spec.fail("negative pads (cropping) are not supported")
        self.pads, self.axes = pads, axes

    def _widths(self, rank: int) -> list[tuple[int, int]]:
        axes = list(range(rank)) if self.axes is None else [a % rank for a in self.axes]
        widths = [(0, 0)] * rank
        for i, axis in enumerate(axes):
            widths[axis] = (self.pads[i], self.pads[i + len(axes)])
        return widths

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        widths = self._widths(x.ndim)
        if widths[0] != (0, 0):
            raise self.spec.fail("padding the batch axis is not supported")
        if self.mode == "constant":
            return np.pad(x, widths, mode="constant", constant_values=self.value)
        return np.pad(x, widths, mode=self.mode)
