"""The network as a chain of steps on flat vectors: affine maps and nonlinear steps (steps/).

Bounds, Z3 encodings and gradient attacks all work on this form. Each affine step holds the weights
exactly as the ONNX file stores them (float32 values are exact in float64); where forming a step
needs arithmetic that may round (a division by 3, a batch-norm square root), the step records a
relative error bound that bounds and encodings must add, so a SAFE verdict holds for the network
as stored. Consecutive steps are merged only where the merge is exact (shape operators are
selections of coordinates).
"""
from __future__ import annotations

import weakref

import numpy as np
from scipy import sparse

from .errors import UnsupportedOperatorError
from .network import Layer, Network
from .rounding import UNIT_ROUNDOFF
from .steps import STEP_KINDS, Affine, Step, window_groups

SELECTION_OPS = {"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Identity", "Dropout", "Pad"}
ELEMENTWISE_OPS = {"Add", "Sub", "Mul", "Div", "BatchNormalization"}
AFFINE_OPS = SELECTION_OPS | ELEMENTWISE_OPS | {"Gemm", "MatMul", "Conv", "AveragePool"}
# Input positions that hold an additive constant: zeroed to get the linear part alone, exactly.
OFFSET_INPUTS = {"Gemm": (2,), "Conv": (2,), "Add": (0, 1), "Sub": (0, 1)}


class Chain:
    """A network as a sequence of steps; `boundaries[name]` is the step after which layer `name` is."""

    def __init__(self, network: Network, steps: list[Step], final_softmax: bool) -> None:
        self.network = network
        self.steps = steps
        self.final_softmax = final_softmax   # dropped: the chain computes the logits before it
        self.n_inputs = network.n_inputs
        self.n_outputs = network.n_outputs
        self.boundaries = {step.layers[-1]: k + 1 for k, step in enumerate(steps) if step.layers}

    def prefix(self, stop: int) -> "Chain":
        """Steps 0..stop-1: the map from the input to the values at boundary `stop` (a hidden layer),
        to encode or bound that layer alone."""
        part = Chain(self.network, self.steps[:stop], False)
        part.n_outputs = self.steps[stop - 1].size if stop else self.n_inputs
        return part

    @property
    def splittable(self) -> bool:
        """Whether some step has a phase to split on (a kink)."""
        return any(step.splittable for step in self.steps)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, n_inputs) -> (B, n_outputs), in float64."""
        for step in self.steps:
            x = step.forward(x)
        return x

    def forward_all(self, x: np.ndarray) -> list[np.ndarray]:
        values = [x]
        for step in self.steps:
            values.append(step.forward(values[-1]))
        return values


_CHAINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def chain_of(network: Network) -> Chain:
    """The network's chain, compiled once: searches and lifting use one network many times."""
    if network not in _CHAINS:
        _CHAINS[network] = to_chain(network)
    return _CHAINS[network]


def to_chain(network: Network) -> Chain:
    """Compile a network into its chain of steps, or say which layer prevents it."""
    if network.problems:
        raise network.problems[0]
    steps: list[Step] = []
    previous = network.input_name
    final_softmax = False
    for layer in network.order:
        sources = [s for s in layer.sources if s is not None]
        if sources != [previous]:
            raise UnsupportedOperatorError(
                "verification needs a chain of layers, each reading only the previous one's output",
                file=network.path, node=layer.name)
        shape_in = network.input_shape if previous == network.input_name else network.layers[previous].shape
        if layer.op_type in AFFINE_OPS:
            _append(steps, _affine(network, layer, shape_in))
        elif layer.op_type in STEP_KINDS:
            steps.append(STEP_KINDS[layer.op_type].from_layer(layer, shape_in, network.path))
        elif layer.op_type == "Softmax" and layer.name == network.output_name:
            final_softmax = True
        else:
            raise UnsupportedOperatorError(f"{layer.op_type} cannot be verified", file=network.path, node=layer.name)
        previous = layer.name
    return Chain(network, steps, final_softmax)


def _run_alone(network: Network, layer: Layer, x: np.ndarray, zero_positions: tuple[int, ...] = ()) -> np.ndarray:
    """The layer's operator on a batch x, in float64, optionally with some constants zeroed."""
    args = list(layer.constant_args(np.dtype(np.float64)))
    for position in zero_positions:
        if position < len(args) and args[position] is not None:
            args[position] = np.zeros_like(args[position])
    data = layer.sources.index(next(s for s in layer.sources if s is not None))

    def run(batch: np.ndarray) -> np.ndarray:
        args[data] = batch
        return np.asarray(layer.operator.execute(args), dtype=np.float64)

    if network.batchable:
        return run(x).reshape(x.shape[0], -1)
    one = (lambda v: v[None]) if network.native_batch else (lambda v: v)
    return np.stack([run(one(v)).reshape(-1) for v in x])


def _affine(network: Network, layer: Layer, shape_in: tuple[int, ...]) -> Affine:
    """The exact W and b of one affine layer."""
    n_in, n_out = int(np.prod(shape_in)), int(np.prod(layer.shape))
    zero = np.zeros((1,) + tuple(shape_in))
    b = _run_alone(network, layer, zero)[0].copy()
    if layer.op_type in SELECTION_OPS:
        W = _selection_matrix(network, layer, shape_in)
    elif layer.op_type in ELEMENTWISE_OPS:
        W = _elementwise_matrix(network, layer, shape_in)
    elif layer.op_type == "AveragePool":
        groups = window_groups(layer, shape_in)
        divisors = layer.operator.divisors(shape_in[1:]).reshape(-1)            # per (out position)
        weights = np.broadcast_to(1.0 / np.tile(divisors, shape_in[0])[:, None], groups.shape)
        W = _rows_to_matrix(groups, weights, n_in)
    elif layer.op_type == "Conv":
        W = _conv_matrix(layer, shape_in)
    else:   # Gemm, MatMul: dense, from the unit vectors with the bias zeroed
        W = _run_alone(network, layer, np.eye(n_in).reshape((n_in,) + tuple(shape_in)),
                       OFFSET_INPUTS.get(layer.op_type, ())).T.copy()
    assert W.shape == (n_out, n_in)
    return Affine(W, b, _rounding_of(layer, W), [layer.name])


def _is_power_of_two(values: np.ndarray) -> bool:
    values = np.abs(values[values != 0])
    mantissa, _ = np.frexp(values)
    return bool(np.all(mantissa == 0.5))


def _rounding_of(layer: Layer, W: np.ndarray) -> float:
    """A bound on the relative rounding in forming W and b (0 where the step is exact)."""
    op = layer.operator
    if layer.op_type == "BatchNormalization":
        return 8 * UNIT_ROUNDOFF
    if layer.op_type == "Div":
        return 0.0 if _is_power_of_two(layer.constants[1]) else UNIT_ROUNDOFF
    if layer.op_type == "AveragePool":
        return 0.0 if _is_power_of_two(W.data if sparse.issparse(W) else W) else UNIT_ROUNDOFF
    if layer.op_type == "Gemm":
        return 0.0 if _is_power_of_two(np.array([op.alpha, op.beta])) else 2 * UNIT_ROUNDOFF
    return 0.0


def _append(steps: list[Step], step: Affine) -> None:
    """Append an affine step, merging with the previous one when the product is exact."""
    last = steps[-1] if steps else None
    if last is not None and last.linear:
        if last.is_selection and not np.any(last.b):
            steps[-1] = Affine(step.W @ last.W, step.b, step.rel_error, last.layers + step.layers)
            return
        if step.is_selection and (not np.any(last.b) or not np.any(step.b)):
            steps[-1] = Affine(step.W @ last.W, step.W @ last.b + step.b, last.rel_error, last.layers + step.layers)
            return
    steps.append(step)


def _rows_to_matrix(columns: np.ndarray, values: np.ndarray, n_in: int) -> sparse.csr_matrix:
    """A sparse matrix whose row i has values[i, k] at columns[i, k] (entries at -1 dropped)."""
    rows = np.broadcast_to(np.arange(columns.shape[0])[:, None], columns.shape)
    keep = columns >= 0
    return sparse.csr_matrix((np.asarray(values)[keep], (rows[keep], columns[keep])),
                             shape=(columns.shape[0], n_in))


def _selection_matrix(network: Network, layer: Layer, shape_in: tuple[int, ...]) -> sparse.csr_matrix:
    """Shape operators and pads copy coordinates: find which, by running the layer on 1..n and on
    2..2n (a copied coordinate doubles, a constant does not)."""
    index = np.arange(1, int(np.prod(shape_in)) + 1, dtype=np.float64).reshape((1,) + tuple(shape_in))
    once, twice = _run_alone(network, layer, index)[0], _run_alone(network, layer, 2 * index)[0]
    copied = twice != once
    columns = np.where(copied, once - 1, -1).astype(np.int64)[:, None]
    return _rows_to_matrix(columns, np.ones_like(columns, dtype=np.float64), index.size)


def _elementwise_matrix(network: Network, layer: Layer, shape_in: tuple[int, ...]) -> sparse.csr_matrix:
    """Element-wise affine operators: each output scales one (broadcast) input coordinate."""
    n_in = int(np.prod(shape_in))
    source = np.broadcast_to(np.arange(n_in).reshape((1,) + tuple(shape_in)), (1,) + tuple(layer.shape))
    if layer.op_type == "BatchNormalization":
        scale, _ = layer.operator.scale_and_shift(np.dtype(np.float64))
        per_output = np.broadcast_to(scale.reshape((1, -1) + (1,) * (len(shape_in) - 1)), (1,) + tuple(layer.shape))
    else:
        ones = np.ones((1,) + tuple(shape_in))
        per_output = _run_alone(network, layer, ones, OFFSET_INPUTS.get(layer.op_type, ()))
    return _rows_to_matrix(source.reshape(-1, 1), np.asarray(per_output).reshape(-1, 1), n_in)


def _conv_matrix(layer: Layer, shape_in: tuple[int, ...]) -> sparse.csr_matrix:
    """The convolution as a sparse matrix, from the window of input indices of every output."""
    w = layer.constants[1].astype(np.float64)                        # (M, C/g, *k)
    groups = layer.operator.groups
    index = np.arange(int(np.prod(shape_in)), dtype=np.float64).reshape((1,) + tuple(shape_in))
    patches = layer.operator.window.patches(index, -1.0)[0]           # (C, *out, *k)
    spatial = len(shape_in) - 1
    out_size = int(np.prod(patches.shape[1:1 + spatial]))
    per_in, per_out = w.shape[1], w.shape[0] // groups
    blocks = []
    for m in range(w.shape[0]):
        g = m // per_out
        cols = np.moveaxis(patches[g * per_in:(g + 1) * per_in], 0, spatial)   # (*out, C/g, *k)
        cols = cols.reshape(out_size, -1).astype(np.int64)
        vals = np.broadcast_to(w[m].reshape(1, -1), cols.shape)
        blocks.append(_rows_to_matrix(cols, vals, index.size))
    return sparse.vstack(blocks, format="csr")
