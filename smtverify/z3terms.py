"""Z3 terms with exact rational numerals: every float64 is a dyadic rational, so a weight enters a
formula as exactly the value stored, and a float bound is rounded outward to a rational that never
cuts off a real point."""
from __future__ import annotations

import functools
from fractions import Fraction
from typing import Sequence

import numpy as np
import z3

Terms = list[z3.ArithRef]


@functools.lru_cache(maxsize=1 << 16)
def rational(value: float | Fraction) -> z3.RatNumRef:
    """A float (exactly: every float64 is a dyadic rational) or a Fraction as a Z3 numeral."""
    return z3.RealVal(Fraction(value))


def as_term(value: z3.ArithRef | float | Fraction) -> z3.ArithRef:
    """A Z3 term as it is, a number as its numeral."""
    return value if z3.is_expr(value) else rational(value)


def down(value: float) -> Fraction:
    """A rational below the float (one ulp), for lower bounds that must not cut off a point."""
    return Fraction(float(np.nextafter(value, -np.inf)))


def up(value: float) -> Fraction:
    """A rational above the float (one ulp)."""
    return Fraction(float(np.nextafter(value, np.inf)))


def linear(coefficients: np.ndarray, columns: np.ndarray, variables: list[z3.ArithRef],
           constant: float | Fraction = 0) -> z3.ArithRef:
    """sum_k coefficients[k] * variables[columns[k]] + constant, exactly."""
    return sum_of_products([rational(float(c)) for c in coefficients], columns, variables, constant)


def sum_of_products(numerals: Sequence[z3.RatNumRef], columns: np.ndarray, variables: list[z3.ArithRef],
                    constant: float | Fraction = 0) -> z3.ArithRef:
    """sum_k numerals[k] * variables[columns[k]] + constant. Built with Z3's C API (each product
    wrapped at once, so Z3 counts its reference): z3.Sum and `*` check and coerce every argument in
    Python, several times slower, and building terms dominated the time of Z3 leaves on ACAS Xu
    (measured)."""
    ctx = z3.main_ctx()
    pair = (z3.Ast * 2)()
    terms = []
    for c, j in zip(numerals, columns):
        pair[0], pair[1] = c.as_ast(), variables[j].as_ast()
        terms.append(z3.ArithRef(z3.Z3_mk_mul(ctx.ref(), 2, pair), ctx))
    if constant or not terms:
        terms.append(rational(constant))
    if len(terms) == 1:
        return terms[0]
    array = (z3.Ast * len(terms))(*(t.as_ast() for t in terms))
    return z3.ArithRef(z3.Z3_mk_add(ctx.ref(), len(terms), array), ctx)


def variables(k: int, n: int) -> Terms:
    """Fresh variables for the outputs of nonlinear step k (value k + 1)."""
    return [z3.Real(f"N{k + 1}_{i}") for i in range(n)]
