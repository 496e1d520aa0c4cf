"""Bound propagation over batches of domains of one box: what the batch shares must not leak."""
from __future__ import annotations

import numpy as np
import pytest

from smtverify.bounds import BoundPropagator
from smtverify.chain import to_chain
from tests.test_lp import network_and_box, sampled_outputs

SIZES = [4, 16, 16, 16, 3]


def _domains(chain, root, count: int, seed: int):
    """`count` random phase decisions on the box's unstable ReLUs, as forward's `fixed` masks."""
    rng = np.random.default_rng(seed)
    fixed = []
    for k in (1, 3):                     # the chain's ReLU steps: affine, relu, affine, relu, ...
        unstable = (root.lower[k] < 0) & (root.upper[k] > 0)
        choice = rng.integers(0, 3, (count, chain.steps[k].size))     # 0 undecided, 1 active, 2 inactive
        fixed.append((k, unstable & (choice == 1), unstable & (choice == 2)))
    return fixed


def _assert_each_as_alone(batch, alone, d: int) -> None:
    for mine, theirs in ((batch.lower, alone.lower), (batch.upper, alone.upper), (batch.slack, alone.slack)):
        for layer, single in zip(mine, theirs):
            np.testing.assert_allclose(layer[d], single[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("symbolic,backsub", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("seed", range(3))
def test_domains_of_one_box_get_the_bounds_each_gets_alone(tmp_path, seed, symbolic, backsub):
    network, lower, upper = network_and_box(tmp_path, seed, SIZES)
    chain = to_chain(network)
    root = BoundPropagator(chain).forward(lower[None], upper[None])
    propagator = BoundPropagator(chain, symbolic=symbolic, backsub=backsub, flat_too=False)
    count = 6
    fixed = _domains(chain, root, count, seed)
    within = tuple([np.repeat(layer, count, axis=0) for layer in side[:-1]] for side in (root.lower, root.upper))
    batch = propagator.forward(np.repeat(lower[None], count, axis=0), np.repeat(upper[None], count, axis=0),
                               fixed, within)
    differ = 0
    for d in range(count):
        alone = propagator.forward(lower[None], upper[None], [(k, a[d:d + 1], i[d:d + 1]) for k, a, i in fixed],
                                   tuple([layer[d:d + 1] for layer in side] for side in within))
        _assert_each_as_alone(batch, alone, d)
        differ += not np.allclose(batch.upper[-1][d], batch.upper[-1][0])
    assert differ > 0           # the domains' decisions do change their bounds: nothing shared that should not be


@pytest.mark.parametrize("seed", range(3))
def test_boxes_of_a_batch_are_back_substituted_each_as_alone(tmp_path, seed):
    """Input splitting's batches: each box substitutes only the neurons unstable in it, with its
    own relaxations, so it gets exactly the bounds it gets alone (and they hold on samples)."""
    network, lower, upper = network_and_box(tmp_path, seed, SIZES)
    chain = to_chain(network)
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(lower, upper, (2, 8, lower.size))
    los, his = np.minimum(a, b), np.maximum(a, b)
    propagator = BoundPropagator(chain)
    batch = propagator.forward(los, his)
    unstable = [np.sum((batch.lower[k] < 0) & (batch.upper[k] > 0), axis=1) for k in (1, 3, 5)]
    union = [np.sum(np.any((batch.lower[k] < 0) & (batch.upper[k] > 0), axis=0)) for k in (1, 3, 5)]
    assert any(np.any(u < n) for u, n in zip(unstable, union))    # some box straddles fewer than the union
    for d in range(len(los)):
        _assert_each_as_alone(batch, propagator.forward(los[d:d + 1], his[d:d + 1]), d)
        values = sampled_outputs(chain, los[d], his[d])
        for k in (1, 3, 5):
            assert np.all(values[k] >= batch.lower[k][d] - 1e-12) and np.all(values[k] <= batch.upper[k][d] + 1e-12)


def test_bounds_stopped_at_a_step_are_the_first_steps_of_the_whole(tmp_path):
    network, lower, upper = network_and_box(tmp_path, 0, SIZES)
    chain = to_chain(network)
    propagator = BoundPropagator(chain, symbolic=False, backsub=False, flat_too=False)
    whole = propagator.forward(lower[None], upper[None])
    for end in (1, 3, 5):
        part = propagator.forward(lower[None], upper[None], end=end)
        assert len(part.lower) == end + 1
        for a, b in zip(part.lower + part.upper + part.slack, whole.lower[:end + 1] + whole.upper[:end + 1]
                        + whole.slack[:end + 1]):
            np.testing.assert_array_equal(a, b)
    values = sampled_outputs(chain, lower, upper)
    assert np.all(values[3] >= whole.lower[3][0] - 1e-12) and np.all(values[3] <= whole.upper[3][0] + 1e-12)
