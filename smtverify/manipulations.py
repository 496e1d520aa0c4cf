"""Manipulation families: finite grids of inputs indexed by integer vectors c (METHOD 3).

A family has d parameters; parameter p takes integer values c_p in -m_p..m_p, and each c maps to
one input. Values that leave the input domain are clipped, so several c can give the same input;
`levels[p]` keeps one c per distinct value (the smallest |c|), which is how clipped duplicates are
never evaluated twice. Levels are sorted by (|c|, c) and start with 0: the grid search relies on
that order to enumerate points nearest to the original first.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from math import prod
from typing import Callable

import numpy as np

from .lattice import index_range, lattice_indices, lattice_values

Domain = tuple[float, float]


def in_domain_float32(values: np.ndarray, domain: Domain) -> np.ndarray:
    """Clip to the domain and cast to float32 without rounding back outside it (0.3 is not a float32)."""
    lo, hi = domain
    v = np.clip(values, lo, hi).astype(np.float32)
    wide = v.astype(np.float64)          # compared in float64: a float32 comparison would round hi too
    v = np.where(wide > hi, np.nextafter(v, np.float32(-np.inf)), v)
    return np.where(wide < lo, np.nextafter(v, np.float32(np.inf)), v)


def by_closeness(m: int) -> np.ndarray:
    """-m..m ordered by (|c|, c): 0, -1, 1, -2, 2, ..."""
    c = np.arange(-m, m + 1)
    return c[np.lexsort((c, np.abs(c)))]


def distinct_levels(candidates: np.ndarray, m: int) -> np.ndarray:
    """The c in -m..m whose candidate (row c + m of `candidates`) is new, scanning by closeness."""
    order = by_closeness(m)
    rows = candidates[order + m].reshape(len(order), -1)
    _, first = np.unique(rows, axis=0, return_index=True)
    return order[np.sort(first)]


def _inside(original: np.ndarray, domain: Domain) -> np.ndarray:
    """The original as float32, which must lie in the domain: c = 0 is the original itself."""
    original = np.asarray(original, dtype=np.float32)
    wide = original.astype(np.float64)
    if np.any(wide < domain[0]) or np.any(wide > domain[1]):
        raise ValueError(f"the original input lies outside the domain {list(domain)}")
    return original


def _per_param(value: float | np.ndarray, d: int, what: str, kind: type) -> np.ndarray:
    array = np.broadcast_to(np.asarray(value, dtype=kind), (d,)).copy()
    if kind is float and not np.all(array > 0):
        raise ValueError(f"every {what} must be positive")
    if kind is int and not np.all(array >= 0):
        raise ValueError(f"every {what} must be non-negative")
    return array


class Manipulation(ABC):
    """A grid of inputs around `original` (float32, the network's layout without the batch axis)."""

    original: np.ndarray
    domain: Domain               # every input value lies in [lo, hi]
    levels: list[np.ndarray]     # per parameter: the admitted c values, sorted by (|c|, c), first 0

    @abstractmethod
    def apply(self, c: np.ndarray) -> np.ndarray:
        """The inputs (B, *original.shape), float32, of a batch of parameter vectors c (B, d)."""

    @property
    def n_params(self) -> int:
        return len(self.levels)

    @property
    def grid_size(self) -> int:
        """Distinct grid points (an exact Python int: grids can exceed 2^63)."""
        return prod(len(level) for level in self.levels)


class PixelManipulation(Manipulation):
    """Chosen input dimensions (flat C-order indices), each moved by c_p * span_p: DLV's pixel family.

    Only these dimensions change, which is what the difference and table evaluators exploit. With a
    `lattice` N, every value is exactly k/N (see lattice.py): the grid an N-level image stores exactly.
    """

    def __init__(self, original: np.ndarray, dims: np.ndarray | list[int], span: float | np.ndarray,
                 steps: int | np.ndarray, domain: Domain = (0.0, 1.0), lattice: int | None = None) -> None:
        self.original = _inside(original, domain)
        self.dims = np.asarray(dims, dtype=np.int64).reshape(-1)
        size = self.original.size
        if len(np.unique(self.dims)) != len(self.dims) or np.any(self.dims < 0) or np.any(self.dims >= size):
            raise ValueError(f"dims must be distinct flat indices into an input of {size} values")
        d = len(self.dims)
        self.span = _per_param(span, d, "span", float)
        self.steps = _per_param(steps, d, "step count", int)
        self.domain = domain
        self.lattice = lattice             # values k/lattice exactly (None: span multiples, float32)
        self.offset = int(self.steps.max(initial=0))
        c = np.arange(-self.offset, self.offset + 1)
        # value_table[p, c + offset]: the clipped value of dimension p at c (c beyond m_p never used).
        self.value_table = self._lattice_table(c) if lattice else in_domain_float32(
            self.original.reshape(-1)[self.dims].astype(np.float64)[:, None] + c[None, :] * self.span[:, None], domain)
        self.levels = [distinct_levels(self.value_table[p, self.offset - m:self.offset + m + 1], m) for p, m
                       in enumerate(self.steps)]

    def _lattice_table(self, c: np.ndarray) -> np.ndarray:
        """The value table on the lattice k/lattice: each value is exactly a lattice value in the domain
        (clipped in k), so an N-level image format stores every grid point exactly."""
        base = lattice_indices(self.original.reshape(-1)[self.dims], self.lattice)
        span = np.rint(self.span * self.lattice).astype(np.int64)
        if base is None or not np.allclose(span, self.span * self.lattice, rtol=0, atol=1e-6):
            raise ValueError(f"a grid on the lattice k/{self.lattice} needs the moved values on it and every span "
                             f"a multiple of 1/{self.lattice}")
        k = np.clip(base[:, None] + c[None, :] * span[:, None], *index_range(self.domain, self.lattice))
        return lattice_values(k, self.lattice)

    def values(self, c: np.ndarray) -> np.ndarray:
        """The chosen dimensions' values (B, d), float32."""
        return self.value_table[np.arange(len(self.dims)), c + self.offset]

    def apply(self, c: np.ndarray) -> np.ndarray:
        flat = np.broadcast_to(self.original.reshape(-1), (len(c), self.original.size)).copy()
        flat[:, self.dims] = self.values(c)
        return flat.reshape((len(c),) + self.original.shape)


class MonotoneWholeInputManipulation(Manipulation):
    """One parameter acting on every input value at once, each value monotone in it; its few images
    are made up front. Monotone: the box between two adjacent images contains every input between
    them, which is what lets `lifting` prove the continuous region of such a grid."""

    def __init__(self, original: np.ndarray, span: float, steps: int, domain: Domain = (0.0, 1.0)) -> None:
        self.original = _inside(original, domain)
        self.domain = domain
        self.span = float(_per_param(span, 1, "span", float)[0])
        self.offset = int(_per_param(steps, 1, "step count", int)[0])
        x = self.original.astype(np.float64)
        amounts = (np.arange(-self.offset, self.offset + 1) * self.span).reshape((-1,) + (1,) * x.ndim)
        self.images = in_domain_float32(self._transform(x, amounts), domain)
        self.levels = [distinct_levels(self.images, self.offset)]

    @abstractmethod
    def _transform(self, x: np.ndarray, amount: np.ndarray) -> np.ndarray:
        """x (*shape) moved by each amount (n, 1, ..., 1) -> (n, *shape), before clipping."""

    def apply(self, c: np.ndarray) -> np.ndarray:
        return self.images[c[:, 0] + self.offset]


class BrightnessManipulation(MonotoneWholeInputManipulation):
    """Every value + c * span, clipped."""

    def _transform(self, x: np.ndarray, amount: np.ndarray) -> np.ndarray:
        return x + amount


class ContrastManipulation(MonotoneWholeInputManipulation):
    """Values scaled by (1 + c * span) around the input's mean, clipped."""

    def _transform(self, x: np.ndarray, amount: np.ndarray) -> np.ndarray:
        mean = x.mean()
        return mean + (1.0 + amount) * (x - mean)


class CustomManipulation(Manipulation):
    """A user-supplied family: `function` maps integer vectors c (B, d) to inputs (B, *shape).

    The original is function(0). Outputs are clipped to the domain; the function owns its grid, so
    duplicate points it produces are not detected.
    """

    def __init__(self, function: Callable[[np.ndarray], np.ndarray], steps: int | list[int] | np.ndarray,
                 domain: Domain = (0.0, 1.0)) -> None:
        self.function = function
        self.domain = domain
        steps = _per_param(np.atleast_1d(steps), np.size(steps), "step count", int)
        self.levels = [by_closeness(int(m)) for m in steps]
        self.original = _inside(np.asarray(function(np.zeros((1, len(self.levels)), np.int32)))[0], domain)

    def apply(self, c: np.ndarray) -> np.ndarray:
        return in_domain_float32(np.asarray(self.function(c), dtype=np.float64), self.domain)
