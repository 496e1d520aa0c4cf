"""The interface of a chain's step kinds: everything one kind means, in one class.

A chain (chain.py) is a list of steps on flat vectors. Each step kind says how it runs
(`forward`), how a gradient passes back through it (`backward`), how the sound bounds relax it
(`relax`, `through`, `substitute`), how Z3 (`encode_z3`) and the LP (`lp_rows`) encode it. The
engines (bounds, slopes, lp, encode, attack, ...) call these methods and never ask which kind a
step is; they read the class flags below where an algorithm treats a family of kinds alike.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

Bounds = tuple[np.ndarray, np.ndarray]     # (lower, upper) float64 arrays of one step's input


class Step(ABC):
    """One step of a chain: `size` outputs, from the ONNX `layers` it was compiled from."""

    linear: ClassVar[bool] = False          # an affine map W x + b (its weights drive the bounds' passes)
    elementwise: ClassVar[bool] = False     # output j depends on input j alone
    splittable: ClassVar[bool] = False      # a kink at 0 that branch and bound splits on (its phase)
    tightened: ClassVar[bool] = False       # its relaxation follows its input's bounds neuron by neuron, so the
                                            # bounds back-substitute its loose neurons before relaxing them
    optimised_sides: ClassVar[tuple[str, ...]] = ()   # the relaxation's sides whose slopes slopes.py optimises
    slope_step: ClassVar[float] = 1.0       # ... scaling its ascent's step (SlopeSettings.step_size)
    exact_encoding: ClassVar[bool] = True   # the Z3 and LP encodings are exact, not enclosures
    size: int
    layers: list[str]

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """The step on a batch x (B, n_in) -> (B, size), in float64."""

    @abstractmethod
    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """The gradient g (B, size) of some output pulled back to the step's input, at the batch
        whose input and output values are `before` and `after`."""

    @abstractmethod
    def encode_z3(self, k: int, xs: list, bounds: Bounds | None, memo: dict) -> tuple[list, list]:
        """Z3 terms of the outputs of step k (index k in the chain) given its input terms `xs`, and
        the constraints they need; `bounds` are sound bounds of its input (None: unknown). `memo`
        is the step's own cache across encodings of one chain (weights as numerals)."""

    @property
    def lp_encodable(self) -> bool:
        """Whether lp_rows encode the step (exactly, or a splittable step by its triangle)."""
        return False

    def lp_rows(self) -> list[tuple[object, np.ndarray, np.ndarray]]:
        """The LP's rows of this step over its input v and output y: blocks (C, lower, upper)
        meaning lower <= C v + y <= upper. A splittable step's last block is its upper side, whose
        slope lp.py sets per node (from lp_upper_side). Only where lp_encodable."""
        raise NotImplementedError(f"{type(self).__name__} has no LP encoding")


@dataclass
class LinearRelaxation:
    """Two lines per neuron of an element-wise step, per box (B, m):
    lower_slope * z + lower_offset <= f(z) <= upper_slope * z + upper_offset on the input's bounds."""

    lower_slope: np.ndarray
    upper_slope: np.ndarray
    upper_offset: np.ndarray
    lower_offset: np.ndarray

    def scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Per box (B, 1): the largest slope and offset of its lines (what their rounding costs)."""
        slope = np.maximum(np.abs(self.upper_slope), np.abs(self.lower_slope)).max(axis=1, initial=0.0)
        offset = np.maximum(np.abs(self.upper_offset), np.abs(self.lower_offset)).max(axis=1, initial=0.0)
        return slope[:, None], offset[:, None]

    def with_lower_slope(self, slope: np.ndarray) -> "LinearRelaxation":
        return replace(self, lower_slope=slope)


class Nonlinear(Step):
    """A step the bounds relax: a relaxation per box, pushed forward and back."""

    @abstractmethod
    def relax(self, lo: np.ndarray, hi: np.ndarray):
        """(relaxation, output lower, output upper) over input bounds lo, hi (B, m), the output
        bounds sound for the real values (rounded outward where a product may round)."""

    @abstractmethod
    def through(self, relaxation, Lw, Lc, Uw, Uc):
        """Forward symbolic bounds: the input's lower and upper linear functions (B, m, n) and
        constants (B, m) -> the output's, through the relaxation."""

    @abstractmethod
    def substitute(self, relaxation, Lam: np.ndarray, const: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        """Back-substitution: Lam . y + const, to be lower-bounded (Lam (B, R, m) over the outputs),
        as Lam_in . z + const' over the step's n_in inputs."""

    def loose(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Which neurons' relaxation is not exact over [lo, hi] (B, m): a kink's that straddle 0."""
        return (lo < 0) & (hi > 0)

    def carry(self, per_input: np.ndarray) -> np.ndarray:
        """A non-negative per-neuron quantity of the input (B, n_in) (a magnitude, a rounding
        allowance) as one per output neuron, for a step whose outputs are inputs or 1-Lipschitz
        functions of one (kinks, max-pooling)."""
        return per_input

    def magnitude_out(self, magnitude: np.ndarray) -> np.ndarray:
        """A bound on |output| per output neuron from one on |input| (B, n_in)."""
        return self.carry(magnitude)

    def slack_out(self, slack: np.ndarray, relaxation, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """What the rounding allowance of the input (how far a value may be off) allows at the
        output, given the relaxation over the input's bounds [lo, hi]: at most the step's
        Lipschitz constant there (and its relaxation's slopes) times it."""
        return self.carry(slack)

    def flat_relaxation(self, relaxation, lo: np.ndarray):
        """The relaxation with its lower sides flat where that differs (a second back-substitution
        of the output rows keeps the better bound), or None."""
        return None


@dataclass
class Elementwise(Nonlinear):
    """An element-wise activation relaxed by a LinearRelaxation whose slopes are >= 0."""

    size: int
    layers: list[str] = field(default_factory=list)
    elementwise: ClassVar[bool] = True

    @classmethod
    def from_layer(cls, layer, shape_in: tuple[int, ...], file: str) -> "Elementwise":
        """The step of one ONNX layer of this kind (`shape_in`: its input's shape; `file` for errors)."""
        return cls(int(np.prod(layer.shape)), [layer.name])

    def through(self, r: LinearRelaxation, Lw, Lc, Uw, Uc):
        # Lower and upper slopes >= 0: y >= a*z + c uses z's lower function.
        Lw2 = r.lower_slope[..., None] * Lw
        Lc2 = r.lower_slope * Lc + r.lower_offset
        Uw2 = r.upper_slope[..., None] * Uw
        Uc2 = r.upper_slope * Uc + r.upper_offset
        return Lw2, Lc2, Uw2, Uc2

    def substitute(self, r: LinearRelaxation, Lam: np.ndarray, const: np.ndarray, n_in: int):
        negative = np.minimum(Lam, 0.0)
        coef = Lam * r.lower_slope[:, None, :]          # the lower side where Lam >= 0, and then
        coef += negative * (r.upper_slope - r.lower_slope)[:, None, :]   # the upper side where Lam < 0
        const = const + np.einsum("brm,bm->br", negative, r.upper_offset)
        if np.any(r.lower_offset):       # (a kink's lower side passes through 0)
            const = const + np.einsum("brm,bm->br", np.maximum(Lam, 0.0), r.lower_offset)
        return coef, const
