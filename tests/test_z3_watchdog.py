"""The Z3 watchdog interrupts a query that runs past its time, and never one after its block."""
from __future__ import annotations

import time

import z3

from smtverify.z3_watchdog import GRACE_SECONDS, interrupt_after


def hard_query() -> z3.Solver:
    """x^3 + y^3 + z^3 = 33 over the integers: Z3 runs on and on (no solution was known until 2019)."""
    x, y, z = z3.Ints("x y z")
    solver = z3.Solver()
    solver.add(x * x * x + y * y * y + z * z * z == 33, z3.Abs(x) > 10 ** 6)
    return solver


def test_a_query_without_its_own_timeout_is_interrupted():
    solver = hard_query()
    start = time.perf_counter()
    with interrupt_after(0.1):
        answer = solver.check()
    assert answer == z3.unknown
    assert time.perf_counter() - start < 0.1 + GRACE_SECONDS + 2.0


def test_no_interrupt_after_the_block_ends():
    with interrupt_after(0.0):
        pass
    time.sleep(GRACE_SECONDS + 0.2)
    x = z3.Real("x")
    assert z3.Solver().check(x * x == 2) == z3.sat
