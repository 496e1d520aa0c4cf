"""The lattice of an N-level input (k/N for integer k): where grids lie so examples survive a PNG.

An 8-bit image read from a PNG holds values k/255. A grid off that lattice yields examples that an
8-bit PNG rounds back to (near) the original, which the network may classify correctly again; a grid
on it yields examples a PNG stores exactly. Lattice values are the float32 quotient k/N, correctly
rounded, which is what reading an 8-bit image gives (uint8 / 255 in float32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SmtVerifyError

EIGHT_BIT = 255


def lattice_values(k: np.ndarray, levels: int) -> np.ndarray:
    """k/levels as float32, correctly rounded."""
    return np.asarray(k, dtype=np.float32) / np.float32(levels)


def lattice_indices(values: np.ndarray, levels: int) -> np.ndarray | None:
    """The integer k of each value, or None when some value is not exactly k/levels in float32."""
    values = np.asarray(values)
    k = np.rint(values.astype(np.float64) * levels)
    if not np.all(np.isfinite(k)) or not np.array_equal(lattice_values(k, levels), values.astype(np.float32)):
        return None
    return k.astype(np.int64)


def index_range(domain: tuple[float, float], levels: int) -> tuple[int, int]:
    """The smallest and largest k whose lattice value lies in the domain (compared in float64)."""
    lo, hi = domain
    k_lo, k_hi = math.ceil(lo * levels), math.floor(hi * levels)
    while float(lattice_values(k_lo, levels)) < lo:
        k_lo += 1
    while float(lattice_values(k_hi, levels)) > hi:
        k_hi -= 1
    return k_lo, k_hi


@dataclass(frozen=True)
class LatticeGrid:
    """The lattice a search's pixel grids lie on (levels None: none), the span they use, and a note
    saying how that span was chosen when it differs from the span asked for."""

    levels: int | None
    span: float
    note: str = ""

    def summary(self) -> dict[str, object]:
        return {"levels": self.levels, "span_used": self.span, "grid_note": self.note}


def resolve(levels: int | None, x: np.ndarray, span: float) -> LatticeGrid:
    """The lattice for the input `x` from the setting `levels` (None: 8-bit when every value of x is
    k/255, else none; 0: none; N: the lattice k/N, which x must lie on), with `span` rounded to a
    positive multiple of 1/N so every grid value is again k/N."""
    if levels == 0:
        return LatticeGrid(None, span)
    if levels is None:
        if lattice_indices(x, EIGHT_BIT) is None:
            return LatticeGrid(None, span)
        levels = EIGHT_BIT
    elif lattice_indices(x, levels) is None:
        raise SmtVerifyError(f"the input does not lie on the lattice k/{levels}: use levels 0 (none) or the "
                             f"input's own level count", field="levels")
    return snap_span(span, levels)


def snap_span(span: float, levels: int) -> LatticeGrid:
    """`span` rounded to the nearest positive multiple of 1/levels, with a note when it moved."""
    steps = max(1, round(span * levels))
    snapped = steps / levels
    note = "" if math.isclose(snapped, span, rel_tol=1e-9) else \
        f"span {span:g} rounded to {steps}/{levels} = {snapped:.6g} so the grid lies on the input's lattice k/{levels}"
    return LatticeGrid(levels, snapped, note)
