"""Shared test helpers: the benchmark folder beside the project, and tiny ONNX models built inline."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import settings
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"

# Property tests: "ci" (the default) is derandomized and short; "long" hunts for bugs, selected by
# `pytest --hypothesis-profile=long` or HYPOTHESIS_PROFILE=long.
settings.register_profile("ci", max_examples=2, derandomize=True, deadline=None, database=None)
settings.register_profile("long", max_examples=30, deadline=None)


def pytest_configure(config: pytest.Config) -> None:
    """The profile asked for on the command line, else in the environment, else "ci"."""
    settings.load_profile(config.getoption("--hypothesis-profile") or os.environ.get("HYPOTHESIS_PROFILE", "ci"))

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchmarks is not beside this clone")


def benchmark_networks() -> list[Path]:
    """Every distinct ONNX network under ../shared/benchmarks (empty when the folder is absent)."""
    return sorted(SHARED.glob("*/onnx/*.onnx")) if SHARED.is_dir() else []


def vnnlib_suites() -> list[str]:
    """The benchmark folders whose instances.csv lists (onnx, vnnlib) pairs; others (acc's closed-loop
    specs) have columns of their own."""
    if not SHARED.is_dir():
        return []
    suites = []
    for csv_path in sorted(SHARED.glob("*/instances.csv")):
        with open(csv_path, newline="") as handle:
            header = next(csv.reader(handle), [])
        if {"onnx", "vnnlib", "timeout_s"} <= set(header):
            suites.append(csv_path.parent.name)
    return suites


def benchmark_instances(folder: str) -> list[tuple[Path, Path, float, str | None]]:
    """(onnx, vnnlib, timeout, expected) rows of a benchmark folder's instances.csv."""
    base = SHARED / folder
    with open(base / "instances.csv", newline="") as handle:
        return [((base / r["onnx"]).resolve(), (base / r["vnnlib"]).resolve(), float(r["timeout_s"]),
                 r.get("expected")) for r in csv.DictReader(handle)]


def make_model(nodes: list[onnx.NodeProto], input_shape: list, output: str = "y",
               initializers: dict[str, np.ndarray] | None = None, opset: int = 13,
               input_name: str = "x") -> onnx.ModelProto:
    """A one-input, one-output float model with the given nodes and initializers."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), name=k) for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Declare the output's shape as ONNX infers it: the checker wants every output typed.
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    if known[output].type.tensor_type.HasField("shape"):
        model.graph.output[0].CopyFrom(known[output])
    else:
        model.graph.output[0].type.tensor_type.shape.SetInParent()
    return model


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    onnx.save(model, str(path))
    return path
