"""Hidden-neuron bounds refined by branch and bound: they hold for every sampled point, never
loosen, and tighten what optimised slopes alone leave loose."""
from __future__ import annotations

import numpy as np
import pytest

from smtverify.bounds import BoundPropagator
from smtverify.chain import to_chain
from smtverify.refine import BoundRefiner, RefineSettings
from smtverify.slopes import SlopeOptimiser
from tests.test_lp import network_and_box, sampled_outputs

DEEP = [4, 16, 16, 16, 3]


def _root_and_refined(tmp_path, seed: int, splits: int = 4):
    network, lower, upper = network_and_box(tmp_path, seed, DEEP)
    chain = to_chain(network)
    propagator = BoundPropagator(chain)
    optimiser = SlopeOptimiser(propagator)
    root = propagator.forward(lower[None], upper[None])
    root = propagator.forward(lower[None], upper[None], within=(root.lower, root.upper), row_bound=optimiser.row_bound(20))
    refined = BoundRefiner(propagator, optimiser, RefineSettings(splits=splits)).refined(root, deadline=float("inf"))
    return chain, lower, upper, root, refined


@pytest.mark.parametrize("seed", range(4))
def test_refined_bounds_hold_for_every_sample_and_never_loosen(tmp_path, seed):
    chain, lower, upper, root, refined = _root_and_refined(tmp_path, seed)
    values = sampled_outputs(chain, lower, upper, seed)
    for k in range(len(chain.steps) + 1):
        assert np.all(refined.lower[k][0] <= values[k].min(axis=0))
        assert np.all(refined.upper[k][0] >= values[k].max(axis=0))
        assert np.all(refined.lower[k][0] >= root.lower[k][0]) and np.all(refined.upper[k][0] <= root.upper[k][0])


def test_refining_tightens_what_optimised_slopes_leave_loose(tmp_path):
    """Summed over the seeds' unstable hidden neurons after the first layer, the refined ranges are
    markedly narrower than the optimised slopes' (the LP over the triangle relaxation is no
    tighter than those), and some neurons become stable."""
    before = after = 0.0
    stabilised = 0
    for seed in range(4):
        chain, _, _, root, refined = _root_and_refined(tmp_path, seed)
        relus = sorted(root.relaxations)
        for k in relus[1:]:
            unstable = (root.lower[k][0] < 0) & (root.upper[k][0] > 0)
            before += np.sum((root.upper[k][0] - root.lower[k][0])[unstable])
            after += np.sum((refined.upper[k][0] - refined.lower[k][0])[unstable])
            stabilised += int(np.sum(unstable & ((refined.lower[k][0] >= 0) | (refined.upper[k][0] <= 0))))
    assert after < 0.9 * before
    assert stabilised > 0


def test_refining_stops_at_its_deadline_with_the_bounds_it_started_from(tmp_path):
    network, lower, upper = network_and_box(tmp_path, 0, DEEP)
    propagator = BoundPropagator(to_chain(network))
    root = propagator.forward(lower[None], upper[None])
    refined = BoundRefiner(propagator, SlopeOptimiser(propagator)).refined(root, deadline=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(refined.lower, root.lower))
