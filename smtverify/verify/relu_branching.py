"""ReLU splitting's branching: which unstable neuron a domain is split on.

Batched splitting ranks neurons by what their relaxation's upper side costs the domain's bound
(the BaBSR estimate) and, among the few costliest, picks the one whose worse child bounds best
(filtered smart branching). Per-node LP splitting uses the LP's own scores.
"""
from __future__ import annotations

import numpy as np

from ..bounds import ChainBounds
from ..slopes import SlopeSolution
from .context import Job
from .domains import DomainRows
from .objective import SlopeRows


def filtered_smart(job: Job, slope_rows: SlopeRows, bounds: ChainBounds, signs: dict[int, np.ndarray],
                   domains: DomainRows, solution: SlopeSolution, values: np.ndarray, open_rows: np.ndarray,
                   costs: dict[int, np.ndarray], split: list[int]) -> list[tuple[int, int]]:
    """The ReLU to split in each domain of `split` (filtered smart branching): of the
    Settings.relu_split.branch_candidates whose upper sides cost most, the one whose worse child bounds
    best, each child bounded once with the domain's slopes and multipliers and that ReLU fixed."""
    count = job.settings.relu_split.branch_candidates
    candidates = [costliest(costs, bounds, i, count) for i in split]
    if count <= 1 or not split:
        return [c[0] for c in candidates]
    pair, step, neuron, active, owner = [], [], [], [], []
    for n, (i, choices) in enumerate(zip(split, candidates)):
        pairs = np.flatnonzero((domains.domain == i) & open_rows[i][domains.row])
        for c, (k, j) in enumerate(choices):
            for side in (False, True):
                pair += list(pairs)
                step += [k] * len(pairs)
                neuron += [j] * len(pairs)
                active += [side] * len(pairs)
                owner += [(n, c, side)] * len(pairs)
    pair, step, neuron, active = np.array(pair), np.array(step), np.array(neuron), np.array(active, float)
    child_values = job.tools.slope_optimiser.with_fixed(
        bounds.subset(domains.domain[pair]), slope_rows.objective_of(domains.row[pair, None]),
        len(job.chain.steps), solution, pair, {k: sign[domains.domain[pair]] for k, sign in signs.items()},
        (step, neuron, active))[:, 0]
    children: dict[tuple, np.ndarray] = {}
    for value, r, key in zip(child_values, domains.row[pair], owner):
        full = children.setdefault(key, values[split[key[0]]].copy())
        full[r] = max(full[r], value)
    chosen = []
    for n, choices in enumerate(candidates):
        worse = [min(slope_rows.margins(children[(n, c, side)][None])[0] for side in (False, True))
                 for c in range(len(choices))]
        chosen.append(choices[int(np.argmax(worse))])
    return chosen


def by_lp_scores(unstable: list[tuple[int, int, float]], scores: dict[int, np.ndarray] | None) -> tuple[int, int]:
    """The unstable ReLU to split: the one whose triangle costs the LP bound most, else the one
    with the largest triangle."""
    if scores:
        best = max(unstable, key=lambda t: scores[t[0]][t[1]])
        if scores[best[0]][best[1]] > 0:
            return best[0], best[1]
    k, j, _ = max(unstable, key=lambda t: t[2])
    return k, j


def costliest(costs: dict[int, np.ndarray], bounds: ChainBounds, index: int, count: int = 1
              ) -> list[tuple[int, int]]:
    """The `count` unstable ReLUs (step, neuron) of box `index` whose upper sides cost most, the
    costliest first; ties (no cost) go to the largest triangle."""
    candidates = []
    for k, cost in costs.items():
        l, u = bounds.lower[k][index], bounds.upper[k][index]
        candidates += [(cost[index, j], -l[j] * u[j], k, int(j)) for j in np.flatnonzero((l < 0) & (u > 0))]
    return [(k, j) for _, _, k, j in sorted(candidates, reverse=True)[:max(count, 1)]]
