"""A case's unsafe condition as rows to bound: what "safe" means numerically for bounds and splitting.

A case is unsafe where some constraint holds, and a constraint A y <= b holds where all its rows
do. So a box is proven safe when every constraint has a row whose lower bound of A_r y - b_r is
positive: the box's margin is min over constraints of max over their rows, and > 0 means safe.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..slopes import Objective
from ..vnnlib import Case, OutputConstraint


@dataclass
class UnsafeRows:
    """All output rows of a case's unsafe constraints, stacked: row r belongs to constraint group[r]."""

    A: np.ndarray
    b: np.ndarray
    group: np.ndarray
    n_groups: int

    @classmethod
    def of(cls, case: Case) -> "UnsafeRows":
        """Each constraint's rows, plus sums of them: a conjunction can be impossible although no
        single row is, and any non-negative combination of its rows refutes it just as soundly."""
        A, b, group = [], [], []
        for g, constraint in enumerate(case.unsafe):
            rows, rhs = with_combinations(constraint.A, constraint.b)
            A.append(rows)
            b.append(rhs)
            group.append(np.full(len(rhs), g))
        n_out = case.unsafe[0].A.shape[1] if case.unsafe else 0
        if not A:
            return cls(np.zeros((0, n_out)), np.zeros(0), np.zeros(0, np.int64), 0)
        return cls(np.concatenate(A), np.concatenate(b), np.concatenate(group).astype(np.int64), len(case.unsafe))

    def margins(self, row_lower: np.ndarray) -> np.ndarray:
        """Per box: min over constraints of max over its rows of (lower bound - b). > 0 means safe."""
        return group_margins(row_lower - self.b, self.group, self.n_groups)

    def deciding_gains(self, row_lower: np.ndarray, gains: np.ndarray) -> np.ndarray:
        """Per box, the gains (B, R, D) of the row that decides its margin: the best row of its
        worst constraint."""
        values = row_lower - self.b
        worst = np.argmin(per_group(values, self.group, self.n_groups), axis=1)
        row = np.argmax(np.where(self.group[None, :] == worst[:, None], values, -np.inf), axis=1)
        return gains[np.arange(len(row)), row]


@dataclass
class SlopeRows:
    """A case's constraints as an objective for slope optimisation: every row of every
    constraint, and for a constraint of several rows one free combination of them."""

    A: np.ndarray          # (Q, n_out) every constraint's rows
    b: np.ndarray
    M: np.ndarray          # (R, Q) objective rows as combinations of those
    free: np.ndarray       # (R, Q)
    group: np.ndarray      # (R,) the constraint of each objective row
    n_groups: int

    @classmethod
    def of(cls, case: Case) -> "SlopeRows":
        n_out = case.unsafe[0].A.shape[1] if case.unsafe else 0
        A = np.concatenate([np.zeros((0, n_out))] + [c.A for c in case.unsafe])
        b = np.concatenate([np.zeros(0)] + [c.b for c in case.unsafe])
        owner = np.concatenate([np.zeros(0, np.int64)] + [np.full(len(c.b), g) for g, c in enumerate(case.unsafe)])
        M, free, group = [np.eye(len(b))], [np.zeros((len(b), len(b)), bool)], [owner]
        for g, constraint in enumerate(case.unsafe):
            if len(constraint.b) > 1:
                mine = owner == g
                M.append((mine / mine.sum())[None])
                free.append(mine[None])
                group.append(np.array([g]))
        return cls(A, b, np.concatenate(M), np.concatenate(free), np.concatenate(group), len(case.unsafe))

    def objective(self, boxes: int) -> Objective:
        return Objective(self.A, self.b, np.broadcast_to(self.M, (boxes,) + self.M.shape).copy(), self.free)

    def objective_of(self, rows: np.ndarray) -> Objective:
        """Only the objective rows `rows` (B, R') of each box of the ascent."""
        return Objective(self.A, self.b, self.M[rows], self.free[rows])

    def margins(self, values: np.ndarray) -> np.ndarray:
        return group_margins(values, self.group, self.n_groups)

    def open_rows(self, values: np.ndarray) -> np.ndarray:
        """(B, R) the rows not yet refuted, of constraints not yet refuted."""
        return (values <= 0) & (per_group(values, self.group, self.n_groups) <= 0)[:, self.group]

    def worst_rows(self, values: np.ndarray) -> np.ndarray:
        """Per box, the output row (B, n_out) of its worst constraint: the sum of that constraint's rows."""
        worst = np.argmin(per_group(values, self.group, self.n_groups), axis=1)
        owner = self.group[:len(self.b)]           # the objective starts with the base rows themselves
        return np.stack([self.A[owner == g].sum(axis=0) for g in range(self.n_groups)])[worst]


def group_margins(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Per box: min over constraints of max over its rows of the row's value. > 0 means safe."""
    return per_group(values, group, n_groups).min(axis=1) if n_groups else np.full(values.shape[0], np.inf)


def per_group(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Per box and constraint, the best value among its rows (B, n_groups)."""
    best = np.full((values.shape[0], n_groups), -np.inf)
    if len(group):
        np.maximum.at(best.T, group, values.T)
    return best


def with_combinations(A: np.ndarray, b: np.ndarray, max_pairs_rows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Rows of A y <= b, then every pair's sum (for up to max_pairs_rows rows) and the total."""
    m = len(b)
    if m < 2:
        return A, b
    extra_A, extra_b = [A.sum(axis=0, keepdims=True)], [b.sum(keepdims=True)]
    if m <= max_pairs_rows:
        i, j = np.triu_indices(m, 1)
        extra_A.append(A[i] + A[j])
        extra_b.append(b[i] + b[j])
    return np.concatenate([A] + extra_A), np.concatenate([b] + extra_b)


def order_only(constraint: OutputConstraint) -> bool:
    """Rows y_i - y_j <= 0 (scaled): Softmax keeps their truth, so the logits decide them."""
    rows = constraint.A
    return bool(np.all(constraint.b == 0) and np.all(rows.sum(axis=1) == 0) and np.all((rows != 0).sum(axis=1) == 2))
