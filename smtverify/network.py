"""The network model: a DAG of operators read from ONNX, and its exact concrete execution.

Layers are named after the ONNX node outputs. Every tensor the executor handles carries a leading
batch axis, so thousands of inputs run in one call; shapes reported per layer exclude that axis.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from .errors import InputShapeError, SmtVerifyError
from .ops import Operator


@dataclass
class Layer:
    """One operator application; its output is the tensor named `name`."""

    name: str
    op_type: str
    node: str                                   # the ONNX node's own name (may be empty)
    operator: Operator | None                   # None when the operator is unsupported
    sources: tuple[str | None, ...]             # per input: producing tensor, or None for a constant
    constants: dict[int, np.ndarray]
    shape: tuple[int, ...] | None = None        # per-input output shape (no batch axis)
    _cast: dict[np.dtype, list[np.ndarray | None]] = field(default_factory=dict, repr=False)

    def constant_args(self, dtype: np.dtype) -> list[np.ndarray | None]:
        """The constant operands in the execution dtype (integer ones unchanged), cached."""
        if dtype not in self._cast:
            self._cast[dtype] = [
                None if i not in self.constants else
                self.constants[i].astype(dtype) if np.issubdtype(self.constants[i].dtype, np.floating)
                else self.constants[i]
                for i in range(len(self.sources))]
        return self._cast[dtype]


class Network:
    """A feed-forward network with one input tensor and one output tensor."""

    def __init__(self, path: str, input_name: str, input_shape: tuple[int, ...], native_batch: bool,
                 layers: list[Layer], output_name: str, opset: int,
                 problems: list[SmtVerifyError] | None = None) -> None:
        self.path = path
        self.input_name = input_name
        self.input_shape = input_shape          # one input, no batch axis
        self.native_batch = native_batch        # the ONNX input has its own leading batch axis
        self.output_name = output_name
        self.opset = opset
        self.problems = problems or []          # unsupported operators (non-strict import only)
        self.layers = {layer.name: layer for layer in layers}
        self.graph = self._build_graph(layers)
        self.order = [self.layers[n] for n in nx.topological_sort(self.graph) if n in self.layers]
        self.batchable = True
        self._last_use = self._compute_last_use()

    # ----- structure -------------------------------------------------------------------------
    def _build_graph(self, layers: list[Layer]) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_node(self.input_name)
        for layer in layers:
            graph.add_node(layer.name, op_type=layer.op_type)
            for source in layer.sources:
                if source is not None:
                    graph.add_edge(source, layer.name)
        return graph

    def _compute_last_use(self) -> dict[str, int]:
        last = {}
        for index, layer in enumerate(self.order):
            for source in layer.sources:
                if source is not None:
                    last[source] = index
        return last

    @property
    def supported(self) -> bool:
        return not self.problems

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[self.output_name].shape or ()

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape, dtype=np.int64))

    @property
    def n_outputs(self) -> int:
        return int(np.prod(self.output_shape, dtype=np.int64))

    def onnx_shape(self, shape: tuple[int, ...] | None, batch: str = "N") -> list[int | str]:
        """A layer shape as ONNX shows it, with the batch axis named where the model has one."""
        if shape is None:
            return ["?"]
        return ([batch] if self.native_batch else []) + list(shape)

    # ----- execution -------------------------------------------------------------------------
    def as_batch(self, x: np.ndarray, what: str = "input") -> np.ndarray:
        """x as a batch (B, *input_shape): a single input may come with or without a batch axis."""
        x = np.asarray(x)
        if x.shape == self.input_shape:
            return x[None]
        if x.shape[1:] == self.input_shape:
            return x
        raise InputShapeError(
            f"{what} has shape {list(x.shape)}; the network expects {list(self.input_shape)} "
            f"or a batch {['B'] + list(self.input_shape)}", file=self.path)

    def run(self, x: np.ndarray, dtype: type = np.float32, keep: str = "all") -> dict[str, np.ndarray]:
        """Activations of every layer (keep='all') or only the output (keep='output'), batched."""
        if self.problems:
            raise self.problems[0]
        batch = self.as_batch(x).astype(dtype, copy=False)
        if not self.batchable:
            return self._run_one_by_one(batch, dtype, keep)
        return self._run_batch(batch, np.dtype(dtype), keep)

    def _run_batch(self, batch: np.ndarray, dtype: np.dtype, keep: str) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {self.input_name: batch}
        for index, layer in enumerate(self.order):
            args = [values[s] if s is not None else c for s, c in zip(layer.sources, layer.constant_args(dtype))]
            values[layer.name] = np.asarray(layer.operator.execute(args), dtype=dtype)
            if keep == "output":
                for source in set(layer.sources):
                    if source is not None and self._last_use.get(source) == index and source != self.output_name:
                        del values[source]
        return values

    def _run_one_by_one(self, batch: np.ndarray, dtype: type, keep: str) -> dict[str, np.ndarray]:
        """Fallback for networks whose operators would mix inputs of a batch: one input per call."""
        runs = [self._run_batch(x[None] if self.native_batch else x, np.dtype(dtype), keep) for x in batch]
        join = np.concatenate if self.native_batch else np.stack
        return {name: join([r[name] for r in runs]) for name in runs[0]}

    def logits(self, x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """The output of a batch, flattened per input: (B, n_outputs)."""
        out = self.run(x, dtype, keep="output")[self.output_name]
        return out.reshape(out.shape[0], -1)

    def classify(self, x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        return np.argmax(self.logits(x, dtype), axis=1)

    def __repr__(self) -> str:
        return f"Network({Path(self.path).name}, {len(self.order)} layers, input {list(self.input_shape)})"
