"""The LP relaxation: its certified bounds hold for every sampled point of the network, never depend
on HiGHS's duals being right, are at least as tight as back-substitution, and close empty nodes."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from onnx import helper

from smtverify import load_onnx
from smtverify.bounds import BoundPropagator
from smtverify.lp import LpRelaxation, supports, tightened
from smtverify.chain import to_chain
from tests.conftest import SHARED, make_model, needs_shared, save

SIZES = [4, 16, 16, 3]


def network_and_box(tmp_path, seed: int, sizes: list[int] = SIZES):
    """A ReLU network (4-16-16-3 unless `sizes` says otherwise) with raw float32 weights, and a box
    around a random point."""
    rng = np.random.default_rng(seed)
    nodes, inits, previous = [], {}, "x"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        inits[f"w{i}"] = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        inits[f"b{i}"] = (rng.normal(size=n_out) * 0.1).astype(np.float32)
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
            previous = f"r{i}"
    network = load_onnx(save(make_model(nodes, ["N", sizes[0]], initializers=inits), tmp_path))
    centre = rng.uniform(-1, 1, sizes[0])
    return network, centre - 0.3, centre + 0.3


def relaxation_of(network, lower, upper):
    chain = to_chain(network)
    bounds = BoundPropagator(chain).forward(lower[None], upper[None])
    relaxation = LpRelaxation(chain, lower, upper)
    relaxation.set_bounds(bounds)
    return chain, bounds, relaxation


def sampled_outputs(chain, lower, upper, seed=0, n=20000):
    rng = np.random.default_rng(seed)
    points = np.concatenate([rng.uniform(lower, upper, (n, len(lower))),
                             np.array(np.meshgrid(*zip(lower, upper))).reshape(len(lower), -1).T])
    return chain.forward_all(points)


@pytest.mark.parametrize("seed", range(6))
def test_certified_bound_holds_for_every_sample_and_beats_back_substitution(tmp_path, seed):
    network, lower, upper = network_and_box(tmp_path, seed)
    chain, bounds, relaxation = relaxation_of(network, lower, upper)
    assert supports(chain)
    A, b = np.array([[1.0, -1.0, 0.0]]), np.array([0.25])
    found = relaxation.lower_bound(A, b)
    y = sampled_outputs(chain, lower, upper)[-1]
    assert np.isfinite(found.value)
    assert found.value <= (y @ A.T - b).min() + 1e-12
    back = BoundPropagator(chain).lower_bound_rows(bounds, A)[0, 0] - b[0]
    assert found.value >= back - 1e-9
    assert found.x is not None and np.all((found.x >= lower) & (found.x <= upper))


def test_flat_lower_sides_only_tighten_the_output_rows_and_stay_sound(tmp_path):
    """Each output row keeps the better of CROWN's lower sides and all-flat ones: never looser
    than CROWN's alone, never above a sampled value, and strictly tighter somewhere."""
    rows = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 1.0, -1.0], [0.0, -1.0, 1.0], [1.0, 0.0, -1.0]])
    gained = 0.0
    for seed in range(6):
        network, lower, upper = network_and_box(tmp_path, seed)
        chain = to_chain(network)
        both, crown = BoundPropagator(chain), BoundPropagator(chain, flat_too=False)
        better = both.lower_bound_rows(both.forward(lower[None], upper[None]), rows)[0]
        alone = crown.lower_bound_rows(crown.forward(lower[None], upper[None]), rows)[0]
        y = sampled_outputs(chain, lower, upper)[-1]
        assert np.all(better >= alone) and np.all(better <= (y @ rows.T).min(axis=0))
        gained = max(gained, float(np.max(better - alone)))
    assert gained > 0


@pytest.mark.parametrize("seed", range(4))
def test_several_rows_bound_their_maximum(tmp_path, seed):
    network, lower, upper = network_and_box(tmp_path, seed)
    chain, _, relaxation = relaxation_of(network, lower, upper)
    A = np.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]])
    b = np.array([0.1, -0.2])
    y = sampled_outputs(chain, lower, upper)[-1]
    assert relaxation.lower_bound(A, b).value <= (y @ A.T - b).max(axis=1).min() + 1e-12


def test_certificate_is_sound_whatever_the_duals(tmp_path):
    """Weak duality: any multipliers give a lower bound, so wrong duals can only loosen it."""
    network, lower, upper = network_and_box(tmp_path, 11)
    chain, _, relaxation = relaxation_of(network, lower, upper)
    n_rows = len(relaxation.row_lower)
    objective = np.zeros(relaxation.n_cols)
    objective[relaxation.offsets[-2]] = 1.0                   # y_0
    truth = sampled_outputs(chain, lower, upper)[-1][:, 0].min()
    rng = np.random.default_rng(5)
    for scale in (0.0, 1e-6, 0.1, 10.0):
        duals = rng.normal(size=n_rows) * scale
        assert relaxation.certified_bound(objective, 0.0, duals) <= truth


def test_neuron_bounds_enclose_samples_and_tighten_intervals(tmp_path):
    network, lower, upper = network_and_box(tmp_path, 3)
    chain, bounds, relaxation = relaxation_of(network, lower, upper)
    value = 3                                                  # input of the second ReLU
    neurons = np.arange(SIZES[2])
    lows, points = relaxation.neuron_bounds(value, neurons, deadline=float("inf"), minimise=True)
    highs, _ = relaxation.neuron_bounds(value, neurons, deadline=float("inf"), minimise=False)
    samples = sampled_outputs(chain, lower, upper)[value]
    assert np.all(lows <= samples.min(axis=0)) and np.all(highs >= samples.max(axis=0))
    assert np.all(lows >= bounds.lower[value][0] - 1e-9) and np.all(highs <= bounds.upper[value][0] + 1e-9)
    assert all(np.all((p >= lower) & (p <= upper)) for p in points)


def test_contradictory_node_is_closed(tmp_path):
    """A neuron forced above its reachable maximum: the relaxation is empty, the bound is +inf."""
    network, lower, upper = network_and_box(tmp_path, 2)
    chain, bounds, relaxation = relaxation_of(network, lower, upper)
    value = 3
    reachable_max = sampled_outputs(chain, lower, upper)[value].max(axis=0)
    j = int(np.argmax(bounds.upper[value][0] - reachable_max))
    bounds.lower[value][0, j] = bounds.upper[value][0, j] + 1.0
    bounds.upper[value][0, j] = bounds.lower[value][0, j] + 1.0
    relaxation.set_bounds(bounds)
    assert relaxation.lower_bound(np.array([[1.0, -1.0, 0.0]]), np.array([0.0])).value == np.inf


@needs_shared
def test_tightening_ends_on_a_box_where_primal_simplex_cycles():
    """ACAS Xu 3_3 over a box 1e-3 wide in one input: HiGHS's primal simplex cycled on one neuron's
    LP until the time limit (the whole budget); the iteration limit and the dual simplex end it,
    and the bounds still hold for sampled points."""
    network = load_onnx(SHARED / "acasxu" / "onnx" / "ACASXU_run2a_3_3_batch_2000.onnx")
    lower = np.array([0.6199644422499999, -0.0341796875, 0.34375, 0.44999999999999996, -0.45624999999999993])
    upper = np.array([0.6399288845, -0.033203125, 0.3515625, 0.475, -0.45312499999999994])
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    relaxation = LpRelaxation(chain, lower, upper)
    result = []
    worker = threading.Thread(target=lambda: result.extend(
        tightened(relaxation, propagator, propagator.forward(lower[None], upper[None]), time.perf_counter() + 3600)),
        daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive() and result
    final = result[-1][0]
    samples = sampled_outputs(chain, lower, upper)
    for value, outputs in enumerate(samples):
        assert np.all(final.lower[value][0] <= outputs.min(axis=0) + 1e-9)
        assert np.all(final.upper[value][0] >= outputs.max(axis=0) - 1e-9)
