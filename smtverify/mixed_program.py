"""A mixed-integer linear program solved by HiGHS, whose answers are trusted only where certified.

HiGHS (through scipy) works in floating point with tolerances: its optimum, and its word that a
program is infeasible, are never a proof. What this module claims as proven comes from weak
duality alone: for any row multipliers y, the minimum over the column box of (c - A^T y) . v, plus
y times the row bounds, is a lower bound of c . v over every v meeting the rows, evaluated with
outward error allowances (Higham's gamma_n), so it holds in exact arithmetic however poor HiGHS's
duals are. An LP HiGHS finds infeasible is certified empty the same way, on its elastic form (every
row given nonnegative slack, the slack's sum minimised: a certified minimum above 0 proves that no
point meets the rows). A bound over the integer program comes from branch and bound on the
integral columns, each leaf certified so (`prove_above`). (HiGHS's own MILP, scipy.optimize.milp,
is not used: on the MNIST CNN's prefix with 8 moved pixels, 1,600 columns and 286 0/1 columns, it
found no feasible point in 10 s even with no target at all, and its "infeasible" is no proof.)

What HiGHS finds (a point at an LP or MILP optimum) is only a candidate: the callers check it on
the network itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from .lp import weak_duality_bound
from .rounding import gamma_n

INF = float("inf")
INTEGRAL_TOLERANCE = 1e-6          # an LP value this close to 0 or 1 counts as integral


@dataclass
class MixedProgram:
    """row_lower <= A v <= row_upper, col_lower <= v <= col_upper, v_j in {0, 1} where integral[j]
    (those columns' bounds lie in [0, 1]). Every column bound is finite (certificates need it)."""

    A: sparse.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integral: np.ndarray

    @property
    def n_cols(self) -> int:
        return self.A.shape[1]

    def with_columns(self, lower: np.ndarray, upper: np.ndarray) -> "MixedProgram":
        """The program with more continuous columns (in no row yet), numbered after the others."""
        A = sparse.hstack([self.A, sparse.csr_matrix((self.A.shape[0], len(lower)))], format="csr")
        return replace(self, A=A, col_lower=np.concatenate([self.col_lower, lower]),
                       col_upper=np.concatenate([self.col_upper, upper]),
                       integral=np.concatenate([self.integral, np.zeros(len(lower), bool)]))

    def with_rows(self, A: sparse.spmatrix, lower: np.ndarray, upper: np.ndarray) -> "MixedProgram":
        return replace(self, A=sparse.vstack([self.A, sparse.csr_matrix(A)], format="csr"),
                       row_lower=np.concatenate([self.row_lower, lower]),
                       row_upper=np.concatenate([self.row_upper, upper]))

    def twice(self) -> "MixedProgram":
        """Two independent copies side by side (columns of the second numbered after the first's)."""
        return MixedProgram(sparse.block_diag([self.A, self.A], format="csr"),
                            *(np.concatenate([a, a]) for a in (self.row_lower, self.row_upper, self.col_lower,
                                                               self.col_upper, self.integral)))

    def restricted(self, keep: np.ndarray) -> "MixedProgram":
        """The columns of the mask `keep`, and only the rows that use none but them: a relaxation
        (fewer rows), so what is proven about it holds for the whole program."""
        A = self.A.tocsc()[:, keep].tocsr()
        rows = np.asarray(abs(self.A) @ (~keep).astype(float)) == 0
        return MixedProgram(A[rows], self.row_lower[rows], self.row_upper[rows], self.col_lower[keep],
                            self.col_upper[keep], self.integral[keep])

    def fixing(self, column: int, value: float) -> "MixedProgram":
        lower, upper = self.col_lower.copy(), self.col_upper.copy()
        lower[column] = upper[column] = value
        return replace(self, col_lower=lower, col_upper=upper)


@dataclass
class LpAnswer:
    """A certified lower bound of c . v over the LP relaxation (inf: certified empty; -inf: none),
    and HiGHS's optimal point (None where it found none)."""

    bound: float
    point: np.ndarray | None
    value: float = INF             # HiGHS's optimal objective (not certified)


def certified_minimum(p: MixedProgram, c: np.ndarray, y: np.ndarray) -> float:
    """Weak duality with outward rounding: a lower bound, in exact arithmetic, of c . v over every v
    in the column box that meets the rows, from any multipliers y (one per row)."""
    side = np.where(y > 0, p.row_lower, p.row_upper)
    y = np.where(np.isfinite(side) & np.isfinite(y), y, 0.0)
    reduced = c - p.A.T @ y
    terms_per_column = int(np.diff(p.A.tocsc().indptr).max(initial=0)) + 2
    error = gamma_n(terms_per_column) * (np.abs(c) + abs(p.A).T @ np.abs(y))
    return weak_duality_bound(reduced, error, p.col_lower, p.col_upper, y, p.row_lower, p.row_upper)


def _highs_lp(p: MixedProgram, c: np.ndarray, seconds: float):
    """HiGHS on the LP relaxation; ranged rows split into <= rows, equal sides kept as equalities.
    Returns scipy's result and the multipliers of the original rows."""
    equal = p.row_lower == p.row_upper
    above, below = ~equal & np.isfinite(p.row_upper), ~equal & np.isfinite(p.row_lower)
    A = p.A
    A_ub = sparse.vstack([A[above], -A[below]], format="csr")
    b_ub = np.concatenate([p.row_upper[above], -p.row_lower[below]])
    result = linprog(c, A_ub=A_ub if A_ub.shape[0] else None, b_ub=b_ub if A_ub.shape[0] else None,
                     A_eq=A[equal] if equal.any() else None, b_eq=p.row_lower[equal] if equal.any() else None,
                     bounds=np.column_stack([p.col_lower, p.col_upper]), method="highs",
                     options={"time_limit": max(float(seconds), 0.01)})
    y = np.zeros(A.shape[0])
    if result.status == 0:
        if equal.any():
            y[equal] = result.eqlin.marginals
        if A_ub.shape[0]:
            marginals = result.ineqlin.marginals
            y[np.flatnonzero(above)] += marginals[:above.sum()]
            y[np.flatnonzero(below)] -= marginals[above.sum():]
    return result, y


def lp_minimum(p: MixedProgram, c: np.ndarray, seconds: float = INF) -> LpAnswer:
    """A certified lower bound of c . v over the LP relaxation, and HiGHS's optimum."""
    result, y = _highs_lp(p, c, seconds)
    if result.status == 0:
        point = np.clip(result.x, p.col_lower, p.col_upper)
        return LpAnswer(certified_minimum(p, c, y), point, float(result.fun))
    if result.status == 2:
        return LpAnswer(INF if _certified_empty(p, seconds) else -INF, None)
    return LpAnswer(-INF, None)


def _certified_empty(p: MixedProgram, seconds: float) -> bool:
    """Whether the elastic form's certified minimum is above 0 (the rows cannot all be met)."""
    m = p.A.shape[0]
    # Slacks up to any finite size: 0 stays inside their range, which is all the proof needs.
    scale = np.maximum(np.abs(p.A) @ np.maximum(np.abs(p.col_lower), np.abs(p.col_upper)), 1.0)
    lower_ok, upper_ok = np.isfinite(p.row_lower), np.isfinite(p.row_upper)
    bigger = np.where(lower_ok, np.abs(p.row_lower), 0.0) + np.where(upper_ok, np.abs(p.row_upper), 0.0)
    room = 2 * (scale + bigger)
    elastic = p.with_columns(np.zeros(2 * m), np.concatenate([room, room]))
    identity = sparse.identity(m, format="csr")
    elastic = replace(elastic, A=sparse.hstack([p.A, identity, -identity], format="csr"))
    c = np.concatenate([np.zeros(p.n_cols), np.ones(2 * m)])
    result, y = _highs_lp(elastic, c, seconds)
    return result.status == 0 and certified_minimum(elastic, c, y) > 0


def prove_above(p: MixedProgram, c: np.ndarray, threshold: float, deadline: float, max_nodes: int = 64,
                branch: np.ndarray | None = None) -> tuple[str, np.ndarray | None]:
    """Branch and bound on the integral columns (those of the mask `branch` only, when given), each
    leaf's LP bound certified: ("proved", None) when c . v > threshold over every point of the
    integer program, ("reached", v) when an LP optimum at or below the threshold, integral on the
    columns branched on, was found (HiGHS's point: a candidate), else ("unknown", None) (the node
    budget or the deadline, perf_counter, ran out first). Branching on fewer columns never weakens
    a proof: every node's relaxation contains every point of the integer program in it."""
    stack, nodes = [p], 0
    while stack:
        if nodes >= max_nodes or time.perf_counter() >= deadline:
            return "unknown", None
        node = stack.pop()
        nodes += 1
        answer = lp_minimum(node, c, deadline - time.perf_counter())
        if answer.bound > threshold:
            continue
        if answer.point is None:
            return "unknown", None
        v = answer.point
        fraction = np.where(node.integral if branch is None else node.integral & branch, np.minimum(v, 1 - v), 0.0)
        j = int(np.argmax(fraction))
        if fraction[j] <= INTEGRAL_TOLERANCE:
            return ("reached", v) if answer.value <= threshold else ("unknown", None)
        near = int(v[j] >= 0.5)                   # the nearer side last: searched first
        stack += [node.fixing(j, 1 - near), node.fixing(j, near)]
    return "proved", None
