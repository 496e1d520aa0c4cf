"""A-priori bounds on floating-point rounding, so that bounds computed in float64 hold for the
real-valued network as stored (Higham's gamma_n, widened by SAFETY for the summation orders BLAS
may choose)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .batched import take_rows

UNIT_ROUNDOFF = 2.0 ** -53
SAFETY = 4.0   # factor on the rounding-error bound, for summation orders BLAS may choose


def gamma_n(n: int) -> float:
    """Higham's gamma_n, times SAFETY: a relative error bound of n rounded operations in a row."""
    return SAFETY * n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def gamma(length: int, rel_error: float = 0.0) -> float:
    """The relative error bound of a dot product of `length` terms, plus a step's own rel_error."""
    return gamma_n(length + 2) + rel_error * (1 + SAFETY * UNIT_ROUNDOFF)


@dataclass
class SignedWeights:
    """W split by sign, and |W|: reused for every batch of boxes."""

    plus: np.ndarray | sparse.csr_matrix
    minus: np.ndarray | sparse.csr_matrix
    abs: np.ndarray | sparse.csr_matrix
    gamma: float          # rounding-error factor of one row's dot product, with the step's own rel_error
    back_gamma: float     # ... of one column's (back-substitution: Lam @ W)
    row_norm: float       # largest 1-norm of a row of W
    b_max: float

    @classmethod
    def of(cls, W: np.ndarray | sparse.csr_matrix, b: np.ndarray, rel_error: float) -> "SignedWeights":
        if sparse.issparse(W):
            plus, minus = W.maximum(0).tocsr(), W.minimum(0).tocsr()
            abs_w = abs(W).tocsr()
            row_len = int(np.diff(W.indptr).max(initial=0))
            col_len = int(np.bincount(W.indices, minlength=W.shape[1]).max(initial=0))
            row_norm = float(np.asarray(abs_w.sum(axis=1)).max(initial=0.0))
        else:
            plus, minus, abs_w = np.maximum(W, 0), np.minimum(W, 0), np.abs(W)
            row_len, col_len = W.shape[1], W.shape[0]
            row_norm = float(abs_w.sum(axis=1).max(initial=0.0))
        return cls(plus, minus, abs_w, gamma(row_len, rel_error), gamma(col_len, rel_error),
                   row_norm * (1 + 4 * SAFETY * UNIT_ROUNDOFF), float(np.abs(b).max(initial=0.0)))


def norms(Lam: np.ndarray) -> np.ndarray:
    """Each row's 1-norm, (B, R, m) -> (B, R) (a matrix-vector product: faster than a sum)."""
    return np.abs(Lam) @ np.ones(Lam.shape[2])


class RoundingAllowance:
    """An a-priori bound (B, R) on how far one back-substitution's float64 result may lie above
    the exact one, so a bound less this is sound for the real-valued network as stored.

    Each step's computed coefficients Lam_in differ from the exact product of the coefficients
    it was given; the gap, times the largest magnitude of that step's input, bounds what the gap
    costs, and likewise each constant term; the relaxations' upper lines (rounded slopes and
    offsets) are allowed for the same way. Norms, not entries: a few reductions per step.
    `bounds` is the ChainBounds substituted through (its magnitude(k), scale(relaxation) and box)."""

    def __init__(self, bounds, shape: tuple[int, int], owner: np.ndarray | None = None) -> None:
        self.bounds = bounds
        self.pick = (lambda x: x) if owner is None else (lambda x: take_rows(x, owner))   # per box -> per row set
        self.total = np.zeros(shape)
        self.next_norm: np.ndarray | None = None   # a bound on the 1-norm of the affine step's result

    def affine(self, w: SignedWeights, k: int, Lam: np.ndarray, const: np.ndarray) -> None:
        """Before `const + Lam @ b` and `Lam @ W` at affine step k."""
        norm = norms(Lam)
        magnitude = self.pick(self.bounds.magnitude(k))
        self.total += w.back_gamma * (norm * (w.row_norm * magnitude + w.b_max) + np.abs(const))
        self.next_norm = norm * w.row_norm * (1 + w.back_gamma)      # ||Lam @ W||_1 <= ||Lam||_1 max_i ||W_i||_1

    def nonlinear(self, relaxation, k: int, Lam_out: np.ndarray, const: np.ndarray) -> None:
        """After pushing Lam_out back through nonlinear step k (giving the new const). The new
        coefficients are Lam_out's times slopes in [0, 1] (or routed, for max-pooling), so their
        1-norm is at most Lam_out's; the relaxation's own rounded sides cost its slope and offset."""
        self.lines(*map(self.pick, self.bounds.scale(relaxation)), k, Lam_out, const)

    def lines(self, slope: np.ndarray, offset: np.ndarray, k: int, Lam_out: np.ndarray, const: np.ndarray) -> None:
        """nonlinear(), given the largest slope and offset of the lines used per box (or row set), (B, 1)."""
        magnitude = self.pick(self.bounds.magnitude(k))
        norm = self.next_norm if self.next_norm is not None else norms(Lam_out)
        self.total += gamma(Lam_out.shape[2]) * (norm * ((1 + slope) * magnitude + offset) + np.abs(const))

    def coefficients_changed(self) -> None:
        """Terms were added to the coefficients after a nonlinear step (split multipliers): the
        affine step's norm no longer bounds them, so a nonlinear step next measures its own."""
        self.next_norm = None

    def final(self, Lam: np.ndarray, const: np.ndarray) -> None:
        """The concretisation over the box: sum of Lam * corner, plus const."""
        corner = self.pick(np.maximum(np.abs(self.bounds.box_lower), np.abs(self.bounds.box_upper)))
        self.total += gamma(Lam.shape[2]) * (np.einsum("brn,bn->br", np.abs(Lam), corner) + np.abs(const))
