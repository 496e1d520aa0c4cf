"""Max-pooling: y_j = max_k x[groups[j, k]], over the valid (non-negative) indices of each row."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..batched import gather_rows
from .base import Bounds, Nonlinear


def window_groups(layer, shape_in: tuple[int, ...]) -> np.ndarray:
    """For each pooled output of a pooling layer, the flat input indices in its window (-1 for padding)."""
    index = np.arange(int(np.prod(shape_in)), dtype=np.float64).reshape((1,) + tuple(shape_in))
    patches = layer.operator.window.patches(index, -1.0)            # (1, C, *out, *kernel)
    spatial = len(shape_in) - 1
    groups = patches.reshape(int(np.prod(patches.shape[:2 + spatial])), -1)
    return groups.astype(np.int64)


@dataclass
class PoolRelaxation:
    """Max-pool: y >= x[chosen] (the input with the highest lower bound); y <= x[chosen] when that
    input dominates the window (exact), else y <= the window's largest upper bound."""

    chosen: np.ndarray      # (B, m) flat input index
    exact: np.ndarray       # (B, m) bool
    upper: np.ndarray       # (B, m) constant upper bound where not exact

    def scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Per box (B, 1): the largest slope (1: a copied input) and offset of its sides."""
        upper = np.where(np.isfinite(self.upper), np.abs(self.upper), 0.0)
        return np.ones((upper.shape[0], 1)), upper.max(axis=1, initial=0.0)[:, None]


@dataclass
class MaxPool(Nonlinear):
    groups: np.ndarray        # int (m, k); -1 marks padding, which never wins
    layers: list[str] = field(default_factory=list)

    @classmethod
    def from_layer(cls, layer, shape_in: tuple[int, ...], file: str) -> "MaxPool":
        return cls(window_groups(layer, shape_in), [layer.name])

    @property
    def size(self) -> int:
        return self.groups.shape[0]

    def _padded(self, x: np.ndarray, fill: float) -> np.ndarray:
        """x (B, n) with one more column `fill` (where the padding index -1 points), gathered by
        window: (B, m, k)."""
        return np.concatenate([x, np.full(x.shape[:-1] + (1,), fill)], axis=-1)[..., self.groups]

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._padded(x, -np.inf).max(axis=-1)

    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Each pooled output's gradient goes to the input that won its window (summed where windows overlap)."""
        B, n_in = before.shape
        winner = self.groups[np.arange(len(self.groups)), self._padded(before, -np.inf).argmax(axis=2)]     # (B, m)
        flat = (np.arange(B)[:, None] * n_in + winner).ravel()
        return np.bincount(flat, weights=g.ravel(), minlength=B * n_in).reshape(B, n_in)

    def carry(self, per_input: np.ndarray) -> np.ndarray:
        return self._padded(per_input, 0.0).max(axis=2)

    def relax(self, lo: np.ndarray, hi: np.ndarray):
        pad_lo, pad_hi = self._padded(lo, -np.inf), self._padded(hi, -np.inf)     # (B, m, k)
        best = np.argmax(pad_lo, axis=2)
        chosen = np.take_along_axis(np.broadcast_to(self.groups, pad_lo.shape), best[..., None], axis=2)[..., 0]
        best_lo = np.take_along_axis(pad_lo, best[..., None], axis=2)[..., 0]
        others_hi = pad_hi.copy()
        np.put_along_axis(others_hi, best[..., None], -np.inf, axis=2)
        exact = best_lo >= others_hi.max(axis=2)
        upper = pad_hi.max(axis=2)
        return PoolRelaxation(chosen, exact, upper), best_lo, upper

    def through(self, r: PoolRelaxation, Lw, Lc, Uw, Uc):
        Lw2, Lc2 = gather_rows(Lw, r.chosen), gather_rows(Lc, r.chosen)
        Uw2 = np.where(r.exact[..., None], gather_rows(Uw, r.chosen), 0.0)
        Uc2 = np.where(r.exact, gather_rows(Uc, r.chosen), r.upper)
        return Lw2, Lc2, Uw2, Uc2

    def substitute(self, r: PoolRelaxation, Lam: np.ndarray, const: np.ndarray, n_in: int):
        pos, neg = np.maximum(Lam, 0), np.minimum(Lam, 0)
        exact = r.exact[:, None, :]
        coef = pos + np.where(exact, neg, 0.0)           # routed to the chosen input
        const = const + np.einsum("brm,bm->br", np.where(exact, 0.0, neg), r.upper)
        B, R, m = Lam.shape
        new = np.zeros((B, R, n_in))
        target = np.broadcast_to(r.chosen[:, None, :], coef.shape)
        np.add.at(new, (np.arange(B)[:, None, None], np.arange(R)[None, :, None], target), coef)
        return new, const

    def encode_z3(self, k: int, xs: list, bounds: Bounds | None, memo: dict) -> tuple[list, list]:
        """y = max of the window as: y >= every member, y equals one of them. A member whose upper
        bound is below another's lower bound can never be the max and is left out of the disjunction."""
        import z3

        from ..z3terms import variables
        ys = variables(k, self.size)
        constraints = []
        for group, y in zip(self.groups, ys):
            members = group[group >= 0]
            constraints += [y >= xs[j] for j in members]
            if bounds is not None:
                members = members[bounds[1][members] >= bounds[0][members].max()]
            constraints.append(z3.Or([y == xs[j] for j in members]))
        return ys, constraints
