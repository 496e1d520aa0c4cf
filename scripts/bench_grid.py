"""Grid-evaluation throughput: plain numpy, onnxruntime, difference propagation, factorised tables.

On the bundled MNIST CNN (test image 0) and, when ../shared/benchmarks is beside the clone, the
verivital MNIST conv nets (the centre of the input box of prop_0_0.02.vnnlib). The moved pixels
are the k whose values are nearest 0.5, ties by index, with span 0.02 and m = 3, so no value clips
and the grids are full: 7^6 = 117,649 and 7^8 = 5,764,801 points. Rates are points per second on
the first points of the grid in search order (up to 2^20 for the tables); `search` is the
end-to-end search_grid over the grid (enumeration, evaluation, checks; it stops at a first
example). Prints a table and writes results/bench_grid.json.

    python scripts/bench_grid.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtverify import load_onnx, resources  # noqa: E402
from smtverify.fast_eval import choose_evaluator  # noqa: E402
from smtverify.grid import grid_points, search_grid  # noqa: E402
from smtverify.runtime import one_blas_thread  # noqa: E402
from smtverify.manipulations import PixelManipulation  # noqa: E402
from smtverify.reference import OnnxRuntimeExecutor  # noqa: E402

VERIVITAL = ROOT.parent / "shared" / "benchmarks" / "verivital"
SPAN, STEPS = 0.02, 3
SAMPLE = {"plain": 2048, "onnxruntime": 4096, "difference": 1 << 17, "tables": 1 << 20}


def box_centre(path: Path, n_inputs: int) -> np.ndarray:
    """The centre of the X_i bounds of a VNN-LIB file (plain `(assert (<= X_i v))` lines)."""
    bounds = np.zeros((2, n_inputs))
    for op, index, value in re.findall(r"\(\s*(<=|>=)\s+X_(\d+)\s+([-+0-9.eE]+)\s*\)", path.read_text()):
        bounds[0 if op == ">=" else 1, int(index)] = float(value)
    return bounds.mean(axis=0)


def cases() -> list[tuple[str, Path, np.ndarray]]:
    mnist = resources.model_path("mnist_cnn")
    found = [("mnist_cnn", mnist, resources.test_images("mnist_cnn").images[0])]
    if not VERIVITAL.is_dir():
        print(f"skipping the verivital networks: {VERIVITAL} is absent", file=sys.stderr)
        return found
    centre = box_centre(VERIVITAL / "vnnlib" / "prop_0_0.02.vnnlib", 784).reshape(1, 28, 28).astype(np.float32)
    return found + [(name, VERIVITAL / "onnx" / f"{name}.onnx", centre)
                    for name in ("Convnet_maxpool", "Convnet_avgpool")]


def rate(evaluate, c: np.ndarray) -> float:
    start = time.perf_counter()
    evaluate(c)
    return len(c) / (time.perf_counter() - start)


def first_points(manipulation: PixelManipulation, count: int) -> np.ndarray:
    """The first `count` grid points in search order."""
    taken, total = [], 0
    for c in grid_points(manipulation.levels, 1 << 16):
        taken.append(c)
        total += len(c)
        if total >= count:
            break
    return np.concatenate(taken)[:count]


def bench(name: str, path: Path, image: np.ndarray, pixels: int) -> dict:
    network = load_onnx(path)
    dims = np.argsort(np.abs(image.reshape(-1) - 0.5), kind="stable")[:pixels]
    manipulation = PixelManipulation(image, dims, SPAN, STEPS)
    record = {"network": name, "pixels": dims.tolist(), "span": SPAN, "steps": STEPS,
              "grid_size": manipulation.grid_size}
    reference = OnnxRuntimeExecutor(network)
    evaluators = {"plain": choose_evaluator(network, manipulation, "plain").logits,
                  "onnxruntime": lambda c: reference.logits(manipulation.apply(c))}
    for kind in ("difference", "tables"):
        start = time.perf_counter()
        evaluator = choose_evaluator(network, manipulation, kind)
        record[f"{kind}_build_s"] = round(time.perf_counter() - start, 4)
        evaluators[kind] = evaluator.logits
    record["tables"] = [t.params.tolist() for t in evaluator.tables]      # the pixel sets, one lookup each
    with one_blas_thread():
        for kind, evaluate in evaluators.items():
            c = first_points(manipulation, SAMPLE[kind])
            evaluate(c[:64])                                   # warm-up: caches, lazy imports
            record[f"{kind}_pps"] = round(rate(evaluate, c))
    report = search_grid(network, manipulation)
    record.update(search_pps=round(report.points_per_second), search_evaluator=report.evaluator,
                  search_points=report.points_evaluated, search_verdict=report.verdict.value,
                  search_seconds=round(report.seconds, 3))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 pixels only")
    args = parser.parse_args()
    rows = [bench(name, path, image, pixels) for name, path, image in cases()
            for pixels in ((6,) if args.quick else (6, 8))]
    columns = ["plain_pps", "onnxruntime_pps", "difference_pps", "tables_pps", "search_pps"]
    print(f"{'network':18} {'grid':>10} " + " ".join(f"{c.removesuffix('_pps'):>12}" for c in columns)
          + "  search verdict")
    for row in rows:
        print(f"{row['network']:18} {row['grid_size']:>10,} " + " ".join(f"{row[c]:>12,}" for c in columns)
              + f"  {row['search_verdict']} ({row['search_evaluator']})")
    out = ROOT / "results" / "bench_grid.json"
    out.parent.mkdir(exist_ok=True)
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
               "numpy": np.__version__, "blas_threads": 1}
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine, "rows": rows}, indent=1))
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
