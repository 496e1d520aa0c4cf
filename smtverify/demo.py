"""`smtverify demo`: the main job on the bundled MNIST CNN, in a few seconds, with no arguments.

1. Both executors agree on the bundled test images (the ground every verdict stands on).
2. DLV's rounds with the gradient heuristic find an adversarial example of a bundled image.
3. The same first features, moved by smaller steps, are proven safe on their whole grid.
4. An L-infinity ball around the image is certified SAFE on the continuous region (bounds and Z3).
Files go to the output folder: each search in its run folder (adversarial/, safe/: examples as npz,
PNG and a panel for people, retrain.npz, run.json, summary.json, report.html), certify.html, and
summary.json of the whole demo.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import resources
from .export import ExampleWriter
from .network import Network
from .onnx_import import load_onnx
from .reference import OnnxRuntimeExecutor
from .report import write_record_report, write_report
from .search import SearchReport, SearchSettings, dlv_search
from .search_memory import search_folder
from .verify import Settings, Verifier, robustness_property

MODEL, IMAGE = "mnist_cnn", 0
FIND = SearchSettings(span=0.25, steps=2, features=8, heuristic="gradient", rounds=4, timeout=30)
PROVE = SearchSettings(span=0.05, steps=2, features=8, heuristic="gradient", rounds=1, timeout=30, lift=True,
                       lift_timeout=30)
EPS = 0.02


def classify_bundled(name: str) -> dict[str, Any]:
    """One bundled model on its test images, by the numpy executor and by onnxruntime."""
    network: Network = load_onnx(resources.model_path(name))
    data = resources.test_images(name)
    start = time.perf_counter()
    ours = network.logits(data.images)
    seconds = time.perf_counter() - start
    theirs = OnnxRuntimeExecutor(network).logits(data.images)
    return {"model": name, "images": len(data.labels),
            "accuracy": float(np.mean(ours.argmax(1) == data.labels)),
            "same_class": int(np.sum(ours.argmax(1) == theirs.argmax(1))),
            "max_abs_diff": float(np.abs(ours - theirs).max()), "seconds": seconds}


def run_demo(out_dir: str | Path = "smtverify-demo") -> dict[str, Any]:
    """Run the four parts and write their files; returns the summary (also saved as summary.json)."""
    start = time.perf_counter()
    out = Path(out_dir)
    models = [classify_bundled(name) for name in resources.MODELS]
    network = load_onnx(resources.model_path(MODEL))
    data = resources.test_images(MODEL)
    x, label = data.images[IMAGE], int(data.labels[IMAGE])
    out.mkdir(parents=True, exist_ok=True)
    image = f"bundled {MODEL} test image {IMAGE}"
    found = _search(out / "adversarial", network, x, label, FIND, None, image, panels=True)
    first = [g.dims for g in found.grids if g.round == 1][0]
    proved = _search(out / "safe", network, x, label, PROVE, first, image, panels=False)
    certified = Verifier(network, Settings(timeout=30)).verify(robustness_property(network, x, label, EPS))
    certify = {"model": network.path, "input": image, "label": label, "eps": EPS, **certified.summary(),
               "min_margin": certified.min_margin}
    write_record_report(out / "certify.html", "certify", certify)
    summary = {
        "model": MODEL, "image": IMAGE, "label": label, "models": models,
        "find": {"settings": _settings(FIND, found), **found.summary()},
        "prove": {"settings": _settings(PROVE, proved), **proved.summary()},
        "certify": certify, "out": str(out), "seconds": round(time.perf_counter() - start, 3)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _search(folder: Path, network: Network, x: np.ndarray, label: int, settings: SearchSettings,
            dims: list[int] | None, image: str, panels: bool) -> SearchReport:
    """One of the demo's searches in its own run folder (this run's files alone), with its report."""
    run = search_folder(folder, network, x, label, settings, dims, image, force=True)
    with ExampleWriter(folder, x, panels=panels, original_logits=network.logits(x)[0]) as writer:
        report = dlv_search(network, x, label, settings, dims=dims, on_found=writer.write)
    run.write_summary({"model": network.path, "input": image, **report.summary(), **writer.summary()}, complete=True)
    write_report(folder)
    return report


def _settings(settings: SearchSettings, report: SearchReport) -> dict[str, Any]:
    """The settings as searched: the span is the one the grid used, to 6 digits (on the image's 8-bit
    lattice; the report's span_used is exact and its grid_note says how it was rounded)."""
    asked = {k: v for k, v in settings.__dict__.items() if k not in ("domain", "evaluator")}
    return {**asked, "span": round(report.grid.span, 6)}
