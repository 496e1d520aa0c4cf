"""Every query in encodings/ re-read from file by Z3 gives the expected answer."""
from __future__ import annotations

from pathlib import Path

import pytest
import z3

FOLDER = Path(__file__).resolve().parents[1] / "encodings"
EXPECTED = {"smoke_test_tiny.smt2": z3.unsat, "smoke_test_small.smt2": z3.unsat,
            "acasxu_2_4_prop_3.smt2": z3.unsat, "acasxu_1_8_prop_4.smt2": z3.sat}


def test_every_file_is_listed():
    assert sorted(p.name for p in FOLDER.glob("*.smt2")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_file_decides_as_expected(name):
    solver = z3.Solver()
    solver.set("timeout", 60_000)
    solver.add(z3.parse_smt2_file(str(FOLDER / name)))
    assert solver.check() == EXPECTED[name]
