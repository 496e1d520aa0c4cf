"""Sound bounds on every layer of a chain over a batch of input boxes, in numpy.

Three passes, each sound on its own, intersected:
- interval arithmetic, step by step;
- forward symbolic bounds: each neuron kept between two linear functions of the input (a kink,
  ReLU or LeakyRelu, relaxed by the triangle's upper side and the identity or its inactive line
  below), concretised per step;
- backward substitution for the output rows being decided: each row `a . y` is bounded as one
  linear form, pushed back through every step using the relaxations the forward pass fixed; the
  same, before a step is relaxed, for its loose neurons (kinks straddling 0, every Sigmoid and
  Tanh neuron), whose relaxations follow their bounds.
A kink whose input bounds do not straddle 0 is exactly linear here (no relaxation), and the
bounds of every step's input are the regions eta_k of the DLV method (condition 1).

Floating point: every computed bound is widened by an a-priori error bound (Higham's gamma_n)
taken over the magnitudes of the absolute-value network, so the bounds contain the exact real
values of the network as stored, not only their float64 approximation; each back-substitution
likewise subtracts a bound on its own rounding (rounding.RoundingAllowance).

What each step kind contributes (its relaxation, how symbolic bounds pass through it, how a row is
substituted back through it) is the step's own (steps/); this module runs the passes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .batched import left, take_boxes, take_rows, vec
from .batched import right as right_product
from .chain import Chain
from .rounding import SAFETY, UNIT_ROUNDOFF, RoundingAllowance, SignedWeights
from .steps import Affine

# Lower bounds (B, R) of rows (R, m) . (input of step k) over each box, from the bounds of the
# steps before k: (bounds so far, rows, k) -> bounds, before any rounding allowance.
RowBound = Callable[["ChainBounds", np.ndarray, int], np.ndarray]
# New bounds of some neurons of step k's input over box 0: (bounds, k, neurons) -> (lower,
# upper, anything found on the way, e.g. candidate counterexamples).
NeuronBound = Callable[["ChainBounds", int, np.ndarray], tuple[np.ndarray, np.ndarray, object]]
# Bounds of box 0 again, within bounds known for each step's input (BoundPropagator.forward's `within`).
Repropagate = Callable[["ChainBounds", tuple[list[np.ndarray], list[np.ndarray]]], "ChainBounds"]


@dataclass
class ChainBounds:
    """Bounds of the input of every step, and of the output, for a batch of boxes."""

    lower: list[np.ndarray]          # lower[k]: bounds of the input of step k; lower[-1]: the output
    upper: list[np.ndarray]
    slack: list[np.ndarray]          # rounding-error allowance already included in lower/upper
    relaxations: dict[int, object]   # per nonlinear step index: how it was relaxed
    box_lower: np.ndarray
    box_upper: np.ndarray
    flat: dict[int, object] = field(default_factory=dict)   # splittable steps whose lower sides differ when flat (output rows)
    _scales: dict = field(default_factory=dict, repr=False)     # magnitude() and scale(), kept while their inputs are

    def magnitude(self, k: int) -> np.ndarray:
        """Largest |value| of step k's input per box (B, 1): what a coefficient error there costs."""
        return self._kept(("magnitude", k), (self.lower[k], self.upper[k]), lambda: np.maximum(
            np.abs(self.lower[k]), np.abs(self.upper[k])).max(axis=1, initial=0.0)[:, None])

    def scale(self, relaxation) -> tuple[np.ndarray, np.ndarray]:
        """relaxation.scale(), computed once per relaxation."""
        return self._kept(("scale", id(relaxation)), (relaxation,), relaxation.scale)

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
        return ChainBounds([take_rows(l, index) for l in self.lower], [take_rows(u, index) for u in self.upper],
                           [take_rows(s, index) for s in self.slack],
                           {k: take_boxes(r, index) for k, r in self.relaxations.items()},
                           take_rows(self.box_lower, index), take_rows(self.box_upper, index),
                           {k: take_boxes(r, index) for k, r in self.flat.items()})

    def empty(self, end: int | None = None) -> np.ndarray:
        """Per box, whether some step's input before `end` (default: any) has a lower bound above
        its upper bound: phase decisions that contradict the bounds, so no point is left."""
        found = np.zeros(self.box_lower.shape[0], bool)
        for l, u in zip(self.lower[:end], self.upper[:end]):
            found |= np.any(l > u, axis=1)
        return found

    def unstable_relus(self, chain: Chain) -> np.ndarray:
        """Number of splittable neurons (ReLU, LeakyRelu) per box whose input straddles 0."""
        count = np.zeros(self.box_lower.shape[0], dtype=np.int64)
        for k, step in enumerate(chain.steps):
            if step.splittable:
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
        # The output rows are back-substituted a second time with every unstable kink's lower side its
        # inactive line (0 for a ReLU), and each keeps the better bound: CROWN's per-neuron choice by
        # area can lose much more.
        # Measured on ACAS Xu: 4_9/prop_3 8.5 s -> 0.3 s, 1_1/prop_5 timeout -> 56 s. (Doing the
        # same for the hidden neurons' bounds cost twice the time and lost more than it won.)
        self.flat_too = flat_too
        self._weights: dict[int, SignedWeights] = {}

    def signed(self, step: Affine) -> SignedWeights:
        """The step's weights split by sign, computed once."""
        if id(step) not in self._weights:
            self._weights[id(step)] = SignedWeights.of(step.W, step.b, step.rel_error)
        return self._weights[id(step)]

    # ----- forward -------------------------------------------------------------------------
    def forward(self, lower: np.ndarray, upper: np.ndarray,
                fixed: list[tuple[int, np.ndarray, np.ndarray]] | None = None,
                within: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
                row_bound: "RowBound | None" = None, tighten_after: int = -1, end: int | None = None,
                deadline: float = np.inf) -> ChainBounds:
        """Bounds for boxes lower/upper (B, n). `fixed` lists (step, active_mask, inactive_mask)
        kink phase decisions (branch and bound): an active kink's input is >= 0, an inactive's <= 0.
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
            if step.linear:
                w = self.signed(step)
                shared = B > 1 and _same_rows(lo) and _same_rows(hi)
                x_lo, x_hi = (lo[:1], hi[:1]) if shared else (lo, hi)
                lo_i = vec(w.plus, x_lo) + vec(w.minus, x_hi) + step.b
                hi_i = vec(w.plus, x_hi) + vec(w.minus, x_lo) + step.b
                if shared:
                    lo_i, hi_i = np.repeat(lo_i, B, axis=0), np.repeat(hi_i, B, axis=0)
                magnitude = vec(w.abs, magnitude) + np.abs(step.b)
                slack = vec(w.abs, slack) + w.gamma * magnitude
                if symbolic:
                    began = time.perf_counter()
                    Lw, Uw = left(w.plus, Lw) + left(w.minus, Uw), left(w.plus, Uw) + left(w.minus, Lw)
                    Lc, Uc = (vec(w.plus, Lc) + vec(w.minus, Uc) + step.b,
                              vec(w.plus, Uc) + vec(w.minus, Lc) + step.b)
                    lo_s, hi_s = self._concretise(Lw, Lc, Uw, Uc, lower, upper)
                    lo_i, hi_i = np.maximum(lo_i, lo_s), np.minimum(hi_i, hi_s)
                    symbolic_seconds = time.perf_counter() - began
                lo, hi = lo_i - slack, hi_i + slack
            else:
                if within is not None:
                    lo, hi = np.maximum(lo, within[0][k]), np.minimum(hi, within[1][k])
                    out.lower[k], out.upper[k] = lo, hi
                if (self.backsub and k > tighten_after and out.relaxations and step.tightened
                        and time.perf_counter() + tighten_seconds <= deadline):
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
                relaxation, lo, hi = step.relax(lo, hi)
                magnitude = step.magnitude_out(magnitude)
                slack = step.slack_out(slack, relaxation, out.lower[k], out.upper[k])
                out.relaxations[k] = relaxation
                flat = step.flat_relaxation(relaxation, out.lower[k]) if self.flat_too else None
                if flat is not None:
                    out.flat[k] = flat
                if symbolic:
                    Lw, Lc, Uw, Uc = step.through(relaxation, Lw, Lc, Uw, Uc)
        out.lower.append(lo)
        out.upper.append(hi)
        out.slack.append(np.broadcast_to(slack, lo.shape))
        return out

    @staticmethod
    def _concretise(Lw, Lc, Uw, Uc, lower, upper) -> tuple[np.ndarray, np.ndarray]:
        lo = np.einsum("bmn,bn->bm", np.maximum(Lw, 0), lower) + np.einsum("bmn,bn->bm", np.minimum(Lw, 0), upper) + Lc
        hi = np.einsum("bmn,bn->bm", np.maximum(Uw, 0), upper) + np.einsum("bmn,bn->bm", np.minimum(Uw, 0), lower) + Uc
        return lo, hi

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

    def back_substitute(self, bounds: ChainBounds, Lam: np.ndarray, end: int, owner: np.ndarray | None = None) -> np.ndarray:
        """Lower bound of Lam . (input of step `end`) over each box, by substitution back to the
        input through steps end-1 .. 0 with the relaxations already fixed. Lam (B, R, m); or,
        with `owner`, Lam (P, R, m) whose row set p belongs to box owner[p]."""
        return self._backward_with(bounds, Lam, end, owner=owner)[0]

    def _backward_with(self, bounds: ChainBounds, Lam: np.ndarray, end: int, flat: bool = False,
                       owner: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One substitution (the kinks' flat lower sides if asked), less its rounding allowance,
        and the input coefficients it ends with."""
        const = np.zeros(Lam.shape[:2])
        error = RoundingAllowance(bounds, Lam.shape[:2], owner)
        for k in range(end - 1, -1, -1):
            step = self.chain.steps[k]
            if step.linear:
                error.affine(self.signed(step), k, Lam, const)
                const = const + Lam @ step.b
                Lam = right_product(Lam, step.W)
            else:
                relaxation = bounds.flat.get(k, bounds.relaxations[k]) if flat else bounds.relaxations[k]
                Lam_out = Lam
                Lam, const = step.substitute(relaxation if owner is None else take_boxes(relaxation, owner),
                                             Lam, const, bounds.lower[k].shape[1])
                error.nonlinear(relaxation, k, Lam_out, const)
        error.final(Lam, const)
        lo, hi = error.pick(bounds.box_lower), error.pick(bounds.box_upper)
        return (np.einsum("brn,bn->br", np.maximum(Lam, 0), lo) + np.einsum("brn,bn->br", np.minimum(Lam, 0), hi)
                + const - error.total), Lam

    def upper_side_costs(self, bounds: ChainBounds, rows: np.ndarray, end: int | None = None
                         ) -> dict[int, np.ndarray]:
        """Per splittable step k (B, m): what each unstable neuron's triangle upper side costs the lower
        bound of its box's row rows[b] (B, n) of the input of step `end` (default: the output),
        i.e. what deciding its phase would recover at least (the BaBSR estimate; branching picks
        the largest)."""
        Lam = rows[:, None, :].astype(np.float64)
        costs = {}
        end = len(self.chain.steps) if end is None else end
        for k in range(end - 1, -1, -1):
            step = self.chain.steps[k]
            if step.linear:
                Lam = right_product(Lam, step.W)
            else:
                relaxation = bounds.relaxations[k]
                if step.splittable:
                    costs[k] = -np.minimum(Lam[:, 0, :], 0.0) * relaxation.upper_offset
                Lam, _ = step.substitute(relaxation, Lam, np.zeros(Lam.shape[:2]), bounds.lower[k].shape[1])
        return costs

    def _tighten_unstable(self, out: ChainBounds, k: int, lo: np.ndarray, hi: np.ndarray,
                          slack: np.ndarray, row_bound: "RowBound | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """Back-substitute the neurons entering step k whose relaxation is loose (a kink's that
        still straddle 0): a batch's boxes each their own (_tighten_per_box); one box, or
        optimised rows, all that are loose in any box at once."""
        straddles = self.chain.steps[k].loose(lo, hi)
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
        found = row_bound(out, rows, k) if row_bound is not None else self.back_substitute(out, rows[None].copy(), k)
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
        found = self.back_substitute(out, Lam, k, owner) - slack[owner, neuron][:, None]
        lo, hi = lo.copy(), hi.copy()
        lo[owner, neuron] = np.maximum(lo[owner, neuron], found[:, 0])
        hi[owner, neuron] = np.minimum(hi[owner, neuron], -found[:, 1])
        return lo, hi


def _same_rows(x: np.ndarray) -> bool:
    """Whether every row of x (B, m) equals the first."""
    return not np.any(x[1:] != x[:1])


def _interval_rows(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo @ np.maximum(rows, 0).T + hi @ np.minimum(rows, 0).T


def tightened_layer_by_layer(chain: Chain, bounds: ChainBounds, neuron_bound: NeuronBound, repropagate: Repropagate,
                             out_of_time: Callable[[], bool]) -> Iterator[tuple[ChainBounds, object]]:
    """One box's bounds (box 0) tightened a layer at a time: the unstable inputs of every
    splittable step from the second on (the first ones are exact already) get `neuron_bound`'s
    bounds, intersected in, and the layers after them follow by `repropagate`. Yields each new
    ChainBounds and what neuron_bound found with it; stops before a layer once `out_of_time()`."""
    kinks = [k for k, step in enumerate(chain.steps) if step.splittable]
    for k in kinks[1:]:
        if out_of_time():
            return
        lo, hi = bounds.lower[k][0], bounds.upper[k][0]
        unstable = np.flatnonzero((lo < 0) & (hi > 0))
        if len(unstable) == 0:
            continue
        new_lo, new_hi, found = neuron_bound(bounds, k, unstable)
        lower, upper = [l.copy() for l in bounds.lower[:-1]], [u.copy() for u in bounds.upper[:-1]]
        lower[k][0, unstable] = np.maximum(lo[unstable], new_lo)
        upper[k][0, unstable] = np.minimum(hi[unstable], new_hi)
        bounds = repropagate(bounds, (lower, upper))
        yield bounds, found
