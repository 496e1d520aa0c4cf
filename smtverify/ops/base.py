"""The operator interface: one class per ONNX operator.

An operator is built once from its ONNX node (attributes, constant operands, opset) and validated
then, so that an unsupported form is reported at import, before any solving starts. `execute` runs
it on numpy arrays with exact ONNX semantics. Dynamic tensors always carry a leading batch axis;
operators whose semantics depend on the batch (Reshape) say how to treat it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import UnsupportedOperatorError

REGISTRY: dict[str, type["Operator"]] = {}


@dataclass
class NodeSpec:
    """What an operator needs to know about its ONNX node."""

    name: str                                   # the node's output name: the layer name
    node: str                                   # the node as errors name it: its own name, else its output's
    op_type: str
    attrs: dict[str, Any]
    inputs: list[str]                           # ONNX input names ('' for an omitted optional input)
    constants: dict[int, np.ndarray]            # input position -> constant value, for constant inputs
    opset: int
    file: str = ""
    n_outputs_used: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, what: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(f"{self.op_type}: {what}", file=self.file, node=self.node)

    def text(self, name: str, default: str) -> str:
        """A string attribute as text. ONNX keeps them as bytes, which a corrupted file can leave
        undecodable."""
        value = self.attrs.get(name, default)
        if not isinstance(value, bytes):
            return str(value)
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise self.fail(f"attribute {name} is not valid UTF-8") from None

    def constant(self, position: int, what: str) -> np.ndarray:
        """The constant at an input position that must not depend on the network input."""
        if position not in self.constants:
            raise self.fail(f"{what} (input {position}) must be a constant")
        return self.constants[position]


def register(cls: type["Operator"]) -> type["Operator"]:
    REGISTRY[cls.op_type] = cls
    return cls


class Operator:
    """Base class. Subclasses set `op_type` and implement `execute`."""

    op_type: ClassVar[str] = ""
    # Positions of inputs that are network data (the others must be constants).
    dynamic_positions: ClassVar[tuple[int, ...] | None] = (0,)

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.name = spec.name
        if self.dynamic_positions is not None:
            for position, input_name in enumerate(spec.inputs):
                if input_name and position not in self.dynamic_positions and position not in spec.constants:
                    raise spec.fail(f"input {position} ('{input_name}') must be a constant")

    def execute(self, args: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError  # every registered subclass implements it

    def __repr__(self) -> str:
        return f"{self.op_type}({self.name})"


def supported_operators() -> list[str]:
    return sorted(REGISTRY) + ["Constant"]
