"""Benchmark of the certification engine on the competition's ACAS Xu and MNIST-FC instances.

Runs smtverify on every instance (or a sample), and, where `maraboupy` is installed, Marabou 2.0
on the same instances at the same time (one instance of each tool runs at once: one core each on a
two-core machine), each in its own process with the competition timeout.
Prints a table (solved sat / unsat, wrong, unknown, total and median seconds, and how many runs
overran their timeout by more than OVERRUN_SLACK_S) and writes a JSON
record. A wrong answer is printed loudly and makes the exit status non-zero.

    python scripts/bench_verify.py [--suites acasxu mnistfc] [--sample N] [--timeout-scale F]
                                   [--marabou] [--out results/bench_verify.json]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtverify.bench import Instance, read_instances, run  # noqa: E402

SHARED = ROOT.parent / "shared" / "benchmarks"
MARABOU = """
import sys, time, warnings
warnings.filterwarnings("ignore")
from maraboupy import Marabou
start = time.perf_counter()
network = Marabou.read_onnx(sys.argv[1])
options = Marabou.createOptions(timeoutInSeconds=int(float(sys.argv[3])), verbosity=0)
code, _, _ = network.solve(propertyFilename=sys.argv[2], options=options, verbose=False)
print("RESULT", code, time.perf_counter() - start)
"""


def pick(instances: list[Instance], sample: int | None) -> list[Instance]:
    """Every instance, or an evenly spread sample (deterministic)."""
    if not sample or sample >= len(instances):
        return instances
    step = len(instances) / sample
    return [instances[int(i * step)] for i in range(sample)]


def run_marabou(instance: Instance, timeout: float) -> tuple[str, float]:
    """Marabou's verdict and seconds from reading the files to the answer, as smtverify's are
    (the interpreter's start and the import of maraboupy are left out)."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", MARABOU, str(instance.onnx), str(instance.vnnlib), str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 30,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        words = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RESULT")]
        verdict, seconds = (words[0][0].lower(), float(words[0][1])) if words else ("error", time.perf_counter() - start)
    except subprocess.TimeoutExpired:
        verdict, seconds = "timeout", time.perf_counter() - start
    return {"sat": "sat", "unsat": "unsat"}.get(verdict, verdict if verdict in ("timeout", "error") else "unknown"), seconds


def run_marabou_all(instances: list[Instance], timeout_scale: float, csv_path: Path) -> list[tuple[str, float]]:
    """Marabou on every instance in turn, each row appended to csv_path as soon as it is known."""
    found = []
    with open(csv_path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["onnx", "vnnlib", "expected", "verdict", "seconds"])
        for instance in instances:
            verdict, seconds = run_marabou(instance, instance.timeout * timeout_scale)
            out.writerow([instance.onnx.name, instance.vnnlib.name, instance.expected, verdict, f"{seconds:.3f}"])
            handle.flush()
            found.append((verdict, seconds))
    return found


# A run may pass its timeout by loading the files and confirming a counterexample; beyond this, it overran.
OVERRUN_SLACK_S = 2.0


def summarise(name: str, verdicts: list[str], seconds: list[float], expected: list[str | None],
              timeouts: list[float]) -> dict:
    wrong = [i for i, (v, e) in enumerate(zip(verdicts, expected)) if v in ("sat", "unsat") and e in ("sat", "unsat") and v != e]
    return {"tool": name, "instances": len(verdicts), "sat": verdicts.count("sat"), "unsat": verdicts.count("unsat"),
            "wrong": len(wrong), "unknown": sum(v not in ("sat", "unsat") for v in verdicts),
            "total_s": round(sum(seconds), 2), "median_s": round(statistics.median(seconds), 3) if seconds else 0.0,
            "wrong_instances": wrong,
            "overran": sum(s > t + OVERRUN_SLACK_S for s, t in zip(seconds, timeouts))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=["acasxu", "mnistfc"])
    parser.add_argument("--sample", type=int, help="an evenly spread sample of N instances per suite")
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    parser.add_argument("--marabou", action="store_true", help="also run Marabou (needs maraboupy)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_verify.json"))
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"no benchmarks at {SHARED}", file=sys.stderr)
        return 2
    record = {"command": " ".join(sys.argv), "suites": {}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    exit_status = 0
    for suite in args.suites:
        instances = pick(read_instances(SHARED / suite / "instances.csv"), args.sample)
        expected = [i.expected for i in instances]
        timeouts = [i.timeout * args.timeout_scale for i in instances]
        rows = []

        def report(outcome, index, suite=suite, n=len(instances)):
            flag = "   <-- WRONG ANSWER" if outcome.wrong else ""
            print(f"[{suite} {index + 1}/{n}] {outcome.instance.onnx.name} {outcome.instance.vnnlib.name}: "
                  f"{outcome.verdict} (expected {outcome.instance.expected}) {outcome.seconds:.2f}s{flag}",
                  file=sys.stderr, flush=True)

        marabou = None
        if args.marabou:    # on the other core, at the same time, each instance's answer written as it comes
            marabou = concurrent.futures.ThreadPoolExecutor(1).submit(
                run_marabou_all, instances, args.timeout_scale, Path(args.out).with_suffix(f".{suite}.marabou.csv"))
        ours = list(run(instances, args.timeout_scale, Path(args.out).with_suffix(f".{suite}.csv"), report=report))
        tables = [summarise("smtverify", [o.verdict for o in ours], [o.seconds for o in ours], expected, timeouts)]
        rows = [{"onnx": i.onnx.name, "vnnlib": i.vnnlib.name, "expected": i.expected, "smtverify": o.verdict,
                 "smtverify_s": round(o.seconds, 3)} for i, o in zip(instances, ours)]
        if marabou is not None:
            theirs = marabou.result()
            for row, (v, s) in zip(rows, theirs):
                row.update(marabou=v, marabou_s=round(s, 3))
            tables.append(summarise("marabou", [v for v, _ in theirs], [s for _, s in theirs], expected, timeouts))
        record["suites"][suite] = {"summary": tables, "instances": rows}
        print_table(suite, tables)
        if any(t["wrong"] for t in tables[:1]):
            exit_status = 1
            for i in tables[0]["wrong_instances"]:
                print(f"!!! WRONG ANSWER: {instances[i].onnx.name} {instances[i].vnnlib.name}", file=sys.stderr)
        Path(args.out).write_text(json.dumps(record, indent=1))
    return exit_status


def print_table(suite: str, tables: list[dict]) -> None:
    print(f"\n{suite}")
    print(f"{'tool':<10} {'inst':>5} {'sat':>4} {'unsat':>5} {'wrong':>5} {'unknown':>7} {'total s':>9} {'median s':>9} {'overran':>7}")
    for t in tables:
        print(f"{t['tool']:<10} {t['instances']:>5} {t['sat']:>4} {t['unsat']:>5} {t['wrong']:>5} {t['unknown']:>7} "
              f"{t['total_s']:>9.1f} {t['median_s']:>9.3f} {t['overran']:>7}")
    if len(tables) == 2 and tables[0]["total_s"] > 0:
        print(f"time ratio marabou / smtverify: {tables[1]['total_s'] / tables[0]['total_s']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
