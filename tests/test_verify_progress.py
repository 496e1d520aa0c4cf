"""Progress of a decision: the engines report their phases, with what is open and proven, and the
listener changes nothing about the decision."""
from __future__ import annotations

import numpy as np
import pytest

from smtverify.onnx_import import load_onnx
from smtverify.verdict import Verdict
from smtverify.verify import Settings, Verifier
from smtverify.verify.progress import Snapshot
from smtverify.vnnlib import read_vnnlib
from tests.conftest import SHARED, needs_shared
from tests.test_slopes import row_property
from tests.test_verify import RELU_SPLITTING, independent_z3, random_network


def _decide_with_progress(network, prop, settings: Settings):
    seen: list[Snapshot] = []
    with_listener = Verifier(network, settings).verify(prop, progress=seen.append)
    without = Verifier(network, settings).verify(prop)
    return seen, with_listener, without


def _check_snapshots(seen: list[Snapshot], timeout: float) -> None:
    assert seen[0].phase == "root bounds" and seen[-1].phase == "done"
    assert "falsification" in [s.phase for s in seen]      # these cases are open after the plain root
    assert all(a.elapsed <= b.elapsed for a, b in zip(seen, seen[1:]))
    assert all(s.timeout == timeout and s.case == 1 and s.cases == 1 for s in seen)
    assert all(a.leaves <= b.leaves for a, b in zip(seen, seen[1:]))


@needs_shared
def test_input_splitting_reports_open_boxes_and_the_share_proven():
    network = load_onnx(SHARED / "acasxu/onnx/ACASXU_run2a_1_2_batch_2000.onnx")
    prop = read_vnnlib(SHARED / "acasxu/vnnlib/prop_3.vnnlib", network.n_inputs, network.n_outputs)
    seen, result, without = _decide_with_progress(network, prop, Settings(timeout=60))
    _check_snapshots(seen, 60)
    assert result.verdict is without.verdict is Verdict.SAFE
    assert result.stats["leaves"] == without.stats["leaves"] == seen[-1].leaves
    splitting = [s for s in seen if s.phase == "input splitting"]
    assert splitting and all(s.open >= 1 and 0.0 <= s.proven_share <= 1.0 for s in splitting)
    assert seen[-1].proven_share == pytest.approx(1.0)


def random_relu_instance(tmp_path):
    """The first random net whose property, just past the sampled minimum, is safe (exact Z3)."""
    lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    for seed in range(12):
        path, w, b = random_network(tmp_path, seed)
        network = load_onnx(path)
        row = network.logits(np.random.default_rng(seed).uniform(lower, upper, (20000, 2)), np.float64) @ [1.0, -1.0]
        threshold = float(row.min()) - 0.1
        if not independent_z3(w, b, lower, upper, threshold):
            return network, row_property(network, lower, upper, [[1.0, -1.0]], threshold)
    raise AssertionError("no safe instance among the seeds")


def test_relu_splitting_reports_its_open_domains(tmp_path):
    network, prop = random_relu_instance(tmp_path)
    settings = Settings(timeout=30).replaced(RELU_SPLITTING)
    seen, result, without = _decide_with_progress(network, prop, settings)
    _check_snapshots(seen, 30)
    assert result.verdict is without.verdict
    assert result.stats == without.stats
    assert any(s.phase == "ReLU splitting" and s.open is not None for s in seen)
    assert np.isfinite(seen[-1].elapsed)
