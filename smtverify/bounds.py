"""Sound bounds on every layer of a chain over a batch of input boxes, in numpy.

Three passes, each sound on its own, intersected:
- interval arithmetic, step by step;
- forward symbolic bounds: each neuron kept between two linear functions of the input (ReLU
  relaxed by the triangle's upper side and a 0-or-identity lower side), concretised per step;
- backward substitution for the output rows being decided: each row `a . y` is bounded as one
  linear form, pushed back through every step using the relaxations the forward pass fixed.
A ReLU whose input bounds do not straddle 0 is exactly linear here (no relaxation), and the
bounds of every step's input are the regions eta_k of the DLV method (condition 1).

Floating point: every computed bound is widened by an a-priori error bound (Higham's gamma_n)
taken over the magnitudes of the absolute-value network, so the bounds contain the exact real
values of the network as stored, not only their float64 approximation; each back-substitution
likewise subtracts a bound on its own rounding (SubstitutionError).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable

import numpy as np
from scipy import sparse

from .pwl import Activation, Affine, Chain, MaxPool, UNIT_ROUNDOFF

SAFETY = 4.0   # factor on the rounding-error bound, for summation orders BLAS may choose

# Lower bounds (B, R) of rows (R, m) . (input of step k) over each box, from the bounds of the
# steps before k: (bounds so far, rows, k) -> bounds, before any rounding allowance.
RowBound = Callable[["ChainBounds", np.ndarray, int], np.ndarray]


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


def _gamma(length: int, rel_error: float) -> float:
    n = length + 2
    return SAFETY * n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF) + rel_error * (1 + SAFETY * UNIT_ROUNDOFF)


def _signed(step: Affine, cache: dict[int, SignedWeights]) -> SignedWeights:
    if id(step) not in cache:
        W = step.W
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
        cache[id(step)] = SignedWeights(plus, minus, abs_w, _gamma(row_len, step.rel_error),
                                        _gamma(col_len, step.rel_error), row_norm * (1 + 4 * SAFETY * UNIT_ROUNDOFF),
                                        float(np.abs(step.b).max(initial=0.0)))
    return cache[id(step)]


class SubstitutionError:
    """An a-priori bound (B, R) on how far one back-substitution's float64 result may lie above
    the exact one, so a bound less this is sound for the real-valued network as stored.

    Each step's computed coefficients Lam_in differ from the exact product of the coefficients
    it was given; the gap, times the largest magnitude of that step's input, bounds what the gap
    costs, and likewise each constant term; the relaxations' upper lines (rounded slopes and
    offsets) are allowed for the same way. Norms, not entries: a few reductions per step."""

    def __init__(self, bounds: "ChainBounds", shape: tuple[int, int], owner: np.ndarray | None = None) -> None:
        self.bounds = bounds
        self.pick = (lambda x: x) if owner is None else (lambda x: _rows(x, owner))   # per box -> per row set
        self.total = np.zeros(shape)
        self.next_norm: np.ndarray | None = None   # a bound on the 1-norm of the affine step's result

    def affine(self, w: SignedWeights, k: int, Lam: np.ndarray, const: np.ndarray) -> None:
        """Before `const + Lam @ b` and `Lam @ W` at affine step k."""
        norm = _norms(Lam)
        magnitude = self.pick(self.bounds.magnitude(k))
        self.total += w.back_gamma * (norm * (w.row_norm * magnitude + w.b_max) + np.abs(const))
        self.next_norm = norm * w.row_norm * (1 + w.back_gamma)      # ||Lam @ W||_1 <= ||Lam||_1 max_i ||W_i||_1

    def nonlinear(self, relaxation, k: int, Lam_out: np.ndarray, const: np.ndarray) -> None:
        """After pushing Lam_out back through nonlinear step k (giving the new const). The new
        coefficients are Lam_out's times slopes in [0, 1] (or routed, for max-pooling), so their
        1-norm is at most Lam_out's; the relaxation's own rounded sides cost its slope and offset."""
        slope, offset = map(self.pick, self.bounds.scale(relaxation))
        magnitude = self.pick(self.bounds.magnitude(k))
        norm = self.next_norm if self.next_norm is not None else _norms(Lam_out)
        self.total += _gamma(Lam_out.shape[2], 0.0) * (norm * ((1 + slope) * magnitude + offset) + np.abs(const))

    def final(self, Lam: np.ndarray, const: np.ndarray) -> None:
        """The concretisation over the box: sum of Lam * corner, plus const."""
        corner = self.pick(np.maximum(np.abs(self.bounds.box_lower), np.abs(self.bounds.box_upper)))
        self.total += _gamma(Lam.shape[2], 0.0) * (np.einsum("brn,bn->br", np.abs(Lam), corner) + np.abs(const))


def _norms(Lam: np.ndarray) -> np.ndarray:
    """Each row's 1-norm, (B, R, m) -> (B, R) (a matrix-vector product: faster than a sum)."""
    return np.abs(Lam) @ np.ones(Lam.shape[2])


def _relaxation_scale(relaxation) -> tuple[np.ndarray, np.ndarray]:
    """Per box (B, 1): the largest slope and offset of a relaxation's linear sides."""
    if isinstance(relaxation, PoolRelaxation):
        upper = np.where(np.isfinite(relaxation.upper), np.abs(relaxation.upper), 0.0)
        return np.ones((upper.shape[0], 1)), upper.max(axis=1, initial=0.0)[:, None]
    slope = np.maximum(np.abs(relaxation.upper_slope), np.abs(relaxation.lower_slope)).max(axis=1, initial=0.0)
    offset = np.maximum(np.abs(relaxation.upper_offset), np.abs(relaxation.lower_offset)).max(axis=1, initial=0.0)
    return slope[:, None], offset[:, None]


def _left(W, X: np.ndarray) -> np.ndarray:
    """W @ X[b] for every b: X (B, m, k) -> (B, m2, k)."""
    if not sparse.issparse(W):
        return np.matmul(W, X)
    B, m, k = X.shape
    flat = X.transpose(1, 0, 2).reshape(m, B * k)
    return np.asarray(W @ flat).reshape(-1, B, k).transpose(1, 0, 2)


def _vec(W, x: np.ndarray) -> np.ndarray:
    """W @ x[b] for every b: x (B, m) -> (B, m2)."""
    if not sparse.issparse(W):
        return x @ W.T
    return np.asarray(W @ x.T).T


def _right(X: np.ndarray, W) -> np.ndarray:
    """X[b] @ W for every b: X (B, r, m2) -> (B, r, m), as one product of (B*r, m2) rows (np.matmul
    over the batch makes one BLAS call per box: 2-3x slower for MNIST-FC's 256x256 layers)."""
    B, r, m2 = X.shape
    flat = X.reshape(B * r, m2)
    if not sparse.issparse(W):
        return (flat @ W).reshape(B, r, -1)
    return np.asarray((W.T @ flat.T).T).reshape(B, r, -1)


@dataclass
class Relaxation:
    """How one activation or max-pool step was relaxed, for the backward pass.

    For a ReLU: lower_slope (B, m) and upper_slope/upper_offset with relu(z) <= s*z + t.
    """

    lower_slope: np.ndarray
    upper_slope: np.ndarray
    upper_offset: np.ndarray
    lower_offset: np.ndarray


@dataclass
class ChainBounds:
    """Bounds of the input of every step, and of the output, for a batch of boxes."""

    lower: list[np.ndarray]          # lower[k]: bounds of the input of step k; lower[-1]: the output
    upper: list[np.ndarray]
    slack: list[np.ndarray]          # rounding-error allowance already included in lower/upper
    relaxations: dict[int, object]   # per nonlinear step index: how it was relaxed
    box_lower: np.ndarray
    box_upper: np.ndarray
    flat: dict[int, Relaxation] = field(default_factory=dict)   # ReLU steps whose lower sides differ when flat (output rows)
    _scales: dict = field(default_factory=dict, repr=False)     # magnitude() and scale(), kept while their inputs are

    def magnitude(self, k: int) -> np.ndarray:
        """Largest |value| of step k's input per box (B, 1): what a coefficient error there costs."""
        return self._kept(("magnitude", k), (self.lower[k], self.upper[k]), lambda: np.maximum(
            np.abs(self.lower[k]), np.abs(self.upper[k])).max(axis=1, initial=0.0)[:, None])

    def scale(self, relaxation) -> tuple[np.ndarray, np.ndarray]:
        """_relaxation_scale, computed once per relaxation."""
        return self._kept(("scale", id(relaxation)), (relaxation,), lambda: _relaxation_scale(relaxation))

    def _kept(self, key, inputs: tuple, compute):
        """compute(), reused while the same objects are its inputs (forward replaces a step's
        bounds by new arrays when it tightens them, which invalidates what was kept)."""
        kept = self._scales.get(key)
        if kept is None or any(a is not b for a, b in zip(kept[0], inputs)):
            kept = (inputs, compute())
            self._scales[key] = kept
        return kept[1]

    def subset(self, index: np.ndarray | slice) -> "ChainBounds":
        """The bounds of some of the boxes, relaxations included."""
        return ChainBounds([_rows(l, index) for l in self.lower], [_rows(u, index) for u in self.upper],
                           [_rows(s, index) for s in self.slack],
                           {k: _subset(r, index) for k, r in self.relaxations.items()},
                           _rows(self.box_lower, index), _rows(self.box_upper, index),
                           {k: _subset(r, index) for k, r in self.flat.items()})

    def empty(self, end: int | None = None) -> np.ndarray:
        """Per box, whether some step's input before `end` (default: any) has a lower bound above
        its upper bound: phase decisions that contradict the bounds, so no point is left."""
        found = np.zeros(self.box_lower.shape[0], bool)
        for l, u in zip(self.lower[:end], self.upper[:end]):
            found |= np.any(l > u, axis=1)
        return found

    def unstable_relus(self, chain: Chain) -> np.ndarray:
        """Number of ReLUs per box whose input straddles 0."""
        count = np.zeros(self.box_lower.shape[0], dtype=np.int64)
        for k, step in enumerate(chain.steps):
            if isinstance(step, Activation) and step.kind == "Relu":
                count += np.sum((self.lower[k] < 0) & (self.upper[k] > 0), axis=1)
        return count


class BoundPropagator:
    """Computes ChainBounds for batches of boxes over one chain (weights split once)."""

    def __init__(self, chain: Chain, symbolic: bool = True, backsub: bool = True, max_backsub: int = 4096,
                 flat_too: bool = True) -> None:
        self.chain = chain
        self.symbolic = symbolic
        self.backsub = backsub            # back-substitute still-unstable neurons before relaxing them
        self.max_backsub = max_backsub
        # The output rows are back-substituted a second time with every unstable ReLU's lower side
        # 0, and each keeps the better bound: CROWN's per-neuron choice by area can lose much more.
        # Measured on ACAS Xu: 4_9/prop_3 8.5 s -> 0.3 s, 1_1/prop_5 timeout -> 56 s. (Doing the
        # same for the hidden neurons' bounds cost twice the time and lost more than it won.)
        self.flat_too = flat_too
        self._weights: dict[int, SignedWeights] = {}

    def signed(self, step: Affine) -> SignedWeights:
        """The step's weights split by sign, computed once."""
        return _signed(step, self._weights)

    # ----- forward -------------------------------------------------------------------------
    def forward(self, lower: np.ndarray, upper: np.ndarray,
                fixed: list[tuple[int, np.ndarray, np.ndarray]] | None = None,
                within: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
                row_bound: "RowBound | None" = None, tighten_after: int = -1, end: int | None = None,
                deadline: float = np.inf) -> ChainBounds:
        """Bounds for boxes lower/upper (B, n). `fixed` lists (step, active_mask, inactive_mask)
        ReLU phase decisions (branch and bound): an active ReLU's input is >= 0, an inactive's <= 0.
        `within` gives bounds known for each step's input (B rows each), e.g. those of the box a
        box was split from: they are intersected in, so splitting never loosens a layer.
        `row_bound` replaces back-substitution for the unstable neurons (e.g. optimised slopes);
        steps up to `tighten_after` get neither (a domain whose newest decision is there: the
        bounds before it are its parent's, in `within`). `end`: only steps before it are taken
        (the bounds end with step `end`'s input). The symbolic pass and the neurons' tightening,
        most of a big net's cost (a step of oval21 cifar_deep_kw's: 0.8 s), are not begun where
        their last step's measured time would end past the `deadline` (perf_counter): the steps
        left get interval arithmetic only (within `within`), sound and only looser.
        Boxes that are all one box (the domains of branch and bound) share what depends on the
        box alone: the rounding allowance, and each affine step's bounds while they agree."""
        lower = np.asarray(lower, dtype=np.float64)
        upper = np.asarray(upper, dtype=np.float64)
        B, n = lower.shape
        lo, hi = lower.copy(), upper.copy()
        one_box = _same_rows(lower) and _same_rows(upper)
        magnitude = np.maximum(np.abs(lo), np.abs(hi))[:1 if one_box else B]
        slack = np.zeros_like(magnitude)
        symbolic = self.symbolic
        if symbolic:
            eye = np.broadcast_to(np.eye(n), (B, n, n))
            Lw, Lc, Uw, Uc = eye, np.zeros((B, n)), eye, np.zeros((B, n))
        out = ChainBounds([], [], [], {}, lower, upper)
        decisions = {k: (a, i) for k, a, i in (fixed or [])}
        symbolic_seconds = tighten_seconds = 0.0      # what the last step of each took
        for k, step in enumerate(self.chain.steps[:end]):
            symbolic = symbolic and time.perf_counter() + symbolic_seconds <= deadline
            out.lower.append(lo)
            out.upper.append(hi)
            out.slack.append(np.broadcast_to(slack, lo.shape))
            if isinstance(step, Affine):
                w = self.signed(step)
                shared = B > 1 and _same_rows(lo) and _same_rows(hi)
                x_lo, x_hi = (lo[:1], hi[:1]) if shared else (lo, hi)
                lo_i = _vec(w.plus, x_lo) + _vec(w.minus, x_hi) + step.b
                hi_i = _vec(w.plus, x_hi) + _vec(w.minus, x_lo) + step.b
                if shared:
                    lo_i, hi_i = np.repeat(lo_i, B, axis=0), np.repeat(hi_i, B, axis=0)
                magnitude = _vec(w.abs, magnitude) + np.abs(step.b)
                slack = _vec(w.abs, slack) + w.gamma * magnitude
                if symbolic:
                    began = time.perf_counter()
                    Lw, Uw = _left(w.plus, Lw) + _left(w.minus, Uw), _left(w.plus, Uw) + _left(w.minus, Lw)
                    Lc, Uc = (_vec(w.plus, Lc) + _vec(w.minus, Uc) + step.b,
                              _vec(w.plus, Uc) + _vec(w.minus, Lc) + step.b)
                    lo_s, hi_s = self._concretise(Lw, Lc, Uw, Uc, lower, upper)
                    lo_i, hi_i = np.maximum(lo_i, lo_s), np.minimum(hi_i, hi_s)
                    symbolic_seconds = time.perf_counter() - began
                lo, hi = lo_i - slack, hi_i + slack
            else:
                if within is not None:
                    lo, hi = np.maximum(lo, within[0][k]), np.minimum(hi, within[1][k])
                    out.lower[k], out.upper[k] = lo, hi
                if (self.backsub and k > tighten_after and out.relaxations and isinstance(step, Activation)
                        and step.kind == "Relu" and time.perf_counter() + tighten_seconds <= deadline):
                    # (before the first nonlinearity the forward symbolic bound is already exact)
                    began = time.perf_counter()
                    lo, hi = self._tighten_unstable(out, k, lo, hi, slack, row_bound)
                    out.lower[k], out.upper[k] = lo, hi
                    tighten_seconds = time.perf_counter() - began
                if k in decisions:
                    active, inactive = decisions[k]
                    lo = np.where(active, np.maximum(lo, 0.0), lo)
                    hi = np.where(inactive, np.minimum(hi, 0.0), hi)
                    out.lower[k], out.upper[k] = lo, hi
                slack = slack + 2 * SAFETY * UNIT_ROUNDOFF * magnitude
                relaxation, lo_o, hi_o = self._relax(step, lo, hi)
                out.relaxations[k] = relaxation
                if self.flat_too and isinstance(step, Activation) and step.kind == "Relu":
                    flat = np.where(lo >= 0, 1.0, 0.0)
                    if np.any(flat != relaxation.lower_slope):    # else the second pass would repeat the first
                        out.flat[k] = replace(relaxation, lower_slope=flat)
                if symbolic:
                    Lw, Lc, Uw, Uc = self._through(step, relaxation, Lw, Lc, Uw, Uc)
                lo, hi = lo_o, hi_o
                if isinstance(step, MaxPool):
                    pad = np.zeros((len(magnitude), 1))
                    magnitude = np.concatenate([magnitude, pad], axis=1)[:, step.groups].max(axis=2)
                    slack = np.concatenate([slack, pad], axis=1)[:, step.groups].max(axis=2)
        out.lower.append(lo)
        out.upper.append(hi)
        out.slack.append(np.broadcast_to(slack, lo.shape))
        return out

    @staticmethod
    def _concretise(Lw, Lc, Uw, Uc, lower, upper) -> tuple[np.ndarray, np.ndarray]:
        lo = np.einsum("bmn,bn->bm", np.maximum(Lw, 0), lower) + np.einsum("bmn,bn->bm", np.minimum(Lw, 0), upper) + Lc
        hi = np.einsum("bmn,bn->bm", np.maximum(Uw, 0), upper) + np.einsum("bmn,bn->bm", np.minimum(Uw, 0), lower) + Uc
        return lo, hi

    @staticmethod
    def _relax(step, lo: np.ndarray, hi: np.ndarray):
        """The linear relaxation of a nonlinear step, and its output interval."""
        if isinstance(step, MaxPool):
            return _relax_maxpool(step, lo, hi)
        if step.kind == "Relu":
            return _relax_relu(lo, hi)
        return _relax_monotone(step, lo, hi)

    @staticmethod
    def _through(step, r: Relaxation, Lw, Lc, Uw, Uc):
        """Forward symbolic functions through a relaxed step."""
        if isinstance(step, MaxPool):
            return _forward_maxpool(step, r, Lw, Lc, Uw, Uc)
        # Element-wise, with lower slope >= 0 and upper slope >= 0: y >= a*z + c uses z's lower function.
        Lw2 = r.lower_slope[..., None] * Lw
        Lc2 = r.lower_slope * Lc + r.lower_offset
        Uw2 = r.upper_slope[..., None] * Uw
        Uc2 = r.upper_slope * Uc + r.upper_offset
        return Lw2, Lc2, Uw2, Uc2

    # ----- backward ------------------------------------------------------------------------
    def lower_bound_rows(self, bounds: ChainBounds, rows: np.ndarray) -> np.ndarray:
        """Sound lower bounds of rows @ y over each box: rows (R, n_out) -> (B, R)."""
        return self.lower_bound_rows_with(bounds, rows)[0]

    def lower_bound_rows_with(self, bounds: ChainBounds, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """lower_bound_rows, and per box and row the input coefficients of the linear bound
        (B, R, n_in): the corner they point to is where a counterexample is likeliest, and each
        coefficient times its width is what splitting that dimension stands to gain."""
        B = bounds.box_lower.shape[0]
        Lam = np.broadcast_to(rows, (B,) + rows.shape).astype(np.float64)
        value, coefficients = self._backward_with(bounds, Lam, len(self.chain.steps))
        if bounds.flat:
            flat_value, flat_coefficients = self._backward_with(bounds, Lam, len(self.chain.steps), flat=True)
            better = flat_value > value
            value = np.where(better, flat_value, value)
            coefficients = np.where(better[..., None], flat_coefficients, coefficients)
        value = value - np.einsum("brm,bm->br", np.abs(Lam), bounds.slack[-1])
        return np.maximum(value, _interval_rows(rows, bounds.lower[-1], bounds.upper[-1])), coefficients

    def _backward(self, bounds: ChainBounds, Lam: np.ndarray, end: int, owner: np.ndarray | None = None) -> np.ndarray:
        """Lower bound of Lam . (input of step `end`) over each box, by substitution back to the
        input through steps end-1 .. 0 with the relaxations already fixed. Lam (B, R, m); or,
        with `owner`, Lam (P, R, m) whose row set p belongs to box owner[p]."""
        return self._backward_with(bounds, Lam, end, owner=owner)[0]

    def _backward_with(self, bounds: ChainBounds, Lam: np.ndarray, end: int, flat: bool = False,
                       owner: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One substitution (the ReLUs' flat lower sides if asked), less its rounding allowance,
        and the input coefficients it ends with."""
        const = np.zeros(Lam.shape[:2])
        error = SubstitutionError(bounds, Lam.shape[:2], owner)
        for k in range(end - 1, -1, -1):
            step = self.chain.steps[k]
            if isinstance(step, Affine):
                error.affine(self.signed(step), k, Lam, const)
                const = const + Lam @ step.b
                Lam = _right(Lam, step.W)
            else:
                relaxation = bounds.flat.get(k, bounds.relaxations[k]) if flat else bounds.relaxations[k]
                Lam_out = Lam
                Lam, const = _backward_nonlinear(step, relaxation if owner is None else _subset(relaxation, owner),
                                                 Lam, const, bounds.lower[k].shape[1])
                error.nonlinear(relaxation, k, Lam_out, const)
        error.final(Lam, const)
        lo, hi = error.pick(bounds.box_lower), error.pick(bounds.box_upper)
        return (np.einsum("brn,bn->br", np.maximum(Lam, 0), lo) + np.einsum("brn,bn->br", np.minimum(Lam, 0), hi)
                + const - error.total), Lam

    def upper_side_costs(self, bounds: ChainBounds, rows: np.ndarray, end: int | None = None
                         ) -> dict[int, np.ndarray]:
        """Per ReLU step k (B, m): what each unstable ReLU's triangle upper side costs the lower
        bound of its box's row rows[b] (B, n) of the input of step `end` (default: the output),
        i.e. what deciding its phase would recover at least (the BaBSR estimate; branching picks
        the largest)."""
        Lam = rows[:, None, :].astype(np.float64)
        costs = {}
        end = len(self.chain.steps) if end is None else end
        for k in range(end - 1, -1, -1):
            step = self.chain.steps[k]
            if isinstance(step, Affine):
                Lam = _right(Lam, step.W)
            else:
                relaxation = bounds.relaxations[k]
                if isinstance(step, Activation) and step.kind == "Relu":
                    costs[k] = -np.minimum(Lam[:, 0, :], 0.0) * relaxation.upper_offset
                Lam, _ = _backward_nonlinear(step, relaxation, Lam, np.zeros(Lam.shape[:2]), bounds.lower[k].shape[1])
        return costs

    def _tighten_unstable(self, out: ChainBounds, k: int, lo: np.ndarray, hi: np.ndarray,
                          slack: np.ndarray, row_bound: "RowBound | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """Back-substitute the neurons entering ReLU step k that still straddle 0: a batch's
        boxes each their own (_tighten_per_box); one box, or optimised rows, all that straddle
        in any box at once."""
        straddles = (lo < 0) & (hi > 0)
        unstable = np.flatnonzero(np.any(straddles, axis=0))
        if unstable.size == 0 or unstable.size > self.max_backsub:
            return lo, hi
        B, m = lo.shape
        slack = np.broadcast_to(slack, lo.shape)
        if row_bound is None and B > 1:
            return self._tighten_per_box(out, k, lo, hi, straddles, slack)
        rows = np.zeros((2 * unstable.size, m))
        rows[np.arange(unstable.size), unstable] = 1.0                   # lower bound of z_j
        rows[unstable.size + np.arange(unstable.size), unstable] = -1.0  # lower bound of -z_j
        found = row_bound(out, rows, k) if row_bound is not None else self._backward(out, rows[None].copy(), k)
        found = found - slack[:, np.concatenate([unstable, unstable])]
        lo, hi = lo.copy(), hi.copy()
        lo[:, unstable] = np.maximum(lo[:, unstable], found[:, :unstable.size])
        hi[:, unstable] = np.minimum(hi[:, unstable], -found[:, unstable.size:])
        return lo, hi

    def _tighten_per_box(self, out: ChainBounds, k: int, lo: np.ndarray, hi: np.ndarray, straddles: np.ndarray,
                         slack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each box back-substitutes only its own unstable neurons, one (box, neuron) pair per
        pair of rows, with its box's relaxations (ACAS Xu's boxes straddle about a third of the
        union of a batch's)."""
        owner, neuron = np.nonzero(straddles)
        Lam = np.zeros((owner.size, 2, lo.shape[1]))
        Lam[np.arange(owner.size), 0, neuron] = 1.0                       # lower bound of z_j
        Lam[np.arange(owner.size), 1, neuron] = -1.0                      # lower bound of -z_j
        found = self._backward(out, Lam, k, owner) - slack[owner, neuron][:, None]
        lo, hi = lo.copy(), hi.copy()
        lo[owner, neuron] = np.maximum(lo[owner, neuron], found[:, 0])
        hi[owner, neuron] = np.minimum(hi[owner, neuron], -found[:, 1])
        return lo, hi


def _same_rows(x: np.ndarray) -> bool:
    """Whether every row of x (B, m) equals the first."""
    return not np.any(x[1:] != x[:1])


def _rows(x: np.ndarray, index: np.ndarray | slice) -> np.ndarray:
    """x[index] (np.take gathers rows by number about twice as fast as fancy indexing)."""
    if isinstance(index, slice) or np.asarray(index).dtype == bool:
        return x[index]
    return np.take(x, index, axis=0)


def _subset(relaxation, index):
    return replace(relaxation, **{f.name: _rows(getattr(relaxation, f.name), index) for f in fields(relaxation)})


def _interval_rows(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo @ np.maximum(rows, 0).T + hi @ np.minimum(rows, 0).T


def _relax_relu(lo: np.ndarray, hi: np.ndarray):
    active, inactive = lo >= 0, hi <= 0
    unstable = ~(active | inactive)
    width = np.where(unstable, hi - lo, 1.0)
    slope = np.where(unstable, hi / width, active.astype(np.float64))
    offset = np.where(unstable, -slope * lo, 0.0)
    # Lower side: identity where it loses less area than 0 (CROWN's choice), 0 otherwise.
    lower_slope = np.where(unstable, (hi > -lo).astype(np.float64), active.astype(np.float64))
    relaxation = Relaxation(lower_slope, slope, offset, np.zeros_like(lo))
    return relaxation, np.maximum(lo, 0.0), np.maximum(hi, 0.0)


def _relax_monotone(step: Activation, lo: np.ndarray, hi: np.ndarray):
    """Sigmoid/Tanh: constant bounds f(lo) <= y <= f(hi), widened by a few ulps (f is rounded)."""
    f_lo, f_hi = step.forward(lo), step.forward(hi)
    f_lo = f_lo - 4 * UNIT_ROUNDOFF * (1 + np.abs(f_lo))
    f_hi = f_hi + 4 * UNIT_ROUNDOFF * (1 + np.abs(f_hi))
    zero = np.zeros_like(lo)
    return Relaxation(zero, zero, f_hi, f_lo), f_lo, f_hi


@dataclass
class PoolRelaxation:
    """Max-pool: y >= x[chosen] (the input with the highest lower bound); y <= x[chosen] when that
    input dominates the window (exact), else y <= the window's largest upper bound."""

    chosen: np.ndarray      # (B, m) flat input index
    exact: np.ndarray       # (B, m) bool
    upper: np.ndarray       # (B, m) constant upper bound where not exact


def _relax_maxpool(step: MaxPool, lo: np.ndarray, hi: np.ndarray):
    B = lo.shape[0]
    pad_lo = np.concatenate([lo, np.full((B, 1), -np.inf)], axis=1)[:, step.groups]     # (B, m, k)
    pad_hi = np.concatenate([hi, np.full((B, 1), -np.inf)], axis=1)[:, step.groups]
    best = np.argmax(pad_lo, axis=2)
    chosen = np.take_along_axis(np.broadcast_to(step.groups, pad_lo.shape), best[..., None], axis=2)[..., 0]
    best_lo = np.take_along_axis(pad_lo, best[..., None], axis=2)[..., 0]
    others_hi = pad_hi.copy()
    np.put_along_axis(others_hi, best[..., None], -np.inf, axis=2)
    exact = best_lo >= others_hi.max(axis=2)
    upper = pad_hi.max(axis=2)
    return PoolRelaxation(chosen, exact, upper), best_lo, upper


def _gather_rows(X: np.ndarray, index: np.ndarray) -> np.ndarray:
    """X (B, m, ...) rows picked per box: index (B, m2) -> (B, m2, ...)."""
    return np.take_along_axis(X, index.reshape(index.shape + (1,) * (X.ndim - 2)), axis=1)


def _forward_maxpool(step: MaxPool, r: PoolRelaxation, Lw, Lc, Uw, Uc):
    Lw2, Lc2 = _gather_rows(Lw, r.chosen), _gather_rows(Lc, r.chosen)
    Uw2 = np.where(r.exact[..., None], _gather_rows(Uw, r.chosen), 0.0)
    Uc2 = np.where(r.exact, _gather_rows(Uc, r.chosen), r.upper)
    return Lw2, Lc2, Uw2, Uc2


def _backward_nonlinear(step, r, Lam: np.ndarray, const: np.ndarray, n_in: int):
    """Push Lam . y (to be lower-bounded) back through a relaxed step with n_in inputs."""
    if isinstance(step, MaxPool):
        pos, neg = np.maximum(Lam, 0), np.minimum(Lam, 0)
        exact = r.exact[:, None, :]
        coef = pos + np.where(exact, neg, 0.0)           # routed to the chosen input
        const = const + np.einsum("brm,bm->br", np.where(exact, 0.0, neg), r.upper)
        B, R, m = Lam.shape
        new = np.zeros((B, R, n_in))
        target = np.broadcast_to(r.chosen[:, None, :], coef.shape)
        np.add.at(new, (np.arange(B)[:, None, None], np.arange(R)[None, :, None], target), coef)
        return new, const
    negative = np.minimum(Lam, 0.0)
    coef = Lam * r.lower_slope[:, None, :]          # the lower side where Lam >= 0, and then
    coef += negative * (r.upper_slope - r.lower_slope)[:, None, :]   # the upper side where Lam < 0
    const = const + np.einsum("brm,bm->br", negative, r.upper_offset)
    if np.any(r.lower_offset):       # (a ReLU's lower side passes through 0)
        const = const + np.einsum("brm,bm->br", np.maximum(Lam, 0.0), r.lower_offset)
    return coef, const
