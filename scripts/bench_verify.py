"""Benchmark of the certification engine on every VNN-LIB suite under ../shared/benchmarks.

Runs smtverify on every instance of each suite (or an evenly spread sample), at the competition's
timeouts, and, where `maraboupy` is installed and asked for, Marabou 2.0 on the same instances at
the same time (one instance of each tool runs at once: one core each on a two-core machine).
Every `sat` answer's counterexample is checked again here, independently of smtverify's own
confirmation: it is read back from the competition's result file smtverify writes, run through a
fresh onnxruntime session, and must lie in the property's box and meet its unsafe condition; one
that does not counts as wrong.
Prints a table per suite (sat / unsat, timeouts, unknown, errors, wrong, total and median seconds,
and how many runs overran their timeout by more than OVERRUN_SLACK_S), writes a JSON record, and
with --markdown updates that suite's table in docs/benchmarks.md (the command, the date and the
commit). A wrong answer or an error is printed loudly and makes the exit status non-zero.

    python scripts/bench_verify.py [--suites acasxu mnistfc ...] [--sample N | --sample suite=N ...]
                                   [--match TEXT] [--timeout-scale F] [--marabou] [--markdown docs/benchmarks.md]
                                   [--out results/bench_verify.json]
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
from smtverify.run_folder import RunFolder  # noqa: E402

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


def vnnlib_suites() -> list[str]:
    """Every benchmark folder whose instances.csv lists onnx/vnnlib pairs (acc's are closed-loop specs)."""
    found = []
    for path in sorted(SHARED.glob("*/instances.csv")):
        with open(path, newline="") as handle:
            if {"onnx", "vnnlib", "timeout_s"} <= set(next(csv.reader(handle), [])):
                found.append(path.parent.name)
    return found


def sample_sizes(values: list[str] | None) -> dict[str | None, int]:
    """'--sample 20' for every suite, '--sample mnistfc=18 oval21=6' per suite (None: the default)."""
    sizes: dict[str | None, int] = {}
    for value in values or []:
        suite, _, size = value.rpartition("=")
        sizes[suite or None] = int(size)
    return sizes


def recheck(outcome, folder: Path) -> bool:
    """A sat answer's counterexample, independently of smtverify's confirmation: read back from the
    competition's result file, run by a fresh onnxruntime session in float32, inside the box and
    meeting the unsafe condition of the property."""
    import numpy as np
    import onnxruntime

    from smtverify.confirm import write_vnncomp_result
    from smtverify.vnnlib import read_vnnlib

    result_file = folder / "result.txt"
    write_vnncomp_result(result_file, "sat", outcome.result.counterexample)
    values = {name: float(value) for name, value in
              (line.strip("() ").split() for line in result_file.read_text().splitlines()[2:-1])}
    session = onnxruntime.InferenceSession(str(outcome.instance.onnx), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    n_inputs = sum(name.startswith("X_") for name in values)
    x = np.array([values[f"X_{i}"] for i in range(n_inputs)], np.float32)
    shape = [1 if not isinstance(d, int) else d for d in feed.shape]
    y = session.run(None, {feed.name: x.reshape(shape)})[0].reshape(-1)
    prop = read_vnnlib(outcome.instance.vnnlib, n_inputs, y.size)
    return bool(prop.is_unsafe(x.astype(np.float64), y.astype(np.float64)))


def summarise(name: str, verdicts: list[str], seconds: list[float], expected: list[str | None],
              timeouts: list[float], unconfirmed: list[int] = ()) -> dict:
    wrong = sorted({i for i, (v, e) in enumerate(zip(verdicts, expected))
                    if v in ("sat", "unsat") and e in ("sat", "unsat") and v != e} | set(unconfirmed))
    return {"tool": name, "instances": len(verdicts), "sat": verdicts.count("sat"), "unsat": verdicts.count("unsat"),
            "timeout": verdicts.count("timeout"), "unknown": verdicts.count("unknown"), "error": verdicts.count("error"),
            "wrong": len(wrong), "unconfirmed_sat": len(unconfirmed),
            "total_s": round(sum(seconds), 2), "median_s": round(statistics.median(seconds), 3) if seconds else 0.0,
            "wrong_instances": wrong,
            "overran": sum(s > t + OVERRUN_SLACK_S for s, t in zip(seconds, timeouts))}


def counts(outcome) -> dict:
    """The engine's counters (boxes, domains, leaves, ...) to compare two runs at fixed seeds."""
    stats = outcome.result.stats if outcome.result else {}
    return {key: value for key, value in stats.items() if isinstance(value, (int, float, str))}


def run_suite(suite: str, args: argparse.Namespace, size: int | None, folder: Path) -> tuple[list, list[dict]]:
    """One suite: (its instances, the summary tables of smtverify and, if asked, Marabou)."""
    everything = [i for i in read_instances(SHARED / suite / "instances.csv")
                  if not args.match or args.match in f"{i.onnx} {i.vnnlib}"]
    instances = pick(everything, size)
    expected = [i.expected for i in instances]
    timeouts = [i.timeout * args.timeout_scale for i in instances]

    def report(outcome, index, n=len(instances)):
        flag = "   <-- WRONG ANSWER" if outcome.wrong else ("   <-- ERROR" if outcome.verdict == "error" else "")
        print(f"[{suite} {index + 1}/{n}] {outcome.instance.onnx.name} {outcome.instance.vnnlib.name}: "
              f"{outcome.verdict} (expected {outcome.instance.expected}) {outcome.seconds:.2f}s{flag}",
              file=sys.stderr, flush=True)
        if outcome.failure is not None:
            print(f"    {outcome.failure.message}", file=sys.stderr, flush=True)

    marabou = None
    if args.marabou:    # on the other core, at the same time, each instance's answer written as it comes
        marabou = concurrent.futures.ThreadPoolExecutor(1).submit(
            run_marabou_all, instances, args.timeout_scale, Path(args.out).with_suffix(f".{suite}.marabou.csv"))
    run_folder = RunFolder.prepare(Path(args.out).with_suffix(f".{suite}"), "bench", {"suite": suite}, force=True)
    ours = list(run(instances, args.timeout_scale, run_folder, report=report))
    unconfirmed = [i for i, o in enumerate(ours) if o.verdict == "sat" and not recheck(o, folder)]
    tables = [summarise("smtverify", [o.verdict for o in ours], [o.seconds for o in ours], expected, timeouts,
                        unconfirmed)]
    tables[0]["of"] = len(everything)
    rows = [{"onnx": i.onnx.name, "vnnlib": i.vnnlib.name, "expected": i.expected, "smtverify": o.verdict,
             "smtverify_s": round(o.seconds, 3), "detail": o.detail, "stats": counts(o)}
            for i, o in zip(instances, ours)]
    if marabou is not None:
        theirs = marabou.result()
        for row, (v, sec) in zip(rows, theirs):
            row.update(marabou=v, marabou_s=round(sec, 3))
        tables.append(summarise("marabou", [v for v, _ in theirs], [sec for _, sec in theirs], expected, timeouts))
    return rows, tables


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", help="default: every VNN-LIB suite under ../shared/benchmarks")
    parser.add_argument("--sample", nargs="+", metavar="[SUITE=]N",
                        help="an evenly spread sample of N instances (of every suite, or of the one named)")
    parser.add_argument("--match", help="only the instances whose network or property path contains this text "
                                        "(e.g. SIGMOID: eran's Sigmoid half)")
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    parser.add_argument("--marabou", action="store_true", help="also run Marabou (needs maraboupy)")
    parser.add_argument("--markdown", help="update each suite's table in this file (docs/benchmarks.md)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_verify.json"))
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"no benchmarks at {SHARED}", file=sys.stderr)
        return 2
    sizes = sample_sizes(args.sample)
    command = "python scripts/bench_verify.py " + " ".join(sys.argv[1:])
    record = {"command": command, "commit": commit(), "date": time.strftime("%Y-%m-%d"), "suites": {}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    exit_status = 0
    with tempfile.TemporaryDirectory() as folder:
        for suite in args.suites or vnnlib_suites():
            rows, tables = run_suite(suite, args, sizes.get(suite, sizes.get(None)), Path(folder))
            record["suites"][suite] = {"summary": tables, "instances": rows}
            print_table(suite, tables)
            ours = tables[0]
            if ours["wrong"] or ours["error"]:
                exit_status = 1
                for i in ours["wrong_instances"]:
                    print(f"!!! WRONG ANSWER: {rows[i]['onnx']} {rows[i]['vnnlib']}", file=sys.stderr)
            Path(args.out).write_text(json.dumps(record, indent=1))
            if args.markdown:
                update_markdown(Path(args.markdown), suite, ours, record)
    return exit_status


def commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + ("+changes" if dirty else "") if done.returncode == 0 else "unknown"


MARKDOWN_COLUMNS = ["suite", "instances", "sat", "unsat", "timeout", "unknown", "error", "wrong", "total s",
                    "median s", "overran", "commit", "date"]


def update_markdown(path: Path, suite: str, table: dict, record: dict) -> None:
    """Replace (or add) this suite's row in the latest-results table, and its command below it."""
    text = path.read_text() if path.is_file() else ""
    begin, end = "<!-- latest-results -->", "<!-- /latest-results -->"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    block, tail = rest.split(end, 1)
    rows = {line.split("|")[1].strip(): line for line in block.splitlines() if line.startswith("| ") and
            not line.startswith("| suite") }
    commands = {line.split("`")[0].strip("- :"): line for line in block.splitlines() if line.startswith("- ")}
    shown = f"{table['instances']}" + (f" of {table['of']}" if table["instances"] < table["of"] else "")
    values = [suite, shown, table["sat"], table["unsat"], table["timeout"], table["unknown"], table["error"],
              table["wrong"], f"{table['total_s']:.1f}", f"{table['median_s']:.2f}", table["overran"],
              record["commit"], record["date"]]
    rows[suite] = "| " + " | ".join(str(v) for v in values) + " |"
    commands[suite] = f"- {suite}: `{record['command']}`"
    lines = ["", "| " + " | ".join(MARKDOWN_COLUMNS) + " |", "|" + "---|" * len(MARKDOWN_COLUMNS)]
    lines += [rows[name] for name in sorted(rows)] + [""] + [commands[name] for name in sorted(commands)] + [""]
    path.write_text(head + begin + "\n".join(lines) + end + tail)


def print_table(suite: str, tables: list[dict]) -> None:
    print(f"\n{suite}")
    print(f"{'tool':<10} {'inst':>5} {'sat':>4} {'unsat':>5} {'tmout':>5} {'unknw':>5} {'error':>5} {'wrong':>5} "
          f"{'total s':>9} {'median s':>9} {'overran':>7}")
    for t in tables:
        print(f"{t['tool']:<10} {t['instances']:>5} {t['sat']:>4} {t['unsat']:>5} {t['timeout']:>5} {t['unknown']:>5} "
              f"{t['error']:>5} {t['wrong']:>5} {t['total_s']:>9.1f} {t['median_s']:>9.3f} {t['overran']:>7}")
    if len(tables) == 2 and tables[0]["total_s"] > 0:
        print(f"time ratio marabou / smtverify: {tables[1]['total_s'] / tables[0]['total_s']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
