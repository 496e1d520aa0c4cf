"""Adversarial examples of the bundled MNIST CNN saved as they are found: example_NNNN.npz and .png
per example, original.png, and retrain.npz (inputs with their correct labels) at the end.

Run: python examples/export_counterexamples.py [OUT_DIR]   (a few seconds; default ./adversarial)
"""
import sys
from pathlib import Path

import numpy as np

from smtverify import load_onnx, resources
from smtverify.export import ExampleWriter
from smtverify.search import SearchSettings, dlv_search

out = Path(sys.argv[1] if len(sys.argv) > 1 else "adversarial")
network = load_onnx(resources.model_path("mnist_cnn"))
images = resources.test_images("mnist_cnn")
x, label = images.images[0], int(images.labels[0])

# DLV's rounds: 8 gradient-salient pixels a round, single-path; each example, confirmed by
# onnxruntime, is written the moment it is found.
settings = SearchSettings(span=0.25, steps=2, features=8, heuristic="gradient", rounds=4, timeout=30)
with ExampleWriter(out, x) as writer:
    found = dlv_search(network, x, label, settings, on_found=writer.write)
print(f"verdict: {found.verdict.value}, {writer.written} examples written to {out}")

for f in found.examples:
    saved = np.load(f.input_file)
    print(f"{Path(f.input_file).name}: class {int(saved['original_class'])} -> {int(saved['new_class'])}, "
          f"{int(saved['l0'])} pixels changed, L2 {float(saved['l2']):.3f}")
with np.load(out / "retrain.npz") as retrain:
    print(f"retrain.npz: {len(retrain['inputs'])} inputs labelled {retrain['labels'].tolist()}")
