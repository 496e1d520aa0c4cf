"""The affine step y = W x + b, holding the weights exactly as the ONNX file stores them.

Where forming W or b needed arithmetic that may round (a division by 3, a batch-norm square root),
`rel_error` bounds that rounding relatively, and every bound and encoding adds it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy import sparse

from .base import Bounds, Step


@dataclass
class Affine(Step):
    """y = W @ x + b. `rel_error` bounds |W_true - W| <= rel_error*|W| (same for b) elementwise."""

    W: np.ndarray | sparse.csr_matrix      # sparse for convolutions, pooling and shape operators
    b: np.ndarray
    rel_error: float = 0.0
    layers: list[str] = field(default_factory=list)
    linear: ClassVar[bool] = True

    @property
    def size(self) -> int:
        return self.W.shape[0]

    @property
    def nonzeros(self) -> int:
        """How many weights are not zero (what encodings and LPs cost)."""
        return self.W.nnz if sparse.issparse(self.W) else int(np.count_nonzero(self.W))

    @property
    def is_selection(self) -> bool:
        """Each output copies at most one input unchanged (or is a constant): reshapes, pads."""
        W = sparse.csr_matrix(self.W)
        W.eliminate_zeros()
        return bool(np.all(np.diff(W.indptr) <= 1) and np.all(W.data == 1.0) and self.rel_error == 0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray((self.W @ x.T).T) + self.b

    def backward(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        return np.asarray((self.W.T @ g.T).T)          # g @ W, for dense and sparse W alike

    # ----- Z3 ------------------------------------------------------------------------------
    def encode_z3(self, k: int, xs: list, bounds: Bounds | None, memo: dict) -> tuple[list, list]:
        """W x + b as terms over the nonzero weights of each row (not variables: Z3 decided ACAS Xu
        2_4/prop 3 in 5.4 s so, and not in 30 s with a variable and an equality per neuron); plus
        a bounded error variable per row where forming W or b rounded (rel_error > 0):
        |e_i| <= rel_error * (|W_i| . max|x| + |b_i|). The weights' numerals, and the terms while
        the inputs are the same terms, are kept in `memo`: a first layer's terms do not depend on
        the bounds, and building them again took 4.6 of the 4.7 s of every Z3 leaf on MNIST-FC 256x2."""
        import z3

        from .. import z3terms
        if "W" not in memo:
            W = sparse.csr_matrix(self.W)
            W.eliminate_zeros()
            memo["W"], memo["numerals"] = W, [z3terms.rational(float(c)) for c in W.data]
        W, numerals = memo["W"], memo["numerals"]
        inputs = tuple(x.get_id() for x in xs)
        if memo.get("inputs") != inputs:
            memo["inputs"], memo["terms"] = inputs, [
                z3terms.sum_of_products(numerals[W.indptr[i]:W.indptr[i + 1]], W.indices[W.indptr[i]:W.indptr[i + 1]],
                                        xs, float(self.b[i])) for i in range(W.shape[0])]
        out = memo["terms"]
        if self.rel_error == 0:
            return out, []
        errors = [z3.Real(f"E{k}_{i}") for i in range(len(out))]
        limits = self._error_limits(W, k, bounds)
        constraints = [c for e, m in zip(errors, limits) for c in (e >= -m, e <= m)]
        return [t + e for t, e in zip(out, errors)], constraints

    def _error_limits(self, W: sparse.csr_matrix, k: int, bounds: Bounds | None) -> list:
        from .. import z3terms
        if bounds is None:
            raise ValueError(f"step {k} ({', '.join(self.layers)}) was formed with rounding (rel_error "
                             f"{self.rel_error:g}): encoding it soundly needs step_bounds")
        magnitude = np.maximum(np.abs(bounds[0]), np.abs(bounds[1]))
        total = self.rel_error * (np.asarray(abs(W) @ magnitude) + np.abs(self.b))
        # Summing n non-negative floats errs by at most n*2^-53 relatively: a 2^-20 margin covers any n.
        return [z3terms.rational(z3terms.up(t * (1 + 2.0 ** -20))) for t in total]

    # ----- LP ------------------------------------------------------------------------------
    @property
    def lp_encodable(self) -> bool:
        """Exact as stored: the LP's rows carry the weights exactly, with no room for rounding."""
        return self.rel_error == 0

    def lp_rows(self) -> list[tuple[object, np.ndarray, np.ndarray]]:
        """z - W v = b."""
        b = np.asarray(self.b, np.float64)
        return [(-sparse.csr_matrix(self.W), b, b)]
