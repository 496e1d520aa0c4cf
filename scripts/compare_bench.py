#!/usr/bin/env python3
"""Two records of scripts/bench_verify.py compared instance by instance: verdicts, the engine's
counters and time. For a change that must not change behaviour (a refactor), with fixed seeds:

    python scripts/compare_bench.py results/before.json results/after.json [--out results/compare.json]

Prints every instance whose verdict or counters differ, then per suite: instances, same verdict,
same counters, total seconds before and after; writes the same as JSON. A run that switches phase
on the clock (input splitting's LP stage, refining, a leaf not asked for want of time) may count
differently between two runs of the same code; the table says which instances did.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COUNTERS = ("leaves", "boxes_bounded", "z3_calls", "lp_solves", "splitting")


def load(path: str) -> dict[tuple[str, str, str], dict]:
    record = json.loads(Path(path).read_text())
    return {(suite, row["onnx"], row["vnnlib"]): row
            for suite, data in record["suites"].items() for row in data["instances"]}


def counters(row: dict) -> dict:
    stats = row.get("stats", {})
    return {key: stats.get(key) for key in COUNTERS}


def compare(before: dict, after: dict) -> tuple[list[dict], dict[str, dict]]:
    differences, suites = [], {}
    for key in sorted(before.keys() & after.keys()):
        old, new = before[key], after[key]
        suite = suites.setdefault(key[0], {"instances": 0, "same_verdict": 0, "same_counters": 0,
                                           "before_s": 0.0, "after_s": 0.0})
        same_verdict = old["smtverify"] == new["smtverify"]
        same_counters = counters(old) == counters(new)
        suite["instances"] += 1
        suite["same_verdict"] += same_verdict
        suite["same_counters"] += same_counters
        suite["before_s"] += old["smtverify_s"]
        suite["after_s"] += new["smtverify_s"]
        if not (same_verdict and same_counters):
            differences.append({"suite": key[0], "onnx": key[1], "vnnlib": key[2],
                                "verdict": [old["smtverify"], new["smtverify"]],
                                "seconds": [old["smtverify_s"], new["smtverify_s"]],
                                "counters": [counters(old), counters(new)]})
    return differences, suites


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--out")
    args = parser.parse_args()
    differences, suites = compare(load(args.before), load(args.after))
    for d in differences:
        changed = {k: (a, b) for k, a, b in ((k, d["counters"][0][k], d["counters"][1][k]) for k in COUNTERS) if a != b}
        print(f"{d['suite']} {d['onnx']} {d['vnnlib']}: {d['verdict'][0]} -> {d['verdict'][1]}, "
              f"{d['seconds'][0]:.2f} -> {d['seconds'][1]:.2f} s, {changed}")
    print(f"\n{'suite':<10} {'inst':>5} {'same verdict':>13} {'same counters':>14} {'before s':>9} {'after s':>9}")
    for name, s in suites.items():
        print(f"{name:<10} {s['instances']:>5} {s['same_verdict']:>13} {s['same_counters']:>14} "
              f"{s['before_s']:>9.1f} {s['after_s']:>9.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"before": args.before, "after": args.after, "suites": suites,
                                              "differences": differences}, indent=1))
    return 1 if any(s["same_verdict"] < s["instances"] for s in suites.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
