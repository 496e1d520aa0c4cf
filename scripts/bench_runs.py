"""What run folders cost and save: a search's journal (checkpoints every 2 s) against the same
search without one, a resumed search that finds its grid finished, and a batch's items per second.

On the bundled MNIST CNN, test image 0: the 12 most gradient-salient pixels, span 0.25 (64/255 on
the image's lattice), steps 2, one round, every example collected (26,214,400 grid points); each
search is run `--repeat` times, the two kinds alternately, and the fastest of each kept. The
batch certifies the first 50 bundled digits_mlp test images at eps 0.02. Prints a table and
writes results/bench_runs.json.

    python scripts/bench_runs.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtverify import load_onnx, resources  # noqa: E402
from smtverify.batch import BatchRun, Certifier  # noqa: E402
from smtverify.export import example_files  # noqa: E402
from smtverify.run_folder import RunFolder  # noqa: E402
from smtverify.search import SearchSettings, dlv_search  # noqa: E402
from smtverify.search_memory import SearchMemory  # noqa: E402

SEARCH = SearchSettings(span=0.25, steps=2, features=12, heuristic="gradient", rounds=1, collect_all=True,
                        max_examples=100, timeout=None)


def timed_search(folder: Path | None) -> tuple[float, int]:
    """Seconds and points of one search, journalled in `folder` when given."""
    network = load_onnx(resources.model_path("mnist_cnn"))
    images = resources.test_images("mnist_cnn")
    memory = None if folder is None else SearchMemory(RunFolder(folder).journal, example_files(folder))
    start = time.perf_counter()
    report = dlv_search(network, images.images[0], int(images.labels[0]), SEARCH, memory=memory)
    return time.perf_counter() - start, report.points_evaluated


def best_of(repeat: int) -> tuple[tuple[float, int], tuple[float, Path]]:
    """The fastest of `repeat` searches without and with a journal, run alternately so that a
    drift of the machine's speed falls on both alike."""
    plain, journalled = [], []
    for _ in range(repeat):
        plain.append(timed_search(None))
        folder = Path(tempfile.mkdtemp())
        journalled.append((timed_search(folder)[0], folder))
    return min(plain), min(journalled)


def batch_rate() -> tuple[float, int]:
    network = load_onnx(resources.model_path("digits_mlp"))
    images = resources.test_images("digits_mlp")
    with tempfile.TemporaryDirectory() as folder:
        run = BatchRun(network, images.images[:50], images.labels[:50], [0.02], Certifier(network, (0.0, 1.0)),
                       10.0, RunFolder(folder))
        start = time.perf_counter()
        done = sum(1 for _ in run.items(time.perf_counter() + 600))
        return time.perf_counter() - start, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_runs.json"))
    args = parser.parse_args()
    (plain, points), (journalled, folder) = best_of(args.repeat)
    resumed, resumed_points = timed_search(folder)
    batch_seconds, items = batch_rate()
    rows = [("search, no journal", plain, f"{points / plain:,.0f} points/s"),
            ("search, journalled", journalled, f"{points / journalled:,.0f} points/s ({journalled / plain - 1:+.1%})"),
            ("resumed, grid finished", resumed, f"{resumed_points:,} points taken from the journal"),
            ("batch certify, 50 items", batch_seconds, f"{items / batch_seconds:.1f} items/s")]
    print(f"{'run':<26} {'seconds':>8}  rate")
    for name, seconds, note in rows:
        print(f"{name:<26} {seconds:>8.2f}  {note}")
    record = {"machine": platform.machine(), "python": platform.python_version(), "repeat": args.repeat,
              "grid_points": points, "search_seconds": plain, "journalled_seconds": journalled,
              "resumed_seconds": resumed, "batch_seconds": batch_seconds, "batch_items": items}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
