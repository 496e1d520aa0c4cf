"""One box's or domain's bounds on every step's values, and phase decisions applied to them.

Splitting keeps each open box's (or domain's) bounds on the input of every step, so that its
parts are bounded within them and splitting never loosens a layer. A phase decision (step k,
neuron j, active) fixes a splittable step's neuron: active, its input is >= 0 and it passes the
input on; inactive, its input is <= 0 and it scales it by the step's negative slope (0 for ReLU).
"""
from __future__ import annotations

import numpy as np

from ..bounds import ChainBounds
from ..chain import Chain
from ..vnnlib import Case

LayerBounds = tuple[list[np.ndarray], list[np.ndarray]]
PhaseDecision = tuple[int, int, bool]     # (step, neuron, active)


def layer_bounds(bounds: ChainBounds, index: int) -> LayerBounds:
    """Box `index`'s bounds on the input of every step and on the output, to bound its parts within."""
    return [l[index] for l in bounds.lower], [u[index] for u in bounds.upper]


def intersected(layers: LayerBounds, other: LayerBounds) -> LayerBounds:
    """Per step, the tighter of two sound bounds of one box's values."""
    return ([np.maximum(a, b) for a, b in zip(layers[0], other[0])],
            [np.minimum(a, b) for a, b in zip(layers[1], other[1])])


def with_decisions(chain: Chain, layers: LayerBounds, decisions: list[PhaseDecision], case: Case
                   ) -> ChainBounds | None:
    """Inherited bounds with the phase decisions applied (None when they contradict them)."""
    lower = [l.copy()[None] for l in layers[0]]
    upper = [u.copy()[None] for u in layers[1]]
    for k, j, active in decisions:
        if active:
            lower[k][0, j] = max(lower[k][0, j], 0.0)
        else:
            upper[k][0, j] = min(upper[k][0, j], 0.0)
            upper[k + 1][0, j] = min(upper[k + 1][0, j], inactive_output_upper(chain, k, upper[k][0, j]))
    if any(np.any(l > u) for l, u in zip(lower, upper)):
        return None
    return ChainBounds(lower, upper, [], {}, case.box.lower[None], case.box.upper[None])


def inactive_output_upper(chain: Chain, k: int, input_upper: float) -> float:
    """An upper bound on an inactive neuron's output, from its input's (<= 0): slope * input,
    rounded up (exactly 0 for ReLU)."""
    slope = chain.steps[k].negative_slope
    return 0.0 if slope == 0 else float(np.nextafter(slope * input_upper, np.inf))


def as_fixed(decisions: list[PhaseDecision], chain: Chain) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Phase decisions as (step, active mask, inactive mask) for BoundPropagator.forward."""
    by_step: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, j, active in decisions:
        size = chain.steps[k].size
        a, i = by_step.setdefault(k, (np.zeros((1, size), bool), np.zeros((1, size), bool)))
        (a if active else i)[0, j] = True
    return [(k, a, i) for k, (a, i) in by_step.items()]


def unstable(chain: Chain, bounds: ChainBounds) -> list[tuple[int, int, float]]:
    """(step, neuron, score) of every unstable splittable neuron of box 0; score = the area -l*u
    of its input range's product, larger for the looser relaxations."""
    found = []
    for k, step in enumerate(chain.steps):
        if step.splittable:
            l, u = bounds.lower[k][0], bounds.upper[k][0]
            for j in np.flatnonzero((l < 0) & (u > 0)):
                found.append((k, int(j), float(-l[j] * u[j])))
    return found
