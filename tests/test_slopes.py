"""Optimised ReLU slopes: the hand-taken gradient, and bounds that are sound and between CROWN's
and the triangle relaxation's LP optimum."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from smtverify.bounds import BoundPropagator
from smtverify.verdict import Verdict
from smtverify.verify import Settings, Verifier
from smtverify.vnnlib import Case, InputBox, OutputConstraint, Property
from smtverify.chain import to_chain
from smtverify.slopes import Objective, SlopeOptimiser, SlopeSettings, supports
from tests.test_lp import network_and_box, relaxation_of, sampled_outputs

ROWS = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]])


def _root_of(tmp_path):
    """A network's root bounds, an optimiser over it, and its number of steps."""
    network, lower, upper = network_and_box(tmp_path, 3)
    chain = to_chain(network)
    return BoundPropagator(chain).forward(lower[None], upper[None]), SlopeOptimiser(BoundPropagator(chain)), len(chain.steps)


def test_gradient_matches_finite_differences(tmp_path):
    bounds, optimiser, end = _root_of(tmp_path)
    rng = np.random.default_rng(0)
    slopes = {k: rng.uniform(0, 1, (1, len(ROWS), bounds.lower[k].shape[1])) for k in bounds.relaxations}
    Lam = ROWS[None].copy()
    value, grad_slopes, grad_rows, _, _ = optimiser.bound_and_gradient(bounds, Lam, slopes, end)
    checked = 0
    for k, grad in grad_slopes.items():
        for j in np.flatnonzero((bounds.lower[k][0] < 0) & (bounds.upper[k][0] > 0))[:4]:
            moved = {key: s.copy() for key, s in slopes.items()}
            moved[k][0, :, j] += 1e-6
            changed = optimiser.bound_and_gradient(bounds, Lam, moved, end)[0]
            assert np.allclose((changed - value) / 1e-6, grad[0, :, j], atol=1e-4)
            checked += 1
    assert checked > 0
    moved = Lam.copy()
    moved[0, 0, 1] += 1e-6
    changed = optimiser.bound_and_gradient(bounds, moved, slopes, end)[0]
    assert np.isclose((changed - value)[0, 0] / 1e-6, grad_rows[0, 0, 1], atol=1e-4)


def test_corners_are_box_corners_attaining_a_sound_bound(tmp_path):
    bounds, optimiser, end = _root_of(tmp_path)
    solution = optimiser.optimise(bounds, Objective(ROWS, np.zeros(3)), end)
    values, corners = solution.values, solution.corners[0]                 # (R, n)
    lo, hi = bounds.box_lower[0], bounds.box_upper[0]
    assert np.all((corners == lo) | (corners == hi))
    y = optimiser.chain.forward(corners)
    assert np.all(np.diag(y @ ROWS.T) >= values[0])


def test_finished_boxes_leave_the_ascent_with_the_bounds_they_had(tmp_path):
    """Boxes dropped after the first evaluation keep its (CROWN) bound and slopes; the others go on
    to the same bounds and slopes as an ascent without dropping."""
    network, lower, upper = network_and_box(tmp_path, 3)
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    boxes = np.stack([lower, (lower + upper) / 2, lower])
    bounds = propagator.forward(boxes, np.stack([upper, upper, (lower + upper) / 2]))
    optimiser, end, objective = SlopeOptimiser(propagator), len(chain.steps), Objective(ROWS, np.zeros(3))
    whole = optimiser.optimise(bounds, objective, end)
    first = optimiser.optimise(bounds, objective, end, iterations=0)
    dropping = optimiser.optimise(bounds, objective, end, finished=lambda v: np.array([True, False, True]))
    assert np.array_equal(dropping.values[[0, 2]], first.values[[0, 2]])
    assert np.allclose(dropping.values[1], whole.values[1])
    for k in whole.slopes:
        assert np.array_equal(dropping.slopes[k][[0, 2]], first.slopes[k][[0, 2]])
        assert np.allclose(dropping.slopes[k][1], whole.slopes[k][1])


def test_gradient_of_split_terms_matches_finite_differences(tmp_path):
    bounds, optimiser, end = _root_of(tmp_path)
    slopes = {k: r.lower_slope[:, None, :].repeat(len(ROWS), axis=1) for k, r in bounds.relaxations.items()}
    k = min(bounds.relaxations)
    terms = {k: np.random.default_rng(1).normal(size=(1, len(ROWS), bounds.lower[k].shape[1]))}
    value, _, _, grad_terms, _ = optimiser.bound_and_gradient(bounds, ROWS[None].copy(), slopes, end, terms)
    for j in range(3):
        moved = {k: terms[k].copy()}
        moved[k][0, :, j] += 1e-6
        changed = optimiser.bound_and_gradient(bounds, ROWS[None].copy(), slopes, end, moved)[0]
        assert np.allclose((changed - value) / 1e-6, grad_terms[k][0, :, j], atol=1e-4)


def _split_bounds(tmp_path, seed: int):
    """One unstable ReLU of the first hidden layer decided either way: per branch, the outputs of
    20 000 samples inside it, and its rows' bounds with and without the split multiplier."""
    network, lower, upper = network_and_box(tmp_path, seed)
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    root = propagator.forward(lower[None], upper[None])
    k = min(root.relaxations)
    l, u = root.lower[k][0], root.upper[k][0]
    j = int(np.argmax(np.where((l < 0) & (u > 0), -l * u, -1.0)))
    assert l[j] < 0 < u[j]
    values = chain.forward_all(np.random.default_rng(seed).uniform(lower, upper, (20000, len(lower))))
    optimiser = SlopeOptimiser(propagator, SlopeSettings(iterations=40))
    mask, none = np.zeros((1, len(l)), bool), np.zeros((1, len(l)), bool)
    mask[0, j] = True
    for active in (True, False):
        fixed = [(k, mask, none)] if active else [(k, none, mask)]
        bounds = propagator.forward(lower[None], upper[None], fixed=fixed)
        objective = Objective(ROWS, np.zeros(3))
        with_beta = optimiser.optimise(bounds, objective, len(chain.steps),
                                       splits={k: np.where(mask, -1.0 if active else 1.0, 0.0)}).values
        without = optimiser.lower_bounds(bounds, objective, len(chain.steps))
        inside = values[k][:, j] >= 0 if active else values[k][:, j] <= 0
        yield values[-1][inside] @ ROWS.T, with_beta[0], without[0]


def test_the_bounds_returned_are_the_float64_substitution_of_the_state_returned(tmp_path):
    """The ascent runs in float32, as an estimate; what it returns must be the float64 bound, less
    its rounding allowance, of a state it reached (a float32 value is not sound): with no steps,
    the start's slopes and multipliers, which it returns."""
    network, lower, upper = network_and_box(tmp_path, 1)
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    root, end = propagator.forward(lower[None], upper[None]), len(chain.steps)
    k = min(root.relaxations)
    unstable = (root.lower[k] < 0) & (root.upper[k] > 0)
    optimiser, multipliers = SlopeOptimiser(propagator), 0.0
    for side in (-1.0, 1.0):                                       # the first unstable ReLU active, inactive
        split = np.where(unstable & (np.cumsum(unstable) == 1), side, 0.0)
        ascended = optimiser.optimise(root, Objective(ROWS, np.zeros(3)), end, splits={k: split})
        solution = optimiser.optimise(root, Objective(ROWS, np.zeros(3)), end, splits={k: split},
                                      start=ascended, iterations=0)       # the state returned is the start's
        assert all(v.dtype == np.float64 for v in [*solution.slopes.values(), *solution.betas.values()])
        multipliers += solution.betas[k].sum()
        terms = {k: solution.betas[k] * split[:, None, :]}
        exact = optimiser.bound_and_gradient(root, ROWS[None].copy(), solution.slopes, end, terms)[0]
        assert np.allclose(solution.values, exact - np.abs(ROWS) @ root.slack[end][0], rtol=0, atol=1e-12)
    assert multipliers > 0


@pytest.mark.parametrize("seed", range(4))
def test_a_child_estimated_with_its_parents_slopes_is_bounded_below_its_samples(tmp_path, seed):
    """with_fixed (the branching estimate): each unstable first-layer ReLU decided either way,
    with the root's optimised slopes, bounds the rows below every sample inside that child."""
    network, lower, upper = network_and_box(tmp_path, seed)
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    root = propagator.forward(lower[None], upper[None])
    optimiser, objective = SlopeOptimiser(propagator), Objective(ROWS, np.zeros(3), np.eye(3)[None])
    solution = optimiser.optimise(root, objective, len(chain.steps))
    k = min(root.relaxations)
    neurons = np.flatnonzero((root.lower[k][0] < 0) & (root.upper[k][0] > 0))
    sides = np.tile([1.0, 0.0], len(neurons))
    neurons = np.repeat(neurons, 2)
    boxes = np.zeros(len(neurons), np.int64)
    rows = np.broadcast_to(objective.M, (len(boxes), 3, 3))
    estimate = optimiser.with_fixed(root.subset(boxes), Objective(ROWS, np.zeros(3), rows), len(chain.steps),
                                    solution, boxes, {}, (np.full(len(boxes), k), neurons, sides))
    values = chain.forward_all(np.random.default_rng(seed).uniform(lower, upper, (20000, len(lower))))
    for e, j, active in zip(estimate, neurons, sides):
        inside = values[k][:, j] >= 0 if active else values[k][:, j] <= 0
        assert np.all(e <= (values[-1][inside] @ ROWS.T).min(axis=0, initial=np.inf) + 1e-9)
    assert len(neurons) > 0


@pytest.mark.parametrize("seed", range(4))
def test_split_multipliers_bound_each_branch_soundly(tmp_path, seed):
    for outputs, with_beta, without in _split_bounds(tmp_path, seed):
        assert np.all(with_beta <= outputs.min(axis=0))
        assert np.all(with_beta >= without - 1e-9)


def test_split_multipliers_gain_on_the_decided_neuron_bounds_alone_somewhere(tmp_path):
    gained = max(float(np.max(with_beta - without)) for seed in range(4)
                 for _, with_beta, without in _split_bounds(tmp_path, seed))
    assert gained > 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_optimised_rows_beat_crown_stay_below_the_lp_and_every_sample(tmp_path, seed):
    network, lower, upper = network_and_box(tmp_path, seed)
    chain, bounds, relaxation = relaxation_of(network, lower, upper)
    assert supports(chain)
    crown = BoundPropagator(chain, flat_too=False).lower_bound_rows(bounds, ROWS)[0]
    optimised = SlopeOptimiser(BoundPropagator(chain), SlopeSettings(iterations=40)).lower_bounds(
        bounds, Objective(ROWS, np.zeros(3)), len(chain.steps))
    y = sampled_outputs(chain, lower, upper)[-1]
    assert np.all(optimised[0] >= crown - 1e-9)
    assert np.all(optimised[0] <= (y @ ROWS.T).min(axis=0))
    for r, row in enumerate(ROWS):
        assert optimised[0, r] <= relaxation.lower_bound(row[None], np.zeros(1)).value + 1e-7


def test_slopes_gain_on_crown_somewhere(tmp_path):
    gained = 0.0
    for seed in range(5):
        network, lower, upper = network_and_box(tmp_path, seed)
        chain = to_chain(network)
        bounds = BoundPropagator(chain).forward(lower[None], upper[None])
        crown = BoundPropagator(chain, flat_too=False).lower_bound_rows(bounds, ROWS)[0]
        optimised = SlopeOptimiser(BoundPropagator(chain)).lower_bounds(bounds, Objective(ROWS, np.zeros(3)),
                                                          len(chain.steps))
        gained = max(gained, float(np.max(optimised[0] - crown)))
    assert gained > 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_a_free_combination_bounds_the_conjunction_soundly(tmp_path, seed):
    """min mu.(A y - b) over the box, for the mu found, lies below min max_i (A_i y - b_i)
    (sampled) and below the LP bound of that maximum."""
    network, lower, upper = network_and_box(tmp_path, seed)
    chain, bounds, relaxation = relaxation_of(network, lower, upper)
    A, b = ROWS[:2], np.array([0.1, -0.2])
    objective = Objective(A, b, np.full((1, 1, 2), 0.5), np.ones((1, 2), bool))
    value = SlopeOptimiser(BoundPropagator(chain), SlopeSettings(iterations=40)).lower_bounds(bounds, objective, len(chain.steps))
    y = sampled_outputs(chain, lower, upper)[-1]
    assert value[0, 0] <= (y @ A.T - b).max(axis=1).min()
    assert value[0, 0] <= relaxation.lower_bound(A, b).value + 1e-7


def row_property(network, lower, upper, row, rhs):
    box = InputBox(lower, upper, tuple(Fraction(float(v)) for v in lower), tuple(Fraction(float(v)) for v in upper))
    unsafe = OutputConstraint(np.asarray(row, dtype=np.float64), np.array([rhs]), np.zeros(1, bool))
    return Property(network.path, network.n_inputs, network.n_outputs, (Case(box, (unsafe,)),))


def test_optimised_slopes_decide_at_the_root_what_back_substitution_must_split(tmp_path):
    """y0 - y1 <= -0.25 never holds on this box (sampled minimum -0.12); back-substitution bounds
    y0 - y1 below by -0.35 only, optimised slopes by -0.20."""
    network, lower, upper = network_and_box(tmp_path, 3)
    prop = row_property(network, lower, upper, [[1.0, -1.0, 0.0]], -0.25)
    optimised = Verifier(network, Settings(timeout=60)).verify(prop)
    plain = Verifier(network, Settings(timeout=60).replaced({"bounds.root_slope_steps": 0, "input_split.slope_steps": 0})).verify(prop)
    assert optimised.verdict is Verdict.SAFE and plain.verdict is Verdict.SAFE
    assert optimised.stats["boxes_bounded"] == 1 < plain.stats["boxes_bounded"]


def test_boxes_closed_by_optimised_slopes_are_not_split_again(tmp_path):
    network, lower, upper = network_and_box(tmp_path, 3)
    prop = row_property(network, lower, upper, [[1.0, -1.0, 0.0]], -0.18)
    in_split = Verifier(network, Settings(timeout=60).replaced({"bounds.root_slope_steps": 0})).verify(prop)
    plain = Verifier(network, Settings(timeout=60).replaced({"bounds.root_slope_steps": 0, "input_split.slope_steps": 0})).verify(prop)
    assert in_split.verdict is Verdict.SAFE and plain.verdict is Verdict.SAFE
    assert in_split.stats["boxes_bounded"] < plain.stats["boxes_bounded"]


def _exact_substitution(chain, bounds, rows):
    """Back-substitution of rows through the chain's relaxations in exact rationals, box 0."""
    Lam = [[Fraction(float(v)) for v in row] for row in rows]
    const = [Fraction(0)] * len(rows)
    for k in range(len(chain.steps) - 1, -1, -1):
        step = chain.steps[k]
        if hasattr(step, "W"):
            W = np.asarray(step.W.todense()) if hasattr(step.W, "todense") else step.W
            const = [c + sum(l * Fraction(float(b)) for l, b in zip(lam, step.b)) for c, lam in zip(const, Lam)]
            Lam = [[sum(l * Fraction(float(W[i, j])) for i, l in enumerate(lam)) for j in range(W.shape[1])]
                   for lam in Lam]
        else:
            r = bounds.relaxations[k]
            new = []
            for row, lam in enumerate(Lam):
                const[row] += sum(l * Fraction(float(r.upper_offset[0, j])) for j, l in enumerate(lam) if l < 0)
                new.append([l * Fraction(float((r.upper_slope if l < 0 else r.lower_slope)[0, j]))
                            for j, l in enumerate(lam)])
            Lam = new
    lo, hi = bounds.box_lower[0], bounds.box_upper[0]
    return [c + sum(l * Fraction(float(lo[j] if l > 0 else hi[j])) for j, l in enumerate(lam))
            for c, lam in zip(const, Lam)]


def test_back_substitution_and_slopes_allow_for_their_own_rounding(tmp_path):
    """The float64 substitution, less its allowance, lies below the same substitution done in
    exact rationals, for every row (without the allowance about half of them would lie above)."""
    rows = np.random.default_rng(1).normal(size=(24, 3))
    for seed in range(3):
        network, lower, upper = network_and_box(tmp_path, seed)
        chain = to_chain(network)
        propagator = BoundPropagator(chain, flat_too=False)
        bounds = propagator.forward(lower[None], upper[None])
        exact = _exact_substitution(chain, bounds, rows)
        back = propagator.back_substitute(bounds, rows[None].copy(), len(chain.steps))[0]
        crown = {k: r.lower_slope[:, None, :].repeat(len(rows), axis=1) for k, r in bounds.relaxations.items()}
        slopes = SlopeOptimiser(propagator).bound_and_gradient(bounds, rows[None].copy(), crown, len(chain.steps))[0][0]
        for computed in (back, slopes):
            assert all(Fraction(float(v)) <= e for v, e in zip(computed, exact))
            assert max(float(e) - v for v, e in zip(computed, exact)) < 1e-9
