"""Cheap falsification on the chain, in vectorised numpy: random points and gradient attacks.

An attack only proposes candidates: `confirm` decides (onnxruntime in float32, exact box check).
Gradients come from a hand-written backward pass through the chain's steps, so no autodiff library
is needed. Every function is deterministic given its rng, so a found example can be reproduced.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .chain import Chain
from .fast_eval import chunk_for
from .vnnlib import Case, OutputConstraint

# (output batch) -> (score per row, lower is better; direction c per row: descend c . output)
Direction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# ----- gradients ---------------------------------------------------------------------------------
def gradient(chain: Chain, x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """d(c . chain(x))/dx for a batch x (B, n); c is (B, n_out) or one (n_out,) for all rows."""
    values = chain.forward_all(np.atleast_2d(np.asarray(x, dtype=np.float64)))
    return _backward(chain, values, c)


def _backward(chain: Chain, values: list[np.ndarray], c: np.ndarray) -> np.ndarray:
    """The backward pass, given the activations `forward_all` returned."""
    g = np.broadcast_to(np.asarray(c, dtype=np.float64), values[-1].shape)
    for k in range(len(chain.steps) - 1, -1, -1):
        g = chain.steps[k].backward(g, values[k], values[k + 1])
    return g


def _descend(chain: Chain, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: np.ndarray | float,
             step_sizes: np.ndarray, direction: Direction,
             stop_below: float = -np.inf, deadline: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Projected sign-gradient descent of every row at once: x -= step_sizes[t] * scale * sign(grad),
    clipped to [lo, hi] (step_sizes[t] is one number, or one per row as (B, 1)). Returns the best
    point each row visited and its score; stops as soon as some score is below `stop_below`, or
    past the `deadline` (perf_counter: a step through a big net's batch takes a while)."""
    best_x, best = x.copy(), np.full(len(x), np.inf)
    if not len(x):                        # no starts (an attack turned off): nothing to descend
        return best_x, best
    for t in range(len(step_sizes) + 1):
        values = chain.forward_all(x)
        score, c = direction(values[-1])
        better = score < best
        best_x[better], best[better] = x[better], score[better]
        if t == len(step_sizes) or best.min() < stop_below or time.perf_counter() > deadline:
            break
        x = np.clip(x - step_sizes[t] * scale * np.sign(_backward(chain, values, c)), lo, hi)
    return best_x, best


# ----- the unsafe condition of a VNN-LIB case ------------------------------------------------------
def _worst_row(constraint: OutputConstraint, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max_i (A_i y - b_i) per row of y and the row attaining it: <= 0 (< 0 for a strict row) means
    the constraint holds. A constraint without rows always holds (-inf, row 0 of a zero A)."""
    if not len(constraint.b):
        return np.full(len(y), -np.inf), np.zeros(len(y), dtype=np.int64)
    rows = y @ constraint.A.T - constraint.b
    worst = rows.argmax(axis=1)
    return rows[np.arange(len(y)), worst], worst


def violation(case: Case, y: np.ndarray) -> np.ndarray:
    """How far each output row is from the unsafe condition (min over constraints of the worst row)."""
    return np.min([_worst_row(c, y)[0] for c in case.unsafe], axis=0)


def is_unsafe(case: Case, y: np.ndarray) -> np.ndarray:
    """Does some unsafe constraint of the case hold on each output row (strict rows strictly)?"""
    return np.any([c.holds(y) for c in case.unsafe], axis=0)


def _unsafe_rows(case: Case, chain: Chain, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of x the chain finds unsafe, and their violations."""
    y = chain.forward(x)
    hit = is_unsafe(case, y)
    return x[hit], violation(case, y[hit])


def _best_first(found: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    points, scores = np.vstack([f[0] for f in found]), np.concatenate([f[1] for f in found])
    return points[np.argsort(scores, kind="stable")]


def _corners_and_centre(lo: np.ndarray, hi: np.ndarray, max_free: int) -> np.ndarray:
    """The box's centre, and its corners when at most `max_free` dimensions vary."""
    centre = (lo + hi) / 2
    free = np.flatnonzero(hi > lo)
    if len(free) > max_free:
        return centre[None]
    bits = (np.arange(2 ** len(free))[:, None] >> np.arange(len(free))) & 1
    corners = np.repeat(centre[None], len(bits), axis=0)
    corners[:, free] = np.where(bits == 1, hi[free], lo[free])
    return np.vstack([centre[None], corners])


def _widest(chain: Chain) -> int:
    return max([chain.n_inputs] + [s.size for s in chain.steps])


def random_search(chain: Chain, case: Case, n: int, rng: np.random.Generator, max_free_corners: int = 10) -> np.ndarray:
    """n uniform points of the box (after its centre and, in few dimensions, its corners), run in
    chunks that fit in memory; the unsafe ones, most violating first."""
    lo, hi = case.box.lower, case.box.upper
    chunk = chunk_for(3 * _widest(chain), itemsize=8)
    found = [_unsafe_rows(case, chain, _corners_and_centre(lo, hi, max_free_corners))]
    for start in range(0, n, chunk):
        found.append(_unsafe_rows(case, chain, rng.uniform(lo, hi, (min(chunk, n - start), len(lo)))))
    return _best_first(found)


def _case_direction(case: Case, restarts: int) -> Direction:
    """Row block g (of `restarts` rows) descends the worst row of constraint g."""
    def direction(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, c = np.empty(len(y)), np.zeros_like(y)
        for g, constraint in enumerate(case.unsafe):         # a loop over constraints, not points
            block = slice(g * restarts, (g + 1) * restarts)
            score[block], worst = _worst_row(constraint, y[block])
            if len(constraint.b):
                c[block] = constraint.A[worst]
        return score, c
    return direction


def pgd(chain: Chain, case: Case, rng: np.random.Generator, restarts: int = 32, steps: int = 60,
        first_steps: tuple[float, float] = (0.25, 0.005), decay: float = 0.01, stop_margin: float = 1e-4,
        deadline: float = np.inf) -> np.ndarray:
    """Projected gradient descent on the unsafe condition: for each constraint, `restarts` starts
    (the centre, then uniform points) minimise its worst row, all in one batch. Steps are fractions of
    the box width; the first step spreads geometrically over the restarts between `first_steps`
    (large steps reach the corners that matter in high dimensions, small ones find the narrow unsafe
    regions of low-dimensional boxes) and decays geometrically by `decay` over the steps. Descent
    stops once some row is unsafe by more than `stop_margin` (a margin float32 rounding will not
    undo), or past the `deadline`. Returns the points the chain finds unsafe, most violating first."""
    lo, hi = case.box.lower, case.box.upper
    starts = rng.uniform(lo, hi, (len(case.unsafe), restarts, len(lo)))
    starts[:, :1] = (lo + hi) / 2
    first = np.geomspace(*first_steps, restarts)
    step_sizes = np.tile(first, len(case.unsafe))[None, :, None] * decay ** np.linspace(0.0, 1.0, steps)[:, None, None]
    best_x, _ = _descend(chain, starts.reshape(-1, len(lo)), lo, hi, hi - lo, step_sizes,
                         _case_direction(case, restarts), -stop_margin, deadline)
    return _best_first([_unsafe_rows(case, chain, best_x)])


def closest(chain: Chain, case: Case, n: int, rng: np.random.Generator, keep: int) -> np.ndarray:
    """n uniform points of the box; the `keep` nearest to the unsafe condition (smallest violation),
    nearest first: seeds for local descent where the unsafe region is too small for random
    restarts of PGD to reach (ACAS Xu 1_5/prop_2: 20 M uniform points hit it once)."""
    lo, hi = case.box.lower, case.box.upper
    chunk = chunk_for(3 * _widest(chain), itemsize=8)
    points, scores = np.zeros((0, len(lo))), np.zeros(0)
    for start in range(0, n, chunk):
        x = rng.uniform(lo, hi, (min(chunk, n - start), len(lo)))
        points = np.vstack([points, x])
        scores = np.concatenate([scores, violation(case, chain.forward(x))])
        order = np.argsort(scores, kind="stable")[:keep]
        points, scores = points[order], scores[order]
    return points


def _near_rows_direction(case: Case, near: float) -> Direction:
    """Descend, per point, every row within `near` of holding of its nearest constraint at once:
    a conjunction's rows then move together instead of taking turns as the worst one."""
    def direction(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = np.stack([_worst_row(c, y)[0] for c in case.unsafe])
        nearest = scores.argmin(axis=0)
        c = np.zeros_like(y)
        for g, constraint in enumerate(case.unsafe):
            mine = nearest == g
            if len(constraint.b) and mine.any():
                rows = y[mine] @ constraint.A.T - constraint.b
                c[mine] = (rows > -near).astype(np.float64) @ constraint.A
        return scores.min(axis=0), c
    return direction


def descend_from(chain: Chain, case: Case, starts: np.ndarray, steps: int = 100, first_step: float = 0.01,
                 near: float = 0.01, deadline: float = np.inf) -> np.ndarray:
    """Local sign-gradient descent from given starts (steps from first_step of the box width down
    by 100x, none past the `deadline`), on all nearly-holding rows together. Returns the unsafe
    points, most violating first."""
    lo, hi = case.box.lower, case.box.upper
    step_sizes = first_step * 0.01 ** np.linspace(0.0, 1.0, steps)
    best_x, _ = _descend(chain, starts, lo, hi, hi - lo, step_sizes, _near_rows_direction(case, near),
                         deadline=deadline)
    return _best_first([_unsafe_rows(case, chain, best_x)])


# ----- what attacks cost: falsification's budget is counted in points -----------------------------
def point_seconds(chain: Chain, rng: np.random.Generator) -> float:
    """Measured seconds for one point's forward and backward pass through the chain (PGD's unit)."""
    x = rng.uniform(0, 1, (32, chain.n_inputs))
    start = time.perf_counter()
    gradient(chain, x, np.ones(chain.n_outputs))
    return max((time.perf_counter() - start) / 32, 1e-7)


def forward_seconds(chain: Chain, rng: np.random.Generator) -> float:
    """Measured seconds per point of a forward pass in a large batch (as random search runs)."""
    x = rng.uniform(0, 1, (4096, chain.n_inputs))
    start = time.perf_counter()
    chain.forward(x)
    return max((time.perf_counter() - start) / len(x), 1e-8)


# ----- classic attacks on a classifier ---------------------------------------------------------------
def _classifier_direction(label: int, loss: str) -> Direction:
    """Score: the label's logit minus the best other (< 0: misclassified). Direction: raise the
    cross-entropy of the label ('ce', the classic attacks) or lower that margin ('margin', C&W)."""
    def direction(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        others = np.where(np.arange(y.shape[1]) == label, -np.inf, y)
        runner_up = others.argmax(axis=1)
        rows = np.arange(len(y))
        score = y[:, label] - others[rows, runner_up]
        if loss == "margin":
            c = np.zeros_like(y)
            c[:, label], c[rows, runner_up] = 1.0, -1.0
        else:
            p = np.exp(y - y.max(axis=1, keepdims=True))
            c = np.eye(y.shape[1])[label] - p / p.sum(axis=1, keepdims=True)
        return score, c
    return direction


def _ball(x0: np.ndarray, eps: float, lo: float | np.ndarray, hi: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(x0 - eps, lo), np.minimum(x0 + eps, hi)


def fgsm(chain: Chain, x0: np.ndarray, label: int, eps: float, lo: float | np.ndarray = -np.inf,
         hi: float | np.ndarray = np.inf) -> np.ndarray:
    """Fast gradient sign method (Goodfellow et al.): one step of size eps up the cross-entropy."""
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    _, c = _classifier_direction(label, "ce")(chain.forward(x0[None]))
    return np.clip(x0 - eps * np.sign(gradient(chain, x0, c)[0]), *_ball(x0, eps, lo, hi))


def pgd_linf(chain: Chain, x0: np.ndarray, label: int, eps: float, lo: float | np.ndarray = -np.inf,
             hi: float | np.ndarray = np.inf, rng: np.random.Generator | None = None, steps: int = 40,
             restarts: int = 1, step_size: float = 2.5, loss: str = "ce") -> np.ndarray:
    """Untargeted L-infinity PGD (Madry et al.): from x0 and `restarts - 1` uniform starts in the
    ball, `steps` sign steps of step_size * eps / steps, projected on the ball. Stops at the first
    misclassified point; returns the point with the smallest label margin found."""
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    lo, hi = _ball(x0, eps, lo, hi)
    rng = rng if rng is not None else np.random.default_rng(0)
    starts = np.vstack([x0[None], rng.uniform(lo, hi, (restarts - 1, len(x0)))])
    best_x, best = _descend(chain, starts, lo, hi, eps, np.full(steps, step_size / steps),
                            _classifier_direction(label, loss), stop_below=0.0)
    return best_x[np.argmin(best)]


def jsma(chain: Chain, x0: np.ndarray, label: int, lo: float | np.ndarray = 0.0, hi: float | np.ndarray = 1.0,
         max_pixels: int = 40, target: int | None = None, increase: bool = True, pool: int = 256) -> np.ndarray:
    """Jacobian saliency map attack (Papernot et al. 2016), an L0 attack: repeatedly set the pair of
    pixels whose move (to `hi`, or to `lo` when not `increase`) most raises the target logit while
    lowering the others, until the class is no longer `label` or `max_pixels` pixels changed. The
    target defaults to x0's runner-up class; pairs are searched among the `pool` most salient pixels."""
    x = np.asarray(x0, dtype=np.float64).reshape(-1).copy()
    toward = np.broadcast_to(hi if increase else lo, x.shape)
    y = chain.forward(x[None])[0]
    if target is None:
        target = int(np.argmax(np.where(np.arange(len(y)) == label, -np.inf, y)))
    directions = np.stack([np.eye(len(y))[target], 1.0 - np.eye(len(y))[target]])
    for _ in range(max_pixels // 2):
        values = chain.forward_all(np.stack([x, x]))
        if values[-1][0].argmax() != label:
            break
        pair = _salient_pair(_backward(chain, values, directions), x != toward, increase, pool)
        if pair is None:
            break
        x[pair] = toward[pair]
    return x


def _salient_pair(jacobian: np.ndarray, movable: np.ndarray, increase: bool, pool: int) -> np.ndarray | None:
    """The pair (p, q) maximising alpha * |beta| with alpha > 0 > beta, where alpha and beta are the
    target's and the other logits' changes per unit move of both pixels."""
    alpha, beta = jacobian * (1.0 if increase else -1.0)
    candidates = np.flatnonzero(movable)
    candidates = candidates[np.argsort(beta[candidates] - alpha[candidates], kind="stable")[:pool]]
    a = alpha[candidates][:, None] + alpha[candidates][None, :]
    b = beta[candidates][:, None] + beta[candidates][None, :]
    score = np.where((a > 0) & (b < 0) & ~np.eye(len(candidates), dtype=bool), a * -b, 0.0)
    if not len(candidates) or score.max() <= 0:
        return None
    p, q = np.unravel_index(score.argmax(), score.shape)
    return candidates[[p, q]]
