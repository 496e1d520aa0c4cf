"""LeakyRelu networks: ONNX import and execution (opsets 6 and 16) against onnxruntime, and complete
verification by every engine path, each verdict checked by an exact method written here.

The exact method shares nothing with smtverify: it enumerates every activation pattern of the
hidden neurons (each neuron's input >= 0 or <= 0), and per pattern the net is affine, so one LP
(scipy's HiGHS) over the box and the pattern's sign constraints gives that region's minimum of a
margin; the least over the feasible patterns is the exact minimum. A robustness property is safe
iff every margin y_label - y_j has a minimum > 0.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import linprog

from smtverify import load_onnx
from smtverify.bounds import BoundPropagator
from smtverify.chain import to_chain
from smtverify.errors import UnsupportedOperatorError
from smtverify.slopes import Objective, SlopeOptimiser
from smtverify.verdict import Verdict
from smtverify.verify import Settings, Verifier, robustness_property

ONNX_DEFAULT_ALPHA = float(np.float32(0.01))
QUIET = {"falsify.random_points": 0, "falsify.restarts": 0, "falsify.deep_random_points": 0,
         "bounds.root_slope_steps": 0}
PATHS = {
    "input_splitting": {"input_split.max_dims": 99, "input_split.leaf_relus": 0},
    "relu_batched": {"input_split.max_dims": 0, "leaves.relus": 0},
    "relu_per_node": {"input_split.max_dims": 0, "leaves.relus": 0, "relu_split.batched": False},
    "z3_relu_leaves": {"input_split.max_dims": 0, "leaves.relus": 99, "relu_split.slope_steps": 0,
                       "relu_split.refresh_steps": 0},
    "z3_input_leaves": {"input_split.max_dims": 99, "input_split.leaf_relus": 99, "input_split.slope_steps": 0},
}


@dataclass
class LeakyNet:
    """An ONNX file of Gemm (or, in opset 6, MatMul) and LeakyRelu layers, and its float64 reference:
    per layer (W, b, alpha), alpha None for the last (no activation)."""

    path: Path
    layers: list[tuple[np.ndarray, np.ndarray, float | None]]

    @property
    def n_inputs(self) -> int:
        return self.layers[0][0].shape[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for W, b, alpha in self.layers:
            x = x @ W.T + b
            if alpha is not None:
                x = np.where(x >= 0, x, alpha * x)
        return x

    def onnxruntime(self, x: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": np.asarray(x, np.float32)})[0]


def leaky_net(folder: Path, seed: int, sizes: list[int], alphas: list[float | None], opset: int = 16) -> LeakyNet:
    """A net of these layer widths (inputs first), LeakyRelu after each hidden layer with its alpha
    (None: the attribute left out, ONNX's default). Opset 6 has no Gemm onnxruntime runs: MatMul
    without bias there, and initializers listed as graph inputs (IR version 3)."""
    rng = np.random.default_rng(seed)
    nodes, initializers, layers, value = [], [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = (np.round(rng.normal(size=(n_out, n_in)) * 16 / np.sqrt(n_in)) / 16).astype(np.float32)
        b = (np.round(rng.normal(size=n_out) * 8) / 16).astype(np.float32) if opset >= 7 else np.zeros(n_out, np.float32)
        if opset >= 7:
            initializers += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
            nodes.append(helper.make_node("Gemm", [value, f"W{i}", f"b{i}"], [f"z{i}"], transB=1))
        else:
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(W.T), f"W{i}"))
            nodes.append(helper.make_node("MatMul", [value, f"W{i}"], [f"z{i}"]))
        value = f"z{i}"
        alpha = None
        if i < len(sizes) - 2:
            alpha = alphas[i]
            attributes = {} if alpha is None else {"alpha": alpha}
            nodes.append(helper.make_node("LeakyRelu", [value], [f"a{i}"], **attributes))
            value = f"a{i}"
            alpha = ONNX_DEFAULT_ALPHA if alpha is None else float(np.float32(alpha))
        layers.append((W.astype(np.float64), b.astype(np.float64), alpha))
    nodes[-1].output[0] = "y"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])]
    if opset < 7:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in initializers]
    graph = helper.make_graph(nodes, "leaky", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3 if opset < 7 else 8
    onnx.checker.check_model(model)
    path = folder / f"leaky_{opset}_{seed}.onnx"
    onnx.save(model, str(path))
    return LeakyNet(path, layers)


# ----- the exact method ----------------------------------------------------------------------------
def exact_minimum(net: LeakyNet, c: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """min of c . net(x) over the box: every activation pattern's LP, the least feasible optimum."""
    hidden = [len(b) for _, b, alpha in net.layers if alpha is not None]
    best = np.inf
    for pattern in itertools.product((True, False), repeat=sum(hidden)):
        M, m = np.eye(net.n_inputs), np.zeros(net.n_inputs)        # the current value is M x + m
        G, h = [], []                                              # sign constraints G x <= h
        used = 0
        for W, b, alpha in net.layers:
            M, m = W @ M, W @ m + b
            if alpha is None:
                continue
            active = np.array(pattern[used:used + len(b)])
            used += len(b)
            sign = np.where(active, -1.0, 1.0)                     # active: -z <= 0; inactive: z <= 0
            G.append(sign[:, None] * M)
            h.append(-sign * m)
            scale = np.where(active, 1.0, alpha)
            M, m = scale[:, None] * M, scale * m
        found = linprog(c @ M, A_ub=np.vstack(G), b_ub=np.concatenate(h), bounds=list(zip(lower, upper)), method="highs")
        if found.status == 0:
            best = min(best, float(found.fun + c @ m))
    return best


def exact_margin(net: LeakyNet, label: int, lower: np.ndarray, upper: np.ndarray) -> float:
    """The least over the other classes j of the exact minimum of y_label - y_j."""
    n_out = len(net.layers[-1][1])
    return min(exact_minimum(net, np.eye(n_out)[label] - np.eye(n_out)[j], lower, upper)
               for j in range(n_out) if j != label)


def check_verdict(net: LeakyNet, prop, label: int, result) -> None:
    """SAFE iff the exact margin is > 0; an UNSAFE counterexample lies in the box and onnxruntime,
    run on it here, puts another class at least as high as the label."""
    box = prop.cases[0].box
    margin = exact_margin(net, label, box.lower, box.upper)
    assert result.verdict in (Verdict.SAFE, Verdict.UNSAFE), (result.verdict, result.reason, result.stats)
    assert (result.verdict is Verdict.SAFE) == (margin > 0), (margin, result.verdict, result.stats)
    if result.verdict is Verdict.UNSAFE:
        x = np.asarray(result.counterexample.input, np.float32).reshape(1, -1)
        assert np.all(box.lower <= x[0]) and np.all(x[0] <= box.upper)
        y = net.onnxruntime(x)[0].astype(np.float64)
        assert np.max(np.delete(y, label)) >= y[label]


def attacked_radius(net: LeakyNet, centre: np.ndarray) -> float:
    """The least radius (on a geometric grid) at which projected sign-gradient descent on the
    margins (gradients by central differences) finds another class: at least the exact robustness
    radius, and near it on these small nets, so radii around it give both verdicts."""
    label = int(np.argmax(net.forward(centre[None])[0]))
    n = len(centre)
    step = 1e-6 * np.vstack([np.eye(n), -np.eye(n)])
    for eps in np.geomspace(0.002, 2.0, 80):
        lo, hi = centre - eps, centre + eps
        for j in range(net.layers[-1][0].shape[0]):
            if j == label:
                continue
            x = centre.copy()
            for _ in range(20):
                y = net.forward(x + step)
                gradient = (y[:n, label] - y[:n, j]) - (y[n:, label] - y[n:, j])
                x = np.clip(x - eps / 4 * np.sign(gradient), lo, hi)
                out = net.forward(x[None])[0]
                if out[j] >= out[label]:
                    return float(eps)
    return 2.0


def decide(net: LeakyNet, centre: np.ndarray, eps: float, forced: dict) -> tuple:
    network = load_onnx(net.path)
    label = int(np.argmax(net.forward(centre[None])[0]))
    prop = robustness_property(network, centre, label, eps, low=-np.inf, high=np.inf)
    result = Verifier(network, Settings(timeout=30.0).replaced(QUIET | forced)).verify(prop)
    return prop, label, result


# ----- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [6, 16])
def test_leaky_relu_runs_as_onnxruntime_does(opset, tmp_path):
    """Import, the executor and the chain agree with onnxruntime, the default alpha included."""
    net = leaky_net(tmp_path, 0, [5, 6, 4, 3], [None, 0.3], opset)
    assert net.layers[0][2] == ONNX_DEFAULT_ALPHA
    network = load_onnx(net.path)
    x = np.random.default_rng(1).uniform(-2, 2, (64, 5)).astype(np.float32)
    expected = net.onnxruntime(x)
    np.testing.assert_allclose(network.logits(x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_chain(network).forward(x.astype(np.float64)), net.forward(x.astype(np.float64)),
                               rtol=1e-12, atol=1e-12)
    assert [type(step).__name__ for step in to_chain(network).steps] == ["Affine", "LeakyRelu"] * 2 + ["Affine"]


def test_an_alpha_outside_0_1_is_refused_by_name(tmp_path):
    net = leaky_net(tmp_path, 0, [3, 4, 2], [1.5])
    with pytest.raises(UnsupportedOperatorError, match="alpha"):
        to_chain(load_onnx(net.path))


def test_a_slope_the_float32_ascent_cannot_keep_is_refused():
    """The slope ascent clips slopes at alpha in float32: an alpha that is not a float32 would be
    rounded below itself there, and the lower line y >= s z would no longer hold for z < 0 (a
    bound of -0.0099999998 above the true minimum -0.01 over [-1, 0.5] at alpha 0.01 in float64).
    An ONNX attribute is always a float32; a step built by hand is checked."""
    from smtverify.steps import LeakyRelu

    assert LeakyRelu(2, [], float(np.float32(0.01))).negative_slope == float(np.float32(0.01))
    for alpha in (0.01, -0.5, 1.5):
        with pytest.raises(ValueError, match="float32 in \\[0, 1\\]"):
            LeakyRelu(2, [], alpha)


def test_bounds_and_optimised_slopes_hold_and_stay_in_range(tmp_path):
    """Every bound (interval, back-substituted, optimised) contains the sampled values, and the
    optimised lower-side slopes of a LeakyRelu lie in [alpha, 1]."""
    net = leaky_net(tmp_path, 3, [4, 6, 5, 3], [0.2, 0.05])
    chain = to_chain(load_onnx(net.path))
    rng = np.random.default_rng(0)
    lower, upper = rng.uniform(-1, 0, 4), rng.uniform(0, 1, 4)
    x = np.vstack([rng.uniform(lower, upper, (20000, 4)), lower, upper])
    y = net.forward(x)
    propagator = BoundPropagator(chain)
    bounds = propagator.forward(lower[None], upper[None])
    assert np.all(bounds.lower[-1][0] <= y.min(axis=0)) and np.all(y.max(axis=0) <= bounds.upper[-1][0])
    rows = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    solution = SlopeOptimiser(propagator).optimise(bounds, Objective(rows, np.zeros(2)), len(chain.steps), iterations=30)
    back = propagator.lower_bound_rows(bounds, rows)[0]
    assert np.all(back <= solution.values[0] + 1e-9) and np.all(solution.values[0] <= (y @ rows.T).min(axis=0))
    for k, slopes in solution.slopes.items():
        assert np.all(chain.steps[k].negative_slope <= slopes) and np.all(slopes <= 1.0)


@pytest.mark.parametrize("path", PATHS)
def test_every_path_decides_leaky_relu_nets_exactly(path, tmp_path):
    """Each path (input splitting on 3 inputs, ReLU splitting on 20; LP nodes; Z3 leaves of either)
    on nets of two LeakyRelu layers,
    at radii around the exact robustness radius: every verdict as the exact method says, both
    verdicts met, and the path under test did the work (the root alone decided none of them)."""
    n_inputs = 3 if path.startswith("input") or path == "z3_input_leaves" else 20
    verdicts, searched, z3_calls, lp_solves = set(), 0, 0, 0
    for seed in range(3):
        net = leaky_net(tmp_path, seed, [n_inputs, 4, 3, 3], [[0.1, 0.25, ONNX_DEFAULT_ALPHA][seed], 0.5])
        centre = np.random.default_rng(seed).uniform(0.3, 0.7, n_inputs)
        radius = attacked_radius(net, centre)
        for eps in (0.9 * radius, 1.05 * radius):
            prop, label, result = decide(net, centre, eps, PATHS[path])
            check_verdict(net, prop, label, result)
            verdicts.add(result.verdict)
            searched += result.stats["boxes_bounded"] > 1 or result.stats["z3_calls"] > 0 or result.stats["lp_solves"] > 0
            # Z3 input leaves: asked, unless the first round of halves decided (as in test_engine_paths)
            z3_calls += result.stats["z3_calls"] or (path == "z3_input_leaves" and result.stats["boxes_bounded"] <= 7)
            lp_solves += result.stats["lp_solves"]
            expected = "input" if n_inputs == 3 else "relu_per_node" if path == "relu_per_node" else "relu_batched"
            assert result.stats.get("splitting", expected) == expected, result.stats
    assert verdicts == {Verdict.SAFE, Verdict.UNSAFE}
    assert searched > 0
    assert z3_calls > 0 or not path.startswith("z3")
    assert lp_solves > 0 or path != "relu_per_node"       # the LP encodes LeakyRelu too
