"""Back-substituted lower bounds with the kinks' lower-side slopes optimised (alpha-CROWN style).

Any slope s in [a, 1] gives a sound lower side of an unstable kink f of slope a below 0 (ReLU:
a = 0, LeakyRelu: a = alpha; f(z) >= s*z for every z),
so the bound of back-substitution is sound for every choice; CROWN fixes one choice per neuron by
area, which can lose a lot. Here every row being bounded gets its own slopes, raised by projected
gradient ascent (Adam) on the row's bound, and the best bound seen is kept. With the neuron bounds
fixed, the optimum is the triangle relaxation's LP bound; the point is to get near it at the cost
of some dozens of back-substitutions instead of an LP solve.

A conjunction of rows A y <= b is refuted by any non-negative combination mu with
min mu.(A y) > mu.b; such combinations (an Objective's free rows) are optimised the same way.

Only chains of affine steps and kinks (splittable steps) are optimised; the gradient is taken by hand, in reverse
through the substitution, so no autodiff library is needed. The ascent runs in float32 (half the
memory traffic of its products), as an estimate only: the bounds returned come from one float64
substitution with each row's best slopes and multipliers, less its rounding allowance.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from typing import Callable

from .batched import right as right_product
from .bounds import BoundPropagator, ChainBounds, RowBound
from .chain import Chain
from .rounding import RoundingAllowance


@dataclass(frozen=True)
class SlopeSettings:
    iterations: int = 20
    step_size: float = 0.2      # Adam's learning rate, for slopes in [0, 1]
    mix_step_size: float = 0.1  # ... and for combination weights (normalised to sum 1)
    beta_step_size: float = 0.05  # ... and for the multipliers of kink phase decisions


def supports(chain: Chain) -> bool:
    """Whether every step is affine or has sides to optimise (a kink's lower side; Sigmoid's and
    Tanh's two, each line's offset following its slope)."""
    return all(s.linear or s.optimised_sides for s in chain.steps)


def upper_key(k: int) -> tuple[str, int]:
    """The key of step k's upper-side slopes among an ascent's slopes (its lower side's is k)."""
    return ("upper", k)


@dataclass
class Objective:
    """Rows to lower-bound: combination weights M (B, R, Q) over base rows A (Q, m) with
    right-hand sides b (Q,); row r bounds (M[r] @ A) . y - M[r] @ b. The entries of M where
    `free` (R, Q), or per box (B, R, Q), is set are optimised, non-negative, each free row kept
    summing to 1.
    M None: the base rows themselves, as they are."""

    A: np.ndarray
    b: np.ndarray
    M: np.ndarray | None = None
    free: np.ndarray | None = None


@dataclass
class SlopeSolution:
    """What an ascent ended with, per box and row: the best lower bounds found (B, R); the last
    slopes and multipliers (k -> (B, R, m)), to start a sub-domain's ascent from; and the box
    corners minimising the last bound (B, R, n_in), where it is tight the likeliest
    counterexamples (as an LP optimum would be)."""

    values: np.ndarray
    slopes: dict[int, np.ndarray]
    betas: dict[int, np.ndarray]
    corners: np.ndarray


class SlopeOptimiser:
    """Optimised lower bounds of linear forms of any step's input over a batch of boxes."""

    def __init__(self, propagator: BoundPropagator, settings: SlopeSettings | None = None) -> None:
        self.propagator = propagator          # its weights, split once, serve here too
        self.chain = propagator.chain
        self.settings = settings or SlopeSettings()
        self._single = {k: (step.W.astype(np.float32), step.b.astype(np.float32))
                        for k, step in enumerate(self.chain.steps) if step.linear}

    def lower_bounds(self, bounds: ChainBounds, objective: Objective, end: int,
                     stop: "Callable[[np.ndarray], bool] | None" = None, iterations: int | None = None,
                     allowance: bool = True, deadline: float = np.inf) -> np.ndarray:
        """Best lower bound found of each objective row (B, R); see optimise."""
        return self.optimise(bounds, objective, end, stop, iterations, allowance, deadline=deadline).values

    def optimise(self, bounds: ChainBounds, objective: Objective, end: int,
                 stop: "Callable[[np.ndarray], bool] | None" = None, iterations: int | None = None,
                 allowance: bool = True, splits: "dict[int, np.ndarray] | None" = None,
                 start: SlopeSolution | None = None,
                 finished: "Callable[[np.ndarray], np.ndarray] | None" = None,
                 deadline: float = np.inf) -> SlopeSolution:
        """Lower bounds of each objective row (B, R), less the rounding allowance of step `end`'s
        input (unless the caller subtracts it). `stop(values)` may end the ascent early (e.g. once
        every box is refuted); `finished(values)` (B,) marks boxes whose ascent may end, which are
        dropped from it (a refuted row of a ReLU-splitting domain). `splits[k]` (B, m) marks kink
        phase decisions at step k's input: -1 where it is >= 0 (active), +1 where it is <= 0
        (inactive), 0 elsewhere; each gets a multiplier of its own, optimised too (beta-CROWN):
        the bound then respects the decisions over the whole input box, not only through the
        decided neurons' own bounds. The ascent begins from `start`'s slopes and multipliers where
        given (a parent domain's: any slope in [0, 1] and any non-negative multiplier is sound),
        else from CROWN's slopes and zero. `stop` and `finished` see the float32 estimates; the
        bounds returned are float64 ones, of each row's best state. The ascent takes no step that
        would end past the `deadline` (perf_counter) by its last step's measured time, with the
        float64 substitution still to come (about as long); a deadline already passed leaves it
        CROWN's or `start`'s state. Every state's bound is sound: cutting short only loosens it."""
        s = self.settings
        ascent = _Ascent.begin(self, bounds, objective, end, splits, start)
        B = bounds.box_lower.shape[0]
        estimate = np.full((B, ascent.M.shape[1] if ascent.M is not None else len(objective.b)), -np.inf)
        best, last = ascent.state_arrays(B), ascent.state_arrays(B)
        iterations = s.iterations if iterations is None else iterations
        for iteration in range(iterations + 1):
            began = time.perf_counter()
            rows, rhs = ascent.rows()
            terms = {k: ascent.betas[k] * ascent.signs[k] for k in ascent.signs}
            value, grad_slopes, grad_lam, grad_terms, _ = self.bound_and_gradient(
                ascent.bounds, rows, ascent.slopes, end, terms, exact=False)
            if allowance:
                value = value - np.einsum("brm,bm->br", np.abs(rows), ascent.bounds.slack[end])
            ascent.remember(value - rhs)
            estimate[ascent.live] = ascent.best_value
            if iteration == iterations or (stop is not None and stop(estimate)) or _late(began, deadline):
                break
            if finished is not None:
                live = ascent.drop(finished(estimate)[ascent.live], best, last)
                if not len(ascent.live):
                    break
                grad_slopes, grad_lam, grad_terms = _subset_gradients(live, grad_slopes, grad_lam, grad_terms)
            ascent.climb(s, grad_slopes, grad_lam, grad_terms)
        ascent.drop(np.ones(len(ascent.live), bool), best, last)
        values, corners = self._exact(bounds, objective, end, best, _signs(splits, end), allowance)
        return SlopeSolution(values, _cast(last.slopes, np.float64), _cast(last.betas, np.float64), corners)

    def _exact(self, bounds: ChainBounds, objective: Objective, end: int, state: "_State",
               signs: dict[int, np.ndarray], allowance: bool) -> tuple[np.ndarray, np.ndarray]:
        """The sound bounds (float64, less the substitution's rounding allowance) of the slopes,
        multipliers and combinations each row's ascent estimated best, and their minimising corners."""
        slopes, betas = _cast(state.slopes, np.float64), _cast(state.betas, np.float64)
        if state.M is not None:
            M = state.M.astype(np.float64)
            rows, rhs = M @ objective.A, M @ objective.b
        else:
            rows, rhs = np.broadcast_to(objective.A, (len(bounds.box_lower),) + objective.A.shape), objective.b
        terms = {k: betas[k] * signs[k] for k in signs}
        value, _, _, _, corners = self.bound_and_gradient(bounds, rows, slopes, end, terms, gradient=False)
        value = value - rhs
        if allowance:
            value = value - np.einsum("brm,bm->br", np.abs(rows), bounds.slack[end])
        return value, corners

    def with_fixed(self, bounds: ChainBounds, objective: Objective, end: int, solution: SlopeSolution,
                   boxes: np.ndarray, splits: dict[int, np.ndarray],
                   fixed: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """Each box's objective rows bounded once (E, R), with the slopes and multipliers of
        `solution`'s boxes `boxes` and one more kink decided: (step, neuron, active) per box, its
        relaxation replaced by the identity or its inactive line. A child domain's bound without an ascent, to
        choose the branch by; `bounds` must be the box's own copy (it is changed). In float32: an
        estimate, never a proof."""
        steps, neurons, active = fixed
        at = np.arange(len(boxes))
        slopes = {k: v[boxes].astype(np.float32) for k, v in solution.slopes.items()}
        for k in np.unique(steps):
            mine = steps == k
            r = bounds.relaxations[k]
            slope = self.chain.steps[k].phase_slope(active[mine])
            r.upper_slope[at[mine], neurons[mine]] = slope
            r.upper_offset[at[mine], neurons[mine]] = 0.0
            slopes[k][at[mine], :, neurons[mine]] = slope[:, None]
        terms = {k: (solution.betas[k][boxes] * sign[:, None, :]).astype(np.float32)
                 for k, sign in splits.items() if k in solution.betas}
        rows = (objective.M @ objective.A).astype(np.float32)
        value = self.bound_and_gradient(_in_float32(bounds), rows, slopes, end, terms, exact=False, gradient=False)[0]
        return value - objective.M @ objective.b

    def row_bound(self, iterations: int, deadline: float = np.inf) -> RowBound:
        """Optimised slopes in place of back-substitution for the hidden neurons' bounds
        (BoundPropagator.forward's row_bound; the rounding allowance is added there), each
        ascent stopped by the deadline (see optimise)."""
        def bound(bounds: ChainBounds, rows: np.ndarray, k: int) -> np.ndarray:
            return self.lower_bounds(bounds, Objective(rows, np.zeros(len(rows))), k, iterations=iterations,
                                     allowance=False, deadline=deadline)
        return bound

    def _initial_slopes(self, bounds: ChainBounds, k: int, rows: int, side: str = "lower") -> np.ndarray:
        """The relaxation's own slopes of one side, per row (rows are optimised apart)."""
        slope = getattr(bounds.relaxations[k], f"{side}_slope")
        return np.broadcast_to(slope[:, None, :], (slope.shape[0], rows, slope.shape[1])).copy()

    def _through_lines(self, bounds: ChainBounds, k: int, Lam: np.ndarray, const: np.ndarray,
                       slopes: dict, error: RoundingAllowance) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Back through step k whose two sides are both optimised (Sigmoid, Tanh): each row's own
        lines, each offset the sound one for its slope (so every slope is sound). Returns the
        coefficients and constant, and what the gradient needs: the output coefficients, and each
        side's offsets and touching points (minus the offsets' derivatives in the slopes)."""
        step = self.chain.steps[k]
        lo, hi = bounds.lower[k][:, None, :], bounds.upper[k][:, None, :]
        lower, upper = slopes[k], slopes[upper_key(k)]
        lower_offset, lower_point = (v.astype(Lam.dtype) for v in step.offset_and_point(lower, lo, hi, below=True))
        upper_offset, upper_point = (v.astype(Lam.dtype) for v in step.offset_and_point(upper, lo, hi, below=False))
        positive, negative = np.maximum(Lam, 0.0), np.minimum(Lam, 0.0)
        const = const + np.sum(positive * lower_offset + negative * upper_offset, axis=2)
        steepest = np.maximum(lower, upper).max(axis=(1, 2))[:, None]
        largest = np.maximum(np.abs(lower_offset), np.abs(upper_offset)).max(axis=(1, 2))[:, None]
        error.lines(steepest, largest, k, Lam, const)
        return positive * lower + negative * upper, const, (Lam, lower_offset, lower_point, upper_offset, upper_point)

    def bound_and_gradient(self, bounds: ChainBounds, Lam: np.ndarray, slopes: dict[int, np.ndarray], end: int,
                           terms: "dict[int, np.ndarray] | None" = None, exact: bool = True,
                           gradient: bool = True):
        """The substitution's bound (less its rounding allowance), and its gradient with respect
        to every step's slopes, to the rows themselves, and to `terms[k]` (B, R, m): coefficients
        added at kink step k's input (the split multipliers; reverse mode, by hand); and each row's
        box corner minimising the bound (B, R, n_in). Not `exact`: in float32 (every array given
        must be float32), an estimate for the ascent, less the allowance the float64 substitution
        would subtract (else the ascent stops short of what that can prove). Without `gradient`,
        the gradients are None."""
        terms = terms or {}
        steps = self.chain.steps
        const = np.zeros(Lam.shape[:2], dtype=Lam.dtype)
        error = RoundingAllowance(bounds, Lam.shape[:2])
        seen: dict[int, object] = {}      # per nonlinear step, what the gradient pass needs
        for k in range(end - 1, -1, -1):
            step = steps[k]
            if step.linear:
                W, b = (step.W, step.b) if exact else self._single[k]
                error.affine(self.propagator.signed(step), k, Lam, const)
                const = const + Lam @ b
                Lam = right_product(Lam, W)
            elif "upper" in step.optimised_sides:
                Lam, const, seen[k] = self._through_lines(bounds, k, Lam, const, slopes, error)
            else:
                r = bounds.relaxations[k]
                positive, negative = np.maximum(Lam, 0.0), np.minimum(Lam, 0.0)
                seen[k] = positive
                const = const + np.einsum("brm,bm->br", negative, r.upper_offset)
                Lam_out, Lam = Lam, positive * slopes[k] + negative * r.upper_slope[:, None, :]
                error.nonlinear(r, k, Lam_out, const)
                if k in terms:
                    Lam = Lam + terms[k]
                    error.coefficients_changed()
        lo, hi = bounds.box_lower[:, None, :], bounds.box_upper[:, None, :]
        error.final(Lam, const)
        value = np.sum(np.where(Lam > 0, Lam * lo, Lam * hi), axis=2) + const - error.total
        G = np.where(Lam > 0, lo, hi)                    # d value / d (coefficients at the input)
        corners = G                                      # ... which is each row's minimising corner of the box
        if not gradient:
            return value, None, None, None, corners
        grad_slopes, grad_terms = {}, {}
        for k in range(end):
            step = steps[k]
            if step.linear:
                W, b = (step.W, step.b) if exact else self._single[k]
                G = right_product(G, W.T) + b
            elif "upper" in step.optimised_sides:
                Lam_out, lower_offset, lower_point, upper_offset, upper_point = seen[k]
                grad_slopes[k] = np.maximum(Lam_out, 0.0) * (G - lower_point)
                grad_slopes[upper_key(k)] = np.minimum(Lam_out, 0.0) * (G - upper_point)
                G = np.where(Lam_out > 0, G * slopes[k] + lower_offset, G * slopes[upper_key(k)] + upper_offset)
            else:
                r = bounds.relaxations[k]
                if k in terms:
                    grad_terms[k] = G
                positive = seen[k] > 0            # (a row's coefficient of exactly 0 takes the lower side)
                grad_slopes[k] = G * seen[k]
                G = np.where(positive, G * slopes[k], G * r.upper_slope[:, None, :] + r.upper_offset[:, None, :])
        return value, grad_slopes, G, grad_terms, corners


@dataclass
class _State:
    """What an ascent optimises, over all its boxes (B, R, ...): slopes and multipliers per kink
    step, and the combination weights (None: the objective's rows as they are)."""

    slopes: dict[int, np.ndarray]
    betas: dict[int, np.ndarray]
    M: np.ndarray | None


@dataclass
class _Ascent:
    """The per-box state of one ascent (float32), for the boxes still in it (`live`: their indices)."""

    bounds: ChainBounds                  # the live boxes' bounds, their relaxations in float32
    M: np.ndarray | None                 # (B, R, Q) objective rows as combinations of base rows (None: those rows)
    free: np.ndarray | None
    slopes: dict[int, np.ndarray]
    limits: dict                         # each side's least and greatest slope (a kink's: its slope below 0, and 1), and step scale
    unstable: dict[int, np.ndarray]
    signs: dict[int, np.ndarray]
    betas: dict[int, np.ndarray]
    adam: "_Adam"
    live: np.ndarray
    A: np.ndarray                         # the objective's base rows and right-hand sides, in float32
    b: np.ndarray
    best: _State | None = None            # the live boxes' state at their best estimate so far, row by row
    best_value: np.ndarray | None = None

    @classmethod
    def begin(cls, optimiser: "SlopeOptimiser", bounds: ChainBounds, objective: Objective, end: int,
              splits: "dict[int, np.ndarray] | None", start: SlopeSolution | None) -> "_Ascent":
        B = bounds.box_lower.shape[0]
        steps = optimiser.chain.steps
        sides = {k if side == "lower" else upper_key(k): (k, side) for k in range(end) for side in steps[k].optimised_sides}
        M = objective.M.astype(np.float32) if objective.M is not None else None
        R = M.shape[1] if M is not None else len(objective.b)
        unstable = {key: steps[k].loose(bounds.lower[k], bounds.upper[k])[:, None, :] for key, (k, _) in sides.items()}
        slopes = {key: optimiser._initial_slopes(bounds, k, R, side) for key, (k, side) in sides.items()}
        if start is not None:
            slopes = {k: np.where(unstable[k], start.slopes[k], slope) if k in start.slopes else slope
                      for k, slope in slopes.items()}
        signs = _signs(splits, end)
        betas = {k: np.zeros((B, R, sign.shape[2])) for k, sign in signs.items()}
        if start is not None:
            betas = {k: np.where(signs[k] != 0, start.betas[k], 0.0) if k in start.betas else beta
                     for k, beta in betas.items()}
        free = objective.free if objective.free is not None and np.any(objective.free) else None
        adam = _Adam([*sides, "mix", *(("beta", k) for k in signs)])
        single = np.float32
        limits = {key: (*steps[k].slope_limits(), steps[k].slope_step) for key, (k, _) in sides.items()}
        return cls(_in_float32(bounds), M, free, _cast(slopes, single), limits, unstable, _cast(signs, single),
                   _cast(betas, single), adam, np.arange(B), objective.A.astype(single), objective.b.astype(single))

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The live boxes' rows (B, R, n_out) and right-hand sides, in float32."""
        if self.M is not None:
            return self.M @ self.A, self.M @ self.b
        return np.broadcast_to(self.A, (len(self.live),) + self.A.shape), self.b

    def remember(self, value: np.ndarray) -> None:
        """Keep each row's state where its estimate `value` (live boxes, R) is the best yet."""
        if self.best is None:
            self.best = _State(dict(self.slopes), dict(self.betas), self.M)
            self.best_value = value
            return
        better = value > self.best_value
        self.best_value = np.maximum(value, self.best_value)
        self.best = _State({k: np.where(better[:, :, None], v, self.best.slopes[k]) for k, v in self.slopes.items()},
                           {k: np.where(better[:, :, None], v, self.best.betas[k]) for k, v in self.betas.items()},
                           np.where(better[:, :, None], self.M, self.best.M) if self.M is not None else None)

    def state_arrays(self, B: int) -> _State:
        """Arrays for every box's final state, filled as boxes leave the ascent."""
        return _State({k: np.empty((B,) + v.shape[1:], np.float32) for k, v in self.slopes.items()},
                      {k: np.empty((B,) + v.shape[1:], np.float32) for k, v in self.betas.items()},
                      np.empty((B,) + self.M.shape[1:], np.float32) if self.M is not None else None)

    def climb(self, s: SlopeSettings, grad_slopes: dict, grad_lam: np.ndarray, grad_terms: dict) -> None:
        """One projected Adam step of the slopes, multipliers and combination weights."""
        for k in self.slopes:
            step = self.adam.step(k, np.where(self.unstable[k], grad_slopes[k], 0.0))
            floor, ceiling, scale = self.limits[k]
            self.slopes[k] = np.clip(self.slopes[k] + s.step_size * scale * step, floor, ceiling)
        for k in self.signs:
            step = self.adam.step(("beta", k), grad_terms[k] * self.signs[k])
            self.betas[k] = np.maximum(self.betas[k] + s.beta_step_size * step, 0.0)
        if self.free is not None:
            grad_mix = grad_lam @ self.A.T - self.b
            step = self.adam.step("mix", np.where(self.free, grad_mix, 0.0))
            mixed = np.where(self.free, np.maximum(self.M + s.mix_step_size * step, 0.0), 0.0)
            mixed = mixed / np.maximum(mixed.sum(axis=2, keepdims=True), 1e-12)
            self.M = np.where(self.free.any(axis=-1)[..., None], mixed, self.M)

    def drop(self, done: np.ndarray, best: _State, last: _State) -> np.ndarray:
        """Boxes `done` (a mask over live ones) leave the ascent, their best and last states written
        to `best` and `last` (a sub-domain starts from the last: restarting from the best would undo
        the ascent's first steps, which often lose before they gain);
        only once an eighth of them are done (each drop copies the state). Returns the mask of
        the boxes kept."""
        if not np.any(done) or (done.sum() < len(done) / 8 and not np.all(done)):
            return np.ones(len(done), bool)
        gone, keep = self.live[done], ~done
        for mine, theirs in ((self.best.slopes, best.slopes), (self.best.betas, best.betas),
                             (self.slopes, last.slopes), (self.betas, last.betas)):
            for k in mine:
                theirs[k][gone] = mine[k][done]
                mine[k] = mine[k][keep]
        self.best_value = self.best_value[keep]
        self.bounds = self.bounds.subset(keep)
        if self.M is not None:
            best.M[gone] = self.best.M[done]
            self.best.M, self.M = self.best.M[keep], self.M[keep]
        if self.free is not None and self.free.ndim == 3:
            self.free = self.free[keep]
        self.unstable = {k: u[keep] for k, u in self.unstable.items()}
        self.signs = {k: sign[keep] for k, sign in self.signs.items()}
        self.adam.moments = {name: (m[keep], v[keep]) for name, (m, v) in self.adam.moments.items()}
        self.live = self.live[keep]
        return keep


def _late(began: float, deadline: float) -> bool:
    """Whether another step as long as the one begun at `began`, and then the float64
    substitution, would end past the deadline."""
    now = time.perf_counter()
    return now + 2 * (now - began) > deadline


def _signs(splits: "dict[int, np.ndarray] | None", end: int) -> dict[int, np.ndarray]:
    """The kink decisions before step `end` that decide something, as (B, 1, m) signs."""
    return {k: sign[:, None, :].astype(np.float64) for k, sign in (splits or {}).items() if k < end and np.any(sign)}


def _cast(arrays: dict[int, np.ndarray], dtype) -> dict[int, np.ndarray]:
    return {k: v.astype(dtype) for k, v in arrays.items()}


def _in_float32(bounds: ChainBounds) -> ChainBounds:
    """The box and the kinks' upper sides in float32, for the ascent's estimates."""
    relaxations = {k: replace(r, upper_slope=r.upper_slope.astype(np.float32),
                              upper_offset=r.upper_offset.astype(np.float32)) for k, r in bounds.relaxations.items()}
    return ChainBounds(bounds.lower, bounds.upper, bounds.slack, relaxations,
                       bounds.box_lower.astype(np.float32), bounds.box_upper.astype(np.float32))


def _subset_gradients(keep: np.ndarray, grad_slopes: dict, grad_lam: np.ndarray, grad_terms: dict):
    """The gradients of the boxes kept in an ascent."""
    if np.all(keep):
        return grad_slopes, grad_lam, grad_terms
    return ({k: g[keep] for k, g in grad_slopes.items()}, grad_lam[keep],
            {k: g[keep] for k, g in grad_terms.items()})


class _Adam:
    """Adam's moment estimates, per named parameter (ascent direction returned)."""

    def __init__(self, names: list, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.beta1, self.beta2 = beta1, beta2
        self.moments: dict = {}
        self.count: dict = {name: 0 for name in names}

    def step(self, name, grad: np.ndarray) -> np.ndarray:
        m, v = self.moments.get(name, (np.zeros_like(grad), np.zeros_like(grad)))
        m = self.beta1 * m + (1 - self.beta1) * grad
        v = self.beta2 * v + (1 - self.beta2) * grad * grad
        self.moments[name] = (m, v)
        self.count[name] += 1
        t = self.count[name]
        return (m / (1 - self.beta1 ** t)) / (np.sqrt(v / (1 - self.beta2 ** t)) + 1e-8)
