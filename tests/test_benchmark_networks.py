"""Every network in ../shared/benchmarks loads, is fully supported, and the numpy executor agrees
with onnxruntime on random inputs drawn from the network's own VNN-LIB input box."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smtverify import load_onnx
from smtverify.cli import main
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.vnnlib import read_vnnlib
from tests.conftest import benchmark_instances, benchmark_networks, needs_shared, vnnlib_suites

pytestmark = needs_shared


def first_property_of(network_path: Path) -> Path | None:
    for folder in vnnlib_suites():
        for onnx_path, vnnlib_path, _, _ in benchmark_instances(folder):
            if onnx_path == network_path.resolve():
                return vnnlib_path
    return None


@pytest.mark.parametrize("path", benchmark_networks(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_executor_agrees_with_onnxruntime(path):
    network = load_onnx(path)
    assert network.supported
    rng = np.random.default_rng(0)
    prop = first_property_of(path)
    if prop is None:   # a network no instance uses: the unit box
        lower, upper = np.zeros(network.n_inputs), np.ones(network.n_inputs)
    else:
        box = read_vnnlib(prop, network.n_inputs, network.n_outputs).cases[0].box
        lower, upper = box.lower, box.upper
    xs = rng.uniform(lower, upper, size=(16, network.n_inputs)).reshape((16,) + network.input_shape)
    xs = xs.astype(np.float32)
    expected = OnnxRuntimeExecutor(network).logits(xs)
    assert np.abs(network.logits(xs) - expected).max() <= 1e-4
    assert np.abs(network.logits(xs, np.float64) - expected).max() <= 1e-4
    values = network.run(xs[:2])
    assert set(values) == {network.input_name} | set(network.layers)
    for layer in network.order:
        assert values[layer.name].shape == (2,) + layer.shape


@pytest.mark.parametrize("path", benchmark_networks()[::9] + benchmark_networks()[45:],
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_cli_info_reports_fully_supported(path, capsys):
    assert main(["info", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fully_supported"] and all(layer["supported"] for layer in record["layers"])
