"""Small random networks for property tests of the engine, one template per step kind.

Each network is written as an ONNX file and also kept as an independent float64 reference: a list
of stages on flat vectors (affine maps, element-wise activations, max-pooling windows) computed
here with numpy, sharing no code with smtverify, and checked against onnxruntime when built. The
exact methods of tests/oracles.py work on that reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
from onnx import helper

from smtverify.vnnlib import Case, InputBox, OutputConstraint, Property
from tests.conftest import make_model, save

PIECEWISE_LINEAR = ("gemm", "conv", "batchnorm", "averagepool", "pad", "maxpool", "leakyrelu")
SMOOTH = ("sigmoid", "tanh")
KINDS = PIECEWISE_LINEAR + SMOOTH
ACTIVATIONS = {"Relu": lambda z: np.maximum(z, 0.0), "Sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)), "Tanh": np.tanh}
KINKS = ("Relu", "LeakyRelu")     # z below 0 scaled by the stage's alpha (0 for Relu)
# LeakyRelu slopes drawn: ONNX's default (0.01 as float32), powers of two, and others that round
LEAKY_ALPHAS = (float(np.float32(0.01)), 0.125, 0.3, 0.5, 1.0)


@dataclass
class Stage:
    """One step of the reference on flat vectors: 'affine' (W, b), an activation (a LeakyRelu
    with its `alpha`), or 'MaxPool' (each output the max of its row of `groups`, flat input indices)."""

    kind: str
    W: np.ndarray | None = None
    b: np.ndarray | None = None
    groups: np.ndarray | None = None
    alpha: float = 0.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "affine":
            return x @ self.W.T + self.b
        if self.kind == "MaxPool":
            return x[:, self.groups].max(axis=2)
        if self.kind == "LeakyRelu":
            return np.where(x >= 0, x, self.alpha * x)
        return ACTIVATIONS[self.kind](x)


@dataclass
class RandomNet:
    """An ONNX network and its reference."""

    kind: str
    path: Path
    input_shape: tuple[int, ...]
    stages: list[Stage]

    def __repr__(self) -> str:
        return f"RandomNet({self.kind!r}, {str(self.path)!r})"

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def n_outputs(self) -> int:
        return len(self.stages[-1].b)

    @property
    def piecewise_linear(self) -> bool:
        return all(stage.kind in ("affine", "MaxPool") + KINKS for stage in self.stages)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The reference in float64: x (B, n_inputs) -> (B, n_outputs)."""
        for stage in self.stages:
            x = stage.forward(x)
        return x

    def onnxruntime(self, x: np.ndarray) -> np.ndarray:
        """The ONNX file run by onnxruntime on float32 inputs (B, n_inputs) -> float32 (B, n_outputs)."""
        session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        feed = np.asarray(x, np.float32).reshape((-1,) + self.input_shape)
        return session.run(None, {"x": feed})[0].reshape(len(feed), -1)


# ----- numpy operators on one sample (C, H, W), stride 1 and no padding unless said ---------------
def _convolve(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    _, _, kh, kw = w.shape
    H, W = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((w.shape[0], H, W))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("mc,chw->mhw", w[:, :, i, j], x[:, i:i + H, j:j + W])
    return out


def _mean_windows(x: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    kh, kw = kernel
    H, W = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return sum(x[:, i:i + H, j:j + W] for i in range(kh) for j in range(kw)) / (kh * kw)


def _pool_groups(shape: tuple[int, int, int], kernel: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """Flat input indices of every max-pooling window, outputs in (C, H, W) order."""
    C, H, W = shape
    index = np.arange(C * H * W).reshape(shape)
    rows = range(0, H - kernel[0] + 1, strides[0])
    cols = range(0, W - kernel[1] + 1, strides[1])
    return np.array([index[c, i:i + kernel[0], j:j + kernel[1]].reshape(-1) for c in range(C) for i in rows for j in cols])


class _Builder:
    """Appends ONNX nodes and the matching reference stages, tracking the value's shape."""

    def __init__(self, rng: np.random.Generator, input_shape: tuple[int, ...]) -> None:
        self.rng = rng
        self.input_shape = input_shape
        self.shape = input_shape
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self.stages: list[Stage] = []
        self.value = "x"

    def weights(self, *shape: int) -> np.ndarray:
        """Float32 weights on the 2^-4 grid (small exact rationals for Z3)."""
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = 16 / np.sqrt(fan_in)
        return (np.round(self.rng.normal(size=shape) * scale) / 16).astype(np.float32)

    def _node(self, op: str, constants: list[np.ndarray], **attributes) -> None:
        names = []
        for value in constants:
            names.append(f"c{len(self.initializers)}")
            self.initializers[names[-1]] = value
        out = f"v{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, [self.value] + names, [out], **attributes))
        self.value = out

    def _affine(self, linear: Callable[[np.ndarray], np.ndarray], bias: np.ndarray) -> None:
        """A reference affine stage: the matrix of `linear` (on one sample) from the unit vectors."""
        n = int(np.prod(self.shape))
        W = np.stack([linear(e.reshape(self.shape)).reshape(-1) for e in np.eye(n)], axis=1)
        self.stages.append(Stage("affine", W, np.broadcast_to(bias, linear(np.zeros(self.shape)).shape).reshape(-1)))
        self.shape = linear(np.zeros(self.shape)).shape

    def gemm(self, n_out: int) -> None:
        if len(self.shape) > 1:
            self._node("Flatten", [])
            self.shape = (int(np.prod(self.shape)),)
        w, b = self.weights(n_out, self.shape[0]), self.weights(n_out)
        if self.rng.random() < 0.5:
            self._node("Gemm", [w, b], transB=1)
        else:
            self._node("Gemm", [np.ascontiguousarray(w.T), b])
        self._affine(lambda x: w.astype(np.float64) @ x, b.astype(np.float64))

    def conv(self, channels: int, kernel: tuple[int, int] = (2, 2)) -> None:
        w, b = self.weights(channels, self.shape[0], *kernel), self.weights(channels)
        self._node("Conv", [w, b], kernel_shape=list(kernel))
        self._affine(lambda x: _convolve(x, w.astype(np.float64)), b.astype(np.float64)[:, None, None])

    def batchnorm(self) -> None:
        C = self.shape[0]
        gamma, beta = self.weights(C) + np.float32(1), self.weights(C)
        mean, var = self.weights(C), (self.rng.uniform(0.2, 2.0, C)).astype(np.float32)
        self._node("BatchNormalization", [gamma, beta, mean, var], epsilon=1e-3)
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + np.float64(np.float32(1e-3)))
        shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
        self._affine(lambda x: x * scale[:, None, None], shift[:, None, None])

    def average_pool(self, kernel: tuple[int, int]) -> None:
        self._node("AveragePool", [], kernel_shape=list(kernel))
        self._affine(lambda x: _mean_windows(x, kernel), np.zeros(1))

    def pad(self, top_left: int, bottom_right: int) -> None:
        pads = np.array([0, 0, top_left, top_left, 0, 0, bottom_right, bottom_right], np.int64)
        self._node("Pad", [pads])
        spatial = ((0, 0), (top_left, bottom_right), (top_left, bottom_right))
        self._affine(lambda x: np.pad(x, spatial), np.zeros(1))

    def activation(self, kind: str) -> None:
        self._node(kind, [])
        self.stages.append(Stage(kind))

    def leaky_relu(self, alpha: float) -> None:
        self._node("LeakyRelu", [], alpha=alpha)
        self.stages.append(Stage("LeakyRelu", alpha=float(np.float32(alpha))))

    def max_pool(self, kernel: tuple[int, int], strides: tuple[int, int]) -> None:
        self._node("MaxPool", [], kernel_shape=list(kernel), strides=list(strides))
        groups = _pool_groups(self.shape, kernel, strides)
        C = self.shape[0]
        self.shape = (C, (self.shape[1] - kernel[0]) // strides[0] + 1, (self.shape[2] - kernel[1]) // strides[1] + 1)
        self.stages.append(Stage("MaxPool", groups=groups))

    def finish(self, kind: str, folder: Path) -> RandomNet:
        self.nodes[-1].output[0] = "y"
        model = make_model(self.nodes, ["N", *self.input_shape], initializers=self.initializers)
        net = RandomNet(kind, save(model, folder, f"{kind}.onnx"), self.input_shape, self.stages)
        _check_against_onnxruntime(net, self.rng)
        return net


def _check_against_onnxruntime(net: RandomNet, rng: np.random.Generator) -> None:
    """The reference must compute what the ONNX file does, or the oracles check another network."""
    x = rng.uniform(-1, 1, (64, net.n_inputs)).astype(np.float32)
    expected = net.onnxruntime(x).astype(np.float64)
    np.testing.assert_allclose(net.forward(x.astype(np.float64)), expected, rtol=1e-4, atol=1e-4)


# ----- the templates -------------------------------------------------------------------------------
def _gemm(b: _Builder) -> None:
    b.gemm(int(b.rng.integers(3, 6)))
    b.activation("Relu")
    if b.rng.random() < 0.5:
        b.gemm(int(b.rng.integers(2, 5)))
        b.activation("Relu")


def _leaky_relu(b: _Builder) -> None:
    """Gemm and LeakyRelu layers (a Relu between them, or a second LeakyRelu of another alpha)."""
    b.gemm(int(b.rng.integers(3, 6)))
    b.leaky_relu(LEAKY_ALPHAS[int(b.rng.integers(len(LEAKY_ALPHAS)))])
    if b.rng.random() < 0.5:
        b.gemm(int(b.rng.integers(2, 5)))
        if b.rng.random() < 0.5:
            b.activation("Relu")
        else:
            b.leaky_relu(LEAKY_ALPHAS[int(b.rng.integers(len(LEAKY_ALPHAS)))])


def _conv_relu(b: _Builder) -> None:
    b.conv(2)
    b.activation("Relu")


def _batchnorm(b: _Builder) -> None:
    b.conv(2)
    b.batchnorm()
    b.activation("Relu")


def _average_pool(b: _Builder) -> None:
    b.conv(2)
    b.activation("Relu")
    b.average_pool([(2, 2), (3, 1), (3, 2)][int(b.rng.integers(3))])     # divisors 4 (exact), 3 and 6


def _pad(b: _Builder) -> None:
    b.conv(2)
    b.activation("Relu")
    b.pad(int(b.rng.integers(0, 2)), 1)
    b.conv(1)
    b.activation("Relu")


def _max_pool(b: _Builder) -> None:
    b.conv(2)
    relu_first = b.rng.random() < 0.5
    if relu_first:
        b.activation("Relu")
    b.max_pool(*[((2, 2), (1, 1)), ((2, 1), (1, 1)), ((2, 2), (1, 2))][int(b.rng.integers(3))])
    if not relu_first:
        b.activation("Relu")


def _smooth(kind: str) -> Callable[[_Builder], None]:
    def body(b: _Builder) -> None:
        if len(b.shape) > 1:
            b.conv(2)
        else:
            b.gemm(int(b.rng.integers(3, 6)))
        b.activation(kind)
        if b.rng.random() < 0.5:
            b.gemm(3)
            b.activation("Relu")
    return body


TEMPLATES = {"gemm": ((3,), _gemm), "conv": ((1, 3, 3), _conv_relu), "batchnorm": ((1, 3, 3), _batchnorm),
             "averagepool": ((1, 4, 3), _average_pool), "pad": ((1, 3, 3), _pad),
             "maxpool": ((1, 3, 3), _max_pool), "leakyrelu": ((3,), _leaky_relu), "sigmoid": ((3,), _smooth("Sigmoid")), "tanh": ((3,), _smooth("Tanh"))}


def random_net(kind: str, seed: int, folder: Path, depth: int = 0) -> RandomNet:
    """A network of the template of `kind`, then `depth` Gemm and ReLU layers (deeper nets: the
    refining and LP tightening of later layers), then a Gemm to 3 outputs; its weights and sizes
    drawn from `seed`."""
    rng = np.random.default_rng(seed)
    shape, body = TEMPLATES[kind]
    if kind in SMOOTH and rng.random() < 0.5:
        shape = (1, 3, 3)
    builder = _Builder(rng, shape)
    body(builder)
    for _ in range(depth):
        builder.gemm(int(rng.integers(3, 6)))
        builder.activation("Relu")
    builder.gemm(3)
    return builder.finish(kind, folder)


# ----- boxes and properties ------------------------------------------------------------------------
def random_box(net: RandomNet, seed: int, free: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """A box of float32 bounds around a random centre, `free` of its dimensions of half-width eps
    (the others a single value)."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-1, 1, net.n_inputs).astype(np.float32)
    moving = rng.choice(net.n_inputs, size=min(free, net.n_inputs), replace=False)
    radius = np.zeros(net.n_inputs, np.float32)
    radius[moving] = np.float32(eps)
    return (centre - radius).astype(np.float64), (centre + radius).astype(np.float64)


@dataclass
class Condition:
    """One constraint of an unsafe condition over 3 outputs: rows A y <= beta + offsets, for a
    threshold beta chosen per property; `strict` rows are '<'."""

    A: np.ndarray
    offsets: np.ndarray
    strict: np.ndarray

    def holds_exactly(self, y: np.ndarray, beta: float) -> bool:
        """On one output, in rationals."""
        values = [sum(Fraction(float(a)) * Fraction(float(v)) for a, v in zip(row, y)) for row in self.A]
        bounds = [Fraction(float(beta + o)) for o in self.offsets]
        return all(v < b if s else v <= b for v, b, s in zip(values, bounds, self.strict))


# Rows over 3 outputs: robustness (y0 is not above y1, or not above y2), or a conjunction.
ROBUSTNESS = (np.array([[1.0, -1.0, 0.0]]), np.array([[1.0, 0.0, -1.0]]))
CONJUNCTION = (np.array([[0.0, 1.0, -1.0], [1.0, 0.0, -1.0]]), np.array([[-1.0, 1.0, 0.0]]))


def conditions(conjunction: bool, seed: int) -> tuple[Condition, ...]:
    """The robustness rows (or the conjunction ones, their second row's offset drawn from seed),
    some rows strict."""
    rng = np.random.default_rng(seed)
    chosen = []
    for A in CONJUNCTION if conjunction else ROBUSTNESS:
        offsets = np.zeros(len(A))
        offsets[1:] = np.round(rng.uniform(-0.25, 0.25, len(A) - 1), 3)
        chosen.append(Condition(A, offsets, rng.random(len(A)) < 0.3))
    return tuple(chosen)


def as_property(net: RandomNet, boxes: list[tuple[np.ndarray, np.ndarray]], conditions: tuple[Condition, ...],
                thresholds: list[float]) -> Property:
    """The property "no x in any of the boxes meets some condition at its threshold" (one case a
    box), as smtverify reads one."""
    constraints = tuple(OutputConstraint(c.A, t + c.offsets, c.strict) for c, t in zip(conditions, thresholds))
    cases = tuple(Case(InputBox(lo, hi, tuple(Fraction(float(v)) for v in lo), tuple(Fraction(float(v)) for v in hi)),
                       constraints) for lo, hi in boxes)
    return Property(str(net.path), net.n_inputs, net.n_outputs, cases)
