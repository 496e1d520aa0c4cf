"""Tighter bounds of one box's hidden neurons, by branch and bound on the kinks (ReLUs) before them.

Back-substitution and optimised slopes bound a neuron over the triangle relaxation of every ReLU
before it, and on deep networks that is far from the neuron's true range. Measured on MNIST-FC
256x4 prop_6 eps 0.03, a second-layer neuron: [-9.40, 1.06] by optimised slopes, [-7.50, 0.01]
after 64 splits of its bound, its true upper bound -0.017 (MILP). Refining all second-layer bounds
that way (32 splits each) took the root's margin from -3.49 to -1.78 and its unstable ReLUs per
layer from 44/100/34/200 to 44/79/11/78, which loose bounds make ReLU splitting pay for in domains.

Each neuron's lower (or upper) bound is the minimum over the leaves of its own small tree: the
worst leaf is split on the ReLU whose triangle costs its bound most, and each leaf is bounded by
optimised slopes with its decisions' multipliers (slopes.py), so every refined bound is as sound
as the bounds it is made of. The refined layer then tightens the layers after it, and the next
layer is refined in turn, until the deadline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .bounds import BoundPropagator, ChainBounds, tightened_layer_by_layer
from .slopes import Objective, SlopeOptimiser, SlopeSolution


@dataclass(frozen=True)
class RefineSettings:
    """The refining branch and bound's knobs (docs/tuning.md has the measurements behind them)."""

    splits: int = 128           # splits of each neuron bound's worst leaf
    iterations: int = 20        # slope and multiplier ascent per root leaf
    warm_iterations: int = 3    # ... and per child, from its parent's slopes and multipliers
    layer_iterations: int = 20  # the later layers' bounds re-optimised after each refined layer
    max_leaves: int = 4096      # bounded per call


@dataclass
class _Leaves:
    """Leaves of every neuron bound's tree: the objective row each bounds, its phase decisions
    per ReLU step (-1 active, +1 inactive, 0 undecided), its bound, and the slopes and multipliers
    per ReLU step its ascent ended with (float32, (N, m); None before the first ascent)."""

    row: np.ndarray
    signs: dict[int, np.ndarray]
    value: np.ndarray
    slopes: dict[int, np.ndarray] | None = None
    betas: dict[int, np.ndarray] | None = None

    def worst(self, rows: np.ndarray) -> np.ndarray:
        """Index of each of `rows`' worst leaf."""
        order = np.lexsort((self.value, self.row))
        first = order[np.r_[True, self.row[order][1:] != self.row[order][:-1]]]
        return first[np.isin(self.row[first], rows)]

    def take(self, index: np.ndarray) -> "_Leaves":
        return _Leaves(self.row[index], _picked(self.signs, index), self.value[index],
                       _picked(self.slopes, index), _picked(self.betas, index))

    def join(self, other: "_Leaves") -> "_Leaves":
        return _Leaves(np.concatenate([self.row, other.row]), _joined(self.signs, other.signs),
                       np.concatenate([self.value, other.value]), _joined(self.slopes, other.slopes),
                       _joined(self.betas, other.betas))


def _picked(arrays: "dict[int, np.ndarray] | None", index: np.ndarray) -> "dict[int, np.ndarray] | None":
    return None if arrays is None else {k: a[index] for k, a in arrays.items()}


def _joined(mine: dict[int, np.ndarray], theirs: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    return {k: np.concatenate([a, theirs[k]]) for k, a in mine.items()}


class BoundRefiner:
    """Refines a single box's ChainBounds layer by layer (see the module's docstring)."""

    def __init__(self, propagator: BoundPropagator, optimiser: SlopeOptimiser,
                 settings: RefineSettings | None = None) -> None:
        self.propagator = propagator
        self.optimiser = optimiser
        self.chain = propagator.chain
        self.settings = settings or RefineSettings()
        # parents' neuron bounds kept, decided ReLUs clamped: a leaf costs its ascent alone
        self.interval = BoundPropagator(self.chain, symbolic=False, backsub=False, flat_too=False)

    def refined(self, bounds: ChainBounds, deadline: float, forward_seconds: float = 0.0) -> ChainBounds:
        """The box's bounds with every ReLU layer's unstable neurons refined, from the second ReLU
        layer on (the first is exact), as far as the deadline allows. A layer's re-propagation
        costs seconds on a big net (oval21 CIFAR: 3.3 s), so its neurons are bounded only until
        that long before the deadline (`forward_seconds` for the first: a measured forward; then
        the last re-propagation's), and no layer starts with less time left; every ascent and
        re-propagation stops at the deadline, its bounds sound (only looser), so this returns by it."""
        kinks = [k for k, step in enumerate(self.chain.steps) if step.splittable]

        def neuron_bound(bounds: ChainBounds, k: int, unstable: np.ndarray):
            before = [r for r in kinks if r < k]
            return (*self._neuron_bounds(bounds, k, unstable, before, deadline - forward_seconds), None)

        def repropagate(bounds: ChainBounds, within) -> ChainBounds:
            nonlocal forward_seconds
            began = time.perf_counter()
            bounds = self.propagator.forward(bounds.box_lower, bounds.box_upper, within=within, deadline=deadline,
                                             row_bound=self.optimiser.row_bound(self.settings.layer_iterations, deadline))
            forward_seconds = time.perf_counter() - began
            return bounds

        for bounds, _ in tightened_layer_by_layer(self.chain, bounds, neuron_bound, repropagate,
                                                  lambda: time.perf_counter() + forward_seconds > deadline):
            pass
        return bounds

    def _neuron_bounds(self, bounds: ChainBounds, k: int, neurons: np.ndarray, before: list[int],
                       deadline: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of step k's input neurons, each the minimum over its tree's leaves."""
        n = len(neurons)
        rows = np.zeros((2 * n, bounds.lower[k].shape[1]))
        rows[np.arange(n), neurons] = 1.0
        rows[n + np.arange(n), neurons] = -1.0
        leaves = _Leaves(np.arange(2 * n), {r: np.zeros((2 * n, bounds.lower[r].shape[1]), np.int8) for r in before},
                         np.full(2 * n, -np.inf))
        self._bound(bounds, rows, k, leaves, deadline)
        open_rows = np.arange(2 * n)
        for _ in range(self.settings.splits):
            worst = leaves.worst(open_rows)
            worst = worst[leaves.value[worst] <= 0]           # > 0: the neuron is stable, nothing to gain
            if len(worst) == 0 or time.perf_counter() > deadline:
                break
            parents = leaves.take(worst)
            children, splittable = self._children(bounds, rows, k, parents)
            open_rows = parents.row[splittable]
            if len(open_rows) == 0:
                break
            keep = np.ones(len(leaves.row), bool)
            keep[worst[splittable]] = False
            self._bound(bounds, rows, k, children, deadline)
            children.value = np.maximum(children.value, np.repeat(parents.value[splittable], 2))
            leaves = leaves.take(np.flatnonzero(keep)).join(children)
        best = np.full(2 * n, np.inf)
        np.minimum.at(best, leaves.row, leaves.value)
        return best[:n], -best[n:]

    def _children(self, bounds: ChainBounds, rows: np.ndarray, k: int, parents: _Leaves
                  ) -> tuple[_Leaves, np.ndarray]:
        """Both children of each parent split on the undecided ReLU whose upper side costs its
        bound most (BaBSR); parents with none left are not split (`splittable` marks the others)."""
        domain = self._domain_bounds(bounds, parents, k)
        costs = self.propagator.upper_side_costs(domain, rows[parents.row], end=k)
        steps = sorted(parents.signs)
        best = np.stack([costs[r].max(axis=1) for r in steps])          # (steps, P)
        step_of = np.array(steps)[np.argmax(best, axis=0)]
        splittable = best.max(axis=0) > 0
        index = np.flatnonzero(splittable)
        children = parents.take(np.repeat(index, 2))
        for r in steps:
            mine = np.flatnonzero(step_of[index] == r)
            neuron = np.argmax(costs[r][index[mine]], axis=1)
            for side, sign in ((0, -1), (1, 1)):
                children.signs[r][2 * mine + side, neuron] = sign
        return children, splittable

    def _domain_bounds(self, bounds: ChainBounds, leaves: _Leaves, k: int) -> ChainBounds:
        """The box's bounds up to step k's input under each leaf's decisions, within the box's own."""
        count = len(leaves.row)
        within = tuple([np.repeat(layer, count, axis=0) for layer in side[:k]] for side in (bounds.lower, bounds.upper))
        fixed = [(r, sign < 0, sign > 0) for r, sign in leaves.signs.items()]
        box_lo, box_hi = np.repeat(bounds.box_lower, count, axis=0), np.repeat(bounds.box_upper, count, axis=0)
        return self.interval.forward(box_lo, box_hi, fixed, within, end=k)

    def _bound(self, bounds: ChainBounds, rows: np.ndarray, k: int, leaves: _Leaves, deadline: float) -> None:
        """Each leaf's sound lower bound of its row (+inf where its decisions contradict its
        bounds), its ascent started from the slopes and multipliers the leaf holds (its parent's)
        and stopped at the deadline, and the ones it ends with, in place."""
        warm = leaves.slopes is not None
        iterations = self.settings.warm_iterations if warm else self.settings.iterations
        slopes: dict[int, list] = {}
        betas: dict[int, list] = {}
        for part in np.array_split(np.arange(len(leaves.row)), max(1, -(-len(leaves.row) // self.settings.max_leaves))):
            sub = leaves.take(part)
            domain = self._domain_bounds(bounds, sub, k)
            empty = domain.empty(k + 1)
            M = np.zeros((len(part), 1, len(rows)))
            M[np.arange(len(part)), 0, sub.row] = 1.0
            start = (SlopeSolution(None, {r: s[:, None, :] for r, s in sub.slopes.items()},
                                   {r: b[:, None, :] for r, b in sub.betas.items()}, None) if warm else None)
            solution = self.optimiser.optimise(
                domain, Objective(rows, np.zeros(len(rows)), M, np.zeros(M.shape, bool)), k, iterations=iterations,
                splits={r: s.astype(np.float64) for r, s in sub.signs.items()}, start=start, deadline=deadline)
            leaves.value[part] = np.where(empty, np.inf, solution.values[:, 0])
            for r, s in solution.slopes.items():
                slopes.setdefault(r, []).append(s[:, 0].astype(np.float32))
            for r, b in solution.betas.items():
                betas.setdefault(r, []).append(b[:, 0].astype(np.float32))
        leaves.slopes = {r: np.concatenate(parts) for r, parts in slopes.items()}
        leaves.betas = {r: np.concatenate(parts) for r, parts in betas.items()}
