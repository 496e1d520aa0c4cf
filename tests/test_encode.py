"""Z3 encodings: one ChainEncoder reused over many boxes and bounds (as the leaves of a branch and
bound use it) answers as a fresh encoding does."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import z3

from smtverify import encode, z3_solver
from smtverify.bounds import BoundPropagator
from smtverify.chain import to_chain
from smtverify.onnx_import import load_onnx
from tests.test_verify import random_network


def _exact(box: np.ndarray) -> tuple[Fraction, ...]:
    return tuple(Fraction(float(v)) for v in box)


def _answers(encoding: encode.Encoding, thresholds) -> list[str]:
    """Is Y_0 - Y_1 <= t possible, for each t?"""
    y = encoding.outputs
    return [z3_solver.decide(encoding, y[0] - y[1] <= z3.RealVal(Fraction(t)), 30.0)[0] for t in thresholds]


def test_a_reused_encoder_answers_as_fresh_encodings_do(tmp_path):
    chain = to_chain(load_onnx(random_network(tmp_path, 3)[0]))
    lower, upper = np.full(2, -1.0), np.full(2, 1.0)
    propagator, encoder = BoundPropagator(chain), encode.ChainEncoder(chain)
    samples = chain.forward(np.random.default_rng(0).uniform(lower, upper, (5000, len(lower))))
    low = float(np.min(samples[:, 0] - samples[:, 1]))
    thresholds = [low - 1.0, low - 0.05, low + 0.05]
    middle = (lower + upper) / 2
    answers = []
    for lo, hi in ((lower, upper), (lower, middle), (middle, upper), (lower, upper)):
        bounds = propagator.forward(lo[None], hi[None])
        steps = [(l[0], u[0]) for l, u in zip(bounds.lower, bounds.upper)]
        box = (_exact(lo), _exact(hi))
        reused = _answers(encoder.encode(box, steps), thresholds)
        assert reused == _answers(encode.encode_chain(chain, box, steps), thresholds)
        answers.append(reused)
    assert answers[0] == ["unsat", answers[0][1], "sat"]          # a sampled value is attainable
    assert answers[0] == answers[3]
