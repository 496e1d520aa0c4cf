"""Sigmoid and Tanh: smooth, monotone, S-shaped activations.

Linear arithmetic cannot express them, so every encoding encloses them: the bounds by constant
intervals [f(l), f(u)], Z3 by those and, where f has one curvature on [l, u], a chord and a
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


@dataclass
class Smooth(Elementwise):
    """A monotone S-shaped activation, convex below 0 and concave above."""

    exact_encoding: ClassVar[bool] = False
    value_range: ClassVar[tuple[int, int]]

    @abstractmethod
    def slope_at_value(self, f: float) -> float:
        """f'(z) written as a function of f(z)."""

    def relax(self, lo: np.ndarray, hi: np.ndarray):
        """Constant bounds f(lo) <= y <= f(hi), widened by a few ulps (f is rounded)."""
        f_lo, f_hi = self.forward(lo), self.forward(hi)
        f_lo = f_lo - 4 * UNIT_ROUNDOFF * (1 + np.abs(f_lo))
        f_hi = f_hi + 4 * UNIT_ROUNDOFF * (1 + np.abs(f_hi))
        zero = np.zeros_like(lo)
        return LinearRelaxation(zero, zero, f_hi, f_lo), f_lo, f_hi

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

    def forward(self, x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * x))    # the logistic sigmoid, overflow-free

    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return g * after * (1.0 - after)

    def slope_at_value(self, f: float) -> float:
        return f * (1 - f)


@dataclass
class Tanh(Smooth):
    value_range: ClassVar[tuple[int, int]] = (-1, 1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return g * (1.0 - after * after)

    def slope_at_value(self, f: float) -> float:
        return 1 - f * f
