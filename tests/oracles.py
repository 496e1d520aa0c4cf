"""Independent methods to check the engine's verdicts by, on the reference of a RandomNet
(tests/random_nets.py): nothing here uses smtverify's bounds, encodings, attacks or executors.

- exact_minimum: min over a box of max_i (A_i . net(x) - o_i), for piecewise-linear nets (ReLU,
  LeakyRelu, MaxPool), by enumerating activation patterns depth-first (a kink's phase, a pooling
  window's winner), each
  prefix kept only if an LP finds it feasible, and an LP per complete pattern (scipy's HiGHS);
- z3_violated: whether some x in the box meets the rows, exactly in rationals (If-terms);
- sampled_minimum: dense sampling and a local descent (L-BFGS-B) from the best samples, the only
  method for Sigmoid and Tanh, which neither LP nor linear real arithmetic expresses.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import z3
from scipy.optimize import linprog, minimize

from tests.random_nets import KINKS, RandomNet


class _Region:
    """Linear constraints G x <= h on the inputs (besides the box), and the current value as an
    affine function M x + c of them, for one prefix of activation decisions."""

    def __init__(self, G: np.ndarray, h: np.ndarray, M: np.ndarray, c: np.ndarray) -> None:
        self.G, self.h, self.M, self.c = G, h, M, c

    def where(self, rows: np.ndarray, offsets: np.ndarray) -> "_Region":
        """This region cut by rows x <= offsets."""
        return _Region(np.vstack([self.G, rows]), np.concatenate([self.h, offsets]), self.M, self.c)


def _feasible(region: _Region, bounds: list[tuple[float, float]]) -> bool:
    if not len(region.h):
        return True
    found = linprog(np.zeros(len(bounds)), A_ub=region.G, b_ub=region.h, bounds=bounds, method="highs")
    return found.status == 0


def _range(M: np.ndarray, c: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval of M x + c over the box (no constraints): neurons it proves stable need no LP."""
    return (np.maximum(M, 0) @ lower + np.minimum(M, 0) @ upper + c,
            np.maximum(M, 0) @ upper + np.minimum(M, 0) @ lower + c)


def exact_minimum(net: RandomNet, A: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                  offsets: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """min over the box of max_i (A_i . net(x) - offsets_i), and an x attaining it (up to HiGHS's
    tolerances)."""
    offsets = np.zeros(len(A)) if offsets is None else offsets
    n = net.n_inputs
    bounds = list(zip(lower.tolist(), upper.tolist()))
    best = (np.inf, None)

    def finish(region: _Region) -> None:
        nonlocal best
        # min t over (x, t): A_i (M x + c) <= t
        rows = np.hstack([A @ region.M, -np.ones((len(A), 1))])
        G = np.vstack([rows, np.hstack([region.G, np.zeros((len(region.G), 1))])])
        h = np.concatenate([offsets - A @ region.c, region.h])
        found = linprog(np.append(np.zeros(n), 1.0), A_ub=G, b_ub=h, bounds=bounds + [(None, None)], method="highs")
        if found.status == 0 and found.fun < best[0]:
            best = (float(found.fun), found.x[:n])

    def visit(region: _Region, stage: int, unit: int) -> None:
        if stage == len(net.stages):
            return finish(region)
        step = net.stages[stage]
        if step.kind == "affine":
            return visit(_Region(region.G, region.h, step.W @ region.M, step.W @ region.c + step.b), stage + 1, 0)
        kink = step.kind in KINKS
        units = len(region.c) if kink else len(step.groups)
        if unit == units:
            return visit(region, stage + 1, 0)
        branches = _kink_branches(region, unit, lower, upper, step.alpha) if kink else _pool_branches(region, step, unit)
        for branch in branches:
            if len(branch.h) == len(region.h) or _feasible(branch, bounds):   # no new cut: no LP
                visit(branch, stage, unit + 1)

    visit(_Region(np.zeros((0, n)), np.zeros(0), np.eye(n), np.zeros(n)), 0, 0)
    return best


def _kink_branches(region: _Region, j: int, lower: np.ndarray, upper: np.ndarray, alpha: float) -> list[_Region]:
    """Neuron j active (z >= 0, passed on) and inactive (z <= 0, times alpha: zeroed for a ReLU),
    where the box allows: the region's value is the layer's input, each neuron replaced by its
    output once decided."""
    (low,), (high,) = _range(region.M[j:j + 1], region.c[j:j + 1], lower, upper)
    branches = []
    if high > 0:
        branches.append(region if low >= 0 else region.where(-region.M[j:j + 1], region.c[j:j + 1]))
    if low < 0:
        off = region if high <= 0 else region.where(region.M[j:j + 1], -region.c[j:j + 1])
        M, c = off.M.copy(), off.c.copy()
        M[j], c[j] = alpha * M[j], alpha * c[j]
        branches.append(_Region(off.G, off.h, M, c))
    return branches


def _pool_branches(region: _Region, step, j: int) -> list[_Region]:
    """Window j won by each of its members (>= every other member): its value is appended after
    the pooled input (and the winners so far), and once every window is decided the winners
    alone are the stage's output."""
    members = step.groups[j]
    inputs = len(region.c) - j
    branches = []
    for w in members:
        others = members[members != w]
        cut = region.where(region.M[others] - region.M[w], region.c[w] - region.c[others])
        M, c = np.vstack([cut.M, cut.M[w]]), np.append(cut.c, cut.c[w])
        if j + 1 == len(step.groups):
            M, c = M[inputs:], c[inputs:]
        branches.append(_Region(cut.G, cut.h, M, c))
    return branches


def z3_violated(net: RandomNet, constraints: list[tuple[np.ndarray, np.ndarray | float]], lower: np.ndarray,
                upper: np.ndarray, timeout_s: float = 60.0) -> bool | None:
    """Exactly (rationals, If-terms): is there x in the box meeting every row of some constraint
    (A, b): A y <= b (b one number for all rows, or one per row)? None if Z3 gives up."""
    xs = [z3.Real(f"x{i}") for i in range(net.n_inputs)]
    solver = z3.Solver()
    solver.set("timeout", int(timeout_s * 1000))
    solver.add(*[z3.And(x >= Fraction(float(lo)), x <= Fraction(float(hi))) for x, lo, hi in zip(xs, lower, upper)])
    values: list = xs
    for stage in net.stages:
        if stage.kind == "affine":
            values = [z3.Sum([Fraction(float(w)) * v for w, v in zip(row, values) if w != 0] + [z3.RealVal(Fraction(float(b)))])
                      for row, b in zip(stage.W, stage.b)]
        elif stage.kind in KINKS:
            alpha = z3.RealVal(Fraction(stage.alpha))
            values = [z3.If(v >= 0, v, alpha * v) for v in values]
        elif stage.kind == "MaxPool":
            values = [_z3_max([values[i] for i in group]) for group in stage.groups]
        else:
            raise ValueError(f"{stage.kind} is not piecewise linear")
    outputs = [z3.Real(f"y{j}") for j in range(len(values))]
    solver.add(*[y == v for y, v in zip(outputs, values)])
    solver.add(z3.Or([z3.And([z3.Sum([Fraction(float(a)) * y for a, y in zip(row, outputs) if a != 0]) <= Fraction(float(rhs))
                              for row, rhs in zip(A, np.broadcast_to(b, len(A)))]) for A, b in constraints]))
    answer = solver.check()
    return None if answer == z3.unknown else answer == z3.sat


def _z3_max(terms: list):
    best = terms[0]
    for t in terms[1:]:
        best = z3.If(t > best, t, best)
    return best


def sampled_minimum(net: RandomNet, A: np.ndarray, lower: np.ndarray, upper: np.ndarray, seed: int,
                    samples: int = 20000, descents: int = 8, offsets: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """min of max_i (A_i . net(x) - offsets_i) over uniform samples, the box's corners and centre,
    then local descent (L-BFGS-B, numerical gradients) from the best samples: an upper bound of
    the minimum."""
    offsets = np.zeros(len(A)) if offsets is None else offsets
    rng = np.random.default_rng(seed)
    free = np.flatnonzero(upper > lower)
    corners = np.repeat(((lower + upper) / 2)[None], 2 ** len(free) + 1, axis=0)
    bits = (np.arange(2 ** len(free))[:, None] >> np.arange(len(free))) & 1
    corners[1:, free] = np.where(bits == 1, upper[free], lower[free])
    x = np.vstack([corners, rng.uniform(lower, upper, (samples, len(lower)))])
    scores = (net.forward(x) @ A.T - offsets).max(axis=1)
    order = np.argsort(scores)
    best_x, best = x[order[0]], float(scores[order[0]])

    def at(z: np.ndarray, start: np.ndarray) -> np.ndarray:
        point = start.copy()
        point[free] = np.clip(z, lower[free], upper[free])
        return point

    def objective(z: np.ndarray, start: np.ndarray) -> float:
        return float((net.forward(at(z, start)[None]) @ A.T - offsets).max())

    for start in x[order[:descents]]:
        found = minimize(objective, start[free], args=(start,), method="L-BFGS-B", bounds=list(zip(lower[free], upper[free])))
        if found.fun < best:
            best_x, best = at(found.x, start), objective(found.x, start)
    return best, best_x
