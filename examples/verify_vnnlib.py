"""Decide VNN-LIB properties (the verification competition's format) and write the competition's
result file. With no arguments, properties are written for the bundled 8x8 digits MLP: "some input
within eps of a test image scores another class at least as high".

Run: python examples/verify_vnnlib.py   (a few seconds; bundled data only), or
     python examples/verify_vnnlib.py MODEL.onnx PROPERTY.vnnlib   (writes ./result.txt)
"""
import sys
import tempfile
from pathlib import Path

from smtverify import load_onnx, resources
from smtverify.confirm import write_vnncomp_result
from smtverify.verify import Settings, Verifier
from smtverify.vnnlib import read_vnnlib


def verify_vnnlib(model_path, property_path, result_path, timeout=60.0):
    """sat (a counterexample confirmed by onnxruntime), unsat, unknown or timeout; the result file
    holds the verdict line and, after sat, the counterexample's inputs and outputs."""
    network = load_onnx(model_path)
    prop = read_vnnlib(property_path, network.n_inputs, network.n_outputs)
    result = Verifier(network, Settings(timeout=timeout)).verify(prop)
    write_vnncomp_result(result_path, result.verdict.vnncomp, result.counterexample)
    return result.verdict.vnncomp


def robustness_vnnlib(path, x, label, eps, n_outputs):
    """A VNN-LIB file: x_i - eps <= X_i <= x_i + eps (within [0, 1]), unsafe if any Y_j >= Y_label."""
    values = x.reshape(-1).tolist()
    lines = [f"(declare-const X_{i} Real)" for i in range(len(values))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    for i, v in enumerate(values):
        lines += [f"(assert (>= X_{i} {max(v - eps, 0.0)!r}))", f"(assert (<= X_{i} {min(v + eps, 1.0)!r}))"]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_outputs) if j != label)
    lines.append(f"(assert (or {others}))")
    Path(path).write_text("\n".join(lines) + "\n")


if len(sys.argv) == 3:
    print(verify_vnnlib(sys.argv[1], sys.argv[2], "result.txt"))
else:
    model_path = resources.model_path("digits_mlp")
    images = resources.test_images("digits_mlp")
    x, label = images.images[0], int(images.labels[0])
    with tempfile.TemporaryDirectory() as folder:
        property_path, result_path = Path(folder, "prop.vnnlib"), Path(folder, "result.txt")
        for eps in (0.01, 0.3):
            robustness_vnnlib(property_path, x, label, eps, load_onnx(model_path).n_outputs)
            print(f"eps {eps}: {verify_vnnlib(model_path, property_path, result_path)}")
            lines = result_path.read_text().splitlines()
            print(f"  result file: {lines[0]}, {len(lines)} lines")
