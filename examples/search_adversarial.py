"""DLV's search for adversarial examples on the bundled 8x8 digits CNN: one exhaustive grid, DLV's
rounds, and the smallest manipulation on a ladder of spans.

Run: python examples/search_adversarial.py   (a few seconds; bundled data only)
"""
from smtverify import load_onnx, resources
from smtverify.features import select_features
from smtverify.grid import search_grid
from smtverify.manipulations import PixelManipulation
from smtverify.search import SearchSettings, dlv_search, minimal_search

network = load_onnx(resources.model_path("digits_cnn"))
images = resources.test_images("digits_cnn")
x, label = images.images[0], int(images.labels[0])

# One exhaustive grid: the 8 most gradient-salient pixels, each moved by c * 0.1 for c in -3..3
# (at most 7^8 points: values clipped to [0, 1] are not repeated). SAFE_ON_GRID / UNSAFE
# (examples confirmed by onnxruntime) / UNKNOWN (a budget ran out).
dims = select_features(network, x, 8, "gradient", label)
report = search_grid(network, PixelManipulation(x, dims, span=0.1, steps=3), label, collect_all=True)
print(f"grid: {report.verdict.value}, {report.points_evaluated} of {report.grid_size} points, "
      f"{report.examples_found} examples")

# DLV's rounds: 4 more gradient-salient pixels a round, single-path, to the first example.
settings = SearchSettings(span=0.25, steps=2, features=4, heuristic="gradient", rounds=4, timeout=30)
found = dlv_search(network, x, label, settings)
print(f"rounds: {found.verdict.value}", [(f.example.new_class, f.example.l0) for f in found.examples])

# The smallest span on a ladder, and the fewest changed pixels, giving an example.
minimal = minimal_search(network, x, dims, spans=[0.1, 0.2, 0.3, 0.4, 0.5], steps=2, label=label)
print(f"minimal: span {minimal.min_span}, {minimal.min_pixels} pixels (at span {minimal.min_pixels_span})")
