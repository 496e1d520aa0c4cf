"""Are budgets honoured? Wall time past the timeout and peak memory of single CLI runs.

Each run is its own subprocess, one at a time, measured from outside: wall time from spawn to exit
and the child's own peak RSS (os.wait4's rusage of that child alone). A run's "past timeout" is its
wall time minus its --timeout; the interpreter's start-up (imports, measured once as `smtverify
--version`) is part of it and is shown on its own. Search runs also report their own `seconds`
(--json), the time the search itself took against its timeout.

- search: the bundled MNIST CNN, test image 0, 13 pixels by the activation heuristic, span 0.02,
  steps 4: a grid of 9.07x10^9 points, with --timeout 3 and 10; and the grid the issue reported
  (12 pixels, steps 3, 1.6x10^8 points, whose tables took 13-26 s to build) with --timeout 3.
- vnnlib: the first oval21 CIFAR instance of ../shared/benchmarks/oval21/instances.csv (skipped
  when absent) with --timeout 10 and 30.

Prints a table and writes a JSON record (default results/bench_budget.json, git-ignored).

    python scripts/bench_budget.py [--json OUT] [--only search|vnnlib]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtverify import resources  # noqa: E402

OVAL21 = ROOT.parent / "shared" / "benchmarks" / "oval21"
CLI = [sys.executable, "-m", "smtverify.cli"]
HUGE = ["--features", "13", "--steps", "4", "--span", "0.02"]           # 9,069,926,400 points
ISSUE = ["--features", "12", "--steps", "3", "--span", "0.02"]          # 156,250,000 points


@dataclass
class Run:
    """One subprocess: what ran, how long, how much memory, and what it said."""

    name: str
    timeout: float
    wall: float
    peak_rss_mb: float
    exit_status: int
    past_timeout: float = 0.0
    verdict: str = ""
    own_seconds: float | None = None         # the search's own `seconds` (--json)
    details: dict[str, Any] = field(default_factory=dict)


def measure(command: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """(wall seconds, the child's peak RSS in MB, exit status, stdout) of one command."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, child.returncode, out.read()


def startup(work: Path) -> float:
    wall, _, _, _ = measure(CLI + ["--version"], work)
    return wall


def search_run(name: str, grid: list[str], timeout: float, work: Path, image: Path, label: int) -> Run:
    command = CLI + ["search", str(resources.model_path("mnist_cnn")), "--input", str(image), "--label", str(label),
                     *grid, "--timeout", str(timeout), "--json", "--out", str(work / name)]
    wall, rss, status, stdout = measure(command, work)
    record = json.loads(stdout) if status == 0 else {}
    grids = record.get("grids") or [{}]
    return Run(name, timeout, wall, rss, status, wall - timeout, record.get("verdict", "error"), record.get("seconds"),
               {"grid_points": record.get("grid_points"), "points_evaluated": record.get("points_evaluated"),
                "evaluator": grids[0].get("evaluator"), "reason": record.get("reason")})


def vnnlib_run(timeout: float, work: Path) -> Run | None:
    if not (OVAL21 / "instances.csv").is_file():
        return None
    with open(OVAL21 / "instances.csv") as f:
        row = next(csv.DictReader(f))
    command = CLI + ["vnnlib", str(OVAL21 / row["onnx"]), str(OVAL21 / row["vnnlib"]), "--timeout", str(timeout)]
    wall, rss, status, stdout = measure(command, work)
    first = stdout.splitlines()[0] if stdout else "error"
    return Run(f"vnnlib {Path(row['vnnlib']).stem}", timeout, wall, rss, status, wall - timeout, first,
               details={"onnx": row["onnx"], "vnnlib": row["vnnlib"]})


def table(runs: list[Run], start_up: float) -> str:
    lines = [f"interpreter start-up (smtverify --version): {start_up:.2f} s",
             f"{'run':<44} {'timeout':>7} {'wall':>7} {'past':>6} {'own':>7} {'RSS MB':>7}  verdict, points"]
    for r in runs:
        own = "" if r.own_seconds is None else f"{r.own_seconds:.2f}"
        points = "" if r.details.get("grid_points") is None else \
            f", {r.details['points_evaluated']:,} of {r.details['grid_points']:,} ({r.details['evaluator']})"
        lines.append(f"{r.name:<44} {r.timeout:>7.0f} {r.wall:>7.2f} {r.past_timeout:>6.2f} {own:>7} "
                     f"{r.peak_rss_mb:>7.0f}  {r.verdict}{points}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "bench_budget.json", help="record to write")
    parser.add_argument("--only", choices=("search", "vnnlib"), help="run one part only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        images = resources.test_images("mnist_cnn")
        np.save(work / "mnist0.npy", images.images[0])
        label = int(images.labels[0])
        runs: list[Run] = []
        start_up = startup(work)
        if args.only in (None, "search"):
            for timeout in (3.0, 10.0):
                runs.append(search_run(f"search mnist_cnn 13 px x 9 steps, t={timeout:g}", HUGE, timeout, work,
                                       work / "mnist0.npy", label))
            runs.append(search_run("search mnist_cnn 12 px x 7 steps (issue), t=3", ISSUE, 3.0, work,
                                   work / "mnist0.npy", label))
        if args.only in (None, "vnnlib"):
            runs += [run for run in (vnnlib_run(t, work) for t in (10.0, 30.0)) if run is not None]
            if not (OVAL21 / "instances.csv").is_file():
                print(f"skipped vnnlib: no {OVAL21 / 'instances.csv'}")
    print(table(runs, start_up))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                     "load_average": os.getloadavg(), "startup_seconds": start_up,
                                     "runs": [asdict(r) for r in runs]}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
