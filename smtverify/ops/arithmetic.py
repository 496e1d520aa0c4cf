"""Affine operators: Gemm, MatMul, and element-wise Add/Sub/Mul/Div with constants."""
from __future__ import annotations

import numpy as np

from .base import NodeSpec, Operator, register


@register
class Gemm(Operator):
    op_type = "Gemm"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.alpha = float(spec.attrs.get("alpha", 1.0))
        self.beta = float(spec.attrs.get("beta", 1.0))
        self.trans_a = bool(spec.attrs.get("transA", 0))
        self.trans_b = bool(spec.attrs.get("transB", 0))
        spec.constant(1, "the weight matrix B")
        if self.trans_a:
            raise spec.fail("transA=1 would mix the batch axis into the product")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        a, b = args[0], args[1]
        y = a @ (b.T if self.trans_b else b)
        if self.alpha != 1.0:
            y = y * y.dtype.type(self.alpha)
        if len(args) > 2 and args[2] is not None:
            c = args[2]
            y = y + (c if self.beta == 1.0 else c * c.dtype.type(self.beta))
        return y


@register
class MatMul(Operator):
    """Matrix product of the network tensor with a constant matrix, on either side."""

    op_type = "MatMul"
    dynamic_positions = None

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        if not spec.constants:
            raise spec.fail("product of two network tensors is not piecewise-linear")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return np.matmul(args[0], args[1])


class _Elementwise(Operator):
    """Binary element-wise operator with numpy broadcasting."""

    dynamic_positions = None

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        dynamic = [i for i in range(len(spec.inputs)) if i not in spec.constants]
        self._check_operands(spec, dynamic)

    def _check_operands(self, spec: NodeSpec, dynamic: list[int]) -> None:
        """Add and Sub may combine two network tensors; Mul and Div only scale by a constant."""


@register
class Add(_Elementwise):
    op_type = "Add"

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return args[0] + args[1]


@register
class Sub(_Elementwise):
    op_type = "Sub"

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return args[0] - args[1]


@register
class Mul(_Elementwise):
    op_type = "Mul"

    def _check_operands(self, spec: NodeSpec, dynamic: list[int]) -> None:
        if len(dynamic) > 1:
            raise spec.fail("product of two network tensors is not piecewise-linear")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return args[0] * args[1]


@register
class Div(_Elementwise):
    op_type = "Div"

    def _check_operands(self, spec: NodeSpec, dynamic: list[int]) -> None:
        if dynamic != [0]:
            raise spec.fail("only division of a network tensor by a constant is supported")
        if np.any(spec.constants[1] == 0):
            raise spec.fail("division by a constant that contains zero")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        return args[0] / args[1]
