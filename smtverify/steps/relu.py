"""The kink: f(z) = z for z >= 0 and a*z below, with 0 <= a <= 1 (ReLU: a = 0; LeakyRelu: a = alpha).

Convex, so the chord over [l, u] is its upper side and any line through 0 with a slope in [a, 1]
a lower side (slopes.py optimises that slope). Branch and bound splits on its phase: active
(z >= 0, y = z) or inactive (z <= 0, y = a*z); either way y is then linear.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np
from scipy import sparse

from .base import Bounds, Elementwise, LinearRelaxation

INF = float("inf")


@dataclass
class Kink(Elementwise):
    """The kink at 0 with slope `negative_slope` below it and 1 above."""

    negative_slope: float = 0.0
    splittable: ClassVar[bool] = True
    tightened: ClassVar[bool] = True
    optimised_sides: ClassVar[tuple[str, ...]] = ("lower",)     # any line through 0 of slope in [a, 1]

    def __post_init__(self) -> None:
        """The relaxations need a convex, non-decreasing kink (a in [0, 1]); the slope ascent
        runs in float32 and clips slopes at a, which is sound only where a is a float32 (an
        ONNX attribute always is): a slope rounded below a would not bound the kink from below."""
        a = self.negative_slope
        if not (0.0 <= a <= 1.0 and float(np.float32(a)) == a):
            raise ValueError(f"a kink's negative slope must be a float32 in [0, 1], not {a!r}")

    # ----- values --------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, self.negative_slope * x)

    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return g * np.where(before > 0, 1.0, self.negative_slope)

    def inactive_value(self, z: np.ndarray, toward: float | None = None) -> np.ndarray:
        """a*z, the value below the kink; moved an ulp toward `toward` (+-inf) if given, for
        bounds (the product may round)."""
        product = self.negative_slope * z
        return product if toward is None else np.nextafter(product, toward)

    def phase_slope(self, active: np.ndarray) -> np.ndarray:
        """The exact slope of a neuron whose phase is known: 1 where active, a where inactive."""
        return np.where(active, 1.0, self.negative_slope)

    # ----- bounds --------------------------------------------------------------------------
    def relax(self, lo: np.ndarray, hi: np.ndarray):
        """The chord above (exact where the phase is known) and, below, the identity or the
        inactive line, whichever loses less area (CROWN's choice); output bounds rounded outward."""
        active, inactive = lo >= 0, hi <= 0
        unstable = ~(active | inactive)
        if self.negative_slope == 0:
            # ReLU's chord as computed: its rounding (at most 2.3 u max|z|, measured) lies within
            # the allowance the forward pass adds at each step.
            width = np.where(unstable, hi - lo, 1.0)
            slope = np.where(unstable, (hi - self.inactive_value(lo)) / width, self.phase_slope(active))
            offset = np.where(unstable, -(slope - self.negative_slope) * lo, 0.0)
        else:   # a sloped kink's chord rounds further (5.2 u max|z| at a = 0.99): rounded up instead
            slope, offset = self.lp_upper_side(lo, hi)
        lower_slope = np.where(unstable, self.phase_slope(hi > -lo), self.phase_slope(active))
        relaxation = LinearRelaxation(lower_slope, slope, offset, np.zeros_like(lo))
        return (relaxation, np.maximum(lo, self.inactive_value(lo, -INF)),
                np.maximum(hi, self.inactive_value(hi, INF)))

    def flat_relaxation(self, relaxation: LinearRelaxation, lo: np.ndarray) -> LinearRelaxation | None:
        """Every unstable neuron's lower side the inactive line."""
        flat = self.phase_slope(lo >= 0)
        if np.any(flat != relaxation.lower_slope):    # else the second pass would repeat the first
            return relaxation.with_lower_slope(flat)
        return None

    def slope_limits(self) -> tuple[float, float]:
        """The slopes a lower side through 0 may take."""
        return self.negative_slope, 1.0

    # ----- Z3 ------------------------------------------------------------------------------
    def inactive_term(self, z):
        """a*z for Z3, exactly (a Z3 term, or a number Z3 coerces)."""
        from .. import z3terms
        return z3terms.rational(self.negative_slope) * z

    def encode_z3(self, k: int, zs: list, bounds: Bounds | None, memo: dict) -> tuple[list, list]:
        """Stable neurons (sound bounds not straddling 0) pass z or a*z on, with no variable;
        unstable ones get a variable y, the disjunction (z >= 0 and y = z) or (z <= 0 and y = a*z),
        and, with bounds l < 0 < u, the triangle cuts y >= a*z, y >= z and y below the chord:
        with them Z3's own simplex sees the triangle relaxation, so what LP bounds refute needs
        no split."""
        import z3

        from .. import z3terms
        lo, hi = bounds if bounds is not None else (np.full(len(zs), -np.inf), np.full(len(zs), np.inf))
        out = []
        constraints = []
        for i, z in enumerate(zs):
            if lo[i] >= 0 or hi[i] <= 0:
                out.append(z if lo[i] >= 0 else z3terms.as_term(self.inactive_term(z)))
                continue
            y = z3.Real(f"N{k + 1}_{i}")
            out.append(y)
            below = self.inactive_term(z)
            constraints.append(z3.Or(z3.And(z >= 0, y == z), z3.And(z <= 0, y == below)))
            if bounds is not None:
                constraints += [y >= below, y >= z, self._under_chord(y, z, z3terms.down(lo[i]), z3terms.up(hi[i]))]
        return out, constraints

    def _under_chord(self, y, z, l: Fraction, u: Fraction):
        """y <= the chord from (l, a*l) to (u, u), in exact rationals (l, u already outward)."""
        from .. import z3terms
        a = Fraction(self.negative_slope)
        chord = z3terms.rational((u - a * l) / (u - l)) * (z - z3terms.rational(l))
        return y <= (chord + z3terms.rational(a * l) if a else chord)

    # ----- LP ------------------------------------------------------------------------------
    @property
    def lp_encodable(self) -> bool:
        return True

    def lp_rows(self) -> list[tuple[object, np.ndarray, np.ndarray]]:
        """y - z >= 0, y - a*z >= 0 (for ReLU the column bound y >= 0 says it), and the upper side
        y - s*z <= t last (s, t per node: lp_upper_side)."""
        m = self.size
        identity = sparse.identity(m, format="csr")
        rows = [(-identity, np.zeros(m), np.full(m, INF))]
        if self.negative_slope:
            rows.append((-self.negative_slope * identity, np.zeros(m), np.full(m, INF)))
        rows.append((sparse.csr_matrix((m, m)), np.full(m, -INF), np.zeros(m)))
        return rows

    def lp_upper_side(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slope s and offset t of y <= s*z + t over [lo, hi], exact where the phase is known,
        rounded up (the row then holds for every z in [lo, hi]: s at least the chord's slope, and
        the line at or above the chord's end (lo, a*lo))."""
        unstable = (lo < 0) & (hi > 0)
        width = np.where(unstable, np.nextafter(hi - lo, -INF), 1.0)
        rise = _minus_up(hi, self.inactive_value(lo, -INF))
        slope = np.where(unstable, np.nextafter(rise / width, INF), self.phase_slope(lo >= 0))
        offset = np.where(unstable, np.nextafter(_minus_up(slope, self.negative_slope) * -lo, INF), 0.0)
        return slope, offset


def _minus_up(x: np.ndarray, y: np.ndarray | float) -> np.ndarray:
    """x - y rounded up (subtracting an exact 0 does not round)."""
    difference = x - y
    return np.where(np.equal(y, 0), difference, np.nextafter(difference, INF))


@dataclass
class Relu(Kink):
    """ReLU: the kink with a zero slope below, whose products with it are exactly 0."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)

    def inactive_value(self, z: np.ndarray, toward: float | None = None) -> np.ndarray:
        return np.zeros_like(z)

    def inactive_term(self, z) -> int:
        return 0
