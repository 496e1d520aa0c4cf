"""Sigmoid and Tanh: smooth, monotone, S-shaped activations.

Linear arithmetic cannot express them, so every encoding encloses them. The bounds use two lines
per neuron over its input range [l, u]. Any slope gives a sound line once its offset is the
extreme of f(z) - a*z over [l, u], and that extreme is at l, u or where f'(z) = a: f' is
unimodal and symmetric, so there are at most two such points, in closed form. So each line's
slope is chosen freely (the one whose line is nearest f at the range's midpoint, i.e. of least
area, found by golden-section search: for f of one curvature on [l, u] that is the chord or the
tangent at the midpoint) and its offset is then exact, widened by an allowance for f's rounding.
Z3 gets the constant bounds [f(l), f(u)] and, where f has one curvature on [l, u], a chord and a
tangent. UNSAT of such an encoding is a proof; a SAT model only a candidate.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np

from ..rounding import UNIT_ROUNDOFF
from .base import Bounds, Elementwise, LinearRelaxation

# f's values come from numpy's tanh (a few ulps off): Z3's bounds are widened by this much, and
# slopes (tangents) by this much per unit of distance. Both dwarf float64 rounding of values in [-1, 1].
SMOOTH_SLACK = 2.0 ** -40
# A relaxation line's offset is widened by this much per unit of 1 + |slope * z|: a hundred times
# what it covers, f's value error (a few ulps of 1), the rounding of f(z) - a*z and the second-order
# cost of the approximate critical point. Every later layer multiplies it by its weights, so it is
# kept near what it must cover (2^-36 made a deep Tanh net's bounds on a box 1e-7 wide 10x too wide).
LINE_SLACK = 2.0 ** -44
GOLDEN = (np.sqrt(5.0) - 1) / 2
SLOPE_SEARCH_STEPS = 24                 # the slope to 0.618^24 ~ 1e-5 of its range: ample for a heuristic


@dataclass
class Smooth(Elementwise):
    """A monotone S-shaped activation, convex below 0 and concave above."""

    exact_encoding: ClassVar[bool] = False
    value_range: ClassVar[tuple[int, int]]

    tightened: ClassVar[bool] = True
    optimised_sides: ClassVar[tuple[str, ...]] = ("lower", "upper")   # any slope, with offset() for it
    # Each line's offset moves with its slope, so the ascent takes steps a tenth of a kink's, relative
    # to the slopes' range: as large, a first step lost 3.6 -> 7.4 of a deep Sigmoid net's bound.
    slope_step: ClassVar[float]
    max_slope: ClassVar[float]                  # f'(0), the largest slope

    @abstractmethod
    def slope_at_value(self, f: float) -> float:
        """f'(z) written as a function of f(z)."""

    @abstractmethod
    def where_slope(self, a: np.ndarray) -> np.ndarray:
        """The z >= 0 with f'(z) = a, for 0 < a < max_slope (f'(-z) = f'(z) too); +inf for a <= 0."""

    def magnitude_out(self, magnitude: np.ndarray) -> np.ndarray:
        """|f| <= 1 whatever the input (carrying the input's magnitude grew the next layers'
        allowances a hundredfold a layer: 12 of the logits' bound on ERAN's 6x200 Sigmoid net)."""
        return np.full_like(magnitude, float(max(map(abs, self.value_range))))

    def slack_out(self, slack: np.ndarray, relaxation: LinearRelaxation, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """f's steepest slope on [lo, hi] (at the point nearest 0), or a line's if steeper (the
        slope search may overshoot it slightly), times the allowance: a saturated neuron passes
        almost none on (its global slope, 1 for Tanh, let a deep net's allowance grow 25x a layer)."""
        steepest = self.slope_at_value(self.forward(np.clip(0.0, lo, hi))) + 4 * UNIT_ROUNDOFF   # (f rounds to 1 when saturated)
        return slack * np.maximum(steepest, np.maximum(relaxation.lower_slope, relaxation.upper_slope))

    def loose(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Every neuron whose range is not a point: f is curved everywhere."""
        return hi > lo

    def relax(self, lo: np.ndarray, hi: np.ndarray):
        """Per neuron the lines of least area below and above f on [lo, hi] (module docstring);
        output bounds f(lo) <= y <= f(hi), widened by a few ulps (f is rounded)."""
        f_lo, f_hi = self.forward(lo), self.forward(hi)
        f_lo = f_lo - 4 * UNIT_ROUNDOFF * (1 + np.abs(f_lo))
        f_hi = f_hi + 4 * UNIT_ROUNDOFF * (1 + np.abs(f_hi))
        lower_slope = self._least_area_slope(lo, hi, below=True)
        upper_slope = self._least_area_slope(lo, hi, below=False)
        relaxation = LinearRelaxation(lower_slope, upper_slope, self.offset(upper_slope, lo, hi, below=False),
                                      self.offset(lower_slope, lo, hi, below=True))
        return relaxation, f_lo, f_hi

    def slope_limits(self) -> tuple[float, float]:
        """The slopes worth optimising: a line steeper than f anywhere, or falling, is never tighter."""
        return 0.0, self.max_slope

    def offset(self, a: np.ndarray, lo: np.ndarray, hi: np.ndarray, below: bool) -> np.ndarray:
        """The offset c making a*z + c a sound lower (`below`) or upper line of f on [lo, hi]:
        the min (max) of f(z) - a*z over lo, hi and the points where f' = a, clipped into the
        range, widened by LINE_SLACK. The critical points are computed approximately, which
        costs only second order (f - a*z is flat there), far inside the widening."""
        return self.offset_and_point(a, lo, hi, below)[0]

    def offset_and_point(self, a: np.ndarray, lo: np.ndarray, hi: np.ndarray, below: bool
                         ) -> tuple[np.ndarray, np.ndarray]:
        """offset(), and the point where the line touches f: minus the offset's derivative in the
        slope (the envelope theorem), what slope optimisation climbs by. Arrays broadcast."""
        gaps, points = self._gaps(a, lo, hi)
        pick = gaps.argmin(axis=0) if below else gaps.argmax(axis=0)
        gap = np.take_along_axis(gaps, pick[None], axis=0)[0]
        point = np.take_along_axis(points, pick[None], axis=0)[0]
        width = LINE_SLACK * (1 + np.abs(a) * np.maximum(np.abs(lo), np.abs(hi)))
        return (gap - width if below else gap + width), point

    def _gaps(self, a: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f(z) - a*z at the four candidate points, and the points (4, ...)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            turn = self.where_slope(a)
        a, lo, hi, turn = np.broadcast_arrays(a, lo, hi, turn)
        points = np.stack([lo, hi, np.clip(turn, lo, hi), np.clip(-turn, lo, hi)])
        return self.forward(points) - a * points, points

    def _least_area_slope(self, lo: np.ndarray, hi: np.ndarray, below: bool) -> np.ndarray:
        """The slope in [0, max_slope] whose sound line is nearest f at the midpoint: the line's
        value there is convex (below: concave) in the slope, so golden-section search finds it."""
        mid = (lo + hi) / 2
        sign = -1.0 if below else 1.0           # minimise sign * (line at mid)

        def cost(a: np.ndarray) -> np.ndarray:
            gap = self._gaps(a, lo, hi)[0]
            return sign * (a * mid + (gap.min(axis=0) if below else gap.max(axis=0)))

        left, right = np.zeros_like(lo), np.full_like(lo, self.max_slope)
        x1, x2 = right - GOLDEN * right, left + GOLDEN * right
        c1, c2 = cost(x1), cost(x2)
        for _ in range(SLOPE_SEARCH_STEPS):
            first = c1 <= c2                    # the optimum is in [left, x2]
            left, right = np.where(first, left, x1), np.where(first, x2, right)
            x1, x2 = np.where(first, right - GOLDEN * (right - left), x2), np.where(first, x1, left + GOLDEN * (right - left))
            moved = np.where(first, x1, x2)
            c_new = cost(moved)
            c1, c2 = np.where(first, c_new, c2), np.where(first, c1, c_new)
        return np.where(hi > lo, (left + right) / 2, 0.0)

    def encode_z3(self, k: int, zs: list, bounds: Bounds | None, memo: dict) -> tuple[list, list]:
        """Enclosed soundly: y in [f(l), f(u)] (f is monotone), and where f has one curvature on
        [l, u] the chord on one side and the tangent at the midpoint on the other."""
        from .. import z3terms
        ys = z3terms.variables(k, len(zs))
        low, high = self.value_range
        if bounds is None:
            return ys, [c for y in ys for c in (y >= low, y <= high)]
        lo, hi = np.asarray(bounds[0], np.float64), np.asarray(bounds[1], np.float64)
        f_lo, f_hi = self.forward(lo), self.forward(hi)
        constraints = []
        for i, (z, y) in enumerate(zip(zs, ys)):
            constraints += [y >= z3terms.rational(max(Fraction(low), Fraction(f_lo[i]) - Fraction(SMOOTH_SLACK))),
                            y <= z3terms.rational(min(Fraction(high), Fraction(f_hi[i]) + Fraction(SMOOTH_SLACK)))]
            if (lo[i] >= 0 or hi[i] <= 0) and hi[i] - lo[i] > 2 ** -20:
                constraints += self._chord_and_tangent(z, y, lo[i], hi[i], f_lo[i], f_hi[i])
        return ys, constraints

    def _chord_and_tangent(self, z, y, lo: float, hi: float, f_lo: float, f_hi: float) -> list:
        """On [lo, hi] >= 0 f is concave: chord below, tangent above; on [lo, hi] <= 0 the reverse.
        The chord joins points shifted outward, in exact rationals; the tangent is shifted outward
        by the value error plus the slope error times the distance from the midpoint."""
        from ..z3terms import rational
        side = 1 if lo >= 0 else -1                               # +1: concave
        l, u = Fraction(lo), Fraction(hi)
        a, b = Fraction(f_lo) - side * Fraction(SMOOTH_SLACK), Fraction(f_hi) - side * Fraction(SMOOTH_SLACK)
        chord = rational(a) + rational((b - a) / (u - l)) * (z - rational(l))
        mid = (lo + hi) / 2
        f_mid = float(self.forward(np.array([mid]))[0])
        slope = Fraction(float(self.slope_at_value(f_mid)))
        margin = Fraction(SMOOTH_SLACK) * (1 + max(Fraction(mid) - l, u - Fraction(mid)))
        tangent = rational(Fraction(f_mid) + side * margin) + rational(slope) * (z - rational(Fraction(mid)))
        if side > 0:
            return [y >= chord, y <= tangent]
        return [y <= chord, y >= tangent]


@dataclass
class Sigmoid(Smooth):
    value_range: ClassVar[tuple[int, int]] = (0, 1)
    max_slope: ClassVar[float] = 0.25
    slope_step: ClassVar[float] = 0.1 * 0.25

    def forward(self, x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * x))    # the logistic sigmoid, overflow-free

    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return g * after * (1.0 - after)

    def slope_at_value(self, f: float) -> float:
        return f * (1 - f)

    def where_slope(self, a: np.ndarray) -> np.ndarray:
        """f(1-f) = a at f = (1 + sqrt(1 - 4a)) / 2, i.e. z = 2 artanh(sqrt(1 - 4a))."""
        return np.where(a <= 0, np.inf, 2 * np.arctanh(np.sqrt(np.clip(1 - 4 * a, 0.0, 1.0))))


@dataclass
class Tanh(Smooth):
    value_range: ClassVar[tuple[int, int]] = (-1, 1)
    max_slope: ClassVar[float] = 1.0
    slope_step: ClassVar[float] = 0.1

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return g * (1.0 - after * after)

    def slope_at_value(self, f: float) -> float:
        return 1 - f * f

    def where_slope(self, a: np.ndarray) -> np.ndarray:
        """1 - f^2 = a at f = sqrt(1 - a)."""
        return np.where(a <= 0, np.inf, np.arctanh(np.sqrt(np.clip(1 - a, 0.0, 1.0))))
