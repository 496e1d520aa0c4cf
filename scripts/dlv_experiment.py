"""DLV's MNIST experiment: adversarial examples by DLV search, side by side with FGSM, PGD and JSMA.

On the bundled MNIST CNN (its first test images that it classifies correctly) and, when
../shared/benchmarks is beside the clone, the verivital MNIST conv nets (images: the centres of the
input boxes of prop_<i>_0.004.vnnlib, the tightest boxes, so the centre is the benchmark's image to
within 0.002; the label is the network's class there). Per method: images checked, examples found
(each confirmed by onnxruntime in float32, inside [0, 1]), mean L0 and L2 of the examples, seconds
per image. DLV: gradient features, single-path rounds; FGSM and PGD: L-infinity ball of --eps;
JSMA: up to 40 pixels set to 1. Prints a table and writes results/dlv_experiment.json.

Hidden-layer rows (issue 22 item 6): DLV's search at a hidden layer instead of the input (one input
grid: --hidden-pixels pixels by DLV's heuristic, --hidden-span, 2 steps; --hidden-features hidden
dimensions, 2 steps, chosen by |d margin / d value| x their range over the input region):
relu1, relu2 and relu3 of the bundled CNN and the last hidden layer of each verivital net. Each
example is back-mapped to an input inside the input region and confirmed by onnxruntime, like every
other; the row adds the hidden candidates and the spurious share (candidates proven to have no
preimage, out of those back-mapped), and the unknown ones.

The issue's target is checked image by image: PGD is also run inside the continuous region that
DLV's first grid spans (its moved pixels between their extreme grid values, the rest fixed), and on
every image where PGD finds an example there, DLV must have found one too (on a grid, or between
grid points by lifting), with no more changed pixels on average.

    python scripts/dlv_experiment.py [--images N] [--eps E] [--hidden-features K] [--hidden-pixels P]
        [--hidden-span S] [--no-hidden]
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
from smtverify.hidden_search import HiddenSettings  # noqa: E402
from smtverify.attack import fgsm, jsma, pgd, pgd_linf  # noqa: E402
from smtverify.lifting import cell_boxes  # noqa: E402
from smtverify.confirm import confirm_misclassification  # noqa: E402
from smtverify.chain import chain_of  # noqa: E402
from smtverify.network import Network  # noqa: E402
from smtverify.reference import OnnxRuntimeExecutor  # noqa: E402
from smtverify.search import SearchReport, SearchSettings, dlv_search  # noqa: E402
from smtverify.verify import case_within, robustness_property  # noqa: E402
from smtverify.vnnlib import read_vnnlib  # noqa: E402

VERIVITAL = ROOT.parent / "shared" / "benchmarks" / "verivital"
DLV = SearchSettings(span=0.25, steps=2, features=8, heuristic="gradient", rounds=6, timeout=20, lift=True,
                     lift_timeout=10)
HIDDEN_LAYERS = {"mnist_cnn": ("relu1", "relu2", "relu3"), "Convnet_maxpool": ("7",), "Convnet_avgpool": ("9",)}


def hidden_settings(layer: str, features: int, pixels: int, span: float) -> SearchSettings:
    """One input grid (DLV's heuristic and steps), searched at `layer` on the hidden dimensions that
    could move the margin most (HiddenSettings.heuristic "gradient"); refinement given one second."""
    return SearchSettings(span=span, steps=DLV.steps, features=pixels, heuristic=DLV.heuristic,
                          timeout=DLV.timeout, collect_all=True, layer=layer,
                          hidden=HiddenSettings(layer, features=features, steps=2, refinement_timeout=1.0,
                                                heuristic="gradient"))


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
    return {"FGSM": lambda x, label: fgsm(chain, x, label, eps, 0.0, 1.0),
            "PGD": lambda x, label: pgd_linf(chain, x, label, eps, 0.0, 1.0, np.random.default_rng(seed),
                                             steps=40, restarts=4),
            "JSMA": lambda x, label: jsma(chain, x, label, 0.0, 1.0, max_pixels=40)}


def pgd_in_grid_region(network: Network, report: SearchReport, x: np.ndarray, label: int, seed: int):
    """A confirmed PGD example inside the hull of DLV's first grid, or None."""
    if not report.grids:
        return None
    lower, upper = (side[0] for side in cell_boxes(report.grids[0].manipulation, 1))
    case = case_within(robustness_property(network, x, label, 0.0).cases[0], lower, upper)
    for point in pgd(chain_of(network), case, np.random.default_rng(seed), restarts=16, steps=60):
        found = confirm_misclassification(network, point, label, lower, upper)
        if found is not None:
            return found
    return None


def changed(x: np.ndarray, example) -> tuple[int, float]:
    moved = example.input.reshape(-1).astype(np.float64) - x.reshape(-1)
    return int(np.count_nonzero(moved)), float(np.linalg.norm(moved))


def row(name: str, method: str, images: int, distances: list[tuple[int, float]], seconds: float,
        hidden: list | None = None) -> dict:
    """One table row; `hidden` (the HiddenReports of a hidden-layer method) adds its candidate counts."""
    print(f"  {name} {method}: {len(distances)}/{images}", file=sys.stderr)
    counts = {key: sum(getattr(h, key) for h in hidden) if hidden is not None else None
              for key in ("candidates", "checked", "spurious", "unknown")}
    share = counts["spurious"] / counts["checked"] if hidden is not None and counts["checked"] else None
    return {"network": name, "method": method, "images": images, "found": len(distances),
            "mean_l0": float(np.mean([d[0] for d in distances])) if distances else None,
            "mean_l2": float(np.mean([d[1] for d in distances])) if distances else None,
            "seconds_per_image": seconds / max(1, images), **counts, "spurious_share": share}


def hidden_rows(name: str, network: Network, images: list[tuple[np.ndarray, int]], features: int, pixels: int,
                span: float) -> list[dict]:
    """Per hidden layer of the network: one input grid's region searched there, image by image."""
    rows = []
    for layer in HIDDEN_LAYERS.get(name, ()):
        distances, reports, seconds = [], [], 0.0
        for x, label in images:
            start = time.perf_counter()
            report = dlv_search(network, x, label, hidden_settings(layer, features, pixels, span))
            seconds += time.perf_counter() - start
            reports += report.hidden
            distances += [changed(x, report.examples[0].example)] if report.examples else []
        rows.append(row(name, f"DLV@{layer}", len(images), distances, seconds, reports))
    return rows


def run(name: str, network: Network, images: list[tuple[np.ndarray, int]], eps: float, seed: int,
        hidden: argparse.Namespace | None) -> tuple[list[dict], list[dict]]:
    """The table's rows, and per image: DLV's and PGD-in-DLV's-region's changed pixels (None: no example)."""
    rows, per_image, dlv, dlv_seconds = [], [], [], 0.0
    for i, (x, label) in enumerate(images):
        start = time.perf_counter()
        report = dlv_search(network, x, label, DLV)
        dlv_seconds += time.perf_counter() - start
        mine = changed(x, report.examples[0].example) if report.examples else None
        theirs = pgd_in_grid_region(network, report, x, label, seed)
        dlv += [mine] if mine else []
        per_image.append({"network": name, "image": i, "dlv_l0": mine and mine[0],
                          "pgd_in_region_l0": theirs and changed(x, theirs)[0]})
    rows.append(row(name, "DLV", len(images), dlv, dlv_seconds))
    rows += hidden_rows(name, network, images, hidden.hidden_features, hidden.hidden_pixels,
                        hidden.hidden_span) if hidden else []
    for method, attack in attacks(network, eps, seed).items():
        distances, seconds = [], 0.0
        for x, label in images:
            start = time.perf_counter()
            candidate = attack(x, label)
            seconds += time.perf_counter() - start
            confirmed = None if candidate is None else confirm_misclassification(network, candidate, label, 0.0, 1.0)
            distances += [changed(x, confirmed)] if confirmed is not None else []
        rows.append(row(name, method, len(images), distances, seconds))
    return rows, per_image


def target(per_image: list[dict]) -> dict:
    """Where PGD found an example in DLV's grid region: did DLV find one, with how many pixels."""
    both = [r for r in per_image if r["pgd_in_region_l0"] is not None]
    missed = [f"{r['network']}#{r['image']}" for r in both if r["dlv_l0"] is None]
    found = [r for r in both if r["dlv_l0"] is not None]
    return {"pgd_found_in_region": len(both), "dlv_found_there_too": len(found), "dlv_missed": missed,
            "mean_l0_dlv": float(np.mean([r["dlv_l0"] for r in found])) if found else None,
            "mean_l0_pgd": float(np.mean([r["pgd_in_region_l0"] for r in found])) if found else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="images per network (default 10)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-infinity radius of FGSM and PGD (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-features", type=int, default=6, help="hidden dimensions of the hidden-layer rows")
    parser.add_argument("--hidden-pixels", type=int, default=16, help="input pixels moved by the hidden-layer rows")
    parser.add_argument("--hidden-span", type=float, default=0.5, help="input span of the hidden-layer rows")
    parser.add_argument("--no-hidden", action="store_true", help="leave out the hidden-layer rows")
    args = parser.parse_args()
    cases = [("mnist_cnn", *bundled(args.images))]
    if VERIVITAL.is_dir():
        cases += [(name, *verivital(name, args.images)) for name in ("Convnet_maxpool", "Convnet_avgpool")]
    else:
        print(f"skipping the verivital networks: {VERIVITAL} is absent", file=sys.stderr)
    results = [run(name, network, images, args.eps, args.seed, None if args.no_hidden else args)
               for name, network, images in cases]
    rows = [r for table, _ in results for r in table]
    per_image = [r for _, images in results for r in images]
    check = target(per_image)

    def number(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:.{digits}f}"
    print("| network | method | images | found | mean L0 | mean L2 | s / image | hidden candidates "
          "(back-mapped) | spurious share | unknown |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        candidates = "-" if r["candidates"] is None else f"{r['candidates']} ({r['checked']})"
        print(f"| {r['network']} | {r['method']} | {r['images']} | {r['found']} | {number(r['mean_l0'], 1)} | "
              f"{number(r['mean_l2'], 2)} | {r['seconds_per_image']:.3f} | {candidates} | "
              f"{number(r['spurious_share'], 2)} | {'-' if r['unknown'] is None else r['unknown']} |")
    print(f"PGD found an example inside DLV's first grid region on {check['pgd_found_in_region']} images; DLV found "
          f"one on {check['dlv_found_there_too']} of them (missed: {', '.join(check['dlv_missed']) or 'none'}); "
          f"mean L0 there: DLV {check['mean_l0_dlv']}, PGD {check['mean_l0_pgd']}")
    out = ROOT / "results" / "dlv_experiment.json"
    out.parent.mkdir(exist_ok=True)
    settings = {k: v for k, v in DLV.__dict__.items()}
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                               "args": vars(args), "dlv_settings": settings, "rows": rows,
                               "target": check, "per_image": per_image}, indent=1))
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
