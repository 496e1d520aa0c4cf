"""The certification engine keeps its timeout in every phase: a phase the deadline cuts short gives
sound bounds, only looser, so the verdict can become TIMEOUT but never an unproven SAFE.

Checked without wall-clock assertions: deadlines already passed, and what they must leave."""
from __future__ import annotations

import time

import numpy as np
import pytest

from smtverify.bounds import BoundPropagator
from smtverify.chain import to_chain
from smtverify.slopes import Objective, SlopeOptimiser
from smtverify.verdict import Verdict
from smtverify.verify import Settings, Verifier
from smtverify.onnx_import import load_onnx
from smtverify.vnnlib import read_vnnlib
from tests.conftest import SHARED, needs_shared
from tests.test_lp import network_and_box, sampled_outputs
from tests.test_slopes import row_property

DEEP = [4, 16, 16, 16, 3]
WIDE = [64, 512, 512, 512, 512, 2]          # its root bounding outlasts a 0.1 ms timeout anywhere
ROWS = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]])
QUIET = {"falsify.random_points": 0, "falsify.restarts": 0}   # no falsification: the root's bounds alone decide


def _output_lower_bound(propagator: BoundPropagator, lower: np.ndarray, upper: np.ndarray, row: np.ndarray) -> float:
    return float(propagator.lower_bound_rows(propagator.forward(lower[None], upper[None]), row)[0, 0])


def test_a_root_bounding_longer_than_the_timeout_ends_in_timeout_not_in_a_proof(tmp_path):
    """The threshold lies between what interval arithmetic proves (a root cut short at once) and
    what the root's full bounds prove: with time, SAFE at the root; with a 0.1 ms timeout the root
    is cut short and the verdict is TIMEOUT."""
    network, lower, upper = network_and_box(tmp_path, 0, WIDE)
    chain = to_chain(network)
    row = np.array([[1.0, -1.0]])
    full = _output_lower_bound(BoundPropagator(chain), lower, upper, row)
    interval = _output_lower_bound(BoundPropagator(chain, symbolic=False, backsub=False), lower, upper, row)
    assert interval < full
    prop = row_property(network, lower, upper, row, (interval + full) / 2)
    assert Verifier(network, Settings(timeout=60.0).replaced(QUIET)).verify(prop).verdict is Verdict.SAFE
    cut = Verifier(network, Settings(timeout=1e-4).replaced(QUIET)).verify(prop)
    assert cut.verdict in (Verdict.TIMEOUT, Verdict.UNKNOWN)


@pytest.mark.parametrize("seed", range(3))
def test_an_ascent_past_its_deadline_takes_no_step_and_its_bounds_hold_for_every_sample(tmp_path, seed):
    network, lower, upper = network_and_box(tmp_path, seed, DEEP)
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    bounds = propagator.forward(lower[None], upper[None])
    optimiser = SlopeOptimiser(propagator)
    objective, end = Objective(ROWS, np.zeros(len(ROWS))), len(chain.steps)
    cut = optimiser.lower_bounds(bounds, objective, end, iterations=20, deadline=time.perf_counter())
    assert np.array_equal(cut, optimiser.lower_bounds(bounds, objective, end, iterations=0))
    y = sampled_outputs(chain, lower, upper, seed)[-1]
    assert np.all(cut[0] <= (y @ ROWS.T).min(axis=0))


@pytest.mark.parametrize("seed", range(3))
def test_bounds_past_their_deadline_are_interval_bounds_and_hold_for_every_sample(tmp_path, seed):
    """A forward pass past its deadline skips the symbolic pass and the neurons' tightening (with
    optimised slopes too); what it returns is interval arithmetic's, sound."""
    network, lower, upper = network_and_box(tmp_path, seed, DEEP)
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    cut = propagator.forward(lower[None], upper[None], row_bound=SlopeOptimiser(propagator).row_bound(20),
                             deadline=time.perf_counter())
    interval = BoundPropagator(chain, symbolic=False, backsub=False).forward(lower[None], upper[None])
    values = sampled_outputs(chain, lower, upper, seed)
    for k in range(len(chain.steps) + 1):
        assert np.array_equal(cut.lower[k], interval.lower[k]) and np.array_equal(cut.upper[k], interval.upper[k])
        assert np.all(cut.lower[k][0] <= values[k].min(axis=0)) and np.all(cut.upper[k][0] >= values[k].max(axis=0))


@needs_shared
def test_a_leaf_past_its_own_limit_is_unknown_and_past_the_case_deadline_a_timeout():
    """ERAN's 6x200 Sigmoid net on an image its bounds leave open (its root not optimised, which
    would deepen it round after round until the deadline): nothing to split, and its Z3 leaf
    needs about 36 s to set up. With a 20 s limit per leaf and minutes for the case, more time
    would not help: UNKNOWN, saying why.
    With 10 s for the case, the case's own deadline is what leaves no time to ask: TIMEOUT."""
    network = load_onnx(SHARED / "eran/onnx/ffnnSIGMOID__Point_6x200.onnx")
    prop = read_vnnlib(SHARED / "eran/vnnlib/mnist_spec_idx_5719_eps_0.01200.vnnlib", network.n_inputs,
                       network.n_outputs)
    verifier = Verifier(network, Settings(timeout=300.0).replaced(QUIET | {"leaves.timeout": 20.0,
                                                                          "bounds.root_slope_steps": 0}))
    undecided = verifier.verify(prop)
    assert undecided.verdict is Verdict.UNKNOWN and "Z3 could not decide" in undecided.reason
    assert verifier.verify(prop, timeout=10.0).verdict is Verdict.TIMEOUT
