"""Lifting a safe grid to its continuous region: proven SAFE where it is, never where an example hides
between grid points (a bump network whose only adversarial inputs lie strictly between them)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper

from smtverify import load_onnx, resources
from smtverify.cli import main
from smtverify.lifting import cell_boxes
from smtverify.manipulations import PixelManipulation
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.search import SearchSettings, dlv_search
from smtverify.verdict import Verdict
from tests.conftest import make_model, save
from tests.test_grid import DIMS, IMAGE

BUMP_AT = 0.625


@pytest.fixture(scope="module")
def bump(tmp_path_factory):
    """y = (0.5, relu(1 - 10 |x - 0.625|)): class 1 only for x in (0.575, 0.675), class 0 elsewhere."""
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "W2", "b2"], ["h2"]), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "W3", "b3"], ["y"])]
    init = {"W1": np.array([[1.0, -1.0]], np.float32), "b1": np.array([-BUMP_AT, BUMP_AT], np.float32),
            "W2": np.array([[-10.0], [-10.0]], np.float32), "b2": np.array([1.0], np.float32),
            "W3": np.array([[0.0, 1.0]], np.float32), "b3": np.array([0.5, 0.0], np.float32)}
    path = save(make_model(nodes, [1, 1], initializers=init), tmp_path_factory.mktemp("bump"))
    return load_onnx(path), np.array([0.5], np.float32)


def _lifted(network, x, span, steps=1):
    settings = SearchSettings(span=span, steps=steps, features=1, lift=True, lift_timeout=10)
    return dlv_search(network, x, 0, settings, dims=[0])


def test_off_grid_example_is_found_not_called_safe(bump):
    network, x = bump
    report = _lifted(network, x, 0.25)                      # grid 0.25, 0.5, 0.75: all class 0
    assert [g.verdict for g in report.grids] == [Verdict.SAFE_ON_GRID]
    assert report.verdict == Verdict.UNSAFE and len(report.examples) == 1
    found = report.examples[0]
    value = float(found.example.input.reshape(-1)[0])
    assert found.off_grid and found.example.c.size == 0 and 0.25 <= value <= 0.75
    assert value not in (0.25, 0.5, 0.75) and abs(value - BUMP_AT) < 0.05
    assert int(OnnxRuntimeExecutor(network).classify(found.example.input)[0]) == found.example.new_class == 1
    assert report.summary()["examples"][0]["off_grid"] is True


def test_safe_hull_is_continuous_safe(bump):
    network, x = bump
    report = _lifted(network, x, 0.05)                      # [0.45, 0.55] stays class 0
    assert report.verdict == Verdict.SAFE and report.cells == (1, 1) and not report.examples
    assert "continuous region" in report.guarantee and report.grids[0].lift.min_margin > 0


def test_mnist_like_grid_lifted_and_plain_grid_claims_only_the_grid():
    network = load_onnx(resources.model_path("digits_cnn"))
    x = resources.test_images("digits_cnn").images[IMAGE]
    label = int(OnnxRuntimeExecutor(network).classify(x)[0])
    settings = SearchSettings(span=0.01, steps=2, lift=True, lift_timeout=20)
    lifted = dlv_search(network, x, label, settings, dims=DIMS)
    assert lifted.verdict == Verdict.SAFE and lifted.grids[0].lift.hull_proven
    plain = dlv_search(network, x, label, SearchSettings(span=0.01, steps=2), dims=DIMS)
    assert plain.verdict == Verdict.SAFE_ON_GRID and plain.cells is None and "nothing is claimed" in plain.guarantee


def test_cells_cover_the_hull_within_the_budget():
    x = resources.test_images("digits_cnn").images[IMAGE]
    manipulation = PixelManipulation(x, DIMS, 0.05, 3)      # 7 values a dimension: 6 x 6 x 6 cells
    (hull_lo,), (hull_hi,) = cell_boxes(manipulation, 1)
    for budget, expected in ((1000, 216), (30, 27)):
        lower, upper = cell_boxes(manipulation, budget)
        assert len(lower) == expected
        np.testing.assert_array_equal(lower.min(axis=0), hull_lo)
        np.testing.assert_array_equal(upper.max(axis=0), hull_hi)
        # the cells' volumes add up to the hull's: they tile it
        volume = np.prod((upper - lower)[:, DIMS], axis=1).sum()
        assert volume == pytest.approx(np.prod((hull_hi - hull_lo)[DIMS]))


def test_cli_prove_cells(bump, tmp_path, capsys):
    network, x = bump
    np.save(tmp_path / "x.npy", x)
    args = ["search", network.path, "--input", str(tmp_path / "x.npy"), "--label", "0", "--pixels", "0",
            "--steps", "1", "--prove-cells", "--json", "--out", str(tmp_path / "out"), "--force"]
    assert main(args + ["--span", "0.05"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "SAFE" and record["cells"] == {"proven": 1, "total": 1}
    assert main(args + ["--span", "0.25"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "UNSAFE" and record["examples"][0]["off_grid"]
    assert np.load(record["examples"][0]["input_file"])["new_class"] == 1
