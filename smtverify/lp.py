"""LP bounds of a chain of affine steps and kinks (ReLU, LeakyRelu) over a box (the triangle
relaxation), certified by their duals.

Back-substitution (bounds.py) relaxes every unstable ReLU with one fixed pair of lines; the linear
program over the triangle relaxation of all of them at once is tighter (measured on MNIST-FC
256x2, eps 0.05, prop 3: a margin of -0.047 became +0.020). HiGHS solves it, warm-started from
node to node of branch and bound (6 ms against 100 ms cold on that net).

HiGHS works in floating point with tolerances, so its optimum is never trusted. A bound is taken
only from weak duality: for any row multipliers y, the minimum over the column box of
(c - A^T y) . v, plus y times the row bounds, is a lower bound of c . v over the relaxation. It is
evaluated with outward error allowances, so it holds in exact arithmetic however poor HiGHS's
duals are; poor duals only make it loose. Every row contains the network as stored: affine rows
carry its exact weights, triangle slopes and offsets are rounded up.

Columns: the inputs, then every step's outputs (z for an affine step, y for a kink). Rows: each
step's own (Step.lp_rows): per affine step z - W v = b; per kink of slope a below 0, y - z >= 0,
y - a z >= 0 and the upper side y - s z <= t, the chord of [l, u] for an unstable neuron, exact
(s = 1 or a, t = 0) for a stable one (Kink.lp_upper_side).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import sparse

from .bounds import BoundPropagator, ChainBounds, tightened_layer_by_layer
from .chain import Chain
from .rounding import gamma_n

INF = float("inf")
MAX_NONZEROS = 2_000_000   # beyond this a simplex solve costs more than branch and bound gains


def supports(chain: Chain) -> bool:
    """Every step one the LP encodes (affine steps exact as stored, kinks), small enough for simplex."""
    if not all(step.lp_encodable for step in chain.steps):
        return False
    return sum(step.nonzeros for step in chain.steps if step.linear) <= MAX_NONZEROS


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS prints a banner on stdout the first time a solver is made; our stdout carries verdicts."""
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@dataclass
class LpBound:
    """A certified lower bound of an objective over the relaxation, and what HiGHS's optimum says."""

    value: float                      # certified; -inf when nothing could be certified
    x: np.ndarray | None              # the inputs at HiGHS's optimum: a candidate counterexample
    relu_scores: dict[int, np.ndarray]  # per kink step: |dual| x intercept of each triangle (branching)


class LpRelaxation:
    """One HiGHS model of a chain over a box; neuron bounds are set per branch-and-bound node."""

    def __init__(self, chain: Chain, lower: np.ndarray, upper: np.ndarray) -> None:
        import highspy

        self.chain = chain
        self.box = (np.asarray(lower, np.float64), np.asarray(upper, np.float64))
        sizes = [chain.n_inputs] + [s.size for s in chain.steps]
        self.offsets = np.cumsum([0] + sizes)          # first column of each value
        self.n_cols = int(self.offsets[-1])
        self.triangles: dict[int, tuple[int, np.ndarray]] = {}   # kink step -> (first row of its upper side, slopes s)
        self.static, self.row_lower, self.row_upper = self._rows()
        self._column_terms = int(np.diff(self.static.tocsc().indptr).max(initial=0)) + 2
        self.col_lower = np.full(self.n_cols, -INF)
        self.col_upper = np.full(self.n_cols, INF)
        with _quiet_stdout():
            self.solver = highspy.Highs()
        self.solver.setOptionValue("output_flag", False)
        self.solver.setOptionValue("solver", "simplex")
        # Primal simplex: a new objective keeps the basis primal feasible. Measured on MNIST-FC 256x4,
        # nine objectives in turn: 25-53 ms a solve against 580-1160 ms for HiGHS's default (dual).
        self.solver.setOptionValue("simplex_strategy", 4)
        # HiGHS's primal simplex can cycle on degenerate models (seen: an ACAS Xu box 1e-3 wide in
        # one input), and then never reaches its time limit; an iteration limit stops it, and the
        # dual simplex solves the model again from scratch (see _solve).
        self.solver.setOptionValue("simplex_iteration_limit", max(10_000, 10 * (self.n_cols + self.static.shape[0])))
        self._status = highspy.HighsModelStatus
        self._pass_model(highspy)

    # ----- structure -------------------------------------------------------------------------
    def _rows(self) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
        """Every step's rows, each triangle's slope still 0 (slopes live in self.triangles)."""
        blocks, lower, upper, row = [], [], [], 0
        for k, step in enumerate(self.chain.steps):
            before, here = int(self.offsets[k]), int(self.offsets[k + 1])
            m = int(self.offsets[k + 2] - here)

            def place(*parts: sparse.spmatrix) -> sparse.csr_matrix:
                width = sum(p.shape[1] for p in parts)
                return sparse.hstack([sparse.csr_matrix((m, before)), *parts,
                                      sparse.csr_matrix((m, self.n_cols - before - width))], format="csr")

            identity = sparse.identity(m, format="csr")
            for before_part, row_lower, row_upper in step.lp_rows():
                blocks.append(place(before_part, identity))
                lower.append(row_lower)
                upper.append(row_upper)
                row += m
            if step.splittable:                 # its last rows: the upper side
                self.triangles[k] = (row - m, np.zeros(m))
        return sparse.vstack(blocks, format="csr"), np.concatenate(lower), np.concatenate(upper)

    def _pass_model(self, highspy) -> None:
        lp = highspy.HighsLp()
        A = self.static.tocsc()
        lp.num_col_, lp.num_row_ = self.n_cols, A.shape[0]
        lp.col_cost_ = np.zeros(self.n_cols)
        lp.col_lower_, lp.col_upper_ = self.col_lower, self.col_upper
        lp.row_lower_, lp.row_upper_ = self.row_lower, self.row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
        self.solver.passModel(lp)

    # ----- per node --------------------------------------------------------------------------
    def set_bounds(self, bounds: ChainBounds, index: int = 0) -> None:
        """Column bounds and triangle rows from one box's sound neuron bounds (row `index`); the
        box may be any part of the one the model was built for (input splitting)."""
        self.box = (bounds.box_lower[index], bounds.box_upper[index])
        lower = [self.box[0]] + [bounds.lower[k + 1][index] for k in range(len(self.chain.steps))]
        upper = [self.box[1]] + [bounds.upper[k + 1][index] for k in range(len(self.chain.steps))]
        self.col_lower, self.col_upper = np.concatenate(lower), np.concatenate(upper)
        self.solver.changeColsBounds(self.n_cols, np.arange(self.n_cols, dtype=np.int32), self.col_lower,
                                     self.col_upper)
        for k in self.triangles:
            self._set_triangles(k, bounds.lower[k][index], bounds.upper[k][index])

    def _set_triangles(self, k: int, lo: np.ndarray, hi: np.ndarray) -> None:
        """Row y - s z <= t: the triangle's upper side over [lo, hi], exact when the phase is known,
        rounded up (Kink.lp_upper_side)."""
        first, old = self.triangles[k]
        slope, offset = self.chain.steps[k].lp_upper_side(lo, hi)
        rows = first + np.arange(len(lo))
        z = int(self.offsets[k])
        for i in np.flatnonzero(slope != old):
            self.solver.changeCoeff(int(rows[i]), z + int(i), float(-slope[i]))
        self.triangles[k] = (first, slope)
        self.row_upper[rows] = offset
        self.solver.changeRowsBounds(len(rows), rows.astype(np.int32), self.row_lower[rows], offset)

    # ----- bounds ----------------------------------------------------------------------------
    def lower_bound(self, A: np.ndarray, b: np.ndarray, seconds: float = INF) -> LpBound:
        """A certified lower bound of max_i (A_i . y - b_i) over the relaxation (y the outputs):
        > 0 proves that no point of the box meets all rows A y <= b."""
        self.solver.setOptionValue("time_limit", max(float(seconds), 0.01))
        out = slice(int(self.offsets[-2]), self.n_cols)
        if len(b) == 1:
            cost = np.zeros(self.n_cols)
            cost[out] = A[0]
            solution = self._solve(cost)
            weights = np.ones(1)
        else:
            weights, solution = self._solve_max(A, b, out)
        duals = np.asarray(solution.row_dual)[:len(self.row_lower)]
        objective = np.zeros(self.n_cols)
        objective[out] = weights @ A
        if self._infeasible():
            return LpBound(self._certify_empty(), None, {})
        value = self.certified_bound(objective, -float(weights @ b), duals)
        scores = {k: np.abs(duals[first:first + len(s)]) * np.maximum(-self.col_lower[self.offsets[k]:self.offsets[k + 1]], 0)
                  * s for k, (first, s) in self.triangles.items()}
        return LpBound(value, self._optimum(), scores)

    def neuron_bounds(self, value: int, neurons: np.ndarray, deadline: float, minimise: bool
                      ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Certified lower bounds (minimise) or upper bounds of the given neurons of value `value`
        (0: the inputs, k + 1: the output of step k), until the deadline (then -inf / inf), and
        the inputs at HiGHS's optima (candidate counterexamples)."""
        sign = 1.0 if minimise else -1.0
        found = np.full(len(neurons), -INF)
        points = []
        for i, j in enumerate(neurons):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self.solver.setOptionValue("time_limit", max(remaining, 0.01))
            cost = np.zeros(self.n_cols)
            cost[self.offsets[value] + j] = sign
            solution = self._solve(cost)
            found[i] = self.certified_bound(cost, 0.0, np.asarray(solution.row_dual))
            point = self._optimum()
            if point is not None:
                points.append(point)
        return sign * found, points

    def _solve(self, cost: np.ndarray):
        self.solver.changeColsCost(self.n_cols, np.arange(self.n_cols, dtype=np.int32), cost)
        self._run()
        return self.solver.getSolution()

    def _run(self) -> None:
        self.solver.run()
        if self.solver.getModelStatus() == self._status.kIterationLimit:
            self.solver.clearSolver()
            self.solver.setOptionValue("simplex_strategy", 1)
            self.solver.run()
            self.solver.setOptionValue("simplex_strategy", 4)

    def _infeasible(self) -> bool:
        return self.solver.getModelStatus() == self._status.kInfeasible

    def _optimum(self) -> np.ndarray | None:
        """The inputs of an optimal solution, clipped into the box (HiGHS's tolerances), or None."""
        if self.solver.getModelStatus() != self._status.kOptimal:
            return None
        x = np.asarray(self.solver.getSolution().col_value)[:self.chain.n_inputs]
        return np.clip(x, *self.box)

    def _certify_empty(self) -> float:
        """+inf when a dual ray proves the relaxation empty (a node whose decisions contradict its
        bounds), else -inf. A ray y proves it when 0 . v, bounded below by weak duality with y,
        comes out above 0."""
        status, has_ray, ray = self.solver.getDualRay()
        if not has_ray:
            return -INF
        ray = np.asarray(ray)[:len(self.row_lower)]
        zero = np.zeros(self.n_cols)
        return INF if max(self.certified_bound(zero, 0.0, ray), self.certified_bound(zero, 0.0, -ray)) > 0 else -INF

    def _solve_max(self, A: np.ndarray, b: np.ndarray, out: slice):
        """min t s.t. A_i . y - t <= b_i; the rows' duals, normalised to sum 1, weight the rows."""
        t = self.n_cols
        self.solver.changeColsCost(self.n_cols, np.arange(self.n_cols, dtype=np.int32), np.zeros(self.n_cols))
        self.solver.addCol(1.0, -INF, INF, 0, np.zeros(0, np.int32), np.zeros(0))
        n_rows = len(self.row_lower)
        columns = np.arange(out.start, out.stop)
        for a, rhs in zip(A, b):
            nz = np.flatnonzero(a)
            self.solver.addRow(-INF, float(rhs), len(nz) + 1, np.append(columns[nz], t).astype(np.int32),
                               np.append(a[nz], -1.0))
        self._run()
        solution = self.solver.getSolution()
        mu = np.maximum(-np.asarray(solution.row_dual)[n_rows:], 0.0)
        self.solver.deleteRows(len(b), np.arange(n_rows, n_rows + len(b), dtype=np.int32))
        self.solver.deleteCols(1, np.array([t], np.int32))
        weights = mu / mu.sum() if mu.sum() > 0 else np.full(len(b), 1.0 / len(b))
        return weights, solution

    def certified_bound(self, objective: np.ndarray, constant: float, duals: np.ndarray) -> float:
        """Weak duality, with outward rounding: a lower bound of objective . v + constant over every
        v in the column box satisfying the rows, in exact arithmetic."""
        y = np.where(np.isfinite(np.where(duals > 0, self.row_lower, self.row_upper)), duals, 0.0)
        y = np.where(np.isfinite(y), y, 0.0)
        Aty = self.static.T @ y
        magnitude = abs(self.static).T @ np.abs(y)
        for k, (first, slope) in self.triangles.items():
            z = slice(int(self.offsets[k]), int(self.offsets[k + 1]))
            part = y[first:first + len(slope)]
            Aty[z] -= slope * part
            magnitude[z] += slope * np.abs(part)
        reduced = objective - Aty
        error = gamma_n(self._column_terms) * (np.abs(objective) + magnitude)
        return weak_duality_bound(reduced, error, self.col_lower, self.col_upper, y, self.row_lower, self.row_upper,
                                  constant)


def weak_duality_bound(reduced: np.ndarray, error: np.ndarray, col_lower: np.ndarray, col_upper: np.ndarray,
                       y: np.ndarray, row_lower: np.ndarray, row_upper: np.ndarray, constant: float = 0.0) -> float:
    """The certificate's sum, rounded outward: min over the column box of (c - A^T y) . v, with the
    reduced costs `reduced` known to within `error` per column, plus y times each row's bound on
    its side (the lower where y > 0), plus `constant`. A lower bound in exact arithmetic of the
    objective over every column-box point that meets the rows, whatever y is; -inf where a term
    is infinite (a multiplier on an unbounded side, a cost on an unbounded column)."""
    column_terms = _box_minimum(reduced - error, reduced + error, col_lower, col_upper)
    row_terms = y * np.where(y != 0, np.where(y > 0, row_lower, row_upper), 0.0)
    terms = np.concatenate([column_terms, row_terms, [constant]])
    if not np.all(np.isfinite(terms)):
        return -INF
    return float(terms.sum() - gamma_n(len(terms) + 2) * np.abs(terms).sum())


def tightened(relaxation: LpRelaxation, propagator: BoundPropagator, bounds: ChainBounds, deadline: float
              ) -> Iterator[tuple[ChainBounds, list[np.ndarray]]]:
    """LP bounds of the unstable kinks' inputs, layer by layer from the second kink step on (the first
    ones are exact already), each layer's intersected into a new back-substitution of the layers
    after it. Yields the bounds after each layer and the inputs at its LP optima (candidate
    counterexamples), until the deadline."""
    box_lo, box_hi = bounds.box_lower[:1], bounds.box_upper[:1]

    def neuron_bound(bounds: ChainBounds, k: int, unstable: np.ndarray):
        relaxation.set_bounds(bounds)
        new_lo, points_lo = relaxation.neuron_bounds(k, unstable, deadline, minimise=True)
        new_hi, points_hi = relaxation.neuron_bounds(k, unstable, deadline, minimise=False)
        return new_lo, new_hi, points_lo + points_hi

    def repropagate(bounds: ChainBounds, within) -> ChainBounds:
        return propagator.forward(box_lo, box_hi, within=within)

    yield from tightened_layer_by_layer(relaxation.chain, bounds, neuron_bound, repropagate,
                                        lambda: time.perf_counter() > deadline)


def _box_minimum(r_lo: np.ndarray, r_hi: np.ndarray, v_lo: np.ndarray, v_hi: np.ndarray) -> np.ndarray:
    """min of r * v over r in [r_lo, r_hi], v in [v_lo, v_hi], per column (0 * inf counts as 0:
    a reduced cost known to be exactly 0 contributes nothing, whatever the column's range)."""
    with np.errstate(invalid="ignore"):
        corners = np.stack([r_lo * v_lo, r_lo * v_hi, r_hi * v_lo, r_hi * v_hi])
    corners = np.where(np.isnan(corners), 0.0, corners)
    # products round: one ulp of each outward
    return np.nextafter(corners.min(axis=0), -INF)
