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
from smtverify.pwl import to_chain
from smtverify.slopes import Objective, SlopeOptimiser, SlopeSettings, supports
from tests.test_lp import network_and_box, relaxation_of, sampled_outputs

ROWS = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]])


def test_gradient_matches_finite_differences(tmp_path):
    network, lower, upper = network_and_box(tmp_path, 3)
    chain = to_chain(network)
    bounds = BoundPropagator(chain).forward(lower[None], upper[None])
    optimiser = SlopeOptimiser(chain)
    end = len(chain.steps)
    rng = np.random.default_rng(0)
    slopes = {k: rng.uniform(0, 1, (1, len(ROWS), bounds.lower[k].shape[1])) for k in bounds.relaxations}
    Lam = ROWS[None].copy()
    value, grad_slopes, grad_rows = optimiser._bound_and_gradient(bounds, Lam, slopes, end)
    checked = 0
    for k, grad in grad_slopes.items():
        for j in np.flatnonzero((bounds.lower[k][0] < 0) & (bounds.upper[k][0] > 0))[:4]:
            moved = {key: s.copy() for key, s in slopes.items()}
            moved[k][0, :, j] += 1e-6
            changed = optimiser._bound_and_gradient(bounds, Lam, moved, end)[0]
            assert np.allclose((changed - value) / 1e-6, grad[0, :, j], atol=1e-4)
            checked += 1
    assert checked > 0
    moved = Lam.copy()
    moved[0, 0, 1] += 1e-6
    changed = optimiser._bound_and_gradient(bounds, moved, slopes, end)[0]
    assert np.isclose((changed - value)[0, 0] / 1e-6, grad_rows[0, 0, 1], atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_optimised_rows_beat_crown_stay_below_the_lp_and_every_sample(tmp_path, seed):
    network, lower, upper = network_and_box(tmp_path, seed)
    chain, bounds, relaxation = relaxation_of(network, lower, upper)
    assert supports(chain)
    crown = BoundPropagator(chain, flat_too=False).lower_bound_rows(bounds, ROWS)[0]
    optimised = SlopeOptimiser(chain, SlopeSettings(iterations=40)).lower_bounds(
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
        optimised = SlopeOptimiser(chain).lower_bounds(bounds, Objective(ROWS, np.zeros(3)),
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
    value = SlopeOptimiser(chain, SlopeSettings(iterations=40)).lower_bounds(bounds, objective, len(chain.steps))
    y = sampled_outputs(chain, lower, upper)[-1]
    assert value[0, 0] <= (y @ A.T - b).max(axis=1).min()
    assert value[0, 0] <= relaxation.lower_bound(A, b).value + 1e-7


def _row_property(network, lower, upper, row, rhs):
    box = InputBox(lower, upper, tuple(Fraction(float(v)) for v in lower), tuple(Fraction(float(v)) for v in upper))
    unsafe = OutputConstraint(np.asarray(row, dtype=np.float64), np.array([rhs]), np.zeros(1, bool))
    return Property(network.path, network.n_inputs, network.n_outputs, (Case(box, (unsafe,)),))


def test_optimised_slopes_decide_at_the_root_what_back_substitution_must_split(tmp_path):
    """y0 - y1 <= -0.25 never holds on this box (sampled minimum -0.12); back-substitution bounds
    y0 - y1 below by -0.35 only, optimised slopes by -0.20."""
    network, lower, upper = network_and_box(tmp_path, 3)
    prop = _row_property(network, lower, upper, [[1.0, -1.0, 0.0]], -0.25)
    optimised = Verifier(network, Settings(timeout=60)).verify(prop)
    plain = Verifier(network, Settings(timeout=60, root_slope_iterations=0, slope_iterations=0)).verify(prop)
    assert optimised.verdict is Verdict.SAFE and plain.verdict is Verdict.SAFE
    assert optimised.stats["boxes_bounded"] == 1 < plain.stats["boxes_bounded"]


def test_boxes_closed_by_optimised_slopes_are_not_split_again(tmp_path):
    network, lower, upper = network_and_box(tmp_path, 3)
    prop = _row_property(network, lower, upper, [[1.0, -1.0, 0.0]], -0.18)
    in_split = Verifier(network, Settings(timeout=60, root_slope_iterations=0)).verify(prop)
    plain = Verifier(network, Settings(timeout=60, root_slope_iterations=0, slope_iterations=0)).verify(prop)
    assert in_split.verdict is Verdict.SAFE and plain.verdict is Verdict.SAFE
    assert in_split.stats["boxes_bounded"] < plain.stats["boxes_bounded"]
