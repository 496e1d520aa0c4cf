"""ReLU splitting's domains: a set of phase decisions, what its parent knew, and batches of them.

A domain is bounded within its parent's neuron bounds (sound: a domain is part of its parent),
and its ascent starts from the slopes and multipliers its parent's ended with, for the rows the
parent left open (beta-CROWN's warm start).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..bounds import ChainBounds
from ..slopes import SlopeSolution
from .context import Job
from .neuron_bounds import LayerBounds, PhaseDecision


class Warm(NamedTuple):
    """A domain's slopes and multipliers (k -> (R', m)) for its open objective rows `rows` (R',)."""

    rows: np.ndarray
    slopes: dict[int, np.ndarray]
    betas: dict[int, np.ndarray]


@dataclass
class Node:
    """A branch-and-bound node of ReLU splitting: its phase decisions; its parent's neuron bounds,
    lower bounds of the objective rows (sound here too: a node is part of its parent), and the
    slopes and multipliers the parent's ascent ended with, for the rows it left open."""

    decisions: list[PhaseDecision]
    layers: LayerBounds
    values: np.ndarray | None = None       # None in LP ReLU splitting, which keeps no row bounds
    warm: Warm | None = None
    leaf_limit: float | None = None        # seconds for its Z3 leaf (None: Settings.leaves.first_timeout)


@dataclass
class DomainRows:
    """A batch of domains' open objective rows, one (domain, row) pair per box of the ascent:
    only rows the parent left open are bounded again (MNIST-FC 256x4 prop_0 eps 0.05: 5.7 of 9
    on average), from the parent's slopes and multipliers (beta-CROWN's warm start)."""

    batch: list[Node]
    domain: np.ndarray                   # (P,) the domain of each pair
    row: np.ndarray                      # (P,) its objective row

    @classmethod
    def of(cls, batch: list[Node]) -> "DomainRows":
        rows = [node.warm.rows if node.warm else np.arange(len(node.values)) for node in batch]
        return cls(batch, np.repeat(np.arange(len(batch)), [len(r) for r in rows]), np.concatenate(rows))

    def start(self) -> SlopeSolution | None:
        """The parents' slopes and multipliers, one row per pair (None at the root). Every domain
        has slopes for every ReLU step; multipliers only where it has decisions (zero elsewhere)."""
        if any(node.warm is None for node in self.batch):
            return None
        warm = [node.warm for node in self.batch]
        slopes = {k: pairs([w.slopes[k] for w in warm]) for k in warm[0].slopes}
        betas = {}
        for k in sorted(set().union(*(w.betas for w in warm))):
            width = next(w.betas[k].shape[1] for w in warm if k in w.betas)
            betas[k] = pairs([w.betas.get(k, np.zeros((len(w.rows), width))) for w in warm])
        return SlopeSolution(None, slopes, betas, None)

    def full(self, values: np.ndarray) -> np.ndarray:
        """Every objective row's bound (B, R), from the pairs' (P, 1): the better of the parent's
        and the one just found."""
        full = np.stack([node.values for node in self.batch])
        np.maximum.at(full, (self.domain, self.row), values[:, 0])
        return full

    def worst_corners(self, solution: SlopeSolution, domains: np.ndarray) -> np.ndarray:
        """For each of `domains`, the box corner minimising its worst pair's bound."""
        values = solution.values[:, 0]
        worst = [np.flatnonzero(self.domain == d)[np.argmin(values[self.domain == d])] for d in domains]
        return solution.corners[worst, 0]

    def warm(self, solution: SlopeSolution, open_rows: np.ndarray, i: int) -> Warm:
        """Domain i's slopes and multipliers for the rows it leaves open (open_rows: (B, R) mask)."""
        rows = np.flatnonzero(open_rows[i])
        position = {int(r): p for p, r in zip(np.flatnonzero(self.domain == i), self.row[self.domain == i])}
        at = [position[int(r)] for r in rows]
        return Warm(rows, {k: v[at, 0] for k, v in solution.slopes.items()},
                     {k: v[at, 0] for k, v in solution.betas.items()})


def pairs(parts: list[np.ndarray]) -> np.ndarray:
    """Per-domain arrays (R_d, m) as one (P, 1, m) over all (domain, row) pairs."""
    return np.concatenate(parts)[:, None, :]


def bound_domains(job: Job, batch: list[Node], deadline: float) -> tuple[ChainBounds, dict[int, np.ndarray]]:
    """The input box's bounds under each domain's phase decisions, within its parent's neuron
    bounds (bounded again after its newest decision if the batch reaches refresh_depth); and the
    decisions as signs per splittable step (-1 active, +1 inactive, 0 undecided)."""
    tools, settings, box = job.tools, job.settings.relu_split, job.case.box
    steps = job.chain.steps
    B = len(batch)
    signs: dict[int, np.ndarray] = {}
    for b, node in enumerate(batch):
        for k, j, active in node.decisions:
            signs.setdefault(k, np.zeros((B, steps[k].size)))[b, j] = -1.0 if active else 1.0
    within = tuple([np.stack([node.layers[side][k] for node in batch]) for k in range(len(steps))]
                   for side in (0, 1))
    fixed = [(k, sign < 0, sign > 0) for k, sign in signs.items()]
    lower, upper = np.repeat(box.lower[None], B, axis=0), np.repeat(box.upper[None], B, axis=0)
    if min(len(node.decisions) for node in batch) <= settings.refresh_depth:
        row_bound = (tools.slope_optimiser.row_bound(settings.refresh_steps, deadline)
                     if settings.refresh_steps else None)
        after = min(node.decisions[-1][0] if node.decisions else 0 for node in batch)
        return tools.refresh_bounds.forward(lower, upper, fixed, within, row_bound=row_bound, tighten_after=after,
                                            deadline=deadline), signs
    return tools.interval_bounds.forward(lower, upper, fixed, within), signs
