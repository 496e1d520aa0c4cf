"""How far the root's bounds are from deciding each instance of a suite: the margin of plain
back-substitution and of the optimised root (the slopes of every hidden neuron and of the output
rows optimised, `--steps` ascent steps), per instance. A margin above 0 proves the instance (unsat).
A measuring instrument for bound work: no falsification, no splitting.

Prints a table and writes a JSON record (default results/root_margins.json):

    python scripts/root_margins.py eran --match SIGMOID [--steps 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtverify import load_onnx  # noqa: E402
from smtverify.bench import read_instances  # noqa: E402
from smtverify.verify import Settings, Verifier  # noqa: E402
from smtverify.verify.context import Job  # noqa: E402
from smtverify.verify.objective import UnsafeRows  # noqa: E402
from smtverify.verify.outcome import Statistics  # noqa: E402
from smtverify.verify.root import optimised_root, plain_root  # noqa: E402
from smtverify.vnnlib import read_vnnlib  # noqa: E402

SHARED = ROOT.parent / "shared" / "benchmarks"


def margins(verifier: Verifier, vnnlib: Path, steps: int) -> dict:
    """The plain and optimised root margins of the property's first case, and their seconds."""
    network = verifier.network
    case = read_vnnlib(vnnlib, network.n_inputs, network.n_outputs).cases[0]
    job, rows = Job(verifier.tools, case, verifier.settings, Statistics()), UnsafeRows.of(case)
    began = time.perf_counter()
    root, plain = plain_root(job, rows, np.inf)
    middle = time.perf_counter()
    optimised = plain
    if plain <= 0 and verifier.tools.slope_optimiser is not None:
        optimised = max(plain, optimised_root(job, rows, root, np.inf, steps)[1])
    return {"plain": float(plain), "plain_s": round(middle - began, 3), "optimised": float(optimised),
            "optimised_s": round(time.perf_counter() - middle, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--match", help="only instances whose network or property path contains this text")
    parser.add_argument("--steps", type=int, default=5, help="ascent steps of the optimised root (default 5)")
    parser.add_argument("--out", default=str(ROOT / "results" / "root_margins.json"))
    args = parser.parse_args()
    listing = SHARED / args.suite / "instances.csv"
    if not listing.is_file():
        print(f"no suite at {listing.parent}", file=sys.stderr)
        return 2
    rows, verifiers = [], {}
    print(f"{'network':32} {'property':40} {'plain':>9} {'optimised':>9} {'s':>6}")
    for instance in read_instances(listing):
        if args.match and args.match not in f"{instance.onnx} {instance.vnnlib}":
            continue
        if instance.onnx not in verifiers:
            verifiers[instance.onnx] = Verifier(load_onnx(instance.onnx), Settings())
        found = margins(verifiers[instance.onnx], instance.vnnlib, args.steps)
        rows.append(found | {"onnx": instance.onnx.name, "vnnlib": instance.vnnlib.name})
        print(f"{instance.onnx.name[:32]:32} {instance.vnnlib.name[:40]:40} {found['plain']:9.3f} "
              f"{found['optimised']:9.3f} {found['plain_s'] + found['optimised_s']:6.1f}", flush=True)
    proven = [sum(r[kind] > 0 for r in rows) for kind in ("plain", "optimised")]
    print(f"proven at the root: plain {proven[0]}, optimised {proven[1]} of {len(rows)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "python scripts/root_margins.py " + " ".join(sys.argv[1:]),
                                          "steps": args.steps, "instances": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
