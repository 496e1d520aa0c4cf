"""DLV's MNIST experiment: adversarial examples by DLV search, side by side with FGSM, PGD and JSMA.

On the bundled MNIST CNN (its first test images that it classifies correctly) and, when
../shared/benchmarks is beside the clone, the verivital MNIST conv nets (images: the centres of the
input boxes of prop_<i>_0.004.vnnlib, the tightest boxes, so the centre is the benchmark's image to
within 0.002; the label is the network's class there). Per method: images checked, examples found
(each confirmed by onnxruntime in float32, inside [0, 1]), mean L0 and L2 of the examples, seconds
per image. DLV: gradient features, single-path rounds; FGSM and PGD: L-infinity ball of --eps;
JSMA: up to 40 pixels set to 1. Prints a table and writes results/dlv_experiment.json.

    python scripts/dlv_experiment.py [--images N] [--eps E]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtverify import load_onnx, resources  # noqa: E402
from smtverify.attack import fgsm, jsma, pgd_linf  # noqa: E402
from smtverify.confirm import confirm_misclassification  # noqa: E402
from smtverify.pwl import chain_of  # noqa: E402
from smtverify.network import Network  # noqa: E402
from smtverify.reference import OnnxRuntimeExecutor  # noqa: E402
from smtverify.search import SearchSettings, dlv_search  # noqa: E402
from smtverify.vnnlib import read_vnnlib  # noqa: E402

VERIVITAL = ROOT.parent / "shared" / "benchmarks" / "verivital"
DLV = SearchSettings(span=0.25, steps=2, features=8, heuristic="gradient", rounds=6, timeout=20)


def bundled(n: int) -> tuple[Network, list[tuple[np.ndarray, int]]]:
    network = load_onnx(resources.model_path("mnist_cnn"))
    data = resources.test_images("mnist_cnn")
    classes = OnnxRuntimeExecutor(network).classify(data.images)
    return network, [(data.images[i], int(data.labels[i])) for i in np.flatnonzero(classes == data.labels)[:n]]


def verivital(name: str, n: int) -> tuple[Network, list[tuple[np.ndarray, int]]]:
    network = load_onnx(VERIVITAL / "onnx" / f"{name}.onnx")
    reference = OnnxRuntimeExecutor(network)
    images = []
    for i in range(n):
        box = read_vnnlib(VERIVITAL / "vnnlib" / f"prop_{i}_0.004.vnnlib", network.n_inputs).cases[0].box
        x = ((box.lower + box.upper) / 2).astype(np.float32).reshape(network.input_shape)
        images.append((x, int(reference.classify(x)[0])))
    return network, images


def attacks(network: Network, eps: float, seed: int) -> dict[str, Callable[[np.ndarray, int], np.ndarray | None]]:
    """Each method maps (image, label) to a candidate input (None: nothing proposed)."""
    chain = chain_of(network)

    def dlv(x: np.ndarray, label: int) -> np.ndarray | None:
        report = dlv_search(network, x, label, DLV)
        return report.examples[0].example.input if report.examples else None

    return {"DLV": dlv,
            "FGSM": lambda x, label: fgsm(chain, x, label, eps, 0.0, 1.0),
            "PGD": lambda x, label: pgd_linf(chain, x, label, eps, 0.0, 1.0, np.random.default_rng(seed),
                                             steps=40, restarts=4),
            "JSMA": lambda x, label: jsma(chain, x, label, 0.0, 1.0, max_pixels=40)}


def run(name: str, network: Network, images: list[tuple[np.ndarray, int]], eps: float, seed: int) -> list[dict]:
    rows = []
    for method, attack in attacks(network, eps, seed).items():
        found, l0, l2, seconds = 0, [], [], 0.0
        for x, label in images:
            start = time.perf_counter()
            candidate = attack(x, label)
            seconds += time.perf_counter() - start
            confirmed = None if candidate is None else confirm_misclassification(network, candidate, label, 0.0, 1.0)
            if confirmed is not None:
                moved = confirmed.input.reshape(-1).astype(np.float64) - x.reshape(-1)
                found += 1
                l0.append(int(np.count_nonzero(moved)))
                l2.append(float(np.linalg.norm(moved)))
        rows.append({"network": name, "method": method, "images": len(images), "found": found,
                     "mean_l0": float(np.mean(l0)) if l0 else None, "mean_l2": float(np.mean(l2)) if l2 else None,
                     "seconds_per_image": seconds / max(1, len(images))})
        print(f"  {name} {method}: {found}/{len(images)}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="images per network (default 10)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-infinity radius of FGSM and PGD (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = [("mnist_cnn", *bundled(args.images))]
    if VERIVITAL.is_dir():
        cases += [(name, *verivital(name, args.images)) for name in ("Convnet_maxpool", "Convnet_avgpool")]
    else:
        print(f"skipping the verivital networks: {VERIVITAL} is absent", file=sys.stderr)
    rows = [row for name, network, images in cases for row in run(name, network, images, args.eps, args.seed)]

    def number(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:.{digits}f}"
    print("| network | method | images | found | mean L0 | mean L2 | s / image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['network']} | {r['method']} | {r['images']} | {r['found']} | {number(r['mean_l0'], 1)} | "
              f"{number(r['mean_l2'], 2)} | {r['seconds_per_image']:.3f} |")
    out = ROOT / "results" / "dlv_experiment.json"
    out.parent.mkdir(exist_ok=True)
    settings = {k: v for k, v in DLV.__dict__.items()}
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                               "args": vars(args), "dlv_settings": settings, "rows": rows}, indent=1))
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
