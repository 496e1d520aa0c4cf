"""Sigmoid and Tanh relaxations: sound lines, as tight as their slopes allow, and bounds through deep
nets that shrink with the box (the rounding allowance stays at rounding size).

Soundness is checked against f computed here independently (1/(1+exp(-z)) and np.tanh), on dense
samples of each range and at the points where f' equals the line's slope, where a line touches f."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtverify.bounds import BoundPropagator
from smtverify.chain import to_chain
from smtverify.slopes import Objective, SlopeOptimiser
from smtverify.steps import Sigmoid, Tanh
from smtverify.verdict import Verdict
from smtverify.verify import Settings, Verifier
from onnx import helper

from smtverify import load_onnx
from tests.conftest import make_model, save
from tests.test_slopes import row_property

REFERENCE = {Sigmoid: lambda z: 1.0 / (1.0 + np.exp(-z)), Tanh: np.tanh}
ends = st.floats(-40, 40, allow_nan=False)


def lines(kind, lo: np.ndarray, hi: np.ndarray):
    relaxation, out_lo, out_hi = kind(lo.size).relax(lo[None], hi[None])
    return relaxation, out_lo[0], out_hi[0]


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from([Sigmoid, Tanh]), a=ends, b=ends, width=st.floats(0, 1e-3))
def test_both_lines_enclose_f_on_the_whole_range(kind, a, b, width):
    lo, hi = np.array([min(a, b), -width, 0.0]), np.array([max(a, b), width, width])
    r, out_lo, out_hi = lines(kind, lo, hi)
    z = lo + (hi - lo) * np.linspace(0, 1, 2001)[:, None]
    f = REFERENCE[kind](z)
    assert np.all(r.lower_slope * z + r.lower_offset[0] <= f)
    assert np.all(f <= r.upper_slope * z + r.upper_offset[0])
    assert np.all((out_lo <= f) & (f <= out_hi))
    assert np.all(r.lower_slope >= 0) and np.all(r.upper_slope >= 0)      # what Elementwise.through needs


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from([Sigmoid, Tanh]), a=ends, b=ends)
def test_each_line_touches_f(kind, a, b):
    """Its offset is the extreme of f - a z, so no line with that slope is tighter: it touches f
    (to within the widening) somewhere in the range."""
    lo, hi = np.array([min(a, b)]), np.array([max(a, b) + 1e-3])
    r, _, _ = lines(kind, lo, hi)
    z = lo + (hi - lo) * np.linspace(0, 1, 20001)
    f = REFERENCE[kind](z)
    step = (hi - lo)[0] / 20000
    slack = 2 * kind.max_slope * step + 1e-9          # the nearest sample is at most a step away
    assert np.min(f - (r.lower_slope[0] * z + r.lower_offset[0])) <= slack
    assert np.min((r.upper_slope[0] * z + r.upper_offset[0]) - f) <= slack


@pytest.mark.parametrize("kind", [Sigmoid, Tanh])
def test_on_one_curvature_the_chord_and_the_midpoint_tangent(kind):
    """Where f is convex (below 0) the least-area upper line is the chord and the lower one the
    tangent at the midpoint; where concave, the reverse."""
    lo, hi = np.array([-3.0, 0.5]), np.array([-1.0, 2.5])
    r, _, _ = lines(kind, lo, hi)
    f = REFERENCE[kind]
    chord = (f(hi) - f(lo)) / (hi - lo)
    mid = (lo + hi) / 2
    tangent = 1 - f(mid) ** 2 if kind is Tanh else f(mid) * (1 - f(mid))
    assert np.allclose([r.upper_slope[0, 0], r.lower_slope[0, 1]], chord, atol=1e-4)
    assert np.allclose([r.lower_slope[0, 0], r.upper_slope[0, 1]], tangent[[0, 1]], atol=1e-4)
    at_mid_lower = r.lower_slope[0] * mid + r.lower_offset[0]
    at_mid_upper = r.upper_slope[0] * mid + r.upper_offset[0]
    assert abs(at_mid_lower[0] - f(mid[0])) < 1e-8 and abs(at_mid_upper[1] - f(mid[1])) < 1e-8


def deep_net(folder, op: str, seed: int, width: int = 30, depth: int = 6):
    """Gemm and `op` `depth` times (weights N(0, 1): row sums of |W| near 24), then Gemm to 3."""
    rng = np.random.default_rng(seed)
    nodes, weights, value, n = [], {}, "x", 5
    for i in range(depth + 1):
        out = width if i < depth else 3
        weights[f"W{i}"], weights[f"b{i}"] = rng.normal(0, 1, (n, out)).astype(np.float32), np.zeros(out, np.float32)
        nodes.append(helper.make_node("Gemm", [value, f"W{i}", f"b{i}"], [f"z{i}" if i < depth else "y"]))
        if i < depth:
            nodes.append(helper.make_node(op, [f"z{i}"], [f"a{i}"]))
        value, n = f"a{i}", out
    return load_onnx(save(make_model(nodes, [1, 5], initializers=weights), folder))


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
@pytest.mark.parametrize("seed", range(3))
def test_bounds_of_a_deep_smooth_net_hold_and_shrink_with_the_box(tmp_path, op, seed):
    """Every layer's bounds contain sampled values, and on a box 1e-7 wide the output bounds are
    within a few times the sampled spread: the rounding allowance stays at rounding size (passing a
    Sigmoid's input magnitude on to its output grew it by |W| at every layer, 12 units of the
    logits' bound on ERAN's 6x200 Sigmoid net)."""
    chain = to_chain(deep_net(tmp_path, op, seed))
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-1, 1, 5)
    for eps in (0.3, 1e-7):
        lower, upper = centre - eps, centre + eps
        bounds = BoundPropagator(chain).forward(lower[None], upper[None])
        x = np.concatenate([rng.uniform(lower, upper, (4000, 5)), np.where(rng.integers(0, 2, (4000, 5)) == 1, upper, lower)])
        for k, step in enumerate(chain.steps):
            assert np.all(bounds.lower[k][0] <= x.min(axis=0)) and np.all(x.max(axis=0) <= bounds.upper[k][0])
            x = step.forward(x)
        assert np.all(bounds.lower[-1][0] <= x.min(axis=0)) and np.all(x.max(axis=0) <= bounds.upper[-1][0])
    width, spread = bounds.upper[-1][0] - bounds.lower[-1][0], x.max(axis=0) - x.min(axis=0)
    assert np.all(width <= 4 * spread + 1e-12)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
@pytest.mark.parametrize("seed", range(2))
def test_optimised_lines_hold_for_every_sample_and_the_deepened_root_proves_what_the_plain_one_cannot(
        tmp_path, op, seed):
    """Each row's own optimised lines (any slope is sound: its offset follows it) bound every
    sampled output, better than the relaxation's own lines; a threshold half way between the plain
    and the optimised bound is proven SAFE at the root (nothing to split here: the root deepened)."""
    network = deep_net(tmp_path, op, seed)
    chain = to_chain(network)
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-1, 1, 5)
    lower, upper = centre - 0.3, centre + 0.3
    propagator = BoundPropagator(chain)
    bounds = propagator.forward(lower[None], upper[None])
    row = np.array([[1.0, -1.0, 0.0]])
    plain = float(propagator.lower_bound_rows(bounds, row)[0, 0])
    optimised = float(SlopeOptimiser(propagator).lower_bounds(bounds, Objective(row, np.zeros(1)), len(chain.steps),
                                                              iterations=30)[0, 0])
    x = np.concatenate([rng.uniform(lower, upper, (20000, 5)), np.where(rng.integers(0, 2, (2000, 5)) == 1, upper, lower)])
    sampled = float((chain.forward(x) @ row.T).min())
    assert plain + 1e-3 < optimised <= sampled

    threshold = (plain + optimised) / 2
    verifier = Verifier(network, Settings(timeout=30.0).replaced({"input_split.max_dims": 0}))
    result = verifier.verify(row_property(network, lower, upper, row, threshold))
    assert result.verdict is Verdict.SAFE and "splitting" not in result.stats, (result.verdict, result.stats)
